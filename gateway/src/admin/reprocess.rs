//! The reprocessing part of the admin API: jobs are records in the snapshot store that the
//! aggregator owning the tenant's partition picks up (see `beacon_core::jobs`).

use std::collections::BTreeMap;

use beacon_core::auth::Registry;
use beacon_core::jobs::{JobSpec, Jobs};
use beacon_core::meta::SnapshotStore;
use beacon_core::time::now_ms;
use beacon_proto::admin::v1::{
    DeleteEventsRequest, ReprocessJob, ReprocessTotals, SetTimeZoneRequest, StaleRange,
    StartReprocessRequest,
};
use beacon_proto::pipeline::v1::{
    DeleteFilter, RestatementJob, RestatementKind, RestatementState, Totals, VersionReport,
};
use jiff::civil::Date;
use prost::Message;
use tonic::Status;

/// Most days one job may span (ten years).
pub const MAX_DAYS: i32 = 3660;

/// Starts one job per tenant the request names.
pub async fn start(
    jobs: &Jobs,
    tenants: &Registry,
    req: &StartReprocessRequest,
) -> Result<Vec<ReprocessJob>, Status> {
    let (first, last) = dates(&req.first_date, &req.last_date)?;
    let ids: Vec<String> = match (req.all_tenants, req.tenant_id.is_empty()) {
        (true, true) => tenants.tenants().await?.into_iter().map(|t| t.id).collect(),
        (false, false) => match tenants.tenant(&req.tenant_id).await? {
            Some(tenant) => vec![tenant.id],
            None => {
                return Err(Status::not_found(format!(
                    "tenant_id {:?} is not a tenant",
                    req.tenant_id
                )));
            }
        },
        _ => {
            return Err(Status::invalid_argument(
                "name either tenant_id or all_tenants, not both and not neither",
            ));
        }
    };
    let mut started = Vec::with_capacity(ids.len());
    for tenant in ids {
        let spec = JobSpec::reprocess(&first.to_string(), &last.to_string());
        let job = jobs.create(&tenant, spec, now_ms()).await?;
        tracing::info!(job = %job.id, first = %job.first_date, last = %job.last_date, "reprocessing job created");
        started.push(view(&job, None));
    }
    Ok(started)
}

/// How long a time-zone change waits before restating: every ingest replica's cached keys
/// (5 seconds) carry the new zone by then.
const ZONE_SETTLES_MS: i64 = 6_000;

/// Changes a tenant's zone and starts restating its whole history in it.
pub async fn set_time_zone(
    jobs: &Jobs,
    registry: &Registry,
    req: &SetTimeZoneRequest,
) -> Result<ReprocessJob, Status> {
    let before = registry
        .set_time_zone(&req.tenant_id, &req.time_zone)
        .await?;
    tracing::info!(tenant = %req.tenant_id, from = %before.time_zone, to = %req.time_zone, "time zone changed");
    let now = now_ms();
    let spec = JobSpec {
        kind: RestatementKind::TimeZone,
        time_zone: req.time_zone.clone(),
        whole_history: true,
        not_before_ms: now + ZONE_SETTLES_MS,
        ..JobSpec::reprocess("", "")
    };
    Ok(view(&jobs.create(&req.tenant_id, spec, now).await?, None))
}

/// Deletes a tenant's events matching a filter and recomputes their dates.
pub async fn delete_events(
    jobs: &Jobs,
    registry: &Registry,
    req: &DeleteEventsRequest,
) -> Result<ReprocessJob, Status> {
    known(registry, &req.tenant_id).await?;
    let (first, last) = dates(&req.first_date, &req.last_date)?;
    let filter = DeleteFilter {
        hostname: req.hostname.clone(),
        page: req.page.clone(),
        referrer: req.referrer.clone(),
        user_agent: req.user_agent.clone(),
        everything: false,
    };
    if filter == DeleteFilter::default() {
        return Err(Status::invalid_argument(
            "set at least one of hostname, page, referrer and user_agent (ResetTenant removes \
             everything)",
        ));
    }
    let spec = JobSpec {
        kind: RestatementKind::Delete,
        delete: Some(filter),
        ..JobSpec::reprocess(&first.to_string(), &last.to_string())
    };
    Ok(view(
        &jobs.create(&req.tenant_id, spec, now_ms()).await?,
        None,
    ))
}

/// Removes every raw event and number of a tenant.
pub async fn reset(
    jobs: &Jobs,
    registry: &Registry,
    tenant: &str,
    delete_tenant: bool,
) -> Result<ReprocessJob, Status> {
    known(registry, tenant).await?;
    let spec = JobSpec {
        kind: RestatementKind::Reset,
        delete: Some(DeleteFilter {
            everything: true,
            ..DeleteFilter::default()
        }),
        whole_history: true,
        delete_tenant,
        ..JobSpec::reprocess("", "")
    };
    Ok(view(&jobs.create(tenant, spec, now_ms()).await?, None))
}

/// What the query replicas' version reports say an older logic made, per tenant.
pub async fn stale(snapshots: &dyn SnapshotStore, version: u32) -> Result<Vec<StaleRange>, Status> {
    let mut ranges: BTreeMap<String, StaleRange> = BTreeMap::new();
    for (name, bytes) in snapshots.list("versions.").await? {
        let report = VersionReport::decode(bytes)
            .map_err(|err| Status::internal(format!("version report {name}: {err}")))?;
        for entry in report
            .tenants
            .into_iter()
            .filter(|e| e.logic_version < version)
        {
            let range = ranges
                .entry(entry.tenant_id.clone())
                .or_insert_with(|| StaleRange {
                    tenant_id: entry.tenant_id.clone(),
                    first_date: entry.first_date.clone(),
                    last_date: entry.last_date.clone(),
                    oldest_version: entry.logic_version,
                });
            range.first_date = range.first_date.clone().min(entry.first_date);
            range.last_date = range.last_date.clone().max(entry.last_date);
            range.oldest_version = range.oldest_version.min(entry.logic_version);
        }
    }
    Ok(ranges.into_values().collect())
}

async fn known(registry: &Registry, tenant: &str) -> Result<(), Status> {
    match registry.tenant(tenant).await? {
        Some(_) => Ok(()),
        None => Err(Status::not_found(format!(
            "tenant_id {tenant:?} is not a tenant"
        ))),
    }
}

/// Checks a job's date range: valid dates, in order, at most [`MAX_DAYS`] long.
fn dates(first: &str, last: &str) -> Result<(Date, Date), Status> {
    let parse = |field: &str, text: &str| {
        text.parse::<Date>().map_err(|err| {
            Status::invalid_argument(format!("{field} {text:?} is not a YYYY-MM-DD date: {err}"))
        })
    };
    let (first, last) = (parse("first_date", first)?, parse("last_date", last)?);
    if first > last {
        return Err(Status::invalid_argument(format!(
            "first_date {first} is after last_date {last}"
        )));
    }
    let days = (last - first).get_days();
    if days >= MAX_DAYS {
        return Err(Status::invalid_argument(format!(
            "the range spans {} days; one job covers at most {MAX_DAYS}",
            days + 1
        )));
    }
    Ok((first, last))
}

/// A job as the admin API shows it, with its swap totals when known.
pub fn view(
    job: &RestatementJob,
    totals: Option<beacon_proto::pipeline::v1::SwapTotals>,
) -> ReprocessJob {
    let state = match job.state() {
        RestatementState::Pending | RestatementState::Unspecified => "pending",
        RestatementState::Running => "running",
        RestatementState::Done => "done",
        RestatementState::Cancelled => "cancelled",
        RestatementState::Failed => "failed",
    };
    let kind = match job.kind() {
        RestatementKind::LateEvents => "late_events",
        RestatementKind::TimeZone => "time_zone",
        RestatementKind::Delete => "delete",
        RestatementKind::Reset => "reset",
        RestatementKind::Reprocess | RestatementKind::Unspecified => "reprocess",
    };
    let progress = match job.state() {
        RestatementState::Done => 1.0,
        _ if job.has_cursor && job.to_ms > job.from_ms => ((job.cursor_ms - job.from_ms) as f64
            / (job.to_ms - job.from_ms) as f64)
            .clamp(0.0, 1.0),
        _ => 0.0,
    };
    let (before, after) = totals.map_or((None, None), |t| {
        (
            t.before.map(reprocess_totals),
            t.after.map(reprocess_totals),
        )
    });
    ReprocessJob {
        id: job.id.clone(),
        tenant_id: job.tenant_id.clone(),
        first_date: job.first_date.clone(),
        last_date: job.last_date.clone(),
        state: state.to_owned(),
        events: job.events,
        progress,
        created_ms: job.created_ms,
        started_ms: job.started_ms,
        finished_ms: job.finished_ms,
        logic_version: job.logic_version,
        before,
        after,
        error: job.error.clone(),
        kind: kind.to_owned(),
        deleted: job.deleted,
    }
}

fn reprocess_totals(t: Totals) -> ReprocessTotals {
    ReprocessTotals {
        pageviews: t.pageviews,
        events: t.events,
        visits: t.visits,
        bounces: t.bounces,
        duration_ms: t.duration_ms,
        bot_events: t.bot_events,
        visitors: t.visitors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_naming_the_field() {
        assert!(dates("2026-03-01", "2026-03-31").is_ok());
        let err = dates("2026-02-30", "2026-03-31").expect_err("bad date");
        assert!(err.message().contains("first_date"), "{err}");
        let err = dates("2026-03-02", "2026-03-01").expect_err("reversed");
        assert!(err.message().contains("after last_date"), "{err}");
        let err = dates("2000-01-01", "2026-03-01").expect_err("long");
        assert!(err.message().contains("at most 3660"), "{err}");
    }
}
