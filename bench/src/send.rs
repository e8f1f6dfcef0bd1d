//! Sends load through the public gateway: gRPC batches of one tenant's events on one shared
//! HTTP/2 channel, and a share of single events as Plausible-style HTTP beacons.
//!
//! Calls run with bounded concurrency, optionally paced to an average rate. A call that fails
//! in a way that may pass (transport error, `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, ...) is retried
//! a few times with the same bytes, hence the same event ids, which Beacon deduplicates.

mod batch;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use beacon_proto::ingest::v1::{Event, EventStatus, SendEventsResponse};
use bytes::Bytes;
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::tenants::TenantKeys;
use crate::traffic::TrafficModel;
use batch::{Batcher, Job};

/// Attempts per call, the first included.
const ATTEMPTS: u32 = 5;
/// Pause before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait for one attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most live events generated ahead of sending.
const MAX_CHUNK: usize = 100_000;
/// How long a tenant's partial batch waits for more events before it is sent anyway, as a
/// client SDK's flush interval.
const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Gateway URL, for example `http://127.0.0.1:8080`.
    pub gateway: String,
    /// Calls in flight at most.
    pub concurrency: usize,
    /// Most events per gRPC call (1 to 1000).
    pub batch: usize,
    /// Average events per second; `None` sends as fast as possible.
    pub rate: Option<u64>,
    /// Fraction of events sent one by one as HTTP beacons instead of gRPC.
    pub http_share: f64,
    /// Whether gRPC batches go to `ImportEvents` (history) instead of `SendEvents`.
    pub import: bool,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// Events the gateway accepted.
    pub acked: u64,
    /// Events the gateway accepted, by tenant index.
    pub acked_by_tenant: Vec<u64>,
    /// Events the gateway rejected (per-event results, or HTTP 400).
    pub rejected: u64,
    /// Calls that failed even after retries; their events are neither acked nor rejected.
    pub failed_calls: u64,
    /// From the first call to the last answer.
    pub elapsed: Duration,
    /// Latency of each successful call (its last attempt), in microseconds.
    pub latency_us: Histogram<u64>,
    /// gRPC calls answered, and the events they carried: the batch size as sent, not as
    /// configured (a tenant's partial batch is sent once it waited [`FLUSH_AFTER`]).
    pub grpc_calls: u64,
    /// Events in the answered gRPC calls.
    pub grpc_events: u64,
}

impl SendReport {
    /// Mean events per answered gRPC call; 0 without calls.
    pub fn events_per_call(&self) -> f64 {
        self.grpc_events as f64 / self.grpc_calls.max(1) as f64
    }
}

/// Sends `total` live events drawn from `model`, timestamped when generated, with the ingest
/// keys `keys` (same order as `model.tenants()`).
pub async fn send(
    config: &SendConfig,
    model: &mut TrafficModel,
    keys: &[TenantKeys],
    total: u64,
) -> anyhow::Result<SendReport> {
    if keys.len() != model.tenants().len() {
        bail!(
            "{} keys for {} tenants of the traffic model",
            keys.len(),
            model.tenants().len()
        );
    }
    let chunk = chunk_size(config);
    let mut batcher = Batcher::new(keys.len(), config.batch, config.http_share);
    let mut remaining = total;
    let jobs = std::iter::from_fn(move || {
        loop {
            if let Some(job) = batcher.pop() {
                return Some(job);
            }
            if remaining == 0 {
                return None;
            }
            let count = remaining.min(chunk as u64);
            let now = beacon_core::time::now_ms();
            for _ in 0..count {
                let (tenant, event) = model.next_event(now);
                batcher.push(tenant, event);
            }
            remaining -= count;
            match remaining {
                0 => batcher.flush(),
                _ => batcher.flush_older(FLUSH_AFTER),
            }
        }
    });
    run(config, keys, jobs).await
}

/// Sends events already generated, as `(tenant index, event)` pairs; `keys` are indexed by
/// tenant index.
pub async fn send_events(
    config: &SendConfig,
    events: Vec<(usize, Event)>,
    keys: &[TenantKeys],
) -> anyhow::Result<SendReport> {
    if let Some((tenant, event)) = events.iter().find(|(tenant, _)| *tenant >= keys.len()) {
        bail!(
            "event {:?} is for tenant #{tenant}, but there are only {} keys",
            event.id,
            keys.len()
        );
    }
    let mut batcher = Batcher::new(keys.len(), config.batch, config.http_share);
    let mut events = events.into_iter();
    let mut flushed = false;
    let jobs = std::iter::from_fn(move || {
        loop {
            if let Some(job) = batcher.pop() {
                return Some(job);
            }
            match events.next() {
                Some((tenant, event)) => batcher.push(tenant, event),
                None if !flushed => {
                    batcher.flush();
                    flushed = true;
                }
                None => return None,
            }
        }
    });
    run(config, keys, jobs).await
}

/// Connects to `gateway`, retrying for up to `window` while it starts.
pub async fn connect(gateway: &str, window: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(gateway.to_owned())
        .with_context(|| format!("gateway URL {gateway:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30));
    let deadline = Instant::now() + window;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("connecting to the gateway {gateway}"));
            }
            Err(err) => {
                tracing::debug!(gateway, error = %err, "gateway not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `message` with `authorization: Bearer <key>` metadata.
pub fn authorized<T>(key: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    Ok(beacon_core::auth::with_bearer(key, message)?)
}

/// The `authorization` value of `key`, encoded once for many calls.
fn bearer(key: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
        anyhow!(
            "a key of {} characters is not valid ASCII metadata",
            key.len()
        )
    })
}

/// Live events generated at once: enough for every call in flight to carry a full batch, and
/// at most about a second's worth when paced.
fn chunk_size(config: &SendConfig) -> usize {
    let batch = config.batch.clamp(1, batch::MAX_BATCH);
    let mut chunk = batch
        .saturating_mul(config.concurrency.max(1))
        .min(MAX_CHUNK);
    if let Some(rate) = config.rate.filter(|r| *r > 0) {
        chunk = chunk.min(usize::try_from(rate).unwrap_or(usize::MAX));
    }
    chunk.max(batch)
}

/// Everything a call needs, shared by the tasks.
struct Sender {
    channel: Channel,
    http: reqwest::Client,
    beacon_url: String,
    grpc_auth: Vec<MetadataValue<Ascii>>,
    http_auth: Vec<HeaderValue>,
    import: bool,
}

/// The fate of one call.
#[derive(Debug, Default)]
struct Outcome {
    tenant: usize,
    acked: u64,
    rejected: u64,
    failed: bool,
    latency_us: Option<u64>,
    /// The events of an answered gRPC call.
    grpc_events: Option<u64>,
}

/// What one attempt says about the call.
enum Attempt {
    /// Answered: accepted and rejected event counts.
    Done(u64, u64),
    /// Failed in a way that may pass.
    Retry(String),
    /// Failed for good.
    Fail(String),
}

impl Sender {
    async fn new(config: &SendConfig, keys: &[TenantKeys]) -> anyhow::Result<Self> {
        let channel = connect(&config.gateway, Duration::from_secs(60)).await?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(config.concurrency.max(1))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        let mut grpc_auth = Vec::with_capacity(keys.len());
        let mut http_auth = Vec::with_capacity(keys.len());
        for key in keys {
            let value =
                bearer(&key.ingest_key).with_context(|| format!("ingest key of {}", key.id))?;
            let header = HeaderValue::from_bytes(value.as_encoded_bytes())
                .with_context(|| format!("ingest key of {}", key.id))?;
            grpc_auth.push(value);
            http_auth.push(header);
        }
        Ok(Self {
            channel,
            http,
            beacon_url: format!("{}/api/event", config.gateway.trim_end_matches('/')),
            grpc_auth,
            http_auth,
            import: config.import,
        })
    }

    /// Runs `job`, retrying what may pass.
    async fn call(&self, job: Job) -> Outcome {
        let grpc = matches!(job, Job::Grpc { .. });
        let (tenant, events, payload) = match job {
            Job::Grpc { tenant, events } => {
                let count = events.len();
                (tenant, count, Payload::Grpc(wire::encode_batch(events)))
            }
            Job::Http { tenant, event } => (tenant, 1, Payload::Http(event)),
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let started = Instant::now();
            let result = match &payload {
                Payload::Grpc(bytes) => self.grpc(tenant, bytes.clone()).await,
                Payload::Http(event) => self.beacon(tenant, event).await,
            };
            match result {
                Attempt::Done(acked, rejected) => {
                    return Outcome {
                        tenant,
                        acked,
                        rejected,
                        failed: false,
                        latency_us: Some(started.elapsed().as_micros() as u64),
                        grpc_events: grpc.then_some(events as u64),
                    };
                }
                Attempt::Retry(error) if attempt < ATTEMPTS => {
                    tracing::debug!(tenant, events, attempt, %error, "call failed; retrying");
                    let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff *= 2;
                }
                Attempt::Retry(error) | Attempt::Fail(error) => {
                    tracing::warn!(tenant, events, attempt, %error, "call failed");
                    break;
                }
            }
        }
        Outcome {
            tenant,
            failed: true,
            ..Outcome::default()
        }
    }

    async fn grpc(&self, tenant: usize, batch: Bytes) -> Attempt {
        let mut request = tonic::Request::new(batch);
        request
            .metadata_mut()
            .insert("authorization", self.grpc_auth[tenant].clone());
        request.set_timeout(CALL_TIMEOUT);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if let Err(err) = grpc.ready().await {
            return Attempt::Retry(format!("gRPC channel not ready: {err}"));
        }
        let path = PathAndQuery::from_static(if self.import {
            wire::IMPORT_EVENTS_PATH
        } else {
            wire::SEND_EVENTS_PATH
        });
        let call = grpc.unary(request, path, wire::EncodedCodec);
        match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), call).await {
            Ok(Ok(reply)) => counted(&reply.into_inner()),
            Ok(Err(status)) if retryable(status.code()) => Attempt::Retry(describe(&status)),
            Ok(Err(status)) => Attempt::Fail(describe(&status)),
            Err(_) => Attempt::Retry(format!("no answer within {CALL_TIMEOUT:?}")),
        }
    }

    async fn beacon(&self, tenant: usize, event: &Event) -> Attempt {
        let mut request = self
            .http
            .post(&self.beacon_url)
            .header("authorization", self.http_auth[tenant].clone())
            .header("content-type", "application/json")
            .header("user-agent", event.user_agent.as_str());
        if !event.client_ip.is_empty() {
            request = request.header("x-forwarded-for", event.client_ip.as_str());
        }
        let response = match request.body(wire::beacon_body(event)).send().await {
            Ok(response) => response,
            Err(err) => return Attempt::Retry(format!("POST {}: {err}", self.beacon_url)),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Done(1, 0);
        }
        let text = response.text().await.unwrap_or_default();
        let error = format!("POST {}: HTTP {status}: {text}", self.beacon_url);
        match status {
            StatusCode::BAD_REQUEST => {
                tracing::debug!(event = %event.id, %error, "beacon rejected");
                Attempt::Done(0, 1)
            }
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry(error),
            s if s.is_server_error() => Attempt::Retry(error),
            _ => Attempt::Fail(error),
        }
    }
}

/// A job's request, encoded once for all attempts.
enum Payload {
    Grpc(Bytes),
    Http(Box<Event>),
}

/// Accepted and rejected counts of a gRPC answer.
fn counted(reply: &SendEventsResponse) -> Attempt {
    if reply.results.is_empty() {
        return Attempt::Done(u64::from(reply.accepted), u64::from(reply.rejected));
    }
    let accepted = EventStatus::Accepted as i32;
    let acked = reply
        .results
        .iter()
        .filter(|r| r.status == accepted)
        .count() as u64;
    if let Some(rejection) = reply.results.iter().find(|r| r.status != accepted) {
        tracing::debug!(event = %rejection.id, error = %rejection.error, "event rejected");
    }
    Attempt::Done(acked, reply.results.len() as u64 - acked)
}

/// gRPC failures that may pass: transport errors surface as `UNAVAILABLE` or `UNKNOWN`.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Dispatches `jobs` with bounded concurrency and optional pacing, and adds up the outcomes.
async fn run(
    config: &SendConfig,
    keys: &[TenantKeys],
    jobs: impl Iterator<Item = Job>,
) -> anyhow::Result<SendReport> {
    let sender = Arc::new(Sender::new(config, keys).await?);
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut totals = Totals::new(keys.len())?;
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut dispatched = 0u64;
    let mut last_log = started;
    for job in jobs {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .context("the concurrency semaphore closed")?;
        if let Some(rate) = config.rate.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(dispatched as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        dispatched += job.events() as u64;
        let sender = Arc::clone(&sender);
        tasks.spawn(async move {
            let outcome = sender.call(job).await;
            drop(permit);
            outcome
        });
        while let Some(joined) = tasks.try_join_next() {
            totals.add(joined);
        }
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            tracing::info!(
                dispatched,
                acked = totals.acked,
                failed_calls = totals.failed_calls,
                "sending"
            );
        }
    }
    while let Some(joined) = tasks.join_next().await {
        totals.add(joined);
    }
    let elapsed = started.elapsed();
    tracing::info!(
        dispatched,
        acked = totals.acked,
        rejected = totals.rejected,
        failed_calls = totals.failed_calls,
        elapsed_ms = elapsed.as_millis() as u64,
        "sent"
    );
    Ok(SendReport {
        acked: totals.acked,
        acked_by_tenant: totals.acked_by_tenant,
        rejected: totals.rejected,
        failed_calls: totals.failed_calls,
        elapsed,
        latency_us: totals.latency_us,
        grpc_calls: totals.grpc_calls,
        grpc_events: totals.grpc_events,
    })
}

/// Running sums of the outcomes.
struct Totals {
    acked: u64,
    acked_by_tenant: Vec<u64>,
    rejected: u64,
    failed_calls: u64,
    latency_us: Histogram<u64>,
    grpc_calls: u64,
    grpc_events: u64,
}

impl Totals {
    fn new(tenants: usize) -> anyhow::Result<Self> {
        Ok(Self {
            acked: 0,
            acked_by_tenant: vec![0; tenants],
            rejected: 0,
            failed_calls: 0,
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .context("creating the latency histogram")?,
            grpc_calls: 0,
            grpc_events: 0,
        })
    }

    fn add(&mut self, joined: Result<Outcome, tokio::task::JoinError>) {
        let outcome = joined.unwrap_or_else(|err| {
            tracing::error!(error = %err, "a send task panicked");
            Outcome {
                failed: true,
                ..Outcome::default()
            }
        });
        self.acked += outcome.acked;
        if let Some(acked) = self.acked_by_tenant.get_mut(outcome.tenant) {
            *acked += outcome.acked;
        }
        self.rejected += outcome.rejected;
        self.failed_calls += u64::from(outcome.failed);
        if let Some(events) = outcome.grpc_events {
            self.grpc_calls += 1;
            self.grpc_events += events;
        }
        if let Some(us) = outcome.latency_us {
            self.latency_us.saturating_record(us.max(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_proto::ingest::v1::EventResult;

    fn config(batch: usize, concurrency: usize, rate: Option<u64>) -> SendConfig {
        SendConfig {
            gateway: "http://127.0.0.1:1".into(),
            concurrency,
            batch,
            rate,
            http_share: 0.0,
            import: false,
        }
    }

    #[test]
    fn chunks_fill_every_call_but_stay_bounded() {
        assert_eq!(chunk_size(&config(100, 32, None)), 3200);
        assert_eq!(chunk_size(&config(1000, 1000, None)), MAX_CHUNK);
        assert_eq!(chunk_size(&config(100, 32, Some(500))), 500);
        assert_eq!(chunk_size(&config(100, 32, Some(10))), 100);
    }

    #[test]
    fn per_event_results_are_counted() {
        let result = |status: EventStatus| EventResult {
            status: status as i32,
            ..Default::default()
        };
        let reply = SendEventsResponse {
            results: vec![
                result(EventStatus::Accepted),
                result(EventStatus::Rejected),
                result(EventStatus::Accepted),
            ],
            accepted: 2,
            rejected: 1,
        };
        assert!(matches!(counted(&reply), Attempt::Done(2, 1)));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(retryable(Code::Unavailable));
        assert!(retryable(Code::ResourceExhausted));
        assert!(!retryable(Code::Unauthenticated));
        assert!(!retryable(Code::InvalidArgument));
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        let err = authorized("sec\nret", ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("7 characters") && !err.contains("sec"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn events_for_unknown_tenants_are_refused_up_front() {
        let keys = [TenantKeys {
            id: "t00000".into(),
            ingest_key: "k".into(),
            read_key: "r".into(),
        }];
        let events = vec![(1, Event::default())];
        let err = send_events(&config(10, 1, None), events, &keys).await.err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("tenant #1"), "{message}");
    }
}
