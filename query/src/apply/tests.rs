use std::path::Path;
use std::time::Instant;

use beacon_core::log::embedded::EmbeddedLog;
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{RollupBatch, TenantRollup};
use jiff::civil::Date;

use super::*;
use crate::shard::{DuckShardStore, GroupBy, ShardQuery};
use crate::testing::{TempDir, hit, rollup};

fn batch(tenants: Vec<TenantRollup>) -> Bytes {
    Bytes::from(
        RollupBatch {
            partition: 0,
            first_event_seq: 1,
            last_event_seq: 1,
            logic_version: 1,
            tenants,
        }
        .encode_to_vec(),
    )
}

fn visit(tenant: &str, visitor: u64) -> TenantRollup {
    rollup(
        tenant,
        vec![hit(
            "2026-03-01T10:00:00Z",
            "UTC",
            Dimension::Unspecified,
            "",
            visitor,
        )],
    )
}

async fn pageviews(store: &DuckShardStore, tenant: &str) -> i64 {
    let day: Date = "2026-03-01".parse().expect("date");
    let query = ShardQuery {
        dimension: 0,
        start: day,
        end: day,
        group: GroupBy::Total,
        top: None,
    };
    let sums = store.query(tenant, query).await.expect("query");
    sums.first().map_or(0, |s| s.pageviews)
}

struct Setup {
    rollups: Arc<dyn Log>,
    dead_letters: Arc<dyn Log>,
    store: DuckShardStore,
}

fn setup(dir: &Path) -> Setup {
    Setup {
        rollups: Arc::new(EmbeddedLog::open(&dir.join("rollups.redb")).expect("rollups")),
        dead_letters: Arc::new(EmbeddedLog::open(&dir.join("dead.redb")).expect("dead letters")),
        store: DuckShardStore::new(dir.join("shards"), 1, "64MB").expect("store"),
    }
}

/// Runs a consumer of partition 0 until its shard has applied `seq`.
async fn consume_until(s: &Setup, seq: u64) {
    let shutdown = CancellationToken::new();
    let consumer = Consumer::new(
        0,
        s.rollups.clone(),
        s.dead_letters.clone(),
        Arc::new(s.store.clone()),
        shutdown.clone(),
    );
    let task = tokio::spawn(consumer.run());
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.store.watermark(0).await.expect("watermark") < Some(seq) {
        assert!(
            Instant::now() < deadline,
            "consumer did not reach seq {seq}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.expect("consumer task");
}

#[tokio::test]
async fn applies_in_order_parks_bad_input_and_replays_exactly_once() {
    let dir = TempDir::new("consumer");
    let s = setup(dir.path());
    s.rollups
        .append(0, "m1", batch(vec![visit("a", 1), visit("b", 2)]))
        .await
        .expect("append");
    s.rollups
        .append(0, "m2", Bytes::from_static(b"\xff\xff not protobuf"))
        .await
        .expect("append");
    let mut bad = visit("c", 3);
    bad.rows[0].local_date = "yesterday".into();
    s.rollups
        .append(0, "m3", batch(vec![bad, visit("a", 4)]))
        .await
        .expect("append");

    consume_until(&s, 3).await;
    assert_eq!(pageviews(&s.store, "a").await, 2);
    assert_eq!(pageviews(&s.store, "b").await, 1);
    assert_eq!(pageviews(&s.store, "c").await, 0);

    let mut letters = s.dead_letters.subscribe(0, 0).await.expect("subscribe");
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let message = letters.next().await.expect("letter").expect("letter");
        let letter = DeadLetter::decode(message.payload).expect("dead letter");
        reasons.push((letter.seq, letter.index, letter.reason));
    }
    assert_eq!((reasons[0].0, reasons[0].1), (2, 0));
    assert!(
        reasons[0].2.contains("undecodable RollupBatch"),
        "{}",
        reasons[0].2
    );
    assert_eq!((reasons[1].0, reasons[1].1), (3, 0));
    assert!(reasons[1].2.contains("\"yesterday\""), "{}", reasons[1].2);

    // A new consumer resumes after the shard's watermark: only the new message is applied.
    s.rollups
        .append(0, "m4", batch(vec![visit("b", 5)]))
        .await
        .expect("append");
    consume_until(&s, 4).await;
    assert_eq!(pageviews(&s.store, "a").await, 2);
    assert_eq!(pageviews(&s.store, "b").await, 2);
}
