//! What an operator sees: OpenTelemetry metrics (rendered in the Prometheus text format for
//! scrapers at `/metrics`, and pushed over OTLP when an endpoint is set), per-partition consumer
//! lag, and the gRPC health status derived from lag and store faults.
//!
//! Invariant: a stalled partition or a failing store is never reported SERVING. A lane is
//! stalled when it has been behind its log's end for longer than the stall threshold.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// How long a lane may stay behind its log's end before it counts as stalled, by default.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);

/// The process's metrics pipeline.
struct Pipeline {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
}

static PIPELINE: OnceLock<Option<Pipeline>> = OnceLock::new();
static HEALTH: OnceLock<Health> = OnceLock::new();

/// Installs the global meter provider (Prometheus registry, plus OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Later calls do nothing.
pub fn init_metrics(service: &'static str) {
    PIPELINE.get_or_init(|| {
        let registry = prometheus::Registry::new();
        let exporter = match opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
        {
            Ok(exporter) => exporter,
            Err(err) => {
                tracing::error!(error = %err, "metrics disabled: the Prometheus exporter failed");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let mut builder = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(resource);
        if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok() {
            match opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
            {
                Ok(otlp) => builder = builder.with_periodic_exporter(otlp),
                Err(err) => tracing::warn!(error = %err, "OTLP metric export disabled"),
            }
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Some(Pipeline {
            registry,
            _provider: provider,
        })
    });
}

/// The meter every Beacon instrument is made from.
pub fn meter() -> Meter {
    opentelemetry::global::meter("beacon")
}

/// Every metric in the Prometheus text format; empty before [`init_metrics`].
pub fn render() -> String {
    let Some(Some(pipeline)) = PIPELINE.get() else {
        return String::new();
    };
    let mut out = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&pipeline.registry.gather(), &mut out) {
        tracing::warn!(error = %err, "encoding metrics failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Checks a failure of the embedded store at `path`. After an I/O failure redb refuses every
/// later write; then the process exits so that its supervisor restarts it on a working file
/// (what was acknowledged is durable already, so this is no worse than SIGKILL). Other failures
/// are the caller's to retry (lanes report repeated ones to health).
pub fn redb_failed(path: &std::path::Path, err: &redb::Error) {
    if matches!(err, redb::Error::PreviousIo) {
        tracing::error!(path = %path.display(), "the store refuses every write after an I/O error; exiting so that the process is restarted");
        std::process::exit(75);
    }
}

/// The name of `role`'s lane of `partition` ("query partition 3"): its faults are recorded
/// under it (and under names that start with it).
pub fn lane_name(role: &str, partition: u32) -> String {
    format!("{role} partition {partition}")
}

/// The process's health: consumer lanes and store faults.
pub fn health() -> &'static Health {
    HEALTH.get_or_init(|| Health::new(DEFAULT_STALL_AFTER))
}

/// One consumer lane's progress, shared with the lag monitor.
#[derive(Debug)]
struct LaneState {
    /// The last sequence the consumer fully handled.
    position: AtomicU64,
    /// The newest sequence of the log, and when the lane was last caught up with it.
    end: Mutex<(u64, Instant)>,
    /// Whether the log's end was read at least once (before, the lag is unknown).
    measured: AtomicBool,
    /// Whether the consumer has reached a log end it read (before, it is still catching up
    /// after its start, however recent `end.1` looks).
    caught_up: AtomicBool,
}

/// The lag of one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// The role ("aggregator", "query").
    pub role: &'static str,
    /// The partition.
    pub partition: u32,
    /// Sequences between the consumer's position and its log's end (messages for embedded logs;
    /// JetStream numbers the whole stream, so there it is an upper bound).
    pub messages: u64,
    /// Seconds since the consumer was last caught up.
    pub seconds: f64,
    /// Whether the consumer has reached a log end read after its start; until then it is
    /// catching up and `seconds` says nothing.
    pub caught_up: bool,
}

/// Reports one lane's progress.
#[derive(Debug, Clone)]
pub struct LaneProbe {
    state: Arc<LaneState>,
}

impl LaneProbe {
    /// The consumer handled everything up to `seq`.
    pub fn handled(&self, seq: u64) {
        self.state.position.fetch_max(seq, Ordering::Relaxed);
        self.refresh(None);
    }

    /// The log's newest sequence is `end`.
    pub fn log_end(&self, end: u64) {
        self.state.measured.store(true, Ordering::Relaxed);
        self.refresh(Some(end));
    }

    fn refresh(&self, end: Option<u64>) {
        let position = self.state.position.load(Ordering::Relaxed);
        let mut guard = self
            .state
            .end
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(end) = end {
            guard.0 = guard.0.max(end);
        }
        if position >= guard.0 {
            guard.1 = Instant::now();
            if self.state.measured.load(Ordering::Relaxed) {
                self.state.caught_up.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Lanes and faults of a process, and the threshold that makes a lane stalled.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    stall_after: Mutex<Duration>,
    lanes: Mutex<BTreeMap<(&'static str, u32), Arc<LaneState>>>,
    faults: Mutex<BTreeMap<String, String>>,
}

impl Health {
    /// No lanes, no faults.
    pub fn new(stall_after: Duration) -> Self {
        Self {
            inner: Arc::new(HealthInner {
                stall_after: Mutex::new(stall_after),
                lanes: Mutex::new(BTreeMap::new()),
                faults: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Sets how long a lane may be behind before it counts as stalled.
    pub fn set_stall_after(&self, stall_after: Duration) {
        *lock(&self.inner.stall_after) = stall_after;
    }

    /// The probe of `role`'s lane of `partition` (the same one for every call).
    pub fn lane(&self, role: &'static str, partition: u32) -> LaneProbe {
        let mut lanes = lock(&self.inner.lanes);
        let state = lanes.entry((role, partition)).or_insert_with(|| {
            Arc::new(LaneState {
                position: AtomicU64::new(0),
                end: Mutex::new((0, Instant::now())),
                measured: AtomicBool::new(false),
                caught_up: AtomicBool::new(false),
            })
        });
        LaneProbe {
            state: state.clone(),
        }
    }

    /// Forgets `role`'s lane of `partition` and its faults: the process no longer consumes the
    /// partition (another process owns it now).
    pub fn forget_lane(&self, role: &'static str, partition: u32) {
        lock(&self.inner.lanes).remove(&(role, partition));
        let lane = lane_name(role, partition);
        let within = format!("{lane} ");
        lock(&self.inner.faults).retain(|what, _| *what != lane && !what.starts_with(&within));
    }

    /// Records that `what` (a store or log) is failing, with the error.
    pub fn fault(&self, what: &str, error: &str) {
        let mut faults = lock(&self.inner.faults);
        if faults.insert(what.to_owned(), error.to_owned()).is_none() {
            tracing::error!(
                what,
                error,
                "store fault: health is NOT_SERVING until it clears"
            );
        }
    }

    /// Records that `what` works again.
    pub fn clear(&self, what: &str) {
        if lock(&self.inner.faults).remove(what).is_some() {
            tracing::info!(what, "store fault cleared");
        }
    }

    /// The lag of every lane.
    pub fn lags(&self) -> Vec<Lag> {
        let now = Instant::now();
        lock(&self.inner.lanes)
            .iter()
            .map(|(&(role, partition), state)| lag_of(role, partition, state, now))
            .collect()
    }

    /// The lag of `role`'s lane of `partition`, when the process consumes it.
    pub fn lane_lag(&self, role: &'static str, partition: u32) -> Option<Lag> {
        let lanes = lock(&self.inner.lanes);
        let state = lanes.get(&(role, partition))?;
        Some(lag_of(role, partition, state, Instant::now()))
    }

    /// The error `what` fails with, while it does.
    pub fn fault_of(&self, what: &str) -> Option<String> {
        lock(&self.inner.faults).get(what).cloned()
    }

    /// Why the process is not healthy: stalled lanes and store faults; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let stall_after = *lock(&self.inner.stall_after);
        let mut problems: Vec<String> = self
            .lags()
            .into_iter()
            .filter(|lag| lag.messages > 0 && lag.seconds > stall_after.as_secs_f64())
            .map(|lag| {
                format!(
                    "{} partition {} is stalled: {} behind for {:.0} s",
                    lag.role, lag.partition, lag.messages, lag.seconds
                )
            })
            .collect();
        problems.extend(
            lock(&self.inner.faults)
                .iter()
                .map(|(what, error)| format!("{what} fails: {error}")),
        );
        problems
    }

    /// Registers the lag gauges (`beacon_consumer_lag_messages`, `beacon_consumer_lag_seconds`).
    pub fn register_gauges(&self) {
        let (messages, seconds) = (self.clone(), self.clone());
        meter()
            .u64_observable_gauge("beacon_consumer_lag_messages")
            .with_description("Sequences between a consumer's position and its log's end")
            .with_callback(move |observer| {
                for lag in messages.lags() {
                    observer.observe(lag.messages, &lane_labels(&lag));
                }
            })
            .build();
        meter()
            .f64_observable_gauge("beacon_consumer_lag_seconds")
            .with_description("Seconds since a consumer was last caught up with its log")
            .with_callback(move |observer| {
                for lag in seconds.lags() {
                    observer.observe(lag.seconds, &lane_labels(&lag));
                }
            })
            .build();
    }
}

fn lag_of(role: &'static str, partition: u32, state: &LaneState, now: Instant) -> Lag {
    let position = state.position.load(Ordering::Relaxed);
    let (end, caught_up_at) = *lock(&state.end);
    Lag {
        role,
        partition,
        messages: end.saturating_sub(position),
        seconds: now.duration_since(caught_up_at).as_secs_f64(),
        caught_up: state.caught_up.load(Ordering::Relaxed),
    }
}

fn lane_labels(lag: &Lag) -> [KeyValue; 2] {
    [
        KeyValue::new("role", lag.role),
        KeyValue::new("partition", i64::from(lag.partition)),
    ]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_behind_for_longer_than_the_threshold_is_a_problem() {
        let health = Health::new(Duration::from_millis(50));
        let lane = health.lane("query", 3);
        lane.log_end(10);
        lane.handled(10);
        assert!(health.problems().is_empty());
        lane.log_end(12);
        assert!(health.problems().is_empty(), "behind, but not for long");
        std::thread::sleep(Duration::from_millis(80));
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("query partition 3 is stalled"),
            "{problems:?}"
        );
        assert_eq!(health.lags()[0].messages, 2);
        lane.handled(12);
        assert!(health.problems().is_empty(), "caught up again");
    }

    #[test]
    fn faults_are_problems_until_cleared() {
        let health = Health::new(DEFAULT_STALL_AFTER);
        health.fault("event log", "disk full");
        assert_eq!(health.problems(), ["event log fails: disk full"]);
        health.clear("event log");
        assert!(health.problems().is_empty());
    }
}
