//! The behaviour every tenant, salt and snapshot store must show, run against the embedded
//! stores and against JetStream.

use std::sync::Arc;

use bytes::Bytes;

use super::embedded::EmbeddedMeta;
use super::nats::NatsMeta;
use super::{KeyGrant, KeyKind, SaltStore, SnapshotStore, Tenant, TenantStore};
use crate::Error;
use crate::auth::key_hash;
use beacon_testkit::{NatsServer, TempDir};

/// The three stores of one backend.
#[derive(Clone)]
struct Stores {
    tenants: Arc<dyn TenantStore>,
    salts: Arc<dyn SaltStore>,
    snapshots: Arc<dyn SnapshotStore>,
}

impl<T: TenantStore + SaltStore + SnapshotStore> From<Arc<T>> for Stores {
    fn from(meta: Arc<T>) -> Self {
        Self {
            tenants: meta.clone(),
            salts: meta.clone(),
            snapshots: meta,
        }
    }
}

fn tenant(id: &str, name: &str) -> Tenant {
    Tenant {
        id: id.to_owned(),
        name: name.to_owned(),
        time_zone: "Europe/Berlin".to_owned(),
        raw_retention_days: 0,
        goals: Vec::new(),
        currency: String::new(),
        domains: Vec::new(),
        site_key: String::new(),
    }
}

fn grant(tenant_id: &str, kind: KeyKind) -> KeyGrant {
    KeyGrant {
        tenant_id: tenant_id.to_owned(),
        kind,
        created_ms: 1_772_359_200_000,
        expires_ms: None,
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: &str, len: usize) -> Bytes {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    Bytes::from(bytes)
}

/// Tenants are created once, listed by id, and keys map to their grants.
async fn tenants_and_keys(stores: Stores) {
    let store = &*stores.tenants;
    assert!(store.tenants().await.expect("list").is_empty());
    let zeta = tenant("zeta", "Zeta GmbH");
    let acme = tenant("acme", "Acme Inc.");
    store.create_tenant(&zeta).await.expect("create zeta");
    store.create_tenant(&acme).await.expect("create acme");
    let again = store.create_tenant(&tenant("acme", "Another Acme")).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");

    assert_eq!(store.tenant("acme").await.expect("get"), Some(acme.clone()));
    assert_eq!(store.tenant("nobody").await.expect("get"), None);
    let moved = Tenant {
        time_zone: "Asia/Kathmandu".into(),
        ..zeta.clone()
    };
    store.update_tenant(&moved).await.expect("update zeta");
    assert_eq!(store.tenant("zeta").await.expect("get"), Some(moved));
    store.update_tenant(&zeta).await.expect("move zeta back");
    let gone = tenant("gone", "Gone Ltd");
    store.create_tenant(&gone).await.expect("create gone");
    store.delete_tenant("gone").await.expect("delete gone");
    assert_eq!(store.tenant("gone").await.expect("get"), None);
    store
        .delete_tenant("gone")
        .await
        .expect("deleting again is nothing");
    let missing = store.update_tenant(&tenant("nobody", "No One")).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    let ingest = key_hash("bk_ingest_0123");
    let read = key_hash("bk_read_4567");
    store
        .put_key(&ingest, &grant("acme", KeyKind::Ingest))
        .await
        .expect("put key");
    store
        .put_key(&read, &grant("zeta", KeyKind::Read))
        .await
        .expect("put key");
    assert_eq!(
        store.key(&ingest).await.expect("key"),
        Some(grant("acme", KeyKind::Ingest))
    );
    assert_eq!(
        store.key(&read).await.expect("key"),
        Some(grant("zeta", KeyKind::Read))
    );
    assert_eq!(
        store.key(&key_hash("bk_read_unknown")).await.expect("key"),
        None
    );
    store
        .put_key(&ingest, &grant("acme", KeyKind::Read))
        .await
        .expect("replace key");
    assert_eq!(
        store.key(&ingest).await.expect("key"),
        Some(grant("acme", KeyKind::Read))
    );

    assert_eq!(
        store.tenants().await.expect("list"),
        vec![acme, zeta],
        "keys are not tenants"
    );
    let mut keys = store.keys().await.expect("keys");
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (ingest.clone(), grant("acme", KeyKind::Read)),
        (read.clone(), grant("zeta", KeyKind::Read)),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(keys, want);
}

/// Concurrent first calls for a day agree on one of the candidates.
async fn salt_race(stores: Stores) {
    let day = "2024-05-01";
    let calls = (0..8u8).map(|i| {
        let salts = stores.salts.clone();
        tokio::spawn(async move { salts.salt(day, [i; 32]).await })
    });
    let results: Vec<[u8; 32]> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|result| result.expect("salt task").expect("salt"))
        .collect();
    let winner = results[0];
    assert!(results.iter().all(|salt| *salt == winner), "{results:?}");
    assert!(
        (0..8u8).any(|i| winner == [i; 32]),
        "the winner is one of the candidates"
    );
    assert_eq!(
        stores.salts.salt(day, [99; 32]).await.expect("salt"),
        winner
    );
    assert_eq!(
        stores
            .salts
            .salt("2024-05-02", [42; 32])
            .await
            .expect("salt"),
        [42; 32]
    );
}

/// Snapshots are replaced whole, may be empty or larger than a NATS message.
async fn snapshots(stores: Stores) {
    let store = &*stores.snapshots;
    assert_eq!(store.load("partition-0").await.expect("load"), None);
    let small = Bytes::from_static(b"first snapshot");
    store
        .save("partition-0", small.clone())
        .await
        .expect("save");
    assert_eq!(store.load("partition-0").await.expect("load"), Some(small));

    let large = noise("large snapshot", 3 << 20);
    store
        .save("partition-0", large.clone())
        .await
        .expect("save large");
    assert_eq!(
        store.load("partition-0").await.expect("load"),
        Some(large.clone())
    );

    store
        .save("partition-1", Bytes::new())
        .await
        .expect("save empty");
    assert_eq!(
        store.load("partition-1").await.expect("load"),
        Some(Bytes::new())
    );
    assert_eq!(store.load("partition-0").await.expect("load"), Some(large));

    let smaller = noise("smaller", 1000);
    store
        .save("partition-0", smaller.clone())
        .await
        .expect("save smaller");
    assert_eq!(
        store.load("partition-0").await.expect("load"),
        Some(smaller)
    );
}

async fn snapshot_listing(stores: Stores) {
    let store = &*stores.snapshots;
    for name in ["mark.p1.b", "mark.p1.a", "mark.p10.a", "other"] {
        store
            .save(name, Bytes::from(name.to_owned()))
            .await
            .expect("save");
    }
    let listed = store.list("mark.p1.").await.expect("list");
    let names: Vec<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["mark.p1.a", "mark.p1.b"]);
    assert_eq!(listed[0].1, Bytes::from_static(b"mark.p1.a"));
    assert!(store.list("none.").await.expect("list").is_empty());
}

/// Writes state that must survive a restart.
async fn write_durable(stores: &Stores) -> [u8; 32] {
    stores
        .tenants
        .create_tenant(&tenant("acme", "Acme"))
        .await
        .expect("create");
    stores
        .tenants
        .put_key("abc", &grant("acme", KeyKind::Ingest))
        .await
        .expect("put key");
    stores
        .snapshots
        .save("partition-3", noise("durable", 100_000))
        .await
        .expect("save");
    stores
        .salts
        .salt("2024-05-01", [7; 32])
        .await
        .expect("salt")
}

async fn verify_durable(stores: &Stores, salt: [u8; 32]) {
    assert_eq!(
        stores.tenants.tenants().await.expect("list"),
        vec![tenant("acme", "Acme")]
    );
    assert_eq!(
        stores.tenants.key("abc").await.expect("key"),
        Some(grant("acme", KeyKind::Ingest))
    );
    let snapshot = stores.snapshots.load("partition-3").await.expect("load");
    assert_eq!(snapshot, Some(noise("durable", 100_000)));
    assert_eq!(
        stores
            .salts
            .salt("2024-05-01", [8; 32])
            .await
            .expect("salt"),
        salt
    );
}

fn temp_dir() -> TempDir {
    TempDir::new("beacon-meta-test").expect("temp dir")
}

fn open_embedded(dir: &TempDir) -> Stores {
    let meta = EmbeddedMeta::open(&dir.path().join("meta.redb")).expect("open embedded meta");
    Stores::from(Arc::new(meta))
}

fn start_nats() -> NatsServer {
    NatsServer::start().unwrap_or_else(|err| {
        panic!("the NATS half of this test needs a nats-server binary: {err}")
    })
}

async fn open_nats(server: &NatsServer) -> Stores {
    let client = crate::backends::connect_nats(&server.url())
        .await
        .expect("connect to nats-server");
    let js = async_nats::jetstream::new(client);
    Stores::from(Arc::new(
        NatsMeta::open(js, 1).await.expect("open NATS meta"),
    ))
}

/// One test per body and backend.
macro_rules! meta_conformance {
    ($($body:ident),* $(,)?) => {
        mod embedded_meta {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let dir = super::temp_dir();
                    super::$body(super::open_embedded(&dir)).await;
                }
            )*
        }

        mod nats_meta {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let server = super::start_nats();
                    super::$body(super::open_nats(&server).await).await;
                }
            )*
        }
    };
}

meta_conformance!(tenants_and_keys, salt_race, snapshots, snapshot_listing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_meta_survives_reopen() {
    let dir = temp_dir();
    let stores = open_embedded(&dir);
    let salt = write_durable(&stores).await;
    drop(stores);
    verify_durable(&open_embedded(&dir), salt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_meta_survives_kill_and_restart() {
    let mut server = start_nats();
    let stores = open_nats(&server).await;
    let salt = write_durable(&stores).await;
    drop(stores);
    server.kill();
    server.restart().expect("restart nats-server");
    verify_durable(&open_nats(&server).await, salt).await;
}

/// A salt is kept while the two dates after it are requested (embedded; JetStream expires
/// them by age instead), and gone three dates after its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_salts_are_kept_two_dates_more() {
    let dir = temp_dir();
    let salts = open_embedded(&dir).salts;
    let salt = |day: &'static str, candidate: u8| {
        let salts = salts.clone();
        async move { salts.salt(day, [candidate; 32]).await.expect("salt")[0] }
    };
    assert_eq!(salt("2024-03-01", 1).await, 1);
    assert_eq!(salt("2024-03-02", 2).await, 2);
    assert_eq!(salt("2024-03-01", 9).await, 1, "yesterday's salt is kept");
    assert_eq!(salt("2024-03-03", 3).await, 3);
    assert_eq!(salt("2024-03-02", 8).await, 2, "yesterday's salt is kept");
    assert_eq!(
        salt("2024-03-01", 7).await,
        1,
        "kept while 2024-03-03 is in use"
    );
    assert_eq!(salt("2024-03-04", 4).await, 4);
    assert_eq!(
        salt("2024-03-02", 6).await,
        2,
        "kept while 2024-03-04 is in use"
    );
    assert_eq!(salt("2024-03-01", 5).await, 5, "deleted three dates later");
    let invalid = salts.salt("March 1st", [0; 32]).await;
    assert!(
        matches!(invalid, Err(Error::InvalidArgument(_))),
        "{invalid:?}"
    );
}
