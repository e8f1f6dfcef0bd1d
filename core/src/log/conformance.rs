//! The behaviour every [`Log`] must show, run against the embedded log and against JetStream.
//!
//! Each body takes the log and whether its sequences are contiguous per partition (the
//! embedded log's are; JetStream numbers the whole stream).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::embedded::EmbeddedLog;
use super::nats::NatsLog;
use super::{Log, LogMessage, LogStream};
use beacon_testkit::{NatsServer, TempDir};

/// Longest wait for a message that must arrive.
const WAIT: Duration = Duration::from_secs(20);
/// How long a stream is watched to show that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

type Appended = BTreeMap<u32, Vec<(u64, Bytes)>>;

async fn append(log: &dyn Log, partition: u32, msg_id: &str, payload: &str) -> u64 {
    log.append(partition, msg_id, Bytes::from(payload.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("appending {msg_id} to partition {partition}: {err}"))
}

async fn next_message(stream: &mut LogStream) -> LogMessage {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message within the wait")
        .expect("the stream does not end")
        .expect("the stream yields messages, not errors")
}

/// The first `count` messages of `partition` after `after`, then checks nothing else follows.
async fn read_exactly(
    log: &dyn Log,
    partition: u32,
    after: u64,
    count: usize,
) -> Vec<(u64, Bytes)> {
    let mut stream = log.subscribe(partition, after).await.expect("subscribe");
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let message = next_message(&mut stream).await;
        messages.push((message.seq, message.payload));
    }
    let extra = tokio::time::timeout(QUIET, stream.next()).await;
    assert!(
        extra.is_err(),
        "partition {partition} has more than {count} messages after {after}: {extra:?}"
    );
    messages
}

fn assert_sequences(partition: u32, messages: &[(u64, Bytes)], contiguous: bool) {
    let seqs: Vec<u64> = messages.iter().map(|(seq, _)| *seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "partition {partition} sequences are not increasing: {seqs:?}"
    );
    if contiguous {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "partition {partition} sequences are not 1, 2, 3, …"
        );
    }
}

/// Appends interleaved over partitions come back in order, per partition.
async fn ordering(log: Arc<dyn Log>, contiguous: bool) {
    let mut appended = Appended::new();
    for i in 0..60u32 {
        let partition = i % 3;
        let payload = format!("message {i}");
        let seq = append(&*log, partition, &format!("order-{i}"), &payload).await;
        appended
            .entry(partition)
            .or_default()
            .push((seq, Bytes::from(payload)));
    }
    for (&partition, messages) in &appended {
        assert_sequences(partition, messages, contiguous);
        let read = read_exactly(&*log, partition, 0, messages.len()).await;
        assert_eq!(
            &read, messages,
            "partition {partition} reads back in append order"
        );
    }
    assert_eq!(
        log.last(9).await.expect("last"),
        None,
        "untouched partition is empty"
    );
}

/// `last` is the newest message of its own partition.
async fn last(log: Arc<dyn Log>, _contiguous: bool) {
    assert_eq!(log.last(5).await.expect("last"), None);
    append(&*log, 5, "last-a", "a").await;
    let b = append(&*log, 5, "last-b", "b").await;
    append(&*log, 6, "last-c", "c").await;
    let expected = LogMessage {
        seq: b,
        payload: Bytes::from_static(b"b"),
        trace: Default::default(),
    };
    assert_eq!(log.last(5).await.expect("last"), Some(expected));
}

/// A subscription starts strictly after the given sequence.
async fn subscribe_from_middle(log: Arc<dyn Log>, _contiguous: bool) {
    let mut appended = Vec::new();
    for i in 0..10 {
        let payload = format!("middle {i}");
        let seq = append(&*log, 2, &format!("middle-{i}"), &payload).await;
        appended.push((seq, Bytes::from(payload)));
    }
    let read = read_exactly(&*log, 2, appended[4].0, 5).await;
    assert_eq!(read, appended[5..]);
    read_exactly(&*log, 2, appended[9].0, 0).await;
}

/// A caught-up subscription receives later appends.
async fn subscribe_waits(log: Arc<dyn Log>, _contiguous: bool) {
    let first = append(&*log, 4, "wait-0", "before").await;
    let mut stream = log.subscribe(4, first).await.expect("subscribe");
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 1..=3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                seqs.push(append(&*log, 4, &format!("wait-{i}"), &format!("later {i}")).await);
            }
            seqs
        })
    };
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next_message(&mut stream).await);
    }
    let seqs = writer.await.expect("writer task");
    let expected: Vec<LogMessage> = seqs
        .iter()
        .zip(1..)
        .map(|(&seq, i)| LogMessage {
            seq,
            payload: Bytes::from(format!("later {i}")),
            trace: Default::default(),
        })
        .collect();
    assert_eq!(received, expected);
}

/// A resend with the same `msg_id` inside the window is dropped and gets the first sequence.
async fn duplicates(log: Arc<dyn Log>, _contiguous: bool) {
    let first = append(&*log, 1, "dup-1", "original").await;
    assert_eq!(append(&*log, 1, "dup-1", "resend").await, first);
    let other = append(&*log, 1, "dup-2", "other").await;
    assert!(other > first);

    let resends = (0..10).map(|_| {
        let log = log.clone();
        tokio::spawn(async move { append(&*log, 1, "dup-3", "concurrent").await })
    });
    let seqs: HashSet<u64> = futures::future::join_all(resends)
        .await
        .into_iter()
        .map(|seq| seq.expect("resend task"))
        .collect();
    assert_eq!(
        seqs.len(),
        1,
        "concurrent resends of one msg_id get one sequence: {seqs:?}"
    );
    let third = seqs.into_iter().next().unwrap_or_default();

    let read = read_exactly(&*log, 1, 0, 3).await;
    let expected = vec![
        (first, Bytes::from_static(b"original")),
        (other, Bytes::from_static(b"other")),
        (third, Bytes::from_static(b"concurrent")),
    ];
    assert_eq!(read, expected);
}

/// 2,000 appends from 50 tasks are all stored exactly once, in sequence order.
async fn concurrent_appends(log: Arc<dyn Log>, contiguous: bool) {
    const TASKS: u32 = 50;
    const PER_TASK: u32 = 40;
    const PARTITIONS: u32 = 4;
    let tasks = (0..TASKS).map(|task| {
        let log = log.clone();
        tokio::spawn(async move {
            let mut appended = Vec::new();
            for i in 0..PER_TASK {
                let partition = (task + i) % PARTITIONS;
                let payload = format!("task {task} message {i}");
                let seq = append(&*log, partition, &format!("c-{task}-{i}"), &payload).await;
                appended.push((partition, seq, Bytes::from(payload)));
            }
            appended
        })
    });
    let mut appended = Appended::new();
    for result in futures::future::join_all(tasks).await {
        for (partition, seq, payload) in result.expect("append task") {
            appended.entry(partition).or_default().push((seq, payload));
        }
    }
    let total: usize = appended.values().map(Vec::len).sum();
    assert_eq!(total, (TASKS * PER_TASK) as usize);
    for (&partition, messages) in &mut appended {
        messages.sort_by_key(|(seq, _)| *seq);
        assert_sequences(partition, messages, contiguous);
        let read = read_exactly(&*log, partition, 0, messages.len()).await;
        assert_eq!(
            &read, messages,
            "partition {partition} holds every append once"
        );
    }
}

/// A conditional append lands only while its expected sequence is the partition's newest.
async fn append_if_last(log: Arc<dyn Log>, _contiguous: bool) {
    let first = log
        .append_if_last(7, 0, "cond-1", Bytes::from_static(b"first"))
        .await
        .expect("an empty partition ends at 0");
    append(&*log, 8, "cond-other", "other partition").await;
    let stale = log
        .append_if_last(7, 0, "cond-2", Bytes::from_static(b"stale"))
        .await;
    assert!(
        matches!(stale, Err(crate::Error::Conflict(_))),
        "a stale expectation is a conflict: {stale:?}"
    );
    let second = log
        .append_if_last(7, first, "cond-3", Bytes::from_static(b"second"))
        .await
        .expect("the other partition does not count");
    let read = read_exactly(&*log, 7, 0, 2).await;
    assert_eq!(
        read,
        vec![
            (first, Bytes::from_static(b"first")),
            (second, Bytes::from_static(b"second"))
        ]
    );
}

/// `read` answers what is stored without waiting; `delete` removes one message for good.
async fn read_and_delete(log: Arc<dyn Log>, contiguous: bool) {
    assert!(log.read(3, 0, 10).await.expect("read empty").is_empty());
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(append(&*log, 3, &format!("rd-{i}"), &format!("m{i}")).await);
    }
    append(&*log, 11, "rd-other", "other partition").await;
    let page = log.read(3, 0, 3).await.expect("read");
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[..3]);
    let rest = log.read(3, seqs[2], 10).await.expect("read rest");
    assert_eq!(rest.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[3..]);

    assert!(log.delete(3, seqs[1]).await.expect("delete"));
    assert!(!log.delete(3, seqs[1]).await.expect("delete again"));
    if !contiguous {
        // JetStream numbers the whole stream: another partition's sequence is not this one's.
        let other = log.last(11).await.expect("last").map(|m| m.seq);
        assert!(
            !log.delete(3, other.unwrap_or_default())
                .await
                .expect("delete"),
            "a sequence of another partition is not deleted through this one"
        );
    }
    assert!(log.delete(3, seqs[4]).await.expect("delete the newest"));
    let left = log.read(3, 0, 10).await.expect("read");
    assert_eq!(
        left.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [seqs[0], seqs[2], seqs[3]]
    );
    let next = append(&*log, 3, "rd-next", "next").await;
    assert!(next > seqs[4], "sequences are never reused");
}

/// `trim` removes what lies below its sequence in its partition only, and records the floor.
async fn trim_below(log: Arc<dyn Log>, _contiguous: bool) {
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(append(&*log, 12, &format!("trim-{i}"), &format!("t{i}")).await);
    }
    let other = append(&*log, 13, "trim-other", "other partition").await;
    assert_eq!(log.floor(12).await.expect("floor"), 0);
    assert_eq!(
        log.trim(12, 0).await.expect("trim below 0"),
        0,
        "nothing lies below 0"
    );
    assert_eq!(log.trim(12, seqs[4]).await.expect("trim"), 4);
    assert_eq!(log.floor(12).await.expect("floor"), seqs[4]);
    let left = read_exactly(&*log, 12, 0, 2).await;
    assert_eq!(
        left.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        seqs[4..]
    );
    assert_eq!(
        log.last(12).await.expect("last").map(|m| m.seq),
        Some(seqs[5]),
        "the newest message stays"
    );
    assert_eq!(log.trim(12, seqs[2]).await.expect("trim lower"), 0);
    assert_eq!(
        log.floor(12).await.expect("floor"),
        seqs[4],
        "the floor never goes down"
    );
    assert_eq!(read_exactly(&*log, 13, 0, 1).await[0].0, other);
    assert_eq!(log.floor(13).await.expect("floor"), 0);
}

/// Appends a few messages whose durability is checked after a restart.
async fn write_durable(log: &dyn Log) -> Appended {
    let mut appended = Appended::new();
    for i in 0..30u32 {
        let partition = i % 3;
        let payload = format!("durable {i}");
        let seq = append(log, partition, &format!("durable-{i}"), &payload).await;
        appended
            .entry(partition)
            .or_default()
            .push((seq, Bytes::from(payload)));
    }
    appended
}

/// Every acknowledged message is there after the restart, and appends continue after them.
async fn verify_durable(log: &dyn Log, appended: &Appended, contiguous: bool) {
    for (&partition, messages) in appended {
        let read = read_exactly(log, partition, 0, messages.len()).await;
        assert_eq!(
            &read, messages,
            "partition {partition} survived the restart"
        );
        let (last_seq, last_payload) = messages.last().cloned().unwrap_or_default();
        let expected = LogMessage {
            seq: last_seq,
            payload: last_payload,
            trace: Default::default(),
        };
        assert_eq!(log.last(partition).await.expect("last"), Some(expected));
        let next = append(
            log,
            partition,
            &format!("after-restart-{partition}"),
            "next",
        )
        .await;
        assert!(next > last_seq);
        if contiguous {
            assert_eq!(
                next,
                last_seq + 1,
                "partition {partition} continues contiguously"
            );
        }
    }
}

fn temp_dir() -> TempDir {
    TempDir::new("beacon-log-test").expect("temp dir")
}

fn open_embedded(dir: &TempDir) -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::open(&dir.path().join("log.redb")).expect("open embedded log"))
}

fn start_nats() -> NatsServer {
    NatsServer::start().unwrap_or_else(|err| {
        panic!("the NATS half of this test needs a nats-server binary: {err}")
    })
}

async fn open_nats(server: &NatsServer) -> Arc<dyn Log> {
    let client = crate::backends::connect_nats(&server.url())
        .await
        .expect("connect to nats-server");
    let js = async_nats::jetstream::new(client);
    Arc::new(
        NatsLog::open(js, "events", 1, None)
            .await
            .expect("open NATS log"),
    )
}

/// One test per body and backend.
macro_rules! log_conformance {
    ($($body:ident),* $(,)?) => {
        mod embedded_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let dir = super::temp_dir();
                    let log = super::open_embedded(&dir);
                    super::$body(log, true).await;
                }
            )*
        }

        mod nats_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    let server = super::start_nats();
                    let log = super::open_nats(&server).await;
                    super::$body(log, false).await;
                }
            )*
        }
    };
}

log_conformance!(
    ordering,
    last,
    subscribe_from_middle,
    subscribe_waits,
    duplicates,
    concurrent_appends,
    append_if_last,
    read_and_delete,
    trim_below,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_refuses_appends_at_its_byte_limit_until_trimmed() {
    let dir = temp_dir();
    let path = dir.path().join("limited.redb");
    let log = EmbeddedLog::open_limited(&path, Some(1000), 1 << 20).expect("open");
    let payload = Bytes::from(vec![b'x'; 300]);
    let mut seqs = Vec::new();
    for i in 0..3 {
        let seq = log.append(0, &format!("l-{i}"), payload.clone()).await;
        seqs.push(seq.expect("room for 900 bytes"));
    }
    let full = log.append(0, "l-3", payload.clone()).await;
    assert!(
        matches!(&full, Err(crate::Error::Unavailable(text)) if text.contains("limit")),
        "{full:?}"
    );
    assert_eq!(log.trim(0, seqs[2]).await.expect("trim"), 2);
    log.append(0, "l-4", payload.clone())
        .await
        .expect("room again");
    drop(log);
    // The byte count survives a restart.
    let log = EmbeddedLog::open_limited(&path, Some(1000), 1 << 20).expect("reopen");
    log.append(0, "l-5", payload.clone())
        .await
        .expect("600 + 300 fit");
    assert!(log.append(0, "l-6", payload).await.is_err(), "1200 do not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_file_stops_growing_once_trims_keep_up() {
    let dir = temp_dir();
    let path = dir.path().join("steady.redb");
    let log = EmbeddedLog::open(&path).expect("open");
    let payload = Bytes::from(vec![7u8; 4096]);
    let mut sizes = Vec::new();
    for round in 0..6u32 {
        let mut last = 0;
        for i in 0..500u32 {
            last = log
                .append(0, &format!("s-{round}-{i}"), payload.clone())
                .await
                .expect("append");
        }
        log.trim(0, last + 1)
            .await
            .expect("trim everything consumed");
        sizes.push(std::fs::metadata(&path).expect("file").len());
    }
    println!("log file size after each round of 2 MiB: {sizes:?}");
    assert!(
        sizes[5] <= sizes[1] + sizes[1] / 2,
        "the file keeps growing although every message was trimmed: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_never_reuses_a_deleted_sequence() {
    let dir = temp_dir();
    let log = open_embedded(&dir);
    let first = append(&*log, 0, "reuse-1", "a").await;
    let second = append(&*log, 0, "reuse-2", "b").await;
    assert!(log.delete(0, second).await.expect("delete"));
    drop(log);
    let log = open_embedded(&dir);
    let next = append(&*log, 0, "reuse-3", "c").await;
    assert_eq!((first, second, next), (1, 2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_survives_reopen() {
    let dir = temp_dir();
    let log = open_embedded(&dir);
    let identity = log.identity().await.expect("identity");
    let appended = write_durable(&*log).await;
    drop(log);
    let log = open_embedded(&dir);
    verify_durable(&*log, &appended, true).await;
    assert_eq!(
        log.identity().await.expect("identity"),
        identity,
        "same file"
    );
    let other = open_embedded(&temp_dir());
    assert_ne!(
        other.identity().await.expect("identity"),
        identity,
        "a new file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_log_survives_kill_and_restart() {
    let mut server = start_nats();
    let log = open_nats(&server).await;
    let identity = log.identity().await.expect("identity");
    let appended = write_durable(&*log).await;
    drop(log);
    server.kill();
    server.restart().expect("restart nats-server");
    let log = open_nats(&server).await;
    verify_durable(&*log, &appended, false).await;
    assert_eq!(
        log.identity().await.expect("identity"),
        identity,
        "same stream"
    );
    let client = crate::backends::connect_nats(&server.url())
        .await
        .expect("connect to nats-server");
    let updated = NatsLog::open(
        async_nats::jetstream::new(client.clone()),
        "events",
        1,
        Some(1 << 30),
    )
    .await
    .expect("reopen with another limit");
    assert_eq!(
        updated.identity().await.expect("identity"),
        identity,
        "an updated stream keeps its identity"
    );
    async_nats::jetstream::new(client)
        .delete_stream("BEACON_EVENTS")
        .await
        .expect("delete the stream");
    let log = open_nats(&server).await;
    assert_ne!(
        log.identity().await.expect("identity"),
        identity,
        "a stream created again"
    );
}
