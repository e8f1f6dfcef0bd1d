//! Restatement jobs as records in the snapshot store: created by an operator (or by the
//! aggregator, for late events), then advanced only by the aggregator that owns the tenant's
//! partition.
//!
//! - `restate.p<partition>.<id>`: the job ([`RestatementJob`]).
//! - `restate-cancel.<id>`: present when an operator asked to cancel it.
//! - `restate-totals.<id>`: the totals of its dates before and after the swap, recorded by the
//!   query role ([`SwapTotals`]).

use std::sync::Arc;

use beacon_proto::pipeline::v1::{
    DeleteFilter, RestatementJob, RestatementKind, RestatementState, SwapTotals,
};
use bytes::Bytes;
use prost::Message;

use crate::meta::SnapshotStore;
use crate::partition::partition_of;
use crate::{Error, Result};

/// The record name of a job of `partition`.
pub fn job_key(partition: u32, id: &str) -> String {
    format!("restate.p{partition}.{id}")
}

/// The prefix of every job record of `partition`.
pub fn partition_prefix(partition: u32) -> String {
    format!("restate.p{partition}.")
}

/// The name of a job's cancel request.
pub fn cancel_key(id: &str) -> String {
    format!("restate-cancel.{id}")
}

/// The name of a job's swap totals.
pub fn totals_key(id: &str) -> String {
    format!("restate-totals.{id}")
}

/// The tenant a job id names (ids are `<tenant>.<suffix>`).
pub fn tenant_of(id: &str) -> Option<&str> {
    id.split_once('.').map(|(tenant, _)| tenant)
}

/// Whether a job still has work to do.
pub fn is_open(job: &RestatementJob) -> bool {
    matches!(
        job.state(),
        RestatementState::Pending | RestatementState::Running
    )
}

/// What an operator's job does.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Why it runs.
    pub kind: RestatementKind,
    /// First local date ("YYYY-MM-DD"); empty with `whole_history`.
    pub first_date: String,
    /// Last local date; empty with `whole_history`.
    pub last_date: String,
    /// Zone to restate in; empty keeps each event's own.
    pub time_zone: String,
    /// Raw events to delete first.
    pub delete: Option<DeleteFilter>,
    /// The range is the tenant's whole history.
    pub whole_history: bool,
    /// Not before this, Unix ms.
    pub not_before_ms: i64,
    /// Remove the tenant's record once done (a reset that deletes the tenant).
    pub delete_tenant: bool,
}

impl JobSpec {
    /// A recomputation of `[first, last]` with the current logic.
    pub fn reprocess(first: &str, last: &str) -> Self {
        Self {
            kind: RestatementKind::Reprocess,
            first_date: first.to_owned(),
            last_date: last.to_owned(),
            time_zone: String::new(),
            delete: None,
            whole_history: false,
            not_before_ms: 0,
            delete_tenant: false,
        }
    }
}

/// Jobs in the snapshot store of a deployment with `partitions` partitions.
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn SnapshotStore>,
    partitions: u32,
}

impl Jobs {
    /// The jobs of `store`.
    pub fn new(store: Arc<dyn SnapshotStore>, partitions: u32) -> Self {
        Self {
            store,
            partitions: partitions.max(1),
        }
    }

    /// The partition of a tenant.
    pub fn partition(&self, tenant: &str) -> u32 {
        partition_of(tenant, self.partitions)
    }

    /// Creates an operator's job for `tenant` (its dates checked by the caller). Refused while
    /// another operator's job of the tenant is open.
    pub async fn create(&self, tenant: &str, spec: JobSpec, now_ms: i64) -> Result<RestatementJob> {
        let partition = self.partition(tenant);
        if let Some(open) = self.of_partition(partition).await?.into_iter().find(|job| {
            job.tenant_id == tenant && job.kind() != RestatementKind::LateEvents && is_open(job)
        }) {
            return Err(Error::AlreadyExists(format!(
                "tenant {tenant:?} has a job running already ({}); wait for it or cancel it",
                open.id
            )));
        }
        let mut job = RestatementJob {
            id: format!("{tenant}.{now_ms}"),
            tenant_id: tenant.to_owned(),
            first_date: spec.first_date,
            last_date: spec.last_date,
            created_ms: now_ms,
            time_zone: spec.time_zone,
            delete: spec.delete,
            whole_history: spec.whole_history,
            not_before_ms: spec.not_before_ms,
            delete_tenant: spec.delete_tenant,
            ..RestatementJob::default()
        };
        job.set_kind(spec.kind);
        job.set_state(RestatementState::Pending);
        self.save(partition, &job).await?;
        Ok(job)
    }

    /// Saves a job record.
    pub async fn save(&self, partition: u32, job: &RestatementJob) -> Result<()> {
        self.store
            .save(
                &job_key(partition, &job.id),
                Bytes::from(job.encode_to_vec()),
            )
            .await
    }

    /// The jobs of one partition, ordered by id.
    pub async fn of_partition(&self, partition: u32) -> Result<Vec<RestatementJob>> {
        let records = self.store.list(&partition_prefix(partition)).await?;
        // One corrupt record must not stop every job of the partition: it is skipped, loudly.
        Ok(records
            .into_iter()
            .filter_map(|(name, bytes)| match RestatementJob::decode(bytes) {
                Ok(job) => Some(job),
                Err(err) => {
                    tracing::error!(record = name, error = %err, "undecodable restatement job record skipped");
                    None
                }
            })
            .collect())
    }

    /// Every job of every partition, ordered by creation time.
    pub async fn all(&self) -> Result<Vec<RestatementJob>> {
        let mut jobs = Vec::new();
        for partition in 0..self.partitions {
            jobs.extend(self.of_partition(partition).await?);
        }
        jobs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(jobs)
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<Option<RestatementJob>> {
        let tenant = tenant_of(id).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "job id {id:?} is not of the form <tenant>.<number>"
            ))
        })?;
        let name = job_key(self.partition(tenant), id);
        match self.store.load(&name).await? {
            Some(bytes) => RestatementJob::decode(bytes).map(Some).map_err(|err| {
                Error::Corrupt(format!(
                    "restatement job record {name} is undecodable: {err}"
                ))
            }),
            None => Ok(None),
        }
    }

    /// Asks the aggregator to cancel a job.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        self.store
            .save(&cancel_key(id), Bytes::from_static(b"cancel"))
            .await
    }

    /// Whether someone asked to cancel a job.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool> {
        Ok(self.store.load(&cancel_key(id)).await?.is_some())
    }

    /// The totals a job's swap replaced, once the query role applied it.
    pub async fn totals(&self, id: &str) -> Result<Option<SwapTotals>> {
        match self.store.load(&totals_key(id)).await? {
            Some(bytes) => SwapTotals::decode(bytes).map(Some).map_err(|err| {
                Error::Corrupt(format!("swap totals of job {id} are undecodable: {err}"))
            }),
            None => Ok(None),
        }
    }
}
