//! Routing to upstream replicas: the gateway polls every replica each second (query replicas
//! through `ReplicaService.GetServing`: which partitions each serves now; ingest replicas
//! through gRPC health), sends each call to a replica that serves it (round robin among
//! those), and, when the call may be repeated, retries `UNAVAILABLE` (and `CANCELLED`: the
//! connection to the replica closed under the call) on the next replica within the caller's
//! deadline.
//!
//! Replicas are listed by URL or found through DNS (see [`discover`]).
//!
//! Invariant: every upstream call carries a deadline, and no call outlives the caller's.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use beacon_core::grpc::worth_another;
use beacon_core::tls::Tls;
use beacon_proto::pipeline::v1::GetServingRequest;
use beacon_proto::pipeline::v1::replica_service_client::ReplicaServiceClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::GatewayError;
use discover::{RESOLVE_EVERY, Resolver, Source, Target, system_resolver};

mod discover;

/// How often every replica is asked for its state.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// A state older than this is unknown.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// How long a replica that failed a call with UNAVAILABLE is tried last.
const AVOID_FOR: Duration = Duration::from_secs(2);
/// Pause between rounds over every replica.
const ROUND_PAUSE: Duration = Duration::from_millis(200);
/// Longest wait for a new connection to a replica.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How the gateway learns a replica's state.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// `beacon.pipeline.v1.ReplicaService`: the partitions it serves, of a cluster of this
    /// many partitions (a replica of another count is never used).
    Partitions(u32),
    /// gRPC health of the named service.
    Health(&'static str),
}

/// The replicas of one role.
pub struct Upstreams {
    role: &'static str,
    probe: Probe,
    sources: Vec<Source>,
    tls: Tls,
    resolve: Resolver,
    /// The replicas known now; replaced whole when a DNS name resolves to other addresses.
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    next: AtomicUsize,
}

struct Replica {
    url: String,
    /// Index of the source (`--query-url` entry) it comes from.
    source: usize,
    channel: Channel,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the replica last answered its probe, whether it serves, and the partitions it
    /// serves (query replicas).
    seen: Option<(Instant, bool, HashSet<u32>)>,
    /// Tried last until then: it failed a call with UNAVAILABLE.
    avoid_until: Option<Instant>,
}

/// How likely a replica is to answer, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Serving,
    Unknown,
    NotServing,
}

impl Upstreams {
    /// The replicas at `urls` of `role` ("ingest", "query"), probed with `probe`, called over
    /// `tls`; connections are made lazily. `dns+` URLs are resolved by [`Upstreams::watch`].
    pub fn new(
        role: &'static str,
        urls: &[String],
        probe: Probe,
        tls: &Tls,
    ) -> Result<Self, GatewayError> {
        if urls.is_empty() {
            return Err(GatewayError::NoUpstream(role));
        }
        let sources = urls
            .iter()
            .map(|url| Source::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        let mut replicas = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            match source {
                Source::Url(url) => {
                    let target = Target {
                        url: url.clone(),
                        server_name: None,
                    };
                    replicas.push(Arc::new(Replica::new(&target, index, tls)?));
                }
                // Its scheme must match the TLS setting now, not at the first lookup.
                Source::Dns { scheme, host, port } => {
                    tls.endpoint(&format!("{scheme}://{host}:{port}"), None)?;
                }
            }
        }
        Ok(Self {
            role,
            probe,
            sources,
            tls: tls.clone(),
            resolve: system_resolver(),
            replicas: RwLock::new(Arc::new(replicas)),
            next: AtomicUsize::new(0),
        })
    }

    /// These upstreams with DNS names looked up by `resolve`.
    #[cfg(test)]
    fn with_resolver(mut self, resolve: Resolver) -> Self {
        self.resolve = resolve;
        self
    }

    /// The replicas known now.
    fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Looks every DNS name up again and keeps one replica per address: a known address keeps
    /// its connection and state; a name that fails to resolve keeps its replicas.
    async fn resolve_names(&self) {
        let known = self.replicas();
        let mut replicas = Vec::new();
        for (index, source) in self.sources.iter().enumerate() {
            let old = known.iter().filter(|replica| replica.source == index);
            if !source.is_dynamic() {
                replicas.extend(old.cloned());
                continue;
            }
            let targets = match source.targets(&self.resolve).await {
                Ok(targets) => targets,
                Err(err) => {
                    tracing::warn!(role = self.role, ?source, error = %err, "resolving upstream replicas failed; keeping the known ones");
                    replicas.extend(old.cloned());
                    continue;
                }
            };
            for target in targets {
                if let Some(replica) = known
                    .iter()
                    .find(|replica| replica.source == index && replica.url == target.url)
                {
                    replicas.push(replica.clone());
                    continue;
                }
                match Replica::new(&target, index, &self.tls) {
                    Ok(replica) => {
                        tracing::info!(role = self.role, url = %target.url, "upstream replica found");
                        replicas.push(Arc::new(replica));
                    }
                    Err(err) => {
                        tracing::warn!(role = self.role, url = %target.url, error = %err, "upstream replica unusable");
                    }
                }
            }
        }
        for gone in known
            .iter()
            .filter(|old| !replicas.iter().any(|new| Arc::ptr_eq(old, new)))
        {
            tracing::info!(role = self.role, url = %gone.url, "upstream replica gone from DNS");
        }
        *self
            .replicas
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(replicas);
    }

    /// Probes every replica each second, and looks DNS names up every [`RESOLVE_EVERY`],
    /// until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let dynamic = self.sources.iter().any(Source::is_dynamic);
        let mut resolved: Option<Instant> = None;
        let mut interval = tokio::time::interval(POLL_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if dynamic && resolved.is_none_or(|at| at.elapsed() >= RESOLVE_EVERY) {
                self.resolve_names().await;
                resolved = Some(Instant::now());
            }
            let replicas = self.replicas();
            let probes = replicas.iter().map(|replica| self.probe_one(replica));
            futures::future::join_all(probes).await;
        }
    }

    async fn probe_one(&self, replica: &Replica) {
        let answer = tokio::time::timeout(POLL_EVERY, probe(self.probe, replica.channel.clone()))
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 1 s")));
        let mut state = lock(&replica.state);
        match answer {
            Ok((serving, partitions)) => {
                let was = state.seen.as_ref().map(|seen| seen.1);
                if was != Some(serving) {
                    tracing::info!(role = self.role, url = %replica.url, serving, "upstream replica state");
                }
                state.seen = Some((Instant::now(), serving, partitions));
            }
            Err(status) => {
                if state.seen.take().is_some() {
                    tracing::warn!(role = self.role, url = %replica.url, error = %status.message(), "upstream replica does not answer");
                }
            }
        }
    }

    /// The replicas in the order to try them for `partition` (any when `None`): serving ones
    /// first, round robin among equals.
    fn order(&self, partition: Option<u32>) -> Vec<Arc<Replica>> {
        let replicas = self.replicas();
        let n = replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut order: Vec<(Rank, usize)> = (0..n)
            .map(|i| (start + i) % n)
            .map(|i| (replicas[i].rank(partition, now), i))
            .collect();
        order.sort_by_key(|&(rank, _)| rank);
        order
            .into_iter()
            .map(|(_, i)| replicas[i].clone())
            .collect()
    }

    /// Calls `op` on a replica serving `partition` before `deadline`. When `retry`, an
    /// `UNAVAILABLE` answer (or a replica that cannot be reached) is retried on the next
    /// replica, in rounds over all of them, until the deadline. `op` gets the channel and the
    /// time the attempt may take.
    pub async fn call<T, F, Fut>(
        &self,
        partition: Option<u32>,
        deadline: Instant,
        retry: bool,
        mut op: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last: Option<Status> = None;
        let mut timed_out = false;
        loop {
            let order = self.order(partition);
            if order.is_empty() {
                return Err(Status::unavailable(format!(
                    "no {} replica is known yet (its DNS names resolved to no address)",
                    self.role
                )));
            }
            for (tried, replica) in order.iter().enumerate() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(out_of_time(self.role, last, timed_out));
                }
                // Leave time for the others when this one hangs.
                let more = retry && tried + 1 < order.len();
                let budget = if more { remaining / 2 } else { remaining };
                let attempt = tokio::time::timeout(budget, op(replica.channel.clone(), budget));
                let status = match attempt.await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(status)) => status,
                    Err(_) => {
                        timed_out = true;
                        Status::unavailable(format!(
                            "{} replica {} did not answer within {budget:?}",
                            self.role, replica.url
                        ))
                    }
                };
                if !retry || !worth_another(&status) {
                    return Err(status);
                }
                tracing::debug!(role = self.role, url = %replica.url, error = %status.message(), "upstream unavailable; trying another replica");
                lock(&replica.state).avoid_until = Some(Instant::now() + AVOID_FOR);
                last = Some(status);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining <= ROUND_PAUSE {
                return Err(out_of_time(self.role, last, timed_out));
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }
}

impl Replica {
    fn new(target: &Target, source: usize, tls: &Tls) -> Result<Self, GatewayError> {
        let channel = tls
            .endpoint(&target.url, target.server_name.as_deref())?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            url: target.url.clone(),
            source,
            channel,
            state: Mutex::new(State::default()),
        })
    }

    fn rank(&self, partition: Option<u32>, now: Instant) -> Rank {
        let state = lock(&self.state);
        if state.avoid_until.is_some_and(|until| until > now) {
            return Rank::NotServing;
        }
        match &state.seen {
            Some((at, serving, partitions)) if now.duration_since(*at) < STALE_AFTER => {
                let serves = *serving && partition.is_none_or(|p| partitions.contains(&p));
                if serves {
                    Rank::Serving
                } else {
                    Rank::NotServing
                }
            }
            _ => Rank::Unknown,
        }
    }
}

/// Asks one replica whether it serves, and which partitions.
async fn probe(probe: Probe, channel: Channel) -> Result<(bool, HashSet<u32>), Status> {
    match probe {
        Probe::Partitions(count) => {
            let reply = ReplicaServiceClient::new(channel)
                .get_serving(GetServingRequest {})
                .await?
                .into_inner();
            if reply.partition_count != count {
                return Err(Status::failed_precondition(format!(
                    "replica {:?} has {} partitions, this gateway {count}",
                    reply.replica, reply.partition_count
                )));
            }
            let serving: HashSet<u32> = reply
                .partitions
                .iter()
                .filter(|p| p.serving)
                .map(|p| p.partition)
                .collect();
            Ok((!serving.is_empty(), serving))
        }
        Probe::Health(service) => {
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await?
                .into_inner();
            Ok((
                reply.status == ServingStatus::Serving as i32,
                HashSet::new(),
            ))
        }
    }
}

/// The error of a call whose deadline passed: DEADLINE_EXCEEDED when an attempt ran out of
/// time (the call is slow, not the replicas gone: another round would not help), else
/// UNAVAILABLE with the last replica's answer.
fn out_of_time(role: &str, last: Option<Status>, timed_out: bool) -> Status {
    match last {
        Some(status) if timed_out => Status::deadline_exceeded(format!(
            "no {role} replica answered before the deadline; the last said: {}",
            status.message()
        )),
        Some(status) => Status::unavailable(format!(
            "no {role} replica could answer before the deadline; the last said: {}",
            status.message()
        )),
        None => Status::deadline_exceeded(format!(
            "the deadline passed before a {role} replica was asked"
        )),
    }
}

/// The caller's deadline: its `grpc-timeout`, at most `limit` from now, less a margin to
/// answer in.
pub fn deadline_of(metadata: &tonic::metadata::MetadataMap, limit: Duration) -> Instant {
    let asked = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    let within = asked.map_or(limit, |asked| asked.min(limit));
    Instant::now() + within.mul_f64(0.95)
}

/// A `grpc-timeout` value ("100m", "5S"): up to 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
