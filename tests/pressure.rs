//! The binary under pressure: its upload disk fills up, and its descriptor
//! table runs out. Nothing durable is lost, the answers are 507 and 503
//! (which tus clients retry), and the server recovers by itself.
//!
//! The small disk is a tmpfs mounted in a mount namespace of the server's
//! own (`unshare -rm`, util-linux), so no privileges are needed beyond
//! user namespaces and nothing stays mounted when the server dies.

mod common;

use common::proc::{Spawn, Tusker};
use common::*;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// `spawn` run in a mount namespace of its own (`unshare -rm`, no root
/// needed) where a tmpfs of `size_mib` MiB is mounted on `mount`.
fn on_tmpfs(spawn: Spawn, mount: &Path, size_mib: usize) -> Spawn {
    std::fs::create_dir_all(mount).expect("mount point");
    let script = format!("mount -t tmpfs -o size={size_mib}m tmpfs \"$0\" && exec \"$@\"");
    spawn.wrapped(
        "unshare",
        [
            "-rm".into(),
            "sh".into(),
            "-c".into(),
            script,
            mount.display().to_string(),
        ],
    )
}

/// A server whose data directory is a fresh `size_mib` MiB tmpfs; its meta
/// store stays on the ordinary disk.
async fn on_small_disk(dir: &Path, size_mib: usize, extra: &[&str]) -> Tusker {
    let disk = dir.join("disk");
    let meta = format!("sled:{}", dir.join("meta").display());
    on_tmpfs(Spawn::new(&disk, &dir.join("tusker.log")), &disk, size_mib)
        .args(["--meta", meta.as_str()])
        .args(extra.iter().copied())
        .start()
        .await
}

async fn readyz(c: &reqwest::Client, server: &Tusker) -> (u16, String) {
    let res = c
        .get(format!("http://{}/readyz", server.addr))
        .send()
        .await
        .expect("readyz");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_what_landed_answers_507_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = on_small_disk(dir.path(), 48, &["--min-free-space", "1MiB"]).await;
    let c = client();
    let endpoint = server.endpoint();
    assert_eq!(readyz(&c, &server).await.0, 200);

    // 20 MiB of the 48 are taken by a finished upload.
    let first = bytes(20 * MIB, 1);
    let first_url = upload(&c, &endpoint, &first).await;

    // A creation that cannot fit is refused before any byte arrives.
    let res = Req::new("POST", &endpoint)
        .tus()
        .h("upload-length", 40 * MIB)
        .send(&c)
        .await;
    assert_eq!(res.status, 507, "{}", res.text());
    assert!(
        res.text().starts_with("ERR_INSUFFICIENT_STORAGE"),
        "{}",
        res.text()
    );
    assert!(
        res.header("location").is_none(),
        "a refused creation made an upload"
    );

    // A deferred-length upload fills the disk with one 40 MiB PATCH.
    let data = bytes(40 * MIB, 2);
    let url = create_with(&c, &endpoint, &[("upload-defer-length", "1")]).await;
    let res = c
        .patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .header("upload-length", (40 * MIB).to_string())
        .body(data.clone())
        .send()
        .await;
    // The answer may come while the body is still being sent, and then
    // the connection closes under the client.
    if let Ok(res) = res {
        assert_eq!(res.status().as_u16(), 507, "PATCH on a full disk");
        let text = res.text().await.unwrap_or_default();
        assert!(text.starts_with("ERR_INSUFFICIENT_STORAGE"), "{text}");
    }
    let kept = offset(&c, &url).await;
    assert!(
        kept > 16 * MIB as u64 && kept < 40 * MIB as u64,
        "the bytes that fit are kept: offset {kept}"
    );
    let (status, body) = readyz(&c, &server).await;
    assert_eq!(status, 503, "/readyz with the disk full: {body}");
    assert!(body.starts_with("ERR_INSUFFICIENT_STORAGE"), "{body}");

    // While full: a small PATCH gets 507 too, and keeps the offset.
    let res = Req::new("PATCH", &url)
        .tus()
        .octet()
        .h("upload-offset", kept)
        .body(data[kept as usize..kept as usize + MIB].to_vec())
        .send(&c)
        .await;
    assert_eq!(res.status, 507, "{}", res.text());
    let kept = offset(&c, &url).await.max(kept);

    // Space comes back: the upload resumes from its offset and completes.
    let res = Req::new("DELETE", &first_url).tus().send(&c).await;
    assert_eq!(res.status, 204);
    assert_eq!(
        readyz(&c, &server).await.0,
        200,
        "/readyz once space is back"
    );
    let at = offset(&c, &url).await;
    assert!(at >= kept, "offset went down: {kept} -> {at}");
    let res = Req::new("PATCH", &url)
        .tus()
        .octet()
        .h("upload-offset", at)
        .body(data[at as usize..].to_vec())
        .send(&c)
        .await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(res.offset(), Some(40 * MIB as u64));
    assert!(
        download(&c, &url).await == data,
        "the upload is not byte-exact"
    );
    let free = metric(
        &c,
        &format!("http://{}", server.addr),
        "tusker_storage_free_bytes",
    )
    .await;
    assert!(free.is_some(), "no free-space gauge");
}

/// Under a descriptor limit far below the load: no request is answered
/// 500; a request that finds no descriptor gets 503 with Retry-After, and
/// every upload completes once the client retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Spawn::in_dir(dir.path())
        .wrapped("sh", ["-c", "ulimit -n 96 && exec \"$0\" \"$@\""])
        .start()
        .await;
    let endpoint = server.endpoint();
    let clients = 120;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                // A client of its own: one connection each, as phones have.
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let data = bytes(256 * 1024 + i, i as u64);
                let (url, statuses) = upload_retrying(&c, &endpoint, &data).await;
                (statuses, url, data)
            })
        })
        .collect();
    let mut finished = Vec::new();
    let mut all = Vec::new();
    for t in tasks {
        let (statuses, url, data) = t.await.expect("client task");
        all.extend(statuses);
        finished.extend(url.map(|u| (u, data)));
    }
    let refused = all.iter().filter(|s| **s == 503).count();
    eprintln!("{} answers, {refused} of them 503", all.len());
    assert!(
        !all.iter().any(|s| *s >= 500 && *s != 503 && *s != 507),
        "5xx answers other than 503: {:?}\n{}",
        all.iter().filter(|s| **s >= 500).collect::<Vec<_>>(),
        server.log_tail(20)
    );
    assert_eq!(finished.len(), clients, "uploads that never completed");
    let c = client();
    for (url, data) in finished.iter().take(10) {
        assert!(download(&c, url).await == *data, "{url} is not byte-exact");
    }
    let res = c
        .get(format!("http://{}/readyz", server.addr))
        .send()
        .await
        .expect("readyz after the load");
    assert_eq!(res.status().as_u16(), 200, "the server did not recover");
}

/// Creates an upload with its body and completes it as tus-js-client
/// would: on 503, 423 or a broken connection it waits and resumes from
/// HEAD. Returns the URL once every byte is stored, and every status seen.
async fn upload_retrying(
    c: &reqwest::Client,
    endpoint: &str,
    data: &[u8],
) -> (Option<String>, Vec<u16>) {
    let mut statuses = Vec::new();
    let mut url: Option<String> = None;
    for _attempt in 0..60 {
        let res = match &url {
            None => {
                c.post(endpoint)
                    .header("tus-resumable", "1.0.0")
                    .header("upload-length", data.len().to_string())
                    .header("content-type", "application/offset+octet-stream")
                    .body(data.to_vec())
                    .send()
                    .await
            }
            Some(u) => {
                let at = match c.head(u).header("tus-resumable", "1.0.0").send().await {
                    Ok(head) if head.status() == 200 => head
                        .headers()
                        .get("upload-offset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0),
                    Ok(head) => {
                        statuses.push(head.status().as_u16());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if at == data.len() {
                    return (url, statuses);
                }
                c.patch(u)
                    .header("tus-resumable", "1.0.0")
                    .header("upload-offset", at.to_string())
                    .header("content-type", "application/offset+octet-stream")
                    .body(data[at..].to_vec())
                    .send()
                    .await
            }
        };
        let Ok(res) = res else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let status = res.status().as_u16();
        statuses.push(status);
        if status == 503 {
            assert!(
                res.headers().contains_key("retry-after"),
                "503 without Retry-After"
            );
        }
        if status == 201 {
            url = res
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        let stored = res
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if (status == 201 || status == 204) && stored == Some(data.len()) {
            return (url, statuses);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (None, statuses)
}

/// A server whose meta store (sled) is on a fresh `size_mib` MiB tmpfs of
/// its own; its data directory stays on the ordinary disk. Returns the
/// server and the tmpfs mount point (reached from outside the server's
/// mount namespace through `/proc/PID/root`).
async fn meta_on_small_disk(dir: &Path, size_mib: usize) -> (Tusker, std::path::PathBuf) {
    let disk = dir.join("metadisk");
    let meta = format!("sled:{}", disk.join("meta").display());
    let server = on_tmpfs(
        Spawn::new(&dir.join("data"), &dir.join("tusker.log")),
        &disk,
        size_mib,
    )
    .args(["--meta", meta.as_str()])
    .start()
    .await;
    (server, disk)
}

/// `path` as the server (in its own mount namespace) sees it.
fn seen_by(server: &Tusker, path: &Path) -> std::path::PathBuf {
    let pid = server.pid().expect("running");
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").expect("absolute"))
}

/// Writes `file` until its file system is full.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    // Whatever tmpfs still has for a partial page goes too.
    while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
}

/// Copies directory `from` (flat, as sled's is, plus one level) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("copy target");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The meta store's disk fills up: every write that cannot be recorded is
/// answered 507 (never 500) and nothing acknowledged is lost; the store is
/// never corrupt (a copy taken while full, as a crash would leave it,
/// opens and holds every acknowledged offset); once space is back the
/// same server resumes the upload to a byte-exact end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_meta_disk_answers_507_keeps_what_was_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, disk) = meta_on_small_disk(dir.path(), 16).await;
    let c = client();
    let endpoint = server.endpoint();
    let chunk = 16 * 1024;
    let data = bytes(4 * MIB, 3);
    let url = create_with(&c, &endpoint, &[("upload-length", "4194304")]).await;
    let res = Req::new("PATCH", &url)
        .tus()
        .octet()
        .h("upload-offset", 0)
        .body(data[..MIB].to_vec())
        .send(&c)
        .await;
    assert_eq!(res.status, 204, "{}", res.text());
    let mut acked = MIB;

    let filler = seen_by(&server, &disk.join("filler"));
    fill(&filler);

    // Small appends until the meta store's writes fail: each either
    // recorded (204) or refused with 507, never a 500.
    let mut refused = 0;
    for _ in 0..400 {
        let res = Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("upload-offset", acked)
            .body(data[acked..acked + chunk].to_vec())
            .send(&c)
            .await;
        match res.status {
            204 => {
                assert_eq!(res.offset(), Some((acked + chunk) as u64));
                acked += chunk;
                refused = 0;
            }
            507 => {
                assert!(
                    res.text().starts_with("ERR_INSUFFICIENT_STORAGE"),
                    "{}",
                    res.text()
                );
                assert!(
                    res.header("retry-after").is_some(),
                    "507 without Retry-After"
                );
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            // The offset moved on: an append answered 507 was recorded
            // after all (its bytes are durable): resume from HEAD.
            409 => {
                let at = offset(&c, &url).await as usize;
                assert!(
                    at >= acked && at <= acked + chunk,
                    "offset {at}, acknowledged {acked}"
                );
                acked = at;
            }
            other => panic!(
                "PATCH on a full meta disk: {other} {}\n{}",
                res.text(),
                server.log_tail(20)
            ),
        }
    }
    assert_eq!(refused, 3, "the meta store never ran out of space");
    assert!(acked < 4 * MIB, "the whole upload fit");

    // While full: a creation is refused 507, HEAD shows no offset that was
    // not recorded, and /readyz fails.
    let res = Req::new("POST", &endpoint)
        .tus()
        .h("upload-length", 1000)
        .send(&c)
        .await;
    assert_eq!(
        res.status,
        507,
        "creation on a full meta disk: {}",
        res.text()
    );
    let head = Req::new("HEAD", &url).tus().send(&c).await;
    assert!(
        head.status == 507 || head.status == 200,
        "HEAD on a full meta disk: {}",
        head.status
    );
    if head.status == 200 {
        let at = head.offset().expect("offset") as usize;
        assert!(
            at >= acked && at <= acked + chunk,
            "HEAD offset {at}, acknowledged {acked}"
        );
    }
    let (status, body) = readyz(&c, &server).await;
    assert_eq!(status, 503, "/readyz with the meta disk full: {body}");
    assert!(body.starts_with("ERR_INSUFFICIENT_STORAGE"), "{body}");

    // What a crash now would leave: the database as it is on the full
    // disk, taken while the server is stopped.
    let crashed = dir.path().join("crashed-meta");
    server.signal("STOP");
    copy_dir(&seen_by(&server, &disk.join("meta")), &crashed);
    server.signal("CONT");

    // Space comes back: the same server resumes and completes the upload.
    std::fs::remove_file(&filler).expect("remove filler");
    let ready = eventually(Duration::from_secs(10), || async {
        readyz(&c, &server).await.0 == 200
    })
    .await;
    assert!(ready, "/readyz once space is back\n{}", server.log_tail(20));
    let at = offset(&c, &url).await as usize;
    assert!(
        at >= acked && at <= acked + chunk,
        "offset {at}, acknowledged {acked}"
    );
    let res = Req::new("PATCH", &url)
        .tus()
        .octet()
        .h("upload-offset", at)
        .body(data[at..].to_vec())
        .send(&c)
        .await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert!(
        download(&c, &url).await == data,
        "the upload is not byte-exact"
    );
    let res = Req::new("POST", &endpoint)
        .tus()
        .h("upload-length", 1000)
        .send(&c)
        .await;
    assert_eq!(
        res.status,
        201,
        "creation once space is back: {}",
        res.text()
    );
    server.kill();

    // The copy taken while full opens: every acknowledged offset is there.
    let meta = format!("sled:{}", crashed.display());
    let server = Spawn::new(&dir.path().join("data"), &dir.path().join("tusker2.log"))
        .args(["--meta", meta.as_str()])
        .start()
        .await;
    let url = server.url(&id_of(&url));
    let at = offset(&c, &url).await as usize;
    assert!(
        at >= acked && at <= acked + chunk,
        "after a crash on the full disk: offset {at}, acknowledged {acked}"
    );
}
