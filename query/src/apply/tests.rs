use std::path::Path;
use std::time::{Duration, Instant};

use beacon_proto::pipeline::v1::DeadLetter;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use beacon_core::log::embedded::EmbeddedLog;
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{RollupBatch, TenantRollup};
use jiff::civil::Date;

use super::*;
use crate::shard::{DuckShardStore, GroupBy, ShardQuery, ValidRollup};
use crate::testing::{TempDir, hit, rollup};

fn batch(tenants: Vec<TenantRollup>) -> Bytes {
    Bytes::from(
        RollupBatch {
            partition: 0,
            first_event_seq: 1,
            last_event_seq: 1,
            logic_version: 1,
            tenants,
            ..RollupBatch::default()
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
    let query = ShardQuery::new(0, day, day, GroupBy::TOTAL);
    let sums = store.query(tenant, query).await.expect("query");
    sums.groups.first().map_or(0, |s| s.pageviews)
}

struct Setup {
    rollups: Arc<dyn Log>,
    dead_letters: Arc<dyn Log>,
    store: DuckShardStore,
    marks: Arc<dyn SnapshotStore>,
}

fn setup(dir: &Path) -> Setup {
    Setup {
        rollups: Arc::new(EmbeddedLog::open(&dir.join("rollups.redb")).expect("rollups")),
        dead_letters: Arc::new(EmbeddedLog::open(&dir.join("dead.redb")).expect("dead letters")),
        store: DuckShardStore::new(dir.join("shards"), 1, 64_000_000).expect("store"),
        marks: Arc::new(
            beacon_core::meta::embedded::EmbeddedMeta::open(&dir.join("meta.redb")).expect("meta"),
        ),
    }
}

/// Runs a consumer of partition 0 until its shard has applied `seq`.
async fn consume_until(s: &Setup, seq: u64) {
    let shutdown = CancellationToken::new();
    let lane = Lane::new("query", 0, s.dead_letters.clone(), shutdown.clone());
    let consumer = Consumer::new(
        lane,
        s.rollups.clone(),
        Arc::new(s.store.clone()),
        s.marks.clone(),
        "query",
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
    let mut parked = None;
    for _ in 0..2 {
        let message = letters.next().await.expect("letter").expect("letter");
        let letter = DeadLetter::decode(message.payload).expect("dead letter");
        reasons.push((letter.seq, letter.index, letter.reason));
        parked = Some(letter.payload);
    }
    // The invalid part is parked as it came.
    let part = TenantRollup::decode(parked.expect("parked").as_slice()).expect("the parked part");
    assert_eq!(
        (part.tenant_id.as_str(), part.rows[0].local_date.as_str()),
        ("c", "yesterday")
    );
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

    // The log was trimmed below what this (only) replica applied, never past it.
    let floor = s.rollups.floor(0).await.expect("floor");
    assert!((1..=4).contains(&floor), "floor {floor}");
    let newest = s.rollups.last(0).await.expect("last").map(|m| m.seq);
    assert_eq!(newest, Some(4), "the newest rollup stays");
}

/// The real store, except that any run holding the tenant "poison" fails to apply, and the
/// poison part fails alone too.
struct Poisoned(DuckShardStore);

fn poisoned(part: &ValidRollup) -> bool {
    part.tenant_id() == "poison"
}

#[async_trait::async_trait]
impl ShardStore for Poisoned {
    fn validate(&self, partition: u32, rollup: TenantRollup) -> Result<ValidRollup, Box<Refused>> {
        self.0.validate(partition, rollup)
    }

    async fn apply(
        &self,
        partition: u32,
        messages: Arc<[RollupMessage]>,
    ) -> Result<crate::Applied, QueryError> {
        if messages.iter().flat_map(|m| &m.tenants).any(poisoned) {
            return Err(QueryError::invalid("poison"));
        }
        self.0.apply(partition, messages).await
    }

    async fn probe(&self, partition: u32, part: ValidRollup) -> Result<(), QueryError> {
        if poisoned(&part) {
            return Err(QueryError::invalid("poison alone"));
        }
        self.0.probe(partition, part).await
    }

    async fn watermark(&self, partition: u32) -> Result<Option<u64>, QueryError> {
        self.0.watermark(partition).await
    }

    async fn position(&self, partition: u32) -> Result<crate::shard::ShardPosition, QueryError> {
        self.0.position(partition).await
    }

    async fn adopt_log(
        &self,
        partition: u32,
        identity: String,
        watermark: Option<u64>,
    ) -> Result<(), QueryError> {
        self.0.adopt_log(partition, identity, watermark).await
    }

    async fn query(
        &self,
        tenant_id: &str,
        query: ShardQuery,
    ) -> Result<crate::shard::Answer, QueryError> {
        self.0.query(tenant_id, query).await
    }

    async fn scan(
        &self,
        tenant_id: &str,
        query: crate::shard::ScanQuery,
    ) -> Result<crate::shard::Answer, QueryError> {
        self.0.scan(tenant_id, query).await
    }

    async fn recent(
        &self,
        tenant_id: &str,
        query: crate::shard::RecentQuery,
    ) -> Result<crate::shard::Recent, QueryError> {
        self.0.recent(tenant_id, query).await
    }

    async fn versions(
        &self,
        partition: u32,
    ) -> Result<Vec<beacon_proto::pipeline::v1::TenantVersion>, QueryError> {
        self.0.versions(partition).await
    }
}

#[tokio::test]
async fn a_failing_run_is_split_and_only_the_failing_part_parked() {
    let dir = TempDir::new("bisect");
    let s = setup(dir.path());
    for (n, tenants) in [
        vec![visit("a", 1)],
        vec![visit("b", 2), visit("poison", 3), visit("a", 4)],
        vec![visit("b", 5)],
    ]
    .into_iter()
    .enumerate()
    {
        s.rollups
            .append(0, &format!("m{n}"), batch(tenants))
            .await
            .expect("append");
    }
    let shutdown = CancellationToken::new();
    let lane = Lane::new("query", 0, s.dead_letters.clone(), shutdown.clone());
    let store = Arc::new(Poisoned(s.store.clone()));
    let consumer = Consumer::new(lane, s.rollups.clone(), store, s.marks.clone(), "query");
    let task = tokio::spawn(consumer.run());
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.store.watermark(0).await.expect("watermark") < Some(3) {
        assert!(Instant::now() < deadline, "the consumer stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.expect("consumer task");
    assert_eq!(pageviews(&s.store, "a").await, 2);
    assert_eq!(pageviews(&s.store, "b").await, 2);
    assert_eq!(pageviews(&s.store, "poison").await, 0);
    let letters = s.dead_letters.read(0, 0, 10).await.expect("read");
    assert_eq!(letters.len(), 1);
    let letter = DeadLetter::decode(letters[0].payload.clone()).expect("dead letter");
    assert_eq!((letter.seq, letter.index), (2, 1));
    assert_eq!(letter.cause, "unappliable_rollup");
    assert_eq!(letter.tenant_id, "poison");
    let part = TenantRollup::decode(letter.payload.as_slice()).expect("the part alone");
    assert_eq!(part.tenant_id, "poison");
}

fn live(tenants: Vec<TenantRollup>, first: (u64, u32), last: (u64, u32)) -> Bytes {
    Bytes::from(
        RollupBatch {
            partition: 0,
            first_event_seq: first.0,
            first_event_index: first.1,
            last_event_seq: last.0,
            last_event_index: last.1,
            logic_version: 3,
            tenants,
            ..RollupBatch::default()
        }
        .encode_to_vec(),
    )
}

#[tokio::test]
async fn a_live_batch_that_overlaps_what_was_applied_is_parked_also_after_a_restart() {
    let dir = TempDir::new("continuity");
    let s = setup(dir.path());
    let batches = [
        live(vec![visit("a", 1)], (1, 0), (2, 4)),
        // Overlaps the first (a second publisher, or a copy after the duplicate window).
        live(vec![visit("a", 2)], (2, 3), (3, 0)),
        live(vec![visit("a", 3)], (2, 5), (4, 0)),
    ];
    for (n, payload) in batches.into_iter().enumerate() {
        s.rollups
            .append(0, &format!("m{n}"), payload)
            .await
            .expect("append");
    }
    consume_until(&s, 3).await;
    assert_eq!(pageviews(&s.store, "a").await, 2);

    // A restarted consumer knows what was covered from the shard.
    s.rollups
        .append(0, "m3", live(vec![visit("a", 4)], (4, 0), (5, 0)))
        .await
        .expect("append");
    s.rollups
        .append(0, "m4", live(vec![visit("a", 5)], (5, 1), (6, 0)))
        .await
        .expect("append");
    consume_until(&s, 5).await;
    assert_eq!(pageviews(&s.store, "a").await, 3);

    let letters = s.dead_letters.read(0, 0, 10).await.expect("read");
    let parked: Vec<(u64, String)> = letters
        .iter()
        .map(|m| DeadLetter::decode(m.payload.clone()).expect("dead letter"))
        .map(|letter| (letter.seq, letter.cause))
        .collect();
    assert_eq!(
        parked,
        vec![
            (2, "overlapping_batch".to_owned()),
            (4, "overlapping_batch".to_owned())
        ]
    );
}

/// A live batch on the event log `log`.
fn live_on(log: &str, tenants: Vec<TenantRollup>, first: (u64, u32), last: (u64, u32)) -> Bytes {
    let mut batch = RollupBatch::decode(live(tenants, first, last)).expect("decode");
    batch.event_log = log.to_owned();
    Bytes::from(batch.encode_to_vec())
}

#[tokio::test]
async fn batches_on_an_accepted_new_event_log_start_a_new_covered_range() {
    let dir = TempDir::new("new-event-log");
    let s = setup(dir.path());
    let batches = [
        live_on("events@1", vec![visit("a", 1)], (1, 0), (9, 0)),
        // The same log, overlapping: parked.
        live_on("events@1", vec![visit("a", 2)], (5, 0), (10, 0)),
        // An event log created anew and accepted: its positions start again.
        live_on("events@2", vec![visit("a", 3)], (1, 0), (2, 0)),
    ];
    for (n, payload) in batches.into_iter().enumerate() {
        s.rollups
            .append(0, &format!("m{n}"), payload)
            .await
            .expect("append");
    }
    consume_until(&s, 3).await;
    assert_eq!(pageviews(&s.store, "a").await, 2);

    // After a restart the shard knows the new log's range: an overlap on it is parked.
    s.rollups
        .append(
            0,
            "m3",
            live_on("events@2", vec![visit("a", 4)], (2, 0), (3, 0)),
        )
        .await
        .expect("append");
    s.rollups
        .append(
            0,
            "m4",
            live_on("events@2", vec![visit("a", 5)], (3, 1), (4, 0)),
        )
        .await
        .expect("append");
    consume_until(&s, 5).await;
    assert_eq!(pageviews(&s.store, "a").await, 3);
    let parked: Vec<u64> = s
        .dead_letters
        .read(0, 0, 10)
        .await
        .expect("read")
        .iter()
        .map(|m| {
            DeadLetter::decode(m.payload.clone())
                .expect("dead letter")
                .seq
        })
        .collect();
    assert_eq!(parked, [2, 4]);
}
