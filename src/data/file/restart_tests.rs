//! Finishing again after a crash in the middle of a move to a hook-chosen
//! destination.

use super::*;
use crate::protocol::UploadId;
use bytes::Bytes;

/// Moving a finished upload to its destination is a link and an
/// unlink; the process may die after either, before the record says
/// the upload is finished. Finishing again from the old record must
/// succeed and leave the bytes at the destination.
#[tokio::test]
async fn finish_again_after_a_crash_while_moving_to_the_destination() {
    for crash_after_unlink in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let bytes = b"every byte of the upload".to_vec();
        let mut info = UploadInfo {
            destination: Some("videos/a.bin".to_owned()),
            ..UploadInfo::new(UploadId::generate(), Some(bytes.len() as u64), 0)
        };
        info.storage = store.create(&info).await.unwrap();
        let mut writer = store
            .writer(&info, crate::data::IoPermit::unshared())
            .await
            .unwrap();
        writer.write(Bytes::from(bytes.clone())).await.unwrap();
        info.offset = writer.sync().await.unwrap().offset;

        // The first finish, cut short by the crash.
        let (from, to) = (store.path(&info), dir.path().join("videos/a.bin"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::hard_link(&from, &to).unwrap();
        if crash_after_unlink {
            std::fs::remove_file(&from).unwrap();
        }

        let storage = store.finish(&info).await.unwrap_or_else(|e| {
            panic!("crash after unlink {crash_after_unlink}: finishing again failed: {e}")
        });
        assert_eq!(storage, serde_json::json!({ "path": "videos/a.bin" }));
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), bytes);
    }
}
