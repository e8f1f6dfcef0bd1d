//! `beacon reprocess`: recompute rollups from the raw store, through the gateway's admin API,
//! and follow the jobs with a progress bar.

use std::time::{Duration, Instant};

use anyhow::Context;

use beacon_proto::admin::v1::admin_service_client::AdminServiceClient;
use beacon_proto::admin::v1::{
    CancelReprocessRequest, DeleteEventsRequest, GetReprocessRequest, ListReprocessRequest,
    ListStaleRequest, ReprocessJob, ReprocessTotals, ResetTenantRequest, SetTimeZoneRequest,
    StartReprocessRequest,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use jiff::civil::Date;
use tonic::transport::Channel;

use crate::admin::AdminConnection;

/// How often a followed job is asked for its progress.
const POLL: Duration = Duration::from_millis(500);
/// Steps of a progress bar (its position is the job's progress times this).
const STEPS: u64 = 1000;

/// `beacon reprocess` flags.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["tenant", "all", "job", "cancel", "list", "stale"])))]
pub struct ReprocessArgs {
    #[command(flatten)]
    connection: AdminConnection,
    /// Recompute this tenant (with --from and --to), or change its history with --time-zone,
    /// --delete or --reset.
    #[arg(long)]
    tenant: Option<String>,
    /// Recompute every tenant (one job each).
    #[arg(long, requires_all = ["from", "to"])]
    all: bool,
    /// First local date to recompute, YYYY-MM-DD.
    #[arg(long)]
    from: Option<Date>,
    /// Last local date to recompute, inclusive.
    #[arg(long)]
    to: Option<Date>,
    /// Follow a job started before.
    #[arg(long)]
    job: Option<String>,
    /// Cancel a job.
    #[arg(long)]
    cancel: Option<String>,
    /// List the jobs.
    #[arg(long)]
    list: bool,
    /// Recompute every tenant's dates that an older logic version made (as the query replicas
    /// last reported them).
    #[arg(long)]
    stale: bool,
    /// Start the jobs and return without following them.
    #[arg(long)]
    detach: bool,
    /// Change the tenant's time zone (IANA name) and restate its whole history in it.
    #[arg(long, requires = "tenant")]
    time_zone: Option<String>,
    /// Delete the tenant's events of --from..--to that match every filter given (--hostname,
    /// --page, --referrer, --user-agent) and recompute those dates.
    #[arg(long, requires_all = ["tenant", "from", "to"])]
    delete: bool,
    /// With --delete: the URL's host equals this.
    #[arg(long, requires = "delete", default_value = "")]
    hostname: String,
    /// With --delete: the URL's path contains this.
    #[arg(long, requires = "delete", default_value = "")]
    page: String,
    /// With --delete: the referrer contains this.
    #[arg(long, requires = "delete", default_value = "")]
    referrer: String,
    /// With --delete: the user agent contains this.
    #[arg(long, requires = "delete", default_value = "")]
    user_agent: String,
    /// Remove every raw event and number of the tenant (the tenant and its keys stay).
    #[arg(long, requires = "tenant", conflicts_with_all = ["delete", "time_zone", "from", "to"])]
    reset: bool,
}

/// Runs `beacon reprocess`; prints the jobs as JSON when they end (or at once with `--detach`,
/// `--list` and `--cancel`).
pub async fn run(args: ReprocessArgs) -> anyhow::Result<()> {
    let admin = &args.connection;
    let mut client = admin.connect().await?;
    let jobs = if let Some(id) = &args.cancel {
        let request = CancelReprocessRequest { id: id.clone() };
        client.cancel_reprocess(admin.request(request)?).await?;
        follow(&mut client, admin, vec![id.clone()]).await?
    } else if args.list {
        let request = ListReprocessRequest::default();
        client
            .list_reprocess(admin.request(request)?)
            .await?
            .into_inner()
            .jobs
    } else if let Some(id) = &args.job {
        follow(&mut client, admin, vec![id.clone()]).await?
    } else if args.stale {
        let started = start_stale(&mut client, admin).await?;
        if args.detach {
            started
        } else {
            let ids = started.into_iter().map(|job| job.id).collect();
            follow(&mut client, admin, ids).await?
        }
    } else if let Some(started) = rewrite(&mut client, admin, &args).await? {
        if args.detach {
            vec![started]
        } else {
            follow(&mut client, admin, vec![started.id]).await?
        }
    } else {
        let (Some(from), Some(to)) = (args.from, args.to) else {
            anyhow::bail!("--from and --to name the local dates to recompute");
        };
        let request = StartReprocessRequest {
            tenant_id: args.tenant.clone().unwrap_or_default(),
            all_tenants: args.all,
            first_date: from.to_string(),
            last_date: to.to_string(),
        };
        let started = client
            .start_reprocess(admin.request(request)?)
            .await?
            .into_inner()
            .jobs;
        if args.detach {
            started
        } else {
            let ids = started.into_iter().map(|job| job.id).collect();
            follow(&mut client, admin, ids).await?
        }
    };
    let json: Vec<serde_json::Value> = jobs.iter().map(job_json).collect();
    println!("{}", serde_json::to_string_pretty(&json)?);
    if let Some(failed) = jobs.iter().find(|job| job.state == "failed") {
        anyhow::bail!("job {} failed: {}", failed.id, failed.error);
    }
    Ok(())
}

/// Starts one job per tenant with dates an older logic version made.
async fn start_stale(
    client: &mut AdminServiceClient<Channel>,
    admin: &AdminConnection,
) -> anyhow::Result<Vec<ReprocessJob>> {
    let request = ListStaleRequest {
        logic_version: beacon_aggregator::LOGIC_VERSION,
    };
    let ranges = client
        .list_stale(admin.request(request)?)
        .await?
        .into_inner()
        .ranges;
    let mut started = Vec::with_capacity(ranges.len());
    for range in ranges {
        let request = StartReprocessRequest {
            tenant_id: range.tenant_id,
            all_tenants: false,
            first_date: range.first_date,
            last_date: range.last_date,
        };
        let reply = client.start_reprocess(admin.request(request)?).await?;
        started.extend(reply.into_inner().jobs);
    }
    Ok(started)
}

/// Starts the job of --time-zone, --delete or --reset, if one is asked for.
async fn rewrite(
    client: &mut AdminServiceClient<Channel>,
    admin: &AdminConnection,
    args: &ReprocessArgs,
) -> anyhow::Result<Option<ReprocessJob>> {
    let tenant_id = args.tenant.clone().unwrap_or_default();
    let job = if let Some(time_zone) = &args.time_zone {
        let request = SetTimeZoneRequest {
            tenant_id,
            time_zone: time_zone.clone(),
        };
        client
            .set_time_zone(admin.request(request)?)
            .await?
            .into_inner()
            .job
    } else if args.reset {
        let request = ResetTenantRequest { tenant_id };
        client
            .reset_tenant(admin.request(request)?)
            .await?
            .into_inner()
            .job
    } else if args.delete {
        let (Some(from), Some(to)) = (args.from, args.to) else {
            anyhow::bail!("--delete needs --from and --to");
        };
        let request = DeleteEventsRequest {
            tenant_id,
            first_date: from.to_string(),
            last_date: to.to_string(),
            hostname: args.hostname.clone(),
            page: args.page.clone(),
            referrer: args.referrer.clone(),
            user_agent: args.user_agent.clone(),
        };
        client
            .delete_events(admin.request(request)?)
            .await?
            .into_inner()
            .job
    } else {
        return Ok(None);
    };
    job.map(Some)
        .context("the admin API answered without the job")
}

/// Follows jobs with one progress bar each until every one has ended and, when done, its
/// totals are known.
async fn follow(
    client: &mut AdminServiceClient<Channel>,
    admin: &AdminConnection,
    ids: Vec<String>,
) -> anyhow::Result<Vec<ReprocessJob>> {
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:24} [{bar:30}] {percent:>3}% {msg} ETA {eta}")?
            .progress_chars("=> ");
    let mut followed: Vec<(ProgressBar, Rate)> = ids
        .iter()
        .map(|id| {
            let bar = bars.add(ProgressBar::new(STEPS).with_style(style.clone()));
            bar.set_prefix(id.clone());
            (bar, Rate::default())
        })
        .collect();
    loop {
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, (bar, rate)) in ids.iter().zip(&mut followed) {
            let request = GetReprocessRequest { id: id.clone() };
            let job = client
                .get_reprocess(admin.request(request)?)
                .await?
                .into_inner()
                .job
                .with_context(|| format!("job {id} came without its record"))?;
            bar.set_position((job.progress * STEPS as f64) as u64);
            bar.set_message(format!(
                "{} {} events, {:.0} events/s",
                job.state,
                job.events,
                rate.update(job.events)
            ));
            jobs.push(job);
        }
        if jobs.iter().all(ended) {
            for (bar, _) in &followed {
                bar.finish();
            }
            return Ok(jobs);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether a job has ended and, if done, its swap totals arrived.
fn ended(job: &ReprocessJob) -> bool {
    match job.state.as_str() {
        "done" => job.after.is_some(),
        "cancelled" | "failed" => true,
        _ => false,
    }
}

/// Events per second between two polls.
#[derive(Default)]
struct Rate {
    last: Option<(Instant, u64)>,
    per_second: f64,
}

impl Rate {
    fn update(&mut self, events: u64) -> f64 {
        let now = Instant::now();
        if let Some((at, before)) = self.last {
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds > 0.0 && events >= before {
                self.per_second = (events - before) as f64 / seconds;
            }
        }
        self.last = Some((now, events));
        self.per_second
    }
}

fn job_json(job: &ReprocessJob) -> serde_json::Value {
    serde_json::json!({
        "id": job.id,
        "tenant": job.tenant_id,
        "kind": job.kind,
        "first_date": job.first_date,
        "last_date": job.last_date,
        "state": job.state,
        "events": job.events,
        "deleted": job.deleted,
        "progress": job.progress,
        "logic_version": job.logic_version,
        "created_ms": job.created_ms,
        "started_ms": job.started_ms,
        "finished_ms": job.finished_ms,
        "before": job.before.as_ref().map(totals_json),
        "after": job.after.as_ref().map(totals_json),
        "error": job.error,
    })
}

fn totals_json(t: &ReprocessTotals) -> serde_json::Value {
    serde_json::json!({
        "visitors": t.visitors,
        "visits": t.visits,
        "pageviews": t.pageviews,
        "events": t.events,
        "bounces": t.bounces,
        "duration_ms": t.duration_ms,
        "bot_events": t.bot_events,
    })
}
