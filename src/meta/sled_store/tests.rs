use super::*;

use crate::meta::contract::info;

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = UploadId::generate();
    {
        let store = SledMetaStore::open(dir.path()).unwrap();
        store.create(&info(&id, None)).await.unwrap();
    }
    let store = SledMetaStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.get(&id).await.unwrap(),
        Some(Lookup::Live(_))
    ));
}

impl SledMetaStore {
    fn open_now(&self) -> Arc<Open> {
        match self.state() {
            State::Open(open) => open,
            State::Closed(_) => panic!("closed"),
        }
    }
}

/// A store in a directory of its own (removed with the guard).
fn fresh() -> (tempfile::TempDir, SledMetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledMetaStore::open(dir.path()).unwrap();
    (dir, store)
}

/// What a crash between a write's steps leaves (an expiry entry whose
/// record is missing or has moved on) neither blocks the sweep nor
/// stays forever.
#[tokio::test]
async fn stale_expiry_entries_are_skipped_then_removed() {
    let (_dir, store) = fresh();
    let due = UploadId::generate();
    store.create(&info(&due, Some(20))).await.unwrap();
    let moved = UploadId::generate();
    store.create(&info(&moved, Some(10))).await.unwrap();
    store.save(&mut info(&moved, Some(5000))).await.unwrap();
    store
        .open_now()
        .expiry
        .insert(expiry_key(10, &moved), &[])
        .unwrap();
    for _ in 0..300 {
        let gone = UploadId::generate();
        store
            .open_now()
            .expiry
            .insert(expiry_key(10, &gone), &[])
            .unwrap();
    }

    assert_eq!(store.expired(30, 5).await.unwrap(), vec![due.clone()]);
    assert_eq!(
        store.open_now().expiry.len(),
        303,
        "too young to be removed"
    );

    let now = 10 + writes::STALE_AFTER;
    assert_eq!(store.expired(now, 5).await.unwrap(), vec![due.clone()]);
    assert_eq!(store.open_now().expiry.len(), 2, "stale entries removed");
    assert_eq!(store.expired(6000, 5).await.unwrap(), vec![due, moved]);
}

/// Creations of one id race without a transaction: one wins, and the
/// index holds the winner's entry only.
#[tokio::test]
async fn concurrent_creations_of_one_id_have_one_winner() {
    let (_dir, store) = fresh();
    let id = UploadId::generate();
    let tries = (0..16u64).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move { store.create(&info(&id, Some(100 + i))).await })
    });
    let results = futures_util::future::join_all(tries).await;
    let won: Vec<u64> = results
        .into_iter()
        .zip(100..)
        .filter_map(|(r, at)| match r.unwrap() {
            Ok(()) => Some(at),
            Err(MetaError::AlreadyExists(_)) => None,
            Err(e) => panic!("unexpected error: {e}"),
        })
        .collect();
    assert_eq!(won.len(), 1);
    let entries: Vec<_> = store
        .open_now()
        .expiry
        .iter()
        .keys()
        .map(|k| k.unwrap())
        .collect();
    assert_eq!(entries, vec![sled::IVec::from(expiry_key(won[0], &id))]);
}

/// A removed id stays taken, however its creation is attempted.
#[tokio::test]
async fn creation_after_removal_is_refused() {
    let (_dir, store) = fresh();
    let id = UploadId::generate();
    store.create(&info(&id, Some(100))).await.unwrap();
    store.remove(&info(&id, Some(100))).await.unwrap();
    assert!(matches!(
        store.create(&info(&id, Some(100))).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert_eq!(store.get(&id).await.unwrap(), Some(Lookup::Gone));
    assert_eq!(store.open_now().expiry.len(), 0);
}
