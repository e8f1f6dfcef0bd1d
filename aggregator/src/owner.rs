//! Partition ownership: any number of aggregator processes share the partitions through leases
//! (`beacon_core::lease`). Every second each process renews the leases it holds and tries the
//! others; it runs a worker for every partition whose lease it holds, stops a worker at once
//! when its lease is lost, and restarts one that was fenced (another writer appended to its
//! rollup log) while the lease is still its own. On shutdown the workers publish and snapshot,
//! then the leases are released, so another process takes over without waiting.
//!
//! Live processes share the partitions fairly: each announces itself every second, takes free
//! partitions only while it holds fewer than its share (the partitions divided by the live
//! processes, rounded up), and hands one over at a time while it holds more: the worker stops
//! as on shutdown (last publish, snapshot), then the lease is released and not tried again for
//! a while, so that a process below its share takes it.
//!
//! Invariant: a process runs a partition's worker only while it holds the partition's lease;
//! a worker that lost it may still be running for up to a second, and the fencing of the
//! rollup log (see `worker::publish`) keeps it from publishing beside the new owner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use beacon_core::backends::Backends;
use beacon_core::consumer::Lane;
use beacon_core::lease::{Lease, Members, Renewed, Watched};
use beacon_core::raw::RawStore;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::AggregatorError;
use crate::worker::{self, Settings};

/// How often leases are renewed and free ones tried.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The role name of lanes and leases.
const ROLE: &str = "aggregator";
/// How long a partition handed over is not tried again, so that another process takes it.
const HANDED_OVER_FOR: Duration = Duration::from_secs(10);

/// A running worker's tokens: `stop` ends it gracefully, `lost` tells it its lease is gone.
struct Running {
    stop: CancellationToken,
    lost: CancellationToken,
    /// When its lease was last renewed.
    renewed: Renewed,
}

/// The partitions this process owns, and their workers.
pub struct Owner {
    backends: Backends,
    raw: Arc<dyn RawStore>,
    timing: Settings,
    /// This process, as lease holder.
    holder: String,
    shutdown: CancellationToken,
    held: BTreeMap<u32, Lease>,
    running: HashMap<u32, Running>,
    workers: JoinSet<Result<(), AggregatorError>>,
    /// The partition of each worker task.
    tasks: HashMap<Id, u32>,
    watched: Watched,
    /// The live aggregators.
    members: Members,
    /// How many were live at the last count.
    live: usize,
    /// Partitions whose workers stop to hand them over; their leases are released once
    /// they stopped.
    handing_over: BTreeSet<u32>,
    /// Partitions handed over, and when: not tried again for [`HANDED_OVER_FOR`].
    handed_over: HashMap<u32, tokio::time::Instant>,
}

impl Owner {
    /// An owner of no partition yet.
    pub fn new(
        backends: Backends,
        raw: Arc<dyn RawStore>,
        timing: Settings,
        shutdown: CancellationToken,
    ) -> Self {
        let holder = holder_name(&backends.data_dir);
        Self {
            backends,
            raw,
            timing,
            holder,
            shutdown,
            held: BTreeMap::new(),
            running: HashMap::new(),
            workers: JoinSet::new(),
            tasks: HashMap::new(),
            watched: Watched::default(),
            members: Members::default(),
            live: 1,
            handing_over: BTreeSet::new(),
            handed_over: HashMap::new(),
        }
    }

    /// Owns what it can of `partitions` until shutdown; then drains the workers and releases
    /// the leases. A worker's failure other than fencing stops every worker and is returned.
    pub async fn run(&mut self, partitions: &[u32]) -> Result<(), AggregatorError> {
        tracing::info!(holder = %self.holder, ?partitions, "aggregator taking partition leases");
        let mut interval = tokio::time::interval(CHECK_EVERY);
        let mut failure = None;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                Some(joined) = self.workers.join_next_with_id(), if !self.workers.is_empty() => {
                    if let Err(err) = self.ended(joined) {
                        failure = Some(err);
                        break;
                    }
                }
                _ = interval.tick() => self.check(partitions).await,
            }
        }
        for running in self.running.values() {
            running.stop.cancel();
        }
        while let Some(joined) = self.workers.join_next_with_id().await {
            if let Err(err) = self.ended(joined) {
                failure.get_or_insert(err);
            }
        }
        self.release_all().await;
        if let Err(err) = self
            .members
            .withdraw(&self.backends.leases, ROLE, &self.holder)
            .await
        {
            tracing::warn!(error = %err, "withdrawing from the aggregators failed; it expires");
        }
        failure.map_or(Ok(()), Err)
    }

    /// Announces this process and counts the live ones; its fair share of `partitions`. A
    /// process limited to some partitions (`--aggregator-partitions`) takes all it can: the
    /// others' limits are not known here.
    async fn share(&mut self, partitions: usize) -> usize {
        if partitions < self.backends.partitions as usize {
            return partitions;
        }
        let leases = self.backends.leases.clone();
        if let Err(err) = self.members.announce(&leases, ROLE, &self.holder).await {
            tracing::warn!(error = %err, "announcing this aggregator failed");
        }
        match self.members.live(&leases, ROLE).await {
            Ok(live) => {
                if live != self.live {
                    tracing::info!(live, "live aggregators");
                }
                self.live = live;
            }
            Err(err) => tracing::warn!(error = %err, "counting the live aggregators failed"),
        }
        partitions.div_ceil(self.live)
    }

    /// Releases the leases of partitions whose workers stopped to hand them over.
    async fn release_handed_over(&mut self) {
        let stopped: Vec<u32> = self
            .handing_over
            .iter()
            .copied()
            .filter(|partition| !self.running.contains_key(partition))
            .collect();
        for partition in stopped {
            self.handing_over.remove(&partition);
            let Some(lease) = self.held.remove(&partition) else {
                continue;
            };
            match self.backends.leases.release(lease).await {
                Ok(()) => tracing::info!(
                    partition,
                    "partition handed over to balance the aggregators"
                ),
                Err(err) => {
                    tracing::warn!(partition, error = %err, "releasing a handed-over lease failed; it expires")
                }
            }
            self.handed_over
                .insert(partition, tokio::time::Instant::now());
        }
        self.handed_over
            .retain(|_, at| at.elapsed() < HANDED_OVER_FOR);
    }

    /// Stops one worker to hand its partition over while this process holds more than its
    /// `share`, one at a time.
    fn balance(&mut self, share: usize) {
        if self.held.len() <= share || !self.handing_over.is_empty() {
            return;
        }
        let Some(&partition) = self.held.keys().next_back() else {
            return;
        };
        tracing::info!(
            partition,
            held = self.held.len(),
            share,
            "handing a partition over"
        );
        self.handing_over.insert(partition);
        if let Some(running) = self.running.get(&partition) {
            running.stop.cancel();
        }
    }

    /// Renews the held leases (stopping the workers of lost ones), tries the others, and
    /// starts a worker for every held partition without one.
    async fn check(&mut self, partitions: &[u32]) {
        let share = self.share(partitions.len()).await;
        self.release_handed_over().await;
        let leases = self.backends.leases.clone();
        for &partition in partitions {
            if let Some(lease) = self.held.get_mut(&partition) {
                match leases.renew(lease, &self.holder).await {
                    Ok(true) => {
                        if let Some(running) = self.running.get(&partition) {
                            running.renewed.mark();
                        }
                    }
                    Ok(false) => self.lost(partition, "another process took it"),
                    Err(err) if lease.may_be_lost() => self.lost(partition, &err.to_string()),
                    Err(err) => {
                        tracing::warn!(partition, error = %err, "renewing a partition lease failed; retrying");
                    }
                }
            } else if !self.handed_over.contains_key(&partition) {
                // Below its share a process takes free partitions; at it, it only watches them
                // (a dead holder's are then taken at once when the share grows).
                let take = self.held.len() < share;
                let key = format!("{ROLE}.{partition}");
                match leases
                    .acquire(&key, &self.holder, &mut self.watched, take)
                    .await
                {
                    Ok(Some(lease)) => {
                        tracing::info!(partition, holder = %self.holder, fencing = lease.revision(), "partition lease taken");
                        self.held.insert(partition, lease);
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::debug!(partition, error = %err, "trying a partition lease failed")
                    }
                }
            }
            if self.held.contains_key(&partition)
                && !self.running.contains_key(&partition)
                && !self.handing_over.contains(&partition)
            {
                self.start(partition);
            }
        }
        self.balance(share);
    }

    /// Starts the worker of a held partition.
    fn start(&mut self, partition: u32) {
        let (stop, lost) = (self.shutdown.child_token(), CancellationToken::new());
        let renewed = Renewed::now();
        let lane = Lane::new(
            ROLE,
            partition,
            self.backends.dead_letters.clone(),
            stop.clone(),
        )
        .with_decisions(self.backends.snapshots.clone());
        let task = worker::run_partition(
            lane,
            self.timing,
            self.backends.clone(),
            self.raw.clone(),
            lost.clone(),
            renewed.clone(),
        );
        let id = self.workers.spawn(task).id();
        self.tasks.insert(id, partition);
        self.running.insert(
            partition,
            Running {
                stop,
                lost,
                renewed,
            },
        );
    }

    /// Stops the worker of a partition whose lease is gone, without a last publish.
    fn lost(&mut self, partition: u32, why: &str) {
        tracing::warn!(partition, why, "partition lease lost; stopping its worker");
        self.held.remove(&partition);
        self.handing_over.remove(&partition);
        if let Some(running) = self.running.get(&partition) {
            running.lost.cancel();
            running.stop.cancel();
        }
    }

    /// Handles a worker that ended: fenced or stopped ones are forgotten (a held partition's
    /// worker starts again on the next check); any other failure is returned.
    fn ended(
        &mut self,
        joined: Result<(Id, Result<(), AggregatorError>), JoinError>,
    ) -> Result<(), AggregatorError> {
        let (id, result) = match joined {
            Ok(ended) => ended,
            Err(err) => {
                let reason = if err.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                let partition = self.tasks.remove(&err.id()).unwrap_or(u32::MAX);
                self.running.remove(&partition);
                return Err(AggregatorError::Worker {
                    partition,
                    reason: reason.to_owned(),
                });
            }
        };
        let partition = self.tasks.remove(&id).unwrap_or(u32::MAX);
        self.running.remove(&partition);
        if !self.held.contains_key(&partition) {
            beacon_core::observe::health().forget_lane(ROLE, partition);
        }
        match result {
            Ok(()) => Ok(()),
            // Its last publish failed: the next owner recomputes what was pending from the
            // snapshot, as after a crash.
            Err(err) if self.handing_over.contains(&partition) => {
                tracing::warn!(partition, error = %err, "a worker handed over ended with an error");
                Ok(())
            }
            Err(err @ AggregatorError::Fenced { .. }) => {
                tracing::warn!(partition, error = %err, "worker fenced; starting over from the snapshot if the lease is still held");
                Ok(())
            }
            Err(err) => {
                tracing::error!(partition, error = %err, "partition worker failed; stopping the aggregator");
                Err(err)
            }
        }
    }

    /// Gives every held lease up.
    async fn release_all(&mut self) {
        let leases = self.backends.leases.clone();
        for (partition, lease) in std::mem::take(&mut self.held) {
            match leases.release(lease).await {
                Ok(()) => tracing::info!(partition, "partition lease released"),
                Err(err) => {
                    tracing::warn!(partition, error = %err, "releasing a partition lease failed; it expires")
                }
            }
        }
    }
}

/// This process as a lease holder: the host and the data folder, which stay the same across a
/// restart (so a restarted aggregator takes its partitions back at once) and differ between
/// aggregators sharing a host.
fn holder_name(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let folder = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{}:{}", host.trim(), folder.display())
}
