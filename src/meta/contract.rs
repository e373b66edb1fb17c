//! The `MetaStore` contract: one async function per behaviour, run
//! against sled and against PostgreSQL (when `TUSKER_TEST_POSTGRES_URL`
//! names a server; each test then gets a database of its own).

use super::*;
use crate::model::UploadInfo;
use crate::protocol::UploadId;
use std::future::Future;

pub(crate) fn info(id: &UploadId, expires_at: Option<u64>) -> UploadInfo {
    UploadInfo {
        expires_at,
        ..UploadInfo::new(id.clone(), Some(10), 1)
    }
}

pub(crate) async fn expiry_and_tombstones(store: &dyn MetaStore) {
    let a = UploadId::generate();
    let b = UploadId::generate();
    store.create(&info(&a, Some(100))).await.unwrap();
    store.create(&info(&b, Some(300))).await.unwrap();
    assert!(matches!(
        store.create(&info(&a, None)).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert_eq!(store.expired(200, 10).await.unwrap(), vec![a.clone()]);

    // Moving the expiry moves the index entry.
    let mut moved = info(&a, Some(500));
    moved.offset = 5;
    moved.storage = serde_json::json!({"parts": ["etag-1", "etag-2"], "tail": 7});
    store.save(&mut moved).await.unwrap();
    assert_eq!(
        store.expired(200, 10).await.unwrap(),
        Vec::<UploadId>::new()
    );
    assert_eq!(
        store.get(&a).await.unwrap(),
        Some(Lookup::Live(Box::new(moved.clone())))
    );

    // Finished uploads leave the index (the engine clears their expiry
    // unless `--expire-finished-after` gives them one).
    moved.finished = true;
    moved.expires_at = None;
    store.save(&mut moved).await.unwrap();
    assert_eq!(store.expired(1000, 10).await.unwrap(), vec![b.clone()]);

    store.remove(&info(&b, Some(300))).await.unwrap();
    assert_eq!(store.get(&b).await.unwrap(), Some(Lookup::Gone));
    assert!(matches!(
        store.save(&mut info(&b, None)).await,
        Err(MetaError::NotFound(_))
    ));
    // A tombstone blocks reuse of the id.
    assert!(matches!(
        store.create(&info(&b, None)).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert_eq!(
        store.expired(1000, 10).await.unwrap(),
        Vec::<UploadId>::new()
    );
    assert_eq!(store.prune_tombstones(u64::MAX).await.unwrap(), 1);
    assert_eq!(store.get(&b).await.unwrap(), None);
    assert_eq!(store.get(&UploadId::generate()).await.unwrap(), None);
}

/// A record created without waiting for durability behaves as any other:
/// readable, indexed, taken for reuse, and saved in place.
pub(crate) async fn deferred_creation(store: &dyn MetaStore) {
    let a = UploadId::generate();
    let rec = info(&a, Some(100));
    store.create_deferred(&rec).await.unwrap();
    assert_eq!(
        store.get(&a).await.unwrap(),
        Some(Lookup::Live(Box::new(rec.clone())))
    );
    assert!(matches!(
        store.create_deferred(&info(&a, None)).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.create(&info(&a, None)).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert_eq!(store.expired(200, 10).await.unwrap(), vec![a.clone()]);
    store.sync().await.unwrap();

    // The save that acknowledges bytes replaces it, index entry included.
    let mut done = rec.clone();
    done.offset = 10;
    done.finished = true;
    done.expires_at = None;
    store.save(&mut done).await.unwrap();
    assert_eq!(
        store.get(&a).await.unwrap(),
        Some(Lookup::Live(Box::new(done.clone())))
    );
    assert!(store.expired(200, 10).await.unwrap().is_empty());

    // A removed id stays taken.
    store.remove(&done).await.unwrap();
    assert!(matches!(
        store.create_deferred(&info(&a, None)).await,
        Err(MetaError::AlreadyExists(_))
    ));
}

/// Saves and removals are fenced by the record's version: a writer whose
/// view is stale (it read the record, stalled, and another writer saved
/// meanwhile: an instance frozen while another took the upload over)
/// changes nothing, whatever it writes, and learns it from `Stale`.
pub(crate) async fn stale_writers_change_nothing(store: &dyn MetaStore) {
    let id = UploadId::generate();
    let mut current = info(&id, Some(100));
    store.create(&current).await.unwrap();
    let mut stale = current.clone();

    current.offset = 6;
    current.storage = serde_json::json!({"parts": ["e1"], "segments": ["s-new"]});
    store.save(&mut current).await.unwrap();
    assert_eq!(current.version, 1);
    let newest = Some(Lookup::Live(Box::new(current.clone())));

    // Its progress, its finish (with an owed hook), its removal: refused.
    stale.offset = 3;
    stale.storage = serde_json::json!({"parts": [], "segments": ["s-old"]});
    assert!(matches!(
        store.save(&mut stale).await,
        Err(MetaError::Stale(_))
    ));
    assert_eq!(stale.version, 0, "a refused save left the version as read");
    let mut finish = stale.clone();
    finish.offset = 10;
    finish.finished = true;
    finish.finish_hook_pending = true;
    assert!(matches!(
        store.save(&mut finish).await,
        Err(MetaError::Stale(_))
    ));
    assert!(matches!(
        store.remove(&stale).await,
        Err(MetaError::Stale(_))
    ));
    assert_eq!(store.get(&id).await.unwrap(), newest);
    assert!(store.pending_finish_hooks(10).await.unwrap().is_empty());
    assert_eq!(store.expired(200, 10).await.unwrap(), vec![id.clone()]);

    // The current writer goes on from the version it wrote.
    current.offset = 10;
    current.finished = true;
    current.finish_hook_pending = true;
    store.save(&mut current).await.unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(
        store.pending_finish_hooks(10).await.unwrap(),
        vec![id.clone()]
    );

    // Even at the current version, no save lowers the offset or
    // unfinishes the upload.
    let mut lower = current.clone();
    lower.offset = 4;
    assert!(matches!(
        store.save(&mut lower).await,
        Err(MetaError::Stale(_))
    ));
    let mut unfinish = current.clone();
    unfinish.finished = false;
    assert!(matches!(
        store.save(&mut unfinish).await,
        Err(MetaError::Stale(_))
    ));
    assert_eq!(
        store.get(&id).await.unwrap(),
        Some(Lookup::Live(Box::new(current.clone())))
    );

    // The current writer's removal goes through.
    store.remove(&current).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap(), Some(Lookup::Gone));
    assert!(matches!(
        store.save(&mut current).await,
        Err(MetaError::NotFound(_))
    ));
}

/// Writers racing from one version: exactly one save lands.
pub(crate) async fn racing_writers_have_one_winner(store: &dyn MetaStore) {
    let id = UploadId::generate();
    let rec = info(&id, Some(100));
    store.create(&rec).await.unwrap();
    let mut views: Vec<UploadInfo> = (1..=8u64)
        .map(|n| UploadInfo {
            offset: n,
            ..rec.clone()
        })
        .collect();
    let saves = views.iter_mut().map(|v| store.save(v));
    let results = futures_util::future::join_all(saves).await;
    let won: Vec<usize> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(()) => Some(i),
            Err(MetaError::Stale(_)) => None,
            Err(e) => panic!("unexpected error: {e}"),
        })
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(
        store.get(&id).await.unwrap(),
        Some(Lookup::Live(Box::new(views[won[0]].clone())))
    );
}

pub(crate) async fn expiry_order_and_limit(store: &dyn MetaStore) {
    let ids: Vec<UploadId> = (0..5).map(|_| UploadId::generate()).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .create(&info(id, Some(50 - i as u64 * 10)))
            .await
            .unwrap();
    }
    // Oldest expiry first, at most `limit`.
    assert_eq!(
        store.expired(100, 2).await.unwrap(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    assert_eq!(store.expired(30, 10).await.unwrap().len(), 3);
}

pub(crate) async fn concat_waiters(store: &dyn MetaStore) {
    let (f, p1, p2) = (
        UploadId::generate(),
        UploadId::generate(),
        UploadId::generate(),
    );
    store
        .add_concat_waiters(&f, &[p1.clone(), p2.clone()])
        .await
        .unwrap();
    // Idempotent.
    store
        .add_concat_waiters(&f, std::slice::from_ref(&p1))
        .await
        .unwrap();
    assert_eq!(store.concat_waiters(&p1).await.unwrap(), vec![f.clone()]);
    store
        .remove_concat_waiters(&f, &[p1.clone(), p2.clone()])
        .await
        .unwrap();
    assert!(store.concat_waiters(&p1).await.unwrap().is_empty());
    assert!(store.concat_waiters(&p2).await.unwrap().is_empty());
}

pub(crate) async fn destinations(store: &dyn MetaStore) {
    let (a, b) = (UploadId::generate(), UploadId::generate());
    assert!(store.claim_destination("v/x.mp4", &a).await.unwrap());
    assert!(store.claim_destination("v/x.mp4", &a).await.unwrap());
    assert!(!store.claim_destination("v/x.mp4", &b).await.unwrap());
    store.release_destination("v/x.mp4", &b).await.unwrap();
    assert!(!store.claim_destination("v/x.mp4", &b).await.unwrap());
    store.release_destination("v/x.mp4", &a).await.unwrap();
    assert!(store.claim_destination("v/x.mp4", &b).await.unwrap());
}

pub(crate) async fn outbox(store: &dyn MetaStore) {
    let a = UploadId::generate();
    let mut rec = info(&a, None);
    store.create(&rec).await.unwrap();
    assert!(store.pending_finish_hooks(10).await.unwrap().is_empty());
    rec.finished = true;
    rec.finish_hook_pending = true;
    store.save(&mut rec).await.unwrap();
    assert_eq!(
        store.pending_finish_hooks(10).await.unwrap(),
        vec![a.clone()]
    );
    rec.finish_hook_pending = false;
    store.save(&mut rec).await.unwrap();
    assert!(store.pending_finish_hooks(10).await.unwrap().is_empty());
}

pub(crate) fn debt(id: &str) -> EventDebt {
    EventDebt {
        id: id.to_owned(),
        kind: "post-terminate".into(),
        body: format!(r#"{{"Id":"{id}","Type":"post-terminate"}}"#),
    }
}

/// Owed events outlive their upload's record, survive being listed, and
/// go only when cleared; adding one again replaces it.
pub(crate) async fn event_outbox(store: &dyn MetaStore) {
    assert!(store.pending_event_debts(10).await.unwrap().is_empty());
    let id = UploadId::generate();
    let created = info(&id, None);
    store.create(&created).await.unwrap();
    let (a, b) = (debt(&format!("{id}-post-terminate")), debt("other"));
    store.add_event_debt(&a).await.unwrap();
    store.remove(&created).await.unwrap();
    store.add_event_debt(&b).await.unwrap();
    let mut changed = b.clone();
    changed.body = r#"{"Id":"other","Type":"post-terminate","Event":{}}"#.into();
    store.add_event_debt(&changed).await.unwrap();
    let mut owed = store.pending_event_debts(10).await.unwrap();
    owed.sort_by(|x, y| x.id.cmp(&y.id));
    let mut want = vec![a.clone(), changed];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(owed, want);
    store.clear_event_debt(&b.id).await.unwrap();
    store.clear_event_debt("never-owed").await.unwrap();
    // Listing may have claimed them (a shared store); adding again drops
    // the claim: what is left is `a` alone.
    store.add_event_debt(&a).await.unwrap();
    assert_eq!(store.pending_event_debts(10).await.unwrap(), vec![a]);
}

pub(crate) async fn job_lock(store: &dyn MetaStore) {
    let guard = store.job_lock("sweep").await.unwrap();
    assert!(guard.is_some());
    drop(guard);
    store.ping().await.unwrap();
}

/// Runs `f` on a fresh sled store.
async fn on_sled<F, Fut>(f: F)
where
    F: FnOnce(SledMetaStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = SledMetaStore::open(dir.path()).unwrap();
    f(store).await;
}

/// Runs `f` on a fresh PostgreSQL database (the tests calling it are
/// ignored unless `TUSKER_TEST_POSTGRES_URL` is set).
async fn on_postgres<F, Fut>(f: F)
where
    F: FnOnce(PgMetaStore, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = pg_db::Db::create(&pg_db::admin_url()).await;
    let store = PgMetaStore::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    // Applying again is a no-op.
    store.migrate().await.unwrap();
    f(store, db.url.clone()).await;
    db.drop().await;
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test]
                async fn $name() {
                    super::on_sled(|s| async move { super::$name(&s).await }).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::on_postgres(|s, _| async move { super::$name(&s).await }).await;
                }
            )*
        }
    };
}

contract!(
    expiry_and_tombstones,
    deferred_creation,
    stale_writers_change_nothing,
    racing_writers_have_one_winner,
    expiry_order_and_limit,
    concat_waiters,
    destinations,
    outbox,
    event_outbox,
    job_lock,
);

/// PostgreSQL-only behaviour: what several instances share.
mod shared {
    use super::*;
    use crate::meta::lease::Attempt;

    #[tokio::test]
    #[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
    async fn owed_hooks_are_claimed_by_one_instance() {
        on_postgres(|a, url| async move {
            let b = PgMetaStore::connect(&url).await.unwrap();
            let id = UploadId::generate();
            let mut rec = info(&id, None);
            a.create(&rec).await.unwrap();
            rec.finished = true;
            rec.finish_hook_pending = true;
            a.save(&mut rec).await.unwrap();
            // The saver claims it; a sweep elsewhere then sees nothing.
            assert!(a.claim_finish_hook(&id).await.unwrap());
            assert!(!b.claim_finish_hook(&id).await.unwrap());
            assert!(b.pending_finish_hooks(10).await.unwrap().is_empty());
        })
        .await;
    }

    /// An owed event is delivered by the instance that added it, or, once
    /// that claim lapses, by one other instance at a time.
    #[tokio::test]
    #[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
    async fn owed_events_are_claimed_by_one_instance() {
        on_postgres(|_, url| async move {
            let short = std::time::Duration::from_secs(1);
            let a = PgMetaStore::connect(&url)
                .await
                .unwrap()
                .with_timings(crate::meta::postgres::DEFAULT_LEASE_TTL, short);
            let b = PgMetaStore::connect(&url)
                .await
                .unwrap()
                .with_timings(crate::meta::postgres::DEFAULT_LEASE_TTL, short);
            let c = PgMetaStore::connect(&url).await.unwrap();
            let owed = debt("x-post-terminate");
            a.add_event_debt(&owed).await.unwrap();
            assert!(a.claim_event_debt(&owed.id).await.unwrap());
            assert!(!b.claim_event_debt(&owed.id).await.unwrap());
            assert!(b.pending_event_debts(10).await.unwrap().is_empty());
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            // The adder's claim lapsed: one of two sweeps gets it.
            let (got_b, got_c) = tokio::join!(b.pending_event_debts(10), c.pending_event_debts(10));
            let (got_b, got_c) = (got_b.unwrap(), got_c.unwrap());
            assert_eq!(got_b.len() + got_c.len(), 1, "{got_b:?} {got_c:?}");
            assert_eq!(got_b.into_iter().chain(got_c).next(), Some(owed.clone()));
            c.clear_event_debt(&owed.id).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            assert!(a.pending_event_debts(10).await.unwrap().is_empty());
        })
        .await;
    }

    #[tokio::test]
    #[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
    async fn job_lock_is_exclusive_across_instances() {
        on_postgres(|a, url| async move {
            let b = PgMetaStore::connect(&url).await.unwrap();
            let held = a.job_lock("sweep").await.unwrap();
            assert!(held.is_some());
            assert!(b.job_lock("sweep").await.unwrap().is_none());
            assert!(b.job_lock("other").await.unwrap().is_some());
            drop(held);
            let mut free = false;
            for _ in 0..100 {
                if b.job_lock("sweep").await.unwrap().is_some() {
                    free = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(free, "job lock not released");
        })
        .await;
    }

    #[tokio::test]
    #[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
    async fn leases_exclude_other_instances_and_carry_stop_requests() {
        on_postgres(|a, url| async move {
            let b = PgMetaStore::connect(&url).await.unwrap();
            let mut stops = a.stop_requests().await.unwrap();
            let id = UploadId::generate();
            let Attempt::Acquired(lease) = a.try_acquire(&id).await.unwrap() else {
                panic!("free lease not acquired");
            };
            assert_eq!(
                b.try_acquire(&id).await.unwrap(),
                Attempt::HeldBy(a.instance().to_owned())
            );
            assert!(a.renew(&lease).await.unwrap());
            b.request_stop(&id, a.instance()).await.unwrap();
            let asked = tokio::time::timeout(std::time::Duration::from_secs(10), stops.recv())
                .await
                .unwrap();
            assert_eq!(asked, Some(id.clone()));
            a.release(&lease).await.unwrap();
            assert!(!a.renew(&lease).await.unwrap());
            assert!(matches!(
                b.try_acquire(&id).await.unwrap(),
                Attempt::Acquired(_)
            ));
        })
        .await;
    }

    #[tokio::test]
    #[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
    async fn expired_lease_is_taken_over() {
        on_postgres(|_, url| async move {
            let a = PgMetaStore::connect(&url).await.unwrap().with_timings(
                std::time::Duration::from_secs(1),
                crate::meta::postgres::DEFAULT_HOOK_CLAIM,
            );
            let b = PgMetaStore::connect(&url).await.unwrap();
            let id = UploadId::generate();
            assert!(matches!(
                a.try_acquire(&id).await.unwrap(),
                Attempt::Acquired(_)
            ));
            let mut taken = false;
            for _ in 0..100 {
                if let Attempt::Acquired(_) = b.try_acquire(&id).await.unwrap() {
                    taken = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(taken, "a lease without heartbeat never expired");
        })
        .await;
    }
}

/// Throw-away PostgreSQL databases: the file the integration tests use.
#[path = "../../tests/common/pg_db.rs"]
pub(crate) mod pg_db;
/// For `pg_db`.
use crate::meta::postgres::with_database;

/// `migrate-meta`: everything a sled store holds arrives in PostgreSQL.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
async fn migrate_meta_copies_sled_into_postgres() {
    on_postgres(|pg, url| async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let (live, finished, gone, fin, part) = (
            UploadId::generate(),
            UploadId::generate(),
            UploadId::generate(),
            UploadId::generate(),
            UploadId::generate(),
        );
        {
            let sled = SledMetaStore::open(&path).unwrap();
            let mut rec = info(&live, Some(100));
            rec.offset = 4;
            rec.storage = serde_json::json!({"multipart": "m-1", "parts": ["e1"]});
            sled.create(&rec).await.unwrap();
            let mut done = info(&finished, None);
            sled.create(&done).await.unwrap();
            done.finished = true;
            done.finish_hook_pending = true;
            sled.save(&mut done).await.unwrap();
            sled.create(&info(&gone, None)).await.unwrap();
            sled.remove(&info(&gone, None)).await.unwrap();
            sled.add_concat_waiters(&fin, std::slice::from_ref(&part))
                .await
                .unwrap();
            assert!(sled.claim_destination("a/b.mp4", &live).await.unwrap());
            sled.add_event_debt(&debt("gone-post-terminate"))
                .await
                .unwrap();
        }
        let report = migrate_meta(&format!("sled:{}", path.display()), &url)
            .await
            .unwrap();
        assert_eq!(
            report,
            MigrateReport {
                uploads: 2,
                tombstones: 1,
                waiters: 1,
                destinations: 1,
                outbox: 1,
                event_debts: 1,
            }
        );
        let Some(Lookup::Live(rec)) = pg.get(&live).await.unwrap() else {
            panic!("upload not copied");
        };
        assert_eq!(rec.offset, 4);
        assert_eq!(rec.storage["parts"][0], "e1");
        assert_eq!(pg.expired(200, 10).await.unwrap(), vec![live.clone()]);
        assert_eq!(pg.get(&gone).await.unwrap(), Some(Lookup::Gone));
        assert_eq!(pg.concat_waiters(&part).await.unwrap(), vec![fin.clone()]);
        assert!(!pg.claim_destination("a/b.mp4", &gone).await.unwrap());
        assert_eq!(pg.pending_finish_hooks(10).await.unwrap(), vec![finished]);
        assert_eq!(
            pg.pending_event_debts(10).await.unwrap(),
            vec![debt("gone-post-terminate")]
        );
        // Repeating the copy is harmless.
        migrate_meta(&format!("sled:{}", path.display()), &url)
            .await
            .unwrap();
        assert!(matches!(
            migrate_meta("sled:/nonexistent/x", &url).await,
            Err(MetaError::Config(_))
        ));
    })
    .await;
}

#[test]
fn meta_urls() {
    let dir = std::path::Path::new("/d");
    assert_eq!(
        MetaUrl::parse(None, dir).unwrap(),
        MetaUrl::Sled("/d/meta".into())
    );
    assert_eq!(
        MetaUrl::parse(Some("sled:/x/y"), dir).unwrap(),
        MetaUrl::Sled("/x/y".into())
    );
    assert_eq!(
        MetaUrl::parse(Some("postgresql://u:p@h/db"), dir).unwrap(),
        MetaUrl::Postgres("postgresql://u:p@h/db".into())
    );
    let err = MetaUrl::parse(Some("mysql://u:secret@h/db"), dir).unwrap_err();
    assert!(!err.to_string().contains("secret"));
    assert!(MetaUrl::parse(Some("sled:"), dir).is_err());
}
