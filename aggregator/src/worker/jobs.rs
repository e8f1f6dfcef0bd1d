//! Restatement jobs inside a partition's lane: the worker advances them between chunks, so a
//! job and live events meet in one ordered stream.
//!
//! A job starts by publishing the pending live deltas and recording the cut: the position of
//! the last event processed, and the positions of the tenant's events up to it still held back
//! (see `hold`), which reach the generation live. Its replay reads the other raw events first
//! seen up to the cut and stages
//! their rows in the job's generation, one rollup message at a time, checkpointing after each
//! (the rollup log holds the parts, the job record the replay's cursor and state; a resumed job
//! may publish a stage again, which the query role skips). Live deltas of the tenant's events
//! after the cut are copied into the generation as they are published. When the replay is done,
//! the live deltas are published and then the swap: at that point of the rollup log the
//! generation holds every event of the range exactly once, and replaces the live rows of its
//! dates in one transaction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use beacon_core::consumer::Halt;
use beacon_core::jobs::{self, Jobs};
use beacon_core::time::now_ms;
use beacon_proto::pipeline::v1::{
    RestatementJob, RestatementKind, RestatementState, RollupBatch, Swap, TenantRollup,
};
use bytes::Bytes;
use prost::Message;

use super::{Position, Worker};
use crate::AggregatorError;
use crate::restate::STAGE_BYTES;
use crate::restate::{self, DateRange, Replay};
use crate::rollup::BATCH_OVERHEAD;

/// How often the worker looks for new jobs and cancel requests.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Time one tick may spend replaying, so live events keep flowing.
const STEP_BUDGET: Duration = Duration::from_millis(400);
/// After late-event jobs kept the lane busy for a while, no new one starts for this many times
/// as long: recomputing days that received late events takes at most a tenth of the lane's time.
///
/// A visitor's events that arrive slightly out of order (a browser's beacon overtaking the
/// server's batch holding the visitor's earlier event) mark the day dirty again and again. A
/// late job replays the tenant's days around it from the raw store, so without a pause a busy
/// tenant was replayed every poll: in a 300,000-event run whose calls of one tenant each waited
/// up to a second, replays took 23 % of the CPU samples. The days are counted at once anyway;
/// the pause only delays their exact recount, and the job waits as a pending one in the open.
const LATE_PAUSE_FACTOR: u32 = 9;

/// A job being advanced.
struct Active {
    job: RestatementJob,
    replay: Option<Replay>,
    cancel: bool,
}

/// The partition's open jobs, at most one per tenant.
pub(super) struct JobRunner {
    jobs: Jobs,
    active: BTreeMap<String, Active>,
    last_poll: Option<Instant>,
    /// When new late-event jobs may be created.
    late: LatePace,
}

/// Paces late-event jobs: none is created before `resume` (see [`LATE_PAUSE_FACTOR`]).
#[derive(Debug, Default)]
struct LatePace {
    resume: Option<Instant>,
}

impl LatePace {
    /// Counts `busy`, time the lane spent on a late-event job until `now`, against new ones:
    /// they wait [`LATE_PAUSE_FACTOR`] times as long, on top of any pause still running.
    fn add(&mut self, now: Instant, busy: Duration) {
        let from = self.resume.map_or(now, |at| at.max(now));
        self.resume = Some(from + busy * LATE_PAUSE_FACTOR);
    }

    /// When a late-event job created at `now` (Unix time `now_ms`) may start, in Unix
    /// milliseconds; `None` if at once.
    fn resume_ms(&self, now: Instant, now_ms: i64) -> Option<i64> {
        let wait = self.resume?.checked_duration_since(now)?;
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        (!wait.is_zero()).then(|| now_ms.saturating_add(wait_ms))
    }
}

impl JobRunner {
    /// No jobs yet; they are found by the first poll.
    pub(super) fn new(jobs: Jobs) -> Self {
        Self {
            jobs,
            active: BTreeMap::new(),
            last_poll: None,
            late: LatePace::default(),
        }
    }

    /// Copies, into the generation of each running job, the rows of its tenant's live deltas
    /// that fall on its dates. `first` is the first event the deltas cover: only deltas of
    /// events after a job's cut are copied (earlier ones are in its replay).
    pub(super) fn copy_live(&self, parts: &mut Vec<TenantRollup>, first: Position) {
        let mut copies = Vec::new();
        for part in parts.iter() {
            let Some(active) = self.active.get(&part.tenant_id) else {
                continue;
            };
            let job = &active.job;
            if job.state() != RestatementState::Running || job.generation == 0 {
                continue;
            }
            let cut = Position {
                seq: job.cut_seq,
                index: job.cut_index,
            };
            if first <= cut {
                tracing::error!(job = %job.id, ?first, ?cut, "live deltas straddle a job's cut; not copied");
                continue;
            }
            let on_dates = |date: &String| &job.first_date <= date && date <= &job.last_date;
            let rows: Vec<_> = part
                .rows
                .iter()
                .filter(|row| on_dates(&row.local_date))
                .cloned()
                .collect();
            // A job of a logic version without the event store replays no events: copies
            // would leave it some events of its dates and not others.
            let events: Vec<_> = part
                .events
                .iter()
                .filter(|row| job.logic_version >= 6 && on_dates(&row.local_date))
                .cloned()
                .collect();
            if !rows.is_empty() || !events.is_empty() {
                copies.push(TenantRollup {
                    tenant_id: part.tenant_id.clone(),
                    rows,
                    events,
                    generation: job.generation,
                    ..TenantRollup::default()
                });
            }
        }
        parts.extend(copies);
    }
}

impl Worker {
    /// Finds new jobs now and then, then advances every open one within the step budget.
    pub(super) async fn run_jobs(&mut self) -> Result<(), Halt<AggregatorError>> {
        if self
            .jobs
            .last_poll
            .is_none_or(|at| at.elapsed() >= POLL_EVERY)
        {
            self.jobs.last_poll = Some(Instant::now());
            self.poll_jobs().await;
        }
        let deadline = Instant::now() + STEP_BUDGET;
        let tenants: Vec<String> = self.jobs.active.keys().cloned().collect();
        for tenant in tenants {
            let late = self
                .jobs
                .active
                .get(&tenant)
                .is_some_and(|active| active.job.kind() == RestatementKind::LateEvents);
            let started = Instant::now();
            let advanced = self.advance_job(&tenant, deadline).await;
            if late {
                self.jobs.late.add(Instant::now(), started.elapsed());
            }
            if let Err(err) = advanced {
                match err {
                    Halt::Stopped => return Err(Halt::Stopped),
                    Halt::Failed(err) => self.fail_job(&tenant, err).await?,
                }
            }
        }
        Ok(())
    }

    /// Loads the partition's open jobs before the first event is handled, so that live deltas
    /// of a resumed job's tenant are copied into its generation from the start.
    pub(super) async fn load_jobs(&mut self) -> Result<(), Halt<AggregatorError>> {
        let (jobs, partition) = (&self.jobs.jobs, self.lane.partition());
        let found = self
            .lane
            .retry("listing restatement jobs", || jobs.of_partition(partition))
            .await
            .map_err(|halt| {
                super::failed(halt, format!("listing the jobs of partition {partition}"))
            })?;
        self.adopt(found);
        self.jobs.last_poll = Some(Instant::now());
        Ok(())
    }

    /// Takes up the open jobs among `found` whose tenant has none active, oldest first.
    fn adopt(&mut self, mut found: Vec<RestatementJob>) {
        found.sort_by_key(|job| job.created_ms);
        for job in found {
            if jobs::is_open(&job) && !self.jobs.active.contains_key(&job.tenant_id) {
                tracing::info!(partition = self.lane.partition(), job = %job.id, "restatement job found");
                self.jobs.active.insert(
                    job.tenant_id.clone(),
                    Active {
                        job,
                        replay: None,
                        cancel: false,
                    },
                );
            }
        }
    }

    /// Loads jobs of this partition that are open and not active yet, notes cancel requests and
    /// turns dirty dates into late-event jobs, which wait for the pause (see [`LatePace`]) in
    /// the open. Failures are logged; the next poll tries again.
    async fn poll_jobs(&mut self) {
        let partition = self.lane.partition();
        match self.jobs.jobs.of_partition(partition).await {
            Ok(found) => self.adopt(found),
            Err(err) => tracing::warn!(partition, error = %err, "listing restatement jobs failed"),
        }
        for active in self.jobs.active.values_mut() {
            if active.job.kind() == RestatementKind::Reprocess
                && let Ok(true) = self.jobs.jobs.cancel_requested(&active.job.id).await
            {
                active.cancel = true;
            }
        }
        let not_before_ms = self.jobs.late.resume_ms(Instant::now(), now_ms());
        for tenant in self.processor.dirty_tenants() {
            if self.jobs.active.contains_key(&tenant) {
                continue;
            }
            let dates = self.processor.take_dirty(&tenant);
            if let Some(mut job) = late_job(&tenant, &dates) {
                tracing::info!(partition, tenant, first = %job.first_date, last = %job.last_date, not_before_ms, "recomputing days that received late events");
                if let Some(at) = not_before_ms {
                    // Saved at once, so that it shows as pending while it waits.
                    job.not_before_ms = at;
                    if let Err(err) = self.jobs.jobs.save(partition, &job).await {
                        tracing::warn!(partition, job = %job.id, error = %err, "saving a paced late-event job failed");
                    }
                }
                self.jobs.active.insert(
                    tenant,
                    Active {
                        job,
                        replay: None,
                        cancel: false,
                    },
                );
            }
        }
    }

    /// One job's next steps: start, replay and stage, swap, or cancel.
    async fn advance_job(
        &mut self,
        tenant: &str,
        deadline: Instant,
    ) -> Result<(), Halt<AggregatorError>> {
        let Some(active) = self.jobs.active.get(tenant) else {
            return Ok(());
        };
        if active.cancel {
            return self
                .close_job(tenant, RestatementState::Cancelled, String::new())
                .await;
        }
        if active.job.state() == RestatementState::Pending {
            // While events already published are replayed silently after a restart, a cut
            // there would leave them neither replayed nor copied.
            if active.job.not_before_ms > now_ms() || self.processed < self.published {
                return Ok(());
            }
            self.start_job(tenant).await?;
        }
        let mut budget = usize::try_from(self.timing.restate_events_per_tick).unwrap_or(usize::MAX);
        while Instant::now() < deadline && budget > 0 {
            let Some(active) = self.jobs.active.get_mut(tenant) else {
                return Ok(());
            };
            if active.replay.is_none() {
                active.replay = Some(Replay::of(&active.job).map_err(Halt::Failed)?);
                self.publish_pending_part(tenant).await?;
                continue;
            }
            let Some(replay) = active.replay.as_mut() else {
                return Ok(());
            };
            let read = replay
                .step(self.raw.as_ref(), budget, STAGE_BYTES - BATCH_OVERHEAD)
                .await
                .map_err(Halt::Failed)?;
            budget = budget.saturating_sub(read.max(1));
            let full = replay.pending_size_bound() + BATCH_OVERHEAD >= STAGE_BYTES;
            if replay.is_done() {
                self.stage(tenant).await?;
                return self.swap(tenant).await;
            }
            if full {
                self.stage(tenant).await?;
            }
        }
        self.stage(tenant).await
    }

    /// Publishes the live deltas, records the cut and the generation, and saves the job: from
    /// then on, live deltas of the tenant are copied into the generation.
    async fn start_job(&mut self, tenant: &str) -> Result<(), Halt<AggregatorError>> {
        self.publish_pending().await?;
        let (partition, cut, version) = (self.lane.partition(), self.processed, self.version);
        let Some(active) = self.jobs.active.get_mut(tenant) else {
            return Ok(());
        };
        let job = &mut active.job;
        let range = if job.kind() == RestatementKind::Reset {
            // Every date, whatever raw events are left (retention may have removed the
            // oldest).
            let range = DateRange::parse("0001-01-01", "9999-12-30").map_err(Halt::Failed)?;
            job.first_date = range.first.to_string();
            job.last_date = range.last.to_string();
            range
        } else if job.whole_history {
            let raw = self.raw.as_ref();
            let range = self
                .lane
                .retry("reading a tenant's history bounds", || {
                    restate::history_range(raw, tenant, now_ms())
                })
                .await
                .map_err(|halt| super::failed(halt, format!("reading the history of {tenant}")))?;
            job.first_date = range.first.to_string();
            job.last_date = range.last.to_string();
            range
        } else {
            DateRange::parse(&job.first_date, &job.last_date).map_err(Halt::Failed)?
        };
        let tenants = &self.backends.tenants;
        let found = self
            .lane
            .retry("reading the tenant", || tenants.tenant(tenant))
            .await
            .map_err(|halt| super::failed(halt, format!("reading tenant {tenant}")))?;
        // History is restated in the tenant's zone of today, whatever zone events were
        // stamped with when they arrived (a time-zone change restates them all).
        if let Some(found) = &found
            && job.time_zone.is_empty()
        {
            job.time_zone.clone_from(&found.time_zone);
        }
        // Dates whose raw events may have expired keep their numbers: restating them from
        // what is left would lose events (a reset removes them all the same).
        let kept_days = match job.kind() {
            RestatementKind::Reset => 0,
            _ => found.as_ref().map_or(0, |t| t.raw_retention_days),
        };
        let range = match restate::within_retention(range, kept_days, now_ms()) {
            Some(range) => range,
            None => {
                let error = format!(
                    "dates {} to {} lie outside the tenant's raw-event retention ({kept_days} \
                     days): their numbers are kept but cannot be recomputed",
                    job.first_date, job.last_date
                );
                return self
                    .finish_job(tenant, RestatementState::Failed, error)
                    .await;
            }
        };
        job.first_date = range.first.to_string();
        // Deleted before the cut: the replay cannot see them, and events stored later are
        // not the ones asked for. Those still held back are dropped from the hold. The state
        // is snapshotted first (which trims the event log below it), so that a restart cannot
        // store deleted events again from the log, nor hold them again.
        if let Some(filter) = job.delete.clone() {
            let dropped = self.hold.drop_where(|event| {
                event.tenant_id == tenant && restate::deleted_by(&filter, &range, event)
            });
            if (dropped > 0 || self.snapshot_seq < self.processed.seq)
                && !self.save_snapshot().await.map_err(Halt::Failed)?
            {
                return Ok(());
            }
        }
        let Some(active) = self.jobs.active.get_mut(tenant) else {
            return Ok(());
        };
        let job = &mut active.job;
        if let Some(filter) = &job.delete {
            let raw = self.raw.as_ref();
            job.deleted = self
                .lane
                .retry("deleting raw events", || {
                    restate::delete_matching(raw, tenant, &range, filter)
                })
                .await
                .map_err(|halt| super::failed(halt, format!("deleting raw events of {tenant}")))?;
            tracing::info!(partition, job = %job.id, deleted = job.deleted, "raw events deleted");
        }
        (job.from_ms, job.to_ms) = range.scan_bounds();
        job.cut_seq = cut.seq;
        job.cut_index = cut.index;
        job.held = self.hold.positions_of(tenant);
        job.generation = u64::try_from(now_ms()).unwrap_or(1).max(1);
        job.started_ms = now_ms();
        job.logic_version = version;
        job.set_state(RestatementState::Running);
        let job = job.clone();
        self.save_job(partition, &job).await?;
        tracing::info!(partition, job = %job.id, cut_seq = cut.seq, generation = job.generation, "restatement job started");
        Ok(())
    }

    /// Publishes the replay's pending rows as the job's next stage, then checkpoints the job.
    async fn stage(&mut self, tenant: &str) -> Result<(), Halt<AggregatorError>> {
        let partition = self.lane.partition();
        let Some(active) = self.jobs.active.get_mut(tenant) else {
            return Ok(());
        };
        let Some(replay) = active.replay.as_mut() else {
            return Ok(());
        };
        let (mut rows, mut events) = (Vec::new(), Vec::new());
        for part in replay.take_parts() {
            rows.extend(part.rows);
            events.extend(part.events);
        }
        let job = &mut active.job;
        if !rows.is_empty() || !events.is_empty() {
            job.stage += 1;
            let part = TenantRollup {
                tenant_id: job.tenant_id.clone(),
                rows,
                events,
                generation: job.generation,
                stage: job.stage,
                ..TenantRollup::default()
            };
            job.pending_part = part.encode_to_vec();
        }
        // The part is saved with the checkpoint after it before it is published: a restart
        // publishes this very part again instead of cutting a different one.
        replay.checkpoint(job);
        let job = job.clone();
        self.save_job(partition, &job).await?;
        self.publish_pending_part(tenant).await
    }

    /// Publishes the stage saved with the job's checkpoint, if any, and forgets it.
    async fn publish_pending_part(&mut self, tenant: &str) -> Result<(), Halt<AggregatorError>> {
        let partition = self.lane.partition();
        let Some(active) = self.jobs.active.get_mut(tenant) else {
            return Ok(());
        };
        let bytes = std::mem::take(&mut active.job.pending_part);
        if bytes.is_empty() {
            return Ok(());
        }
        let job = &active.job;
        let part = TenantRollup::decode(bytes.as_slice()).map_err(|err| {
            Halt::Failed(AggregatorError::decode(
                format!("the pending part of job {}", job.id),
                err,
            ))
        })?;
        let msg_id = part_msg_id(partition, &job.id, job.generation, &part.stage.to_string());
        let job_id = job.id.clone();
        self.publish_job_part(&msg_id, part, &job_id).await
    }

    /// Publishes the live deltas, then the swap, and closes the job.
    async fn swap(&mut self, tenant: &str) -> Result<(), Halt<AggregatorError>> {
        self.publish_pending().await?;
        let partition = self.lane.partition();
        let Some(active) = self.jobs.active.get_mut(tenant) else {
            return Ok(());
        };
        let after_cut = active.replay.as_ref().map_or(0, Replay::after_cut);
        let job = &mut active.job;
        tracing::info!(partition, job = %job.id, after_cut, "replay done; swapping the generation in");
        job.stage += 1;
        let part = TenantRollup {
            tenant_id: job.tenant_id.clone(),
            generation: job.generation,
            stage: job.stage,
            swap: Some(Swap {
                first_date: job.first_date.clone(),
                last_date: job.last_date.clone(),
                job_id: job.id.clone(),
            }),
            ..TenantRollup::default()
        };
        let msg_id = part_msg_id(partition, &job.id, job.generation, "swap");
        let job_id = job.id.clone();
        self.publish_job_part(&msg_id, part, &job_id).await?;
        self.finish_job(tenant, RestatementState::Done, String::new())
            .await
    }

    /// Drops the job's generation and closes it as cancelled or failed.
    async fn close_job(
        &mut self,
        tenant: &str,
        state: RestatementState,
        error: String,
    ) -> Result<(), Halt<AggregatorError>> {
        let partition = self.lane.partition();
        let Some(active) = self.jobs.active.get(tenant) else {
            return Ok(());
        };
        let (job_id, generation) = (active.job.id.clone(), active.job.generation);
        // Closed first: a restart must not resume it (a staged generation that was never
        // dropped only takes space; a resumed job would swap in what was cancelled).
        self.finish_job(tenant, state, error).await?;
        if generation != 0 {
            let part = TenantRollup {
                tenant_id: tenant.to_owned(),
                generation,
                drop: true,
                ..TenantRollup::default()
            };
            let msg_id = part_msg_id(partition, &job_id, generation, "drop");
            self.publish_job_part(&msg_id, part, &job_id).await?;
        }
        Ok(())
    }

    /// Records the job's end and forgets it.
    async fn finish_job(
        &mut self,
        tenant: &str,
        state: RestatementState,
        error: String,
    ) -> Result<(), Halt<AggregatorError>> {
        let partition = self.lane.partition();
        let Some(mut active) = self.jobs.active.remove(tenant) else {
            return Ok(());
        };
        let job = &mut active.job;
        job.set_state(state);
        job.error = error;
        job.finished_ms = now_ms();
        job.checkpoint = None;
        tracing::info!(partition, job = %job.id, state = ?state, events = job.events, stages = job.stage, error = %job.error, "restatement job ended");
        self.save_job(partition, job).await?;
        if job.delete_tenant && state == RestatementState::Done {
            let tenants = &self.backends.tenants;
            self.lane
                .retry("removing a deleted tenant's record", || {
                    tenants.delete_tenant(tenant)
                })
                .await
                .map_err(|halt| super::failed(halt, format!("removing tenant {tenant}")))?;
            tracing::info!(partition, tenant, "tenant removed");
        }
        Ok(())
    }

    /// A job that cannot go on: its generation is dropped and the error recorded.
    async fn fail_job(
        &mut self,
        tenant: &str,
        err: AggregatorError,
    ) -> Result<(), Halt<AggregatorError>> {
        tracing::error!(partition = self.lane.partition(), tenant, error = %err, "restatement job failed");
        self.close_job(tenant, RestatementState::Failed, err.to_string())
            .await
    }

    /// Publishes one job part in a message of its own, at the position of the last published
    /// rollup (it covers no events).
    async fn publish_job_part(
        &mut self,
        msg_id: &str,
        part: TenantRollup,
        job: &str,
    ) -> Result<(), Halt<AggregatorError>> {
        let batch = RollupBatch {
            partition: self.lane.partition(),
            first_event_seq: self.published.seq,
            last_event_seq: self.published.seq,
            logic_version: self.version,
            tenants: vec![part],
            first_event_index: self.published.index,
            last_event_index: self.published.index,
            replay: true,
            from_dead_letter: false,
            event_log: self.event_log.clone().unwrap_or_default(),
        };
        let payload = Bytes::from(batch.encode_to_vec());
        let what = format!("publishing part {msg_id} of job {job}");
        self.append_rollup(&what, msg_id, payload).await
    }

    /// Saves a job record, retrying transient failures.
    async fn save_job(
        &self,
        partition: u32,
        job: &RestatementJob,
    ) -> Result<(), Halt<AggregatorError>> {
        let jobs = &self.jobs.jobs;
        self.lane
            .retry("saving a restatement job", || jobs.save(partition, job))
            .await
            .map_err(|halt| super::failed(halt, format!("saving job {}", job.id)))
    }
}

/// The message id of one part of a job's generation (`suffix`: the stage, "swap" or "drop"):
/// unique per generation, so a part published again is deduplicated by the log, and a later
/// job's parts never are.
fn part_msg_id(partition: u32, job_id: &str, generation: u64, suffix: &str) -> String {
    format!("restate-{partition}-{job_id}-{generation}-{suffix}")
}

/// The job that recomputes a tenant's dirty dates and the days around them (a session of a
/// late event may start the day before, or go on the day after).
fn late_job(tenant: &str, dates: &[String]) -> Option<RestatementJob> {
    let parse = |text: &String| text.parse::<jiff::civil::Date>().ok();
    let first = dates.iter().filter_map(parse).min()?;
    let last = dates.iter().filter_map(parse).max()?;
    let mut job = RestatementJob {
        id: format!("{tenant}.late"),
        tenant_id: tenant.to_owned(),
        first_date: first.yesterday().unwrap_or(first).to_string(),
        last_date: last.tomorrow().unwrap_or(last).to_string(),
        created_ms: now_ms(),
        ..RestatementJob::default()
    };
    job.set_kind(RestatementKind::LateEvents);
    job.set_state(RestatementState::Pending);
    Some(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_jobs_wait_nine_times_the_time_late_jobs_took() {
        let mut pace = LatePace::default();
        let t0 = Instant::now();
        // When a job created `ms` milliseconds after t0 (Unix time 1,000,000 + ms) may start.
        let at = |pace: &LatePace, ms: u64| {
            pace.resume_ms(t0 + Duration::from_millis(ms), 1_000_000 + ms as i64)
                .map(|at| at - 1_000_000)
        };
        assert_eq!(at(&pace, 0), None, "nothing ran yet");
        pace.add(t0, Duration::from_millis(100));
        assert_eq!(at(&pace, 0), Some(900));
        assert_eq!(at(&pace, 899), Some(900));
        assert_eq!(at(&pace, 900), None);
        // A second stretch while still paused adds to the pause.
        pace.add(t0 + Duration::from_millis(500), Duration::from_millis(50));
        assert_eq!(at(&pace, 1_000), Some(1_350));
        assert_eq!(at(&pace, 1_350), None);
        // One after the pause ended starts from then.
        pace.add(t0 + Duration::from_secs(10), Duration::from_millis(10));
        assert_eq!(at(&pace, 10_000), Some(10_090));
        assert_eq!(at(&pace, 10_090), None);
    }
}
