//! Worker tests against the real embedded backends on a temporary folder.

use std::path::PathBuf;
use std::time::Duration;

use beacon_core::backends::{BackendArgs, Backends};
use beacon_core::log::Log;
use beacon_proto::pipeline::v1::{
    AggregatorSnapshot, DeadLetter, EventBatch, LoggedEvent, RollupBatch,
};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::rollup::Counters;
use crate::{AggregatorArgs, run};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
/// 2026-03-01T10:00:00Z.
const T0: i64 = 1_772_359_200_000;
const MIN: i64 = 60_000;
const WAIT: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "beacon-aggregator-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn backends(dir: &TempDir) -> Backends {
    let args = BackendArgs {
        data_dir: dir.0.clone(),
        nats_url: None,
        partitions: Some(1),
        nats_replicas: 1,
        event_log_max_bytes: None,
        store_cache: 64 << 20,
        stall_after: beacon_core::observe::DEFAULT_STALL_AFTER,
        raw_store: None,
        cassandra: beacon_core::backends::CassandraArgs::default(),
        tls: Default::default(),
    };
    Backends::open(&args).await.expect("open backends")
}

fn args() -> AggregatorArgs {
    AggregatorArgs {
        flush_interval: Duration::from_millis(20),
        snapshot_interval: Duration::from_secs(3600),
        own_partitions: vec![],
        logic_version: crate::LOGIC_VERSION,
        restate_events_per_tick: 1_000_000,
        retention_every: std::time::Duration::from_secs(600),
        // The tests below read the rollups of the messages they append; the hold has tests of
        // its own.
        hold: Duration::ZERO,
    }
}

fn pv(id: &str, visitor: u64, ts: i64) -> LoggedEvent {
    LoggedEvent {
        tenant_id: "acme".into(),
        event_id: id.into(),
        name: "pageview".into(),
        timestamp_ms: ts,
        received_ms: ts,
        url: "https://acme.test/".into(),
        user_agent: CHROME.into(),
        country: "DE".into(),
        visitor,
        time_zone: "UTC".into(),
        ..LoggedEvent::default()
    }
}

async fn append(backends: &Backends, events: Vec<LoggedEvent>) -> u64 {
    let payload = Bytes::from(
        EventBatch {
            events,
            ..EventBatch::default()
        }
        .encode_to_vec(),
    );
    append_raw(backends, payload).await
}

async fn append_raw(backends: &Backends, payload: Bytes) -> u64 {
    let id = format!("test-{}", unique_id(&payload));
    backends
        .events
        .append(0, &id, payload)
        .await
        .expect("append")
}

/// A message id unique per payload and call.
fn unique_id(payload: &Bytes) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}",
        payload.len(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// Every rollup batch of partition 0 up to the one covering `seq`.
async fn rollups_until(log: &dyn Log, seq: u64) -> Vec<RollupBatch> {
    rollups_while(log, |out| {
        out.last()
            .is_none_or(|b| (b.last_event_seq, b.last_event_index) < (seq, u32::MAX))
    })
    .await
}

/// Rollup batches of partition 0, read in order while `more` says so of those read.
async fn rollups_while(log: &dyn Log, more: impl Fn(&[RollupBatch]) -> bool) -> Vec<RollupBatch> {
    let mut stream = log.subscribe(0, 0).await.expect("subscribe rollups");
    let mut out = Vec::new();
    while more(&out) {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("rollup in time")
            .expect("stream")
            .expect("message");
        out.push(RollupBatch::decode(msg.payload).expect("decode rollup"));
    }
    out
}

async fn dead_letters(log: &dyn Log, count: usize) -> Vec<DeadLetter> {
    let mut stream = log.subscribe(0, 0).await.expect("subscribe dead letters");
    let mut out = Vec::new();
    while out.len() < count {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("dead letter in time")
            .expect("stream")
            .expect("message");
        out.push(DeadLetter::decode(msg.payload).expect("decode dead letter"));
    }
    out
}

fn totals(batches: &[RollupBatch]) -> Counters {
    let mut sum = Counters::default();
    let rows = batches
        .iter()
        .flat_map(|b| &b.tenants)
        .flat_map(|t| &t.rows);
    for r in rows.filter(|r| r.dimension == 0) {
        sum.pageviews += r.pageviews;
        sum.events += r.events;
        sum.visits += r.visits;
        sum.bounces += r.bounces;
        sum.duration_ms += r.duration_ms;
        sum.bot_events += r.bot_events;
    }
    sum
}

/// Runs the aggregator until the rollup log covers `seq`, then shuts it down gracefully.
async fn run_until(backends: &Backends, seq: u64) -> Vec<RollupBatch> {
    let token = CancellationToken::new();
    let task = tokio::spawn(run(args(), backends.clone(), token.clone()));
    let batches = rollups_until(backends.rollups.as_ref(), seq).await;
    token.cancel();
    task.await.expect("join").expect("aggregator");
    batches
}

fn first(b: &RollupBatch) -> (u64, u32) {
    (b.first_event_seq, b.first_event_index)
}

fn last(b: &RollupBatch) -> (u64, u32) {
    (b.last_event_seq, b.last_event_index)
}

fn assert_contiguous(batches: &[RollupBatch]) {
    for pair in batches.windows(2) {
        assert!(
            first(&pair[1]) > last(&pair[0]),
            "overlapping batches {:?} and {:?}",
            (first(&pair[0]), last(&pair[0])),
            (first(&pair[1]), last(&pair[1]))
        );
    }
    for b in batches {
        assert!(first(b) <= last(b));
        assert_eq!(b.logic_version, crate::LOGIC_VERSION);
        assert!(
            b.encoded_len() <= 512 * 1024,
            "a rollup of {} bytes",
            b.encoded_len()
        );
    }
}

/// `n` pageviews of distinct visitors with 900-character non-ASCII paths, referrers and UTM
/// values, all unique.
fn hostile(n: usize) -> Vec<LoggedEvent> {
    let long = "ü".repeat(900);
    (0..n)
        .map(|i| {
            let mut e = pv(&format!("h{i}"), 1000 + i as u64, T0 + i as i64);
            e.url = format!(
                "https://acme.test/{i}{long}?utm_source={i}{long}&utm_medium={i}{long}&utm_campaign={i}{long}"
            );
            e.referrer = format!("https://ref{i}.example/{long}");
            e
        })
        .collect()
}

/// Pageviews per page over `batches`.
fn pages(batches: &[RollupBatch]) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    let rows = batches
        .iter()
        .flat_map(|b| &b.tenants)
        .flat_map(|t| &t.rows);
    for r in rows.filter(|r| r.dimension == beacon_proto::insights::v1::Dimension::Page as i32) {
        *out.entry(r.value.clone()).or_default() += r.pageviews;
    }
    out
}

#[tokio::test]
async fn a_message_of_huge_values_is_split_into_bounded_rollups() {
    let dir = TempDir::new("huge");
    let backends = backends(&dir).await;
    let last = append(&backends, hostile(250)).await;
    let batches = run_until(&backends, last).await;
    assert!(batches.len() >= 3, "{} rollups", batches.len());
    assert!(
        batches[..batches.len() - 1]
            .iter()
            .any(|b| b.last_event_seq == last && b.last_event_index < u32::MAX),
        "a rollup ends inside the message"
    );
    assert_contiguous(&batches);
    let c = totals(&batches);
    assert_eq!((c.pageviews, c.visits, c.bounces), (250, 250, 250));
    assert_eq!(pages(&batches).len(), 250);
}

#[tokio::test]
async fn a_crash_between_two_rollups_of_one_message_counts_once() {
    let events = hostile(250);
    let dir = TempDir::new("split-reference");
    let reference = backends(&dir).await;
    let last = append(&reference, events.clone()).await;
    let full = run_until(&reference, last).await;
    assert!(full.len() >= 3, "{} rollups", full.len());

    // The state a crash leaves: the message, and only the first rollups of it, no snapshot.
    let dir = TempDir::new("split-crashed");
    let crashed = backends(&dir).await;
    assert_eq!(append(&crashed, events).await, last);
    let kept = full.len() / 2;
    for (n, batch) in full[..kept].iter().enumerate() {
        crashed
            .rollups
            .append(0, &format!("kept-{n}"), Bytes::from(batch.encode_to_vec()))
            .await
            .expect("append rollup");
    }
    let resumed = run_until(&crashed, last).await;
    assert_contiguous(&resumed);
    assert_eq!(totals(&resumed), totals(&full));
    assert_eq!(pages(&resumed), pages(&full));
}

#[tokio::test]
async fn counts_once_parks_failures_and_resumes_after_restart() {
    let dir = TempDir::new("restart");
    let backends = backends(&dir).await;
    append(&backends, vec![pv("a", 1, T0), pv("b", 2, T0 + MIN)]).await;
    // A client retry of "a" (another message): stored once, counted once.
    append(&backends, vec![pv("a", 1, T0), pv("c", 1, T0 + 2 * MIN)]).await;
    append_raw(&backends, Bytes::from_static(b"\xff\xff not protobuf")).await;
    let mut bad_zone = pv("d", 3, T0);
    bad_zone.time_zone = "Mars/Olympus".into();
    let last = append(&backends, vec![bad_zone, pv("e", 3, T0 + 3 * MIN)]).await;

    let batches = run_until(&backends, last).await;
    assert_contiguous(&batches);
    let c = totals(&batches);
    assert_eq!((c.visits, c.pageviews, c.events, c.bounces), (3, 4, 4, 2));
    assert_eq!(c.duration_ms, 2 * MIN);
    let letters = dead_letters(backends.dead_letters.as_ref(), 2).await;
    assert!(letters[0].reason.contains("undecodable"), "{letters:?}");
    assert_eq!((letters[1].seq, letters[1].index), (last, 0));
    assert!(letters[1].reason.contains("Mars/Olympus"));

    // Restart: only the new message counts; the session of visitor 1 continues.
    let next = append(&backends, vec![pv("f", 1, T0 + 4 * MIN)]).await;
    let all = run_until(&backends, next).await;
    assert_contiguous(&all);
    let added = totals(&all[batches.len()..]);
    assert_eq!(
        (
            added.visits,
            added.pageviews,
            added.bounces,
            added.duration_ms
        ),
        (0, 1, 0, 2 * MIN)
    );
}

#[tokio::test]
async fn crash_before_snapshot_replays_silently() {
    let dir = TempDir::new("crash");
    let backends = backends(&dir).await;
    let first = append(&backends, vec![pv("a", 1, T0), pv("b", 2, T0)]).await;
    let token = CancellationToken::new();
    let task = tokio::spawn(run(args(), backends.clone(), token.clone()));
    let before = rollups_until(backends.rollups.as_ref(), first).await;
    // A crash: no final flush, no snapshot.
    task.abort();
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        backends
            .snapshots
            .load("aggregator-p0")
            .await
            .expect("load")
            .is_none()
    );

    let next = append(&backends, vec![pv("c", 1, T0 + 5 * MIN)]).await;
    let all = run_until(&backends, next).await;
    assert_contiguous(&all);
    let added = totals(&all[before.len()..]);
    // The session of visitor 1 was rebuilt by the silent replay: no new visit, no longer a bounce.
    assert_eq!(
        (
            added.visits,
            added.pageviews,
            added.bounces,
            added.duration_ms
        ),
        (0, 1, -1, 5 * MIN)
    );
    let c = totals(&all);
    assert_eq!((c.visits, c.pageviews, c.bounces), (2, 3, 1));
    assert!(
        backends
            .snapshots
            .load("aggregator-p0")
            .await
            .expect("load")
            .is_some(),
        "saved on shutdown"
    );
}

#[tokio::test]
async fn a_worker_another_published_beside_neither_snapshots_nor_trims() {
    let dir = TempDir::new("fenced-snapshot");
    let backends = backends(&dir).await;
    let seq = append(&backends, vec![pv("a", 1, T0)]).await;
    let lane = beacon_core::consumer::Lane::new(
        "aggregator",
        0,
        backends.dead_letters.clone(),
        CancellationToken::new(),
    );
    let raw = backends.open_raw_store().await.expect("raw store");
    let settings = super::Settings {
        flush_interval: Duration::from_millis(20),
        snapshot_interval: Duration::from_secs(3600),
        logic_version: crate::LOGIC_VERSION,
        restate_events_per_tick: 1_000,
        retention_every: Duration::from_secs(600),
        hold: Duration::ZERO,
    };
    let Ok(mut worker) = super::Worker::start(lane, settings, backends.clone(), raw).await else {
        panic!("the worker did not start");
    };
    // The partition's new owner publishes while this worker is paused.
    let theirs = RollupBatch {
        last_event_seq: seq,
        last_event_index: u32::MAX,
        ..RollupBatch::default()
    };
    backends
        .rollups
        .append(0, "", Bytes::from(theirs.encode_to_vec()))
        .await
        .expect("append");
    worker.processed = super::Position::end_of(seq);
    let err = worker.save_snapshot().await.expect_err("fenced");
    assert!(
        matches!(err, crate::AggregatorError::Fenced { .. }),
        "{err}"
    );
    assert!(
        backends
            .snapshots
            .load("aggregator-p0")
            .await
            .expect("load")
            .is_none(),
        "no snapshot replaces the new owner's"
    );
    assert_eq!(
        backends.events.floor(0).await.expect("floor"),
        0,
        "not trimmed"
    );
}

/// A visitor's later event read first, the earlier one a second later (a beacon overtaking the
/// batch that holds the visitor's first pageview); then a restart while both are held. Returns
/// the totals, the entry pages' visits, and the late-event jobs made.
async fn overtaken(hold: Duration) -> (Counters, Vec<(String, i64)>, usize) {
    let dir = TempDir::new("hold");
    let backends = backends(&dir).await;
    let received = beacon_core::time::now_ms();
    let mut later = pv("b", 7, T0 + MIN);
    later.url = "https://acme.test/pricing".into();
    later.received_ms = received;
    let mut earlier = pv("a", 7, T0);
    earlier.url = "https://acme.test/landing".into();
    earlier.received_ms = received + 1_000;
    append(&backends, vec![later]).await;
    let args = AggregatorArgs { hold, ..args() };
    // A first run stops (snapshot saved) with the later event held, or counted without a hold.
    let token = CancellationToken::new();
    let task = tokio::spawn(run(args.clone(), backends.clone(), token.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    token.cancel();
    task.await.expect("join").expect("aggregator");
    let snapshot = backends
        .snapshots
        .load("aggregator-p0")
        .await
        .expect("load");
    let snapshot = AggregatorSnapshot::decode(snapshot.expect("saved")).expect("decode");
    assert_eq!(snapshot.held.len(), usize::from(!hold.is_zero()));
    append(&backends, vec![earlier]).await;
    let token = CancellationToken::new();
    let task = tokio::spawn(run(args, backends.clone(), token.clone()));
    let batches = rollups_while(backends.rollups.as_ref(), |b| totals(b).pageviews < 2).await;
    // Late-event jobs are looked for every 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    token.cancel();
    task.await.expect("join").expect("aggregator");
    let entries = batches
        .iter()
        .flat_map(|b| &b.tenants)
        .flat_map(|t| &t.rows)
        .filter(|r| r.dimension == beacon_proto::insights::v1::Dimension::EntryPage as i32)
        .map(|r| (r.value.clone(), r.visits))
        .filter(|(_, visits)| *visits != 0)
        .collect();
    let jobs = beacon_core::jobs::Jobs::new(backends.snapshots.clone(), 1)
        .of_partition(0)
        .await
        .expect("jobs");
    (totals(&batches), entries, jobs.len())
}

#[tokio::test]
async fn events_out_of_order_within_the_hold_are_sessionized_in_time_order() {
    let (held, entries, jobs) = overtaken(Duration::from_secs(2)).await;
    assert_eq!(
        (held.pageviews, held.visits, held.bounces, held.duration_ms),
        (2, 1, 0, MIN)
    );
    assert_eq!(entries, [("/landing".to_owned(), 1)]);
    assert_eq!(jobs, 0, "no day to recompute");
    // Without the hold the later event starts the visit, and the day is recomputed.
    let (_, entries, jobs) = overtaken(Duration::ZERO).await;
    assert_eq!(entries, [("/pricing".to_owned(), 1)]);
    assert_eq!(jobs, 1, "a late-event job");
}

/// Pageviews of `path` in the rollups read, live rows only or every generation's.
fn page_views(batches: &[RollupBatch], path: &str, live_only: bool) -> i64 {
    batches
        .iter()
        .flat_map(|b| &b.tenants)
        .filter(|t| !live_only || t.generation == 0)
        .flat_map(|t| &t.rows)
        .filter(|r| r.dimension == beacon_proto::insights::v1::Dimension::Page as i32)
        .filter(|r| r.value == path)
        .map(|r| r.pageviews)
        .sum()
}

#[tokio::test]
async fn a_deletion_drops_the_held_events_it_selects() {
    use beacon_core::jobs::{JobSpec, Jobs};
    use beacon_proto::pipeline::v1::{DeleteFilter, RestatementKind, RestatementState};
    let dir = TempDir::new("hold-delete");
    let backends = backends(&dir).await;
    let received = beacon_core::time::now_ms();
    let held = |id: &str, visitor: u64, path: &str| LoggedEvent {
        url: format!("https://acme.test{path}"),
        received_ms: received,
        ..pv(id, visitor, T0)
    };
    append(
        &backends,
        vec![held("s", 1, "/secret"), held("p", 2, "/public")],
    )
    .await;
    let args = AggregatorArgs {
        hold: Duration::from_secs(8),
        ..args()
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(run(args, backends.clone(), token.clone()));
    // Both events are read and held when the deletion is asked for.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jobs = Jobs::new(backends.snapshots.clone(), 1);
    let spec = JobSpec {
        kind: RestatementKind::Delete,
        delete: Some(DeleteFilter {
            page: "/secret".into(),
            ..DeleteFilter::default()
        }),
        ..JobSpec::reprocess("2026-03-01", "2026-03-01")
    };
    let job = jobs.create("acme", spec, received).await.expect("job");
    let batches = rollups_while(backends.rollups.as_ref(), |b| {
        page_views(b, "/public", true) < 1
    })
    .await;
    let done = tokio::time::timeout(WAIT, async {
        loop {
            let found = jobs.get(&job.id).await.expect("get").expect("the job");
            if found.state() == RestatementState::Done {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the deletion done in time");
    token.cancel();
    task.await.expect("join").expect("aggregator");
    assert_eq!(done.deleted, 1);
    assert_eq!(done.held.len(), 1, "the public event was held at the cut");
    assert_eq!(
        page_views(&batches, "/secret", false),
        0,
        "a deleted event counted"
    );
}
