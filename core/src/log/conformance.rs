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
use crate::testing::{NatsServer, TempDir};

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
    let client = async_nats::connect(server.url())
        .await
        .expect("connect to nats-server");
    let js = async_nats::jetstream::new(client);
    Arc::new(NatsLog::open(js, "events", 1).await.expect("open NATS log"))
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
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_survives_reopen() {
    let dir = temp_dir();
    let log = open_embedded(&dir);
    let appended = write_durable(&*log).await;
    drop(log);
    let log = open_embedded(&dir);
    verify_durable(&*log, &appended, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_log_survives_kill_and_restart() {
    let mut server = start_nats();
    let log = open_nats(&server).await;
    let appended = write_durable(&*log).await;
    drop(log);
    server.kill();
    server.restart().expect("restart nats-server");
    let log = open_nats(&server).await;
    verify_durable(&*log, &appended, false).await;
}
