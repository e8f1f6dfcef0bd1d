//! One partition's consumer: the skeleton the aggregator, the query role and (next)
//! reprocessing jobs share.
//!
//! [`consume`] subscribes to a partition after the handler's position, hands the handler chunks
//! of messages bounded by count and bytes (a busy lane waits a moment to fill one), calls its
//! tick on an interval, resubscribes with backoff after the stream failed or ended, and returns
//! once shutdown is requested.
//! [`Lane`] gives handlers the rest: retries that classify errors (transient ones are retried
//! with backoff, permanent ones returned at once so the caller splits or parks the input), and
//! parking in the dead-letter log.
//!
//! Invariant: nothing here skips a message. A handler either handles a message, parks it, or
//! stops; the next subscription starts after the handler's own position.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::Peekable;
use futures::{FutureExt, StreamExt};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tokio_util::sync::CancellationToken;

use crate::deadletter::{DeadLetters, Failure};
use crate::log::{Log, LogMessage, LogStream};
use crate::meta::SnapshotStore;
use crate::observe::{self, LaneProbe};
use crate::retry::Backoff;
use crate::{Error, Result};

/// First pause after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failed attempts at one call after which the backend counts as failing (health NOT_SERVING).
const FAULT_AFTER: u32 = 5;
/// How often the lag monitor reads the log's end.
const MONITOR_EVERY: Duration = Duration::from_secs(1);

/// Shutdown was requested before the step completed; the state covers what was done before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Why a step did not complete.
#[derive(Debug)]
pub enum Halt<E> {
    /// Shutdown was requested.
    Stopped,
    /// The step failed in a way the consumer cannot go on from.
    Failed(E),
}

impl<E> From<Stopped> for Halt<E> {
    fn from(_: Stopped) -> Self {
        Self::Stopped
    }
}

/// How much one chunk handed to a handler may hold.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Most messages.
    pub messages: usize,
    /// Most payload bytes (a larger single message still comes alone).
    pub bytes: usize,
    /// How long a busy lane waits, after a chunk's first message, for more to fill it. Every
    /// chunk costs its handler a fixed amount (a raw-store commit, a shard transaction), so
    /// under load a short wait makes fewer, larger chunks. A lane is busy when its previous
    /// chunk was handed over less than this long ago: the first message after a quiet spell
    /// goes at once. Zero takes only what is ready.
    pub linger: Duration,
}

/// One partition's context: its number, shutdown, backoff, dead letters and lag probe.
#[derive(Clone)]
pub struct Lane {
    role: &'static str,
    partition: u32,
    shutdown: CancellationToken,
    dead_letters: DeadLetters,
    probe: LaneProbe,
    parked: Counter<u64>,
    /// Where operators' decisions about refused logs are ([`crate::accept`]).
    decisions: Option<Arc<dyn SnapshotStore>>,
}

impl Lane {
    /// The lane of `partition` for `role` ("aggregator", "query"), parking in `dead_letters`.
    pub fn new(
        role: &'static str,
        partition: u32,
        dead_letters: Arc<dyn Log>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            role,
            partition,
            shutdown,
            dead_letters: DeadLetters::new(dead_letters),
            probe: observe::health().lane(role, partition),
            parked: observe::meter()
                .u64_counter("beacon_dead_letters")
                .with_description("Items parked in the dead-letter log, by role and cause")
                .build(),
            decisions: None,
        }
    }

    /// This lane, reading operators' decisions about refused logs from `store`; without, a
    /// refused log is refused until the process restarts with one.
    pub fn with_decisions(mut self, store: Arc<dyn SnapshotStore>) -> Self {
        self.decisions = Some(store);
        self
    }

    /// An operator's acceptance of the log `identity` for this lane's role and partition.
    async fn accepted(&self, identity: &str) -> Option<crate::accept::Acceptance> {
        let store = self.decisions.as_ref()?;
        match crate::accept::accepted(store.as_ref(), self.role, self.partition, identity).await {
            Ok(end) => end,
            Err(err) => {
                tracing::warn!(role = self.role, partition = self.partition, error = %err, "reading the operator's decision failed");
                None
            }
        }
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The shutdown token.
    pub fn token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// A fresh backoff: 100 ms doubling up to 5 s.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(FIRST_DELAY, MAX_DELAY)
    }

    /// Runs `op` until it succeeds, retrying transient errors with backoff. A permanent error
    /// (see [`Error::is_transient`]) is returned at once: retrying it would stall the partition.
    pub async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Halt<Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.attempts(what, None, op).await
    }

    /// Like [`Lane::retry`], but gives up after `attempts` and is not interrupted by shutdown
    /// (for a last publish while shutting down, or before looking for what fails).
    pub async fn retry_at_most<T, F, Fut>(&self, what: &str, attempts: u32, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match self.attempts(what, Some(attempts), op).await {
            Ok(value) => Ok(value),
            Err(Halt::Failed(err)) => Err(err),
            Err(Halt::Stopped) => Err(Error::Unavailable(format!("{what}: stopped"))),
        }
    }

    /// The retry loop: transient failures are retried with backoff, up to `max` attempts when
    /// given (then uninterruptible), else until success or shutdown. The fifth failure in a row
    /// reports the lane's backend as failing to health; the next success clears it.
    async fn attempts<T, F, Fut>(
        &self,
        what: &str,
        max: Option<u32>,
        mut op: F,
    ) -> Result<T, Halt<Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = self.backoff();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match op().await {
                Ok(value) => {
                    if attempt > FAULT_AFTER {
                        observe::health().clear(&self.fault_name());
                    }
                    return Ok(value);
                }
                Err(err) if !err.is_transient() || max.is_some_and(|m| attempt >= m) => {
                    return Err(Halt::Failed(err));
                }
                Err(err) => err,
            };
            tracing::warn!(role = self.role, partition = self.partition, attempt, what, error = %err, "backend call failed; retrying");
            if attempt == FAULT_AFTER {
                observe::health().fault(&self.fault_name(), &format!("{what}: {err}"));
            }
            let token = max.is_none().then_some(&self.shutdown);
            if !backoff.sleep(token).await {
                return Err(Halt::Stopped);
            }
        }
    }

    /// The name this lane's backend faults are recorded under.
    fn fault_name(&self) -> String {
        format!("{} backend", observe::lane_name(self.role, self.partition))
    }

    /// Parks `failure` in the dead-letter log, retrying until it is stored.
    pub async fn park(&self, failure: Failure) -> Result<(), Stopped> {
        tracing::warn!(
            role = self.role,
            partition = failure.partition,
            seq = failure.seq,
            index = failure.index,
            cause = failure.cause,
            tenant = %failure.tenant_id,
            reason = %failure.reason,
            "parking a dead letter"
        );
        let letters = &self.dead_letters;
        // Parking must not fail: every error is retried, whatever its class.
        let parked = self
            .retry("parking a dead letter", || async {
                letters
                    .park(failure.clone())
                    .await
                    .map_err(|err| Error::Unavailable(err.to_string()))
            })
            .await;
        match parked {
            Ok(_) => {
                let labels = [
                    KeyValue::new("role", self.role),
                    KeyValue::new("cause", failure.cause),
                ];
                self.parked.add(1, &labels);
                Ok(())
            }
            Err(_) => Err(Stopped),
        }
    }
}

/// What a partition consumer does with its messages.
#[async_trait]
pub trait Handler: Send {
    /// The handler's fatal error.
    type Error: From<Error> + Send;

    /// Subscriptions start after this sequence: the last message fully handled.
    fn resume_after(&self) -> u64;

    /// The identity of the log ([`Log::identity`]) the position was reached on; `None` when
    /// none is recorded (a fresh handler, or state from before identities were kept).
    fn log_identity(&self) -> Option<String>;

    /// Goes on with the log `identity` after `after` (the position may move: an operator
    /// accepted a log created anew, trimmed or gone backwards), keeping what the handler holds,
    /// and records the identity beside the position.
    async fn adopt_log(&mut self, identity: String, after: u64) -> Result<(), Halt<Self::Error>>;

    /// Handles ready messages in order. Messages at or below [`Handler::resume_after`] may come
    /// again after a resubscription; the handler skips them.
    async fn handle(
        &mut self,
        lane: &Lane,
        messages: Vec<LogMessage>,
    ) -> Result<(), Halt<Self::Error>>;

    /// Called on every tick of the interval given to [`consume`].
    async fn tick(&mut self, _lane: &Lane) -> Result<(), Halt<Self::Error>> {
        Ok(())
    }
}

/// Consumes `lane`'s partition of `log` with `handler` until shutdown (`Ok`) or a fatal error.
/// Meanwhile the lane's lag is kept up to date, also while the handler is stuck.
pub async fn consume<H: Handler>(
    lane: &Lane,
    log: &dyn Log,
    handler: &mut H,
    limits: ChunkLimits,
    tick: Option<Duration>,
) -> Result<(), H::Error> {
    tokio::select! {
        result = consume_messages(lane, log, handler, limits, tick) => result,
        () = monitor(lane, log) => Ok(()),
    }
}

/// Reads the log's end every second for the lane's lag. After shutdown it waits for the
/// consumer to finish its current step, which ends the lane.
async fn monitor(lane: &Lane, log: &dyn Log) {
    let mut interval = tokio::time::interval(MONITOR_EVERY);
    loop {
        tokio::select! {
            () = lane.shutdown.cancelled() => std::future::pending::<()>().await,
            _ = interval.tick() => {}
        }
        match log.last(lane.partition).await {
            Ok(newest) => lane.probe.log_end(newest.map_or(0, |m| m.seq)),
            Err(err) => {
                tracing::debug!(role = lane.role, partition = lane.partition, error = %err, "reading the log's end failed")
            }
        }
    }
}

async fn consume_messages<H: Handler>(
    lane: &Lane,
    log: &dyn Log,
    handler: &mut H,
    limits: ChunkLimits,
    tick: Option<Duration>,
) -> Result<(), H::Error> {
    lane.probe.handled(handler.resume_after());
    let mut interval = tokio::time::interval(tick.unwrap_or(Duration::from_secs(3600)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = lane.backoff();
    let partition = lane.partition;
    let mut refused_since = None;
    let mut last_chunk: Option<Instant> = None;
    loop {
        match check_log(lane, log, handler, &mut refused_since).await {
            Ok(true) => {}
            Ok(false) => {
                if !backoff.sleep(Some(&lane.shutdown)).await {
                    return Ok(());
                }
                continue;
            }
            Err(Halt::Stopped) => return Ok(()),
            Err(Halt::Failed(err)) => return Err(err),
        }
        let after = handler.resume_after();
        let subscribed = lane
            .retry("subscribing", || log.subscribe(partition, after))
            .await;
        let mut stream = match subscribed {
            Ok(stream) => stream.peekable(),
            Err(Halt::Stopped) => return Ok(()),
            Err(Halt::Failed(err)) => return Err(err.into()),
        };
        let progressed = loop {
            let step = tokio::select! {
                biased;
                () = lane.shutdown.cancelled() => return Ok(()),
                _ = interval.tick(), if tick.is_some() => handler.tick(lane).await,
                next = stream.next() => match next {
                    Some(Ok(first)) => {
                        let busy = last_chunk.is_some_and(|at| at.elapsed() < limits.linger);
                        let linger = if busy { limits.linger } else { Duration::ZERO };
                        let chunk = gather(&mut stream, first, limits, linger, &lane.shutdown).await;
                        last_chunk = Some(Instant::now());
                        handler.handle(lane, chunk).await
                    }
                    Some(Err(err)) => {
                        tracing::warn!(role = lane.role, partition, after = handler.resume_after(), error = %err, "stream failed; resubscribing");
                        break handler.resume_after() > after;
                    }
                    None => {
                        tracing::warn!(role = lane.role, partition, after = handler.resume_after(), "stream ended; resubscribing");
                        break handler.resume_after() > after;
                    }
                },
            };
            match step {
                Ok(()) => lane.probe.handled(handler.resume_after()),
                Err(Halt::Stopped) => return Ok(()),
                Err(Halt::Failed(err)) => return Err(err),
            }
        };
        if progressed {
            backoff.reset();
        }
        if !backoff.sleep(Some(&lane.shutdown)).await {
            return Ok(());
        }
    }
}

/// Why a consumer may not go on from its position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The position was reached on another log (deleted and created again, or another file).
    NewLog {
        /// The identity recorded beside the position.
        recorded: String,
    },
    /// Messages after the position were trimmed before they were consumed.
    Gap {
        /// The log's floor.
        floor: u64,
    },
    /// The log ends before the position (restored from an older copy).
    Regression {
        /// Where the log ends.
        end: u64,
    },
}

impl Refusal {
    /// Where a consumer goes on once an operator accepted the log as it is: at the start of a
    /// new log, past the trimmed messages, or after the end the operator saw (or the log's
    /// end, when it went back further since).
    fn resume_after(&self, floor: u64, accepted_end: u64) -> u64 {
        match self {
            Self::NewLog { .. } => floor.saturating_sub(1),
            Self::Gap { floor } => floor - 1,
            Self::Regression { end } => accepted_end.min(*end),
        }
    }

    /// What the refusal says, in the lane's health and log.
    fn describe(&self, after: u64, identity: &str) -> String {
        let decide = "until an operator decides: `beacon accept-log` (go on with the log as it \
                      is) or a rebuild from the raw store";
        match self {
            Self::NewLog { recorded } => format!(
                "the log is {identity}, but the position {after} was reached on {recorded}: it \
                 was created anew; refusing to continue {decide}"
            ),
            Self::Gap { floor } => format!(
                "messages after {after} up to {} were trimmed before they were consumed; \
                 refusing to skip them {decide}",
                floor - 1
            ),
            Self::Regression { end } => format!(
                "the log ends at message {end}, but messages up to {after} were consumed: it \
                 went backwards (restored from an older copy); refusing to continue {decide}"
            ),
        }
    }

    /// The counter it adds to, and the counter's description.
    fn metric(&self) -> (&'static str, &'static str) {
        match self {
            Self::Gap { .. } => (
                "beacon_log_gaps",
                "Times a consumer found messages it had not consumed trimmed away",
            ),
            Self::NewLog { .. } | Self::Regression { .. } => (
                "beacon_log_regressions",
                "Times a consumer found its log created anew or gone backwards",
            ),
        }
    }
}

/// Whether `handler` may consume the log from its position. A log seen for the first time is
/// adopted. A log created anew, trimmed past the position or gone backwards is never consumed
/// on: it is reported (error log, health fault, metric) until an operator accepts it
/// (`beacon accept-log`, [`crate::accept`]) after the refusal began (`refused_since`, Unix
/// milliseconds), and then the handler goes on where the acceptance says.
///
/// Invariant: a consumer never continues on a log that lost messages it had not consumed,
/// reuses sequence numbers it had consumed, or is another log than its position's, unless an
/// operator accepted that log.
async fn check_log<H: Handler>(
    lane: &Lane,
    log: &dyn Log,
    handler: &mut H,
    refused_since: &mut Option<i64>,
) -> Result<bool, Halt<H::Error>> {
    let identity = lane
        .retry("reading the log's identity", || log.identity())
        .await
        .map_err(into_handler)?;
    let after = handler.resume_after();
    let recorded = handler.log_identity();
    if recorded.is_none() || (after == 0 && recorded.as_deref() != Some(identity.as_str())) {
        handler.adopt_log(identity.clone(), after).await?;
    }
    let partition = lane.partition;
    let floor = lane
        .retry("reading the log's floor", || log.floor(partition))
        .await
        .map_err(into_handler)?;
    let last = lane
        .retry("reading the log's end", || log.last(partition))
        .await
        .map_err(into_handler)?
        .map_or(0, |message| message.seq);
    let end = last.max(floor.saturating_sub(1));
    let refusal = match handler.log_identity() {
        Some(recorded) if recorded != identity => Some(Refusal::NewLog { recorded }),
        _ if after.saturating_add(1) < floor => Some(Refusal::Gap { floor }),
        _ if after > end => Some(Refusal::Regression { end }),
        _ => None,
    };
    let what = observe::lane_name(lane.role, partition);
    let Some(refusal) = refusal else {
        observe::health().clear(&what);
        *refused_since = None;
        return Ok(true);
    };
    let since = *refused_since.get_or_insert_with(crate::time::now_ms);
    let acceptance = lane
        .accepted(&identity)
        .await
        .filter(|taken| taken.at_ms >= since);
    if let Some(acceptance) = acceptance {
        *refused_since = None;
        let resume = refusal.resume_after(floor, acceptance.end);
        tracing::warn!(role = lane.role, partition, after, resume, ?refusal, log = %identity, "an operator accepted the log as it is; going on");
        handler.adopt_log(identity, resume).await?;
        observe::health().clear(&what);
        return Ok(true);
    }
    let problem = refusal.describe(after, &identity);
    let (metric, description) = refusal.metric();
    tracing::error!(role = lane.role, partition, after, floor, last, "{problem}");
    observe::health().fault(&what, &problem);
    observe::meter()
        .u64_counter(metric)
        .with_description(description)
        .build()
        .add(1, &[KeyValue::new("role", lane.role)]);
    Ok(false)
}

/// A backend failure as the handler's.
fn into_handler<E: From<Error>>(halt: Halt<Error>) -> Halt<E> {
    match halt {
        Halt::Stopped => Halt::Stopped,
        Halt::Failed(err) => Halt::Failed(err.into()),
    }
}

/// `first` and the messages ready after it or arriving within `linger`, within `limits`; what
/// was gathered when shutdown is requested. A failure or the end of the stream stays in the
/// stream.
async fn gather(
    stream: &mut Peekable<LogStream>,
    first: LogMessage,
    limits: ChunkLimits,
    linger: Duration,
    shutdown: &CancellationToken,
) -> Vec<LogMessage> {
    let deadline = tokio::time::Instant::now() + linger;
    let mut bytes = first.payload.len();
    let mut chunk = vec![first];
    while chunk.len() < limits.messages {
        // The peeked message is polled before the deadline, so a ready one is taken even
        // without a linger.
        let next = tokio::time::timeout_at(deadline, Pin::new(&mut *stream).peek());
        let peeked = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            peeked = next => peeked,
        };
        let Ok(Some(Ok(next))) = peeked else {
            break;
        };
        if bytes + next.payload.len() > limits.bytes {
            break;
        }
        bytes += next.payload.len();
        match stream.next().now_or_never() {
            Some(Some(Ok(next))) => chunk.push(next),
            _ => break,
        }
    }
    chunk
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::log::embedded::EmbeddedLog;
    use beacon_testkit::TempDir;

    /// Records what it was handed; fails permanently on a payload of "fatal".
    #[derive(Default)]
    struct Recorder {
        done: u64,
        chunks: Vec<Vec<u64>>,
        identity: Option<String>,
    }

    #[async_trait]
    impl Handler for Recorder {
        type Error = Error;

        fn resume_after(&self) -> u64 {
            self.done
        }

        fn log_identity(&self) -> Option<String> {
            self.identity.clone()
        }

        async fn adopt_log(&mut self, identity: String, after: u64) -> Result<(), Halt<Error>> {
            self.identity = Some(identity);
            self.done = after;
            Ok(())
        }

        async fn handle(
            &mut self,
            lane: &Lane,
            messages: Vec<LogMessage>,
        ) -> Result<(), Halt<Error>> {
            for message in &messages {
                if message.payload.as_ref() == b"fatal" {
                    return Err(Halt::Failed(Error::Corrupt(format!("seq {}", message.seq))));
                }
                self.done = message.seq;
            }
            self.chunks.push(messages.iter().map(|m| m.seq).collect());
            if self.done >= 5 {
                lane.token().cancel();
            }
            Ok(())
        }
    }

    fn open(dir: &TempDir, name: &str) -> Arc<EmbeddedLog> {
        Arc::new(EmbeddedLog::open(&dir.path().join(name)).expect("open log"))
    }

    #[tokio::test]
    async fn chunks_are_bounded_and_shutdown_returns_ok() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = open(&dir, "log.redb");
        for n in 0..5 {
            log.append(0, "", Bytes::from(vec![b'x'; 10 + n]))
                .await
                .expect("append");
        }
        let lane = Lane::new("test", 0, open(&dir, "dl.redb"), CancellationToken::new());
        let mut recorder = Recorder::default();
        let limits = ChunkLimits {
            messages: 2,
            bytes: 1024,
            linger: Duration::ZERO,
        };
        consume(&lane, log.as_ref(), &mut recorder, limits, None)
            .await
            .expect("stopped cleanly");
        assert_eq!(recorder.done, 5);
        assert!(
            recorder.chunks.iter().all(|c| c.len() <= 2),
            "{:?}",
            recorder.chunks
        );
        assert_eq!(recorder.chunks.concat(), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_busy_lane_waits_its_linger_to_fill_a_chunk_and_no_longer() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = open(&dir, "log.redb");
        log.append(0, "", Bytes::from_static(b"first"))
            .await
            .expect("append");
        let lane = Lane::new("test", 0, open(&dir, "dl.redb"), CancellationToken::new());
        let mut recorder = Recorder::default();
        let limits = ChunkLimits {
            messages: 4,
            bytes: 1024,
            linger: Duration::from_secs(30),
        };
        let later = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for _ in 2..=5 {
                log.append(0, "", Bytes::from_static(b"later"))
                    .await
                    .expect("append");
            }
        };
        let consumed = async {
            let (consumed, ()) = tokio::join!(
                consume(&lane, log.as_ref(), &mut recorder, limits, None),
                later
            );
            consumed
        };
        // A full chunk goes at once, well before its linger ends.
        tokio::time::timeout(Duration::from_secs(10), consumed)
            .await
            .expect("the full chunk was held for its linger")
            .expect("stopped cleanly");
        // The first message came after a quiet spell and went alone; the next ones waited
        // for each other.
        assert_eq!(recorder.chunks, [vec![1], vec![2, 3, 4, 5]]);
    }

    /// Consumes `log` for half a second after message `done` as lane `role`; returns the
    /// chunks handled and whether health names the lane with `problem`.
    async fn consume_briefly(
        log: &EmbeddedLog,
        dir: &TempDir,
        role: &'static str,
        done: u64,
        problem: &str,
    ) -> (Vec<Vec<u64>>, bool) {
        let identity = log.identity().await.expect("identity");
        let recorder = Recorder {
            done,
            chunks: Vec::new(),
            identity: Some(identity),
        };
        let (recorder, reported) = consume_with(log, dir, role, recorder, None, problem).await;
        (recorder.chunks, reported)
    }

    /// Consumes `log` for half a second with `recorder` and operators' `decisions`; whether
    /// the lane reported `problem` at the end.
    async fn consume_with(
        log: &EmbeddedLog,
        dir: &TempDir,
        role: &'static str,
        mut recorder: Recorder,
        decisions: Option<Arc<dyn SnapshotStore>>,
        problem: &str,
    ) -> (Recorder, bool) {
        let token = CancellationToken::new();
        let mut lane = Lane::new(role, 0, open(dir, "dl.redb"), token.clone());
        if let Some(store) = decisions {
            lane = lane.with_decisions(store);
        }
        let limits = ChunkLimits {
            messages: 8,
            bytes: 1024,
            linger: Duration::ZERO,
        };
        let stop = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            token.cancel();
        };
        let (consumed, ()) = tokio::join!(consume(&lane, log, &mut recorder, limits, None), stop);
        consumed.expect("stopped cleanly");
        let lane_name = format!("{role} partition 0");
        let reported = observe::health()
            .problems()
            .iter()
            .any(|p| p.contains(&lane_name) && p.contains(problem));
        (recorder, reported)
    }

    fn meta(dir: &TempDir) -> Arc<dyn SnapshotStore> {
        Arc::new(
            crate::meta::embedded::EmbeddedMeta::open(&dir.path().join("meta.redb")).expect("meta"),
        )
    }

    #[tokio::test]
    async fn a_log_created_anew_is_refused_until_an_operator_accepts_it() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let old = log_of(&dir, 3).await;
        let recorded = old.identity().await.expect("identity");
        drop(old);
        let new_dir = TempDir::new("consumer").expect("temp dir");
        let log = log_of(&new_dir, 8).await;
        let recorder = |identity: &str| Recorder {
            done: 3,
            chunks: Vec::new(),
            identity: Some(identity.to_owned()),
        };
        let store = meta(&dir);
        // An acceptance taken before the refusal began does not count.
        crate::accept::accept(store.as_ref(), "anew-test", 0, log.as_ref())
            .await
            .expect("accept");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (refused, reported) = consume_with(
            &log,
            &dir,
            "anew-test",
            recorder(&recorded),
            Some(store.clone()),
            "created anew",
        )
        .await;
        assert!(refused.chunks.is_empty(), "consumed {:?}", refused.chunks);
        assert!(reported, "the refusal is reported");

        let accept_later = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            crate::accept::accept(store.as_ref(), "anew-test", 0, log.as_ref())
                .await
                .expect("accept");
        };
        let ((went_on, reported), ()) = tokio::join!(
            consume_with(
                &log,
                &dir,
                "anew-test",
                recorder(&recorded),
                Some(store.clone()),
                "created anew",
            ),
            accept_later
        );
        assert_eq!(
            went_on.chunks,
            [[1, 2, 3, 4, 5, 6, 7, 8]],
            "the new log from its start"
        );
        assert_eq!(went_on.identity, log.identity().await.ok());
        assert!(!reported, "the fault is cleared");
    }

    #[tokio::test]
    async fn an_accepted_regression_goes_on_after_the_end_the_operator_saw() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = log_of(&dir, 3).await;
        let store = meta(&dir);
        let recorder = Recorder {
            done: 7,
            chunks: Vec::new(),
            identity: log.identity().await.ok(),
        };
        // The operator looks at the log (it ends at 3) and accepts; then more is appended.
        let accept_then_append = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            crate::accept::accept(store.as_ref(), "regressed-test", 0, log.as_ref())
                .await
                .expect("accept");
            for _ in 0..2 {
                log.append(0, "", Bytes::from_static(b"later"))
                    .await
                    .expect("append");
            }
        };
        let ((went_on, _), ()) = tokio::join!(
            consume_with(
                &log,
                &dir,
                "regressed-test",
                recorder,
                Some(store.clone()),
                ""
            ),
            accept_then_append
        );
        assert_eq!(went_on.chunks, [[4, 5]]);
    }

    async fn log_of(dir: &TempDir, messages: usize) -> Arc<EmbeddedLog> {
        let log = open(dir, "log.redb");
        for n in 0..messages {
            log.append(0, "", Bytes::from(vec![b'x'; 10 + n]))
                .await
                .expect("append");
        }
        log
    }

    #[tokio::test]
    async fn a_trimmed_gap_is_refused_loudly_never_skipped() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = log_of(&dir, 5).await;
        log.trim(0, 4).await.expect("trim");
        let (chunks, reported) = consume_briefly(&log, &dir, "gap-test", 1, "trimmed").await;
        assert!(chunks.is_empty(), "skipped to {chunks:?}");
        assert!(reported);
    }

    #[tokio::test]
    async fn a_log_that_went_backwards_is_refused_loudly() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = log_of(&dir, 3).await;
        let (chunks, reported) =
            consume_briefly(&log, &dir, "backwards-test", 7, "went backwards").await;
        assert!(chunks.is_empty(), "consumed {chunks:?}");
        assert!(reported);
    }

    #[tokio::test]
    async fn a_log_trimmed_up_to_its_end_is_consumed_on() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = log_of(&dir, 5).await;
        log.trim(0, 6).await.expect("trim everything");
        log.append(0, "", Bytes::from_static(b"sixth"))
            .await
            .expect("append");
        let (chunks, reported) = consume_briefly(&log, &dir, "trimmed-test", 5, "").await;
        assert_eq!(chunks, [[6]]);
        assert!(!reported);
    }

    #[tokio::test]
    async fn a_fatal_error_is_returned() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let log = open(&dir, "log.redb");
        log.append(0, "", Bytes::from_static(b"fatal"))
            .await
            .expect("append");
        let lane = Lane::new("test", 0, open(&dir, "dl.redb"), CancellationToken::new());
        let limits = ChunkLimits {
            messages: 8,
            bytes: 1024,
            linger: Duration::ZERO,
        };
        let err = consume(&lane, log.as_ref(), &mut Recorder::default(), limits, None)
            .await
            .expect_err("fatal");
        assert!(err.to_string().contains("seq 1"), "{err}");
    }

    #[tokio::test]
    async fn retry_returns_permanent_errors_at_once() {
        let dir = TempDir::new("consumer").expect("temp dir");
        let lane = Lane::new("test", 0, open(&dir, "dl.redb"), CancellationToken::new());
        let calls = std::sync::atomic::AtomicU32::new(0);
        let got: Result<(), Halt<Error>> = lane
            .retry("test", || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(Error::Unavailable("down".into()))
                    } else {
                        Err(Error::InvalidArgument("too large".into()))
                    }
                }
            })
            .await;
        assert!(matches!(got, Err(Halt::Failed(Error::InvalidArgument(_)))));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
