//! Reprocessing in cluster mode: history imported twice counts once; a logic change is brought
//! to a tenant's month by a job while events keep arriving and a client keeps querying, and the
//! job survives a SIGKILL of the aggregator halfway; every number equals an oracle that shares
//! no code with Beacon.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use beacon_core::auth::with_bearer;
use beacon_core::raw::RawStore;
use beacon_proto::admin::v1::{
    DeleteEventsRequest, ListReprocessRequest, ListTenantsRequest, ReprocessJob, ResetTenantRequest,
};
use beacon_proto::ingest::v1::Event;
use beacon_tests::client::{Counts, all_agree};
use beacon_tests::process::beacon_bin;
use beacon_tests::run::{import_all, send_acknowledged, wait_stable};
use beacon_tests::sessions::{
    BOT_AGENT, LOGIC_VERSION, MONITOR_AGENT, event_ms, oracle_with, tricky_events,
};
use beacon_tests::traffic::{TenantSpec, Traffic, local_date};
use beacon_tests::{Client, Cluster, Role};
use prost::Message;

const DAY: i64 = 24 * 3_600_000;
/// The clusters of these tests run one at a time: four at once on two cores starve each other
/// (and race for the free ports they pick).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(120);
const HOLD: Duration = Duration::from_secs(3);

fn spec(id: &str, time_zone: &str) -> TenantSpec {
    TenantSpec {
        id: id.into(),
        time_zone: time_zone.into(),
    }
}

fn traffic(tenant: &TenantSpec, events: Vec<Event>, bots: &[&str]) -> Traffic {
    traffic_with(LOGIC_VERSION, tenant, events, bots)
}

/// [`traffic`] under the rules of another logic version.
fn traffic_with(version: u32, tenant: &TenantSpec, events: Vec<Event>, bots: &[&str]) -> Traffic {
    let expected = oracle_with(version, &tenant.time_zone, &events, bots);
    Traffic {
        tenant: tenant.clone(),
        events,
        expected,
    }
}

/// The events as NDJSON: odd lines in the proto's JSON form, even ones as Plausible bodies.
fn ndjson(events: &[Event]) -> String {
    let mut out = String::new();
    for (n, e) in events.iter().enumerate() {
        let line = if n % 2 == 1 {
            serde_json::json!({
                "id": e.id, "name": e.name, "url": e.url, "referrer": e.referrer,
                "userAgent": e.user_agent, "clientIp": e.client_ip, "timestamp": event_ms(e),
            })
        } else {
            let ts = jiff::Timestamp::from_millisecond(event_ms(e)).expect("instant");
            serde_json::json!({
                "id": e.id, "name": e.name, "url": e.url, "referrer": e.referrer,
                "domain": "ignored.example", "user_agent": e.user_agent, "ip": e.client_ip,
                "timestamp": ts.to_string(),
            })
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_imported_twice_counts_once_and_expires_from_the_raw_store() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with(&[("BEACON_RETENTION_EVERY", "1s".to_owned())])?;
    let client = Client::of(&cluster).await?;
    let tenant = spec("importer", "Asia/Kathmandu");
    let (server_key, read) = client
        .create_tenant(&cluster.admin_token, &tenant.id, &tenant.time_zone)
        .await?;
    let now = beacon_core::time::now_ms();
    let events = tricky_events(5, &tenant, 400, (now - 30 * DAY, now - 4 * DAY), &[]);
    let history = traffic(&tenant, events, &[BOT_AGENT]);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("history.ndjson");
    std::fs::File::create(&file)?.write_all(ndjson(&history.events).as_bytes())?;
    for round in 1..=2 {
        let out = Command::new(beacon_bin())
            .arg("import")
            .arg(&file)
            .args(["--url", &cluster.gateway(), "--key", &server_key])
            .output()
            .context("running beacon import")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "import round {round} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
        ensure!(
            report["accepted"] == history.events.len(),
            "round {round}: {report}"
        );
    }
    wait_stable(&client, &read, &history, WAIT, HOLD)
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    // Raw events are kept ten days: older ones leave the raw store, the numbers stay.
    let out = Command::new(beacon_bin())
        .args([
            "admin",
            "--url",
            &cluster.admin(),
            "--token",
            &cluster.admin_token,
        ])
        .args(["set-retention", "--tenant", &tenant.id, "--days", "10"])
        .output()
        .context("running beacon admin set-retention")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_stable(&client, &read, &history, WAIT, HOLD).await?;
    // The aggregator's sweep of the raw store runs on its own: wait for it.
    let raw = cluster.raw_store().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let kept = loop {
        let kept = raw
            .scan(&tenant.id, i64::MIN, i64::MAX, None, usize::MAX)
            .await?;
        let cutoff = beacon_core::time::now_ms() - 10 * DAY;
        let young = history
            .events
            .iter()
            .filter(|e| event_ms(e) >= cutoff + 60_000)
            .count();
        ensure!(
            kept.len() >= young,
            "{} raw events kept, {young} younger than ten days",
            kept.len()
        );
        if kept.iter().all(|e| e.timestamp_ms >= cutoff - 60_000) {
            break kept;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} raw events kept {WAIT:?} after the retention was set, {young} younger than ten days",
            kept.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "{} imported events over {} days, sent twice, count once; {} of them kept after a \
         ten-day retention, numbers unchanged",
        history.events.len(),
        history.expected.len(),
        kept.len()
    );
    Ok(())
}

/// The daily numbers of `traffic`'s tenant over the dates of `range`.
async fn daily(
    client: &Client,
    read: &str,
    range: &(String, String),
) -> anyhow::Result<BTreeMap<String, Counts>> {
    Ok(client
        .daily(read, &range.0, &range.1)
        .await?
        .into_iter()
        .filter(|(_, c)| *c != Counts::default())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logic_change_is_reprocessed_under_load_through_a_sigkill() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(&[
        ("BEACON_LOGIC_VERSION", "2".to_owned()),
        ("BEACON_RESTATE_EVENTS_PER_TICK", "50".to_owned()),
    ])?;
    let client = Client::of(&cluster).await?;
    let now = beacon_core::time::now_ms();
    // New York's month holds a DST change; the monitor is a visitor under logic 2, a bot
    // under 3.
    let shifty = spec("shifty", "America/New_York");
    let bystander = spec("bystander", "Asia/Kolkata");
    let mut keys = Vec::new();
    let mut histories = Vec::new();
    for (n, tenant) in [&shifty, &bystander].into_iter().enumerate() {
        let (server, read) = client
            .create_tenant(&cluster.admin_token, &tenant.id, &tenant.time_zone)
            .await?;
        let window = (now - 31 * DAY, now - 4 * DAY);
        let events = tricky_events(20 + n as u64, tenant, 500, window, &[MONITOR_AGENT]);
        import_all(&client, &server, &events, WAIT)
            .await
            .with_context(|| format!("importing {}", tenant.id))?;
        histories.push(events);
        keys.push((server, read));
    }
    let (shifty_key, shifty_read) = keys[0].clone();
    let (bystander_key, bystander_read) = keys[1].clone();
    // Logic versions 2 and 3 count visits of fewer than two pageviews as bounces, and let a visit
    // go on past midnight for as long as its visitor never pauses.
    let before_6 = |tenant, events, bots| traffic_with(3, tenant, events, bots);
    let old = before_6(&shifty, histories[0].clone(), &[BOT_AGENT]);
    let new = before_6(&shifty, histories[0].clone(), &[BOT_AGENT, MONITOR_AGENT]);
    let other = before_6(&bystander, histories[1].clone(), &[BOT_AGENT]);
    ensure!(
        old.expected != new.expected,
        "the rule change must change numbers"
    );
    for history in [&old, &other] {
        let read = if history.tenant.id == shifty.id {
            &shifty_read
        } else {
            &bystander_read
        };
        wait_stable(&client, read, history, WAIT, HOLD)
            .await
            .map_err(|err| anyhow::anyhow!("before: {err}\n{}", cluster.logs()))?;
    }

    // The corrected rule ships: the aggregator restarts with logic version 3.
    cluster.set_env("BEACON_LOGIC_VERSION", "3");
    cluster.kill9(Role::Aggregator);
    cluster.start_role(Role::Aggregator)?;
    let today = local_date(now, &shifty.time_zone);
    let history_range = old.date_range();
    let job = client
        .start_reprocess(&cluster.admin_token, &shifty.id, &history_range.0, &today)
        .await?;

    // Live events keep arriving (today, inside the job's range) and a client keeps querying.
    let stop = Arc::new(AtomicBool::new(false));
    let live_window = (now - 50 * 60_000, now - 60_000);
    let live: Vec<Vec<Event>> = [&shifty, &bystander]
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let live_spec = spec(&format!("{}-live", t.id), &t.time_zone);
            tricky_events(
                90 + n as u64,
                &live_spec,
                300,
                live_window,
                &[MONITOR_AGENT],
            )
        })
        .collect();
    let sender = {
        let (client, live) = (client.clone(), live.clone());
        let keys = [shifty_key.clone(), bystander_key.clone()];
        tokio::spawn(async move {
            // Both tenants' live events interleaved, a batch every 100 ms; when each was
            // acknowledged.
            let mut acked = Vec::new();
            let batches: Vec<_> = live.iter().map(|events| events.chunks(10)).collect();
            let mut batches: Vec<_> = batches.into_iter().zip(&keys).collect();
            loop {
                let mut sent = false;
                for (chunks, key) in &mut batches {
                    if let Some(batch) = chunks.next() {
                        send_acknowledged(&client, key, batch.to_vec(), WAIT).await?;
                        acked.push(Instant::now());
                        sent = true;
                    }
                }
                if !sent {
                    return anyhow::Ok(acked);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let querier = {
        let (client, stop) = (client.clone(), stop.clone());
        let (old, new, other) = (old.expected.clone(), new.expected.clone(), other.clone());
        let (read, other_read, range) = (
            shifty_read.clone(),
            bystander_read.clone(),
            history_range.clone(),
        );
        tokio::spawn(async move {
            let (mut answers, mut saw_old, mut saw_new) = (0, false, false);
            while !stop.load(Ordering::Relaxed) {
                let seen = daily(&client, &read, &range)
                    .await
                    .with_context(|| format!("query {answers} of the reprocessed tenant"))?;
                let (is_old, is_new) = (all_agree(&seen, &old), all_agree(&seen, &new));
                saw_old |= is_old;
                saw_new |= is_new;
                if !is_old && !is_new {
                    bail!("a mix of old and new numbers after {answers} answers: {seen:#?}");
                }
                let theirs = daily(&client, &other_read, &other.date_range())
                    .await
                    .with_context(|| format!("query {answers} of the other tenant"))?;
                ensure!(
                    all_agree(&theirs, &other.expected),
                    "another tenant's numbers changed: {theirs:#?}"
                );
                answers += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok((answers, saw_old, saw_new))
        })
    };

    // SIGKILL of the aggregator halfway through the job, then a restart.
    let started = Instant::now();
    let (mut running_since, mut killed_at) = (None, None);
    let finished = loop {
        ensure!(
            started.elapsed() < WAIT,
            "the job did not finish in {WAIT:?}\n{}",
            cluster.logs()
        );
        let state = client
            .reprocess_job(&cluster.admin_token, &job)
            .await
            .context("following the job")?;
        if running_since.is_none() && state.state == "running" {
            running_since = Some(Instant::now());
        }
        if killed_at.is_none() && state.state == "running" && state.progress > 0.2 {
            cluster.kill9(Role::Aggregator);
            killed_at = Some(state.progress);
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.start_role(Role::Aggregator)?;
        }
        if state.state == "done" && state.after.is_some() {
            break state;
        }
        ensure!(state.state != "failed", "job failed: {}", state.error);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done_at = Instant::now();
    let killed_at = killed_at.context("the job finished before it could be killed halfway")?;
    ensure!(killed_at < 0.9, "killed at {killed_at}, not halfway");

    // The swap is applied (its totals are recorded after it): a few more answers see it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = sender.await??;
    let (answers, saw_old, saw_new) = querier.await??;
    let running_since = running_since.context("the job was never seen running")?;
    let during = acked
        .iter()
        .filter(|at| running_since <= **at && **at <= done_at)
        .count();
    ensure!(during > 0, "no live event arrived while the job ran");
    ensure!(
        saw_old && saw_new,
        "the querier saw old: {saw_old}, new: {saw_new}"
    );

    // Afterwards: the month equals the oracle of the new rule, the live events count once, the
    // other tenant's history keeps its numbers.
    let mut all = histories[0].clone();
    all.extend(live[0].iter().cloned());
    let after = before_6(&shifty, all, &[BOT_AGENT, MONITOR_AGENT]);
    wait_stable(&client, &shifty_read, &after, WAIT, HOLD)
        .await
        .map_err(|err| anyhow::anyhow!("after: {err}\n{}", cluster.logs()))?;
    wait_stable(&client, &bystander_read, &other, WAIT, HOLD).await?;
    let (before, after) = (
        finished.before.unwrap_or_default(),
        finished.after.unwrap_or_default(),
    );
    println!(
        "job {job}: {} events replayed, killed at {:.0} %, {during} of {} live batches \
         acknowledged while it ran, {answers} answers all old or new; pageviews {} -> {}, \
         visitors {} -> {}",
        finished.events,
        killed_at * 100.0,
        acked.len(),
        before.pageviews,
        after.pageviews,
        before.visitors,
        after.visitors
    );
    ensure!(finished.logic_version == 3);

    // The same logic again, through the CLI: the numbers do not move.
    let out = Command::new(beacon_bin())
        .args([
            "reprocess",
            "--tenant",
            &shifty.id,
            "--from",
            &history_range.0,
            "--to",
            &today,
        ])
        .args(["--url", &cluster.admin(), "--token", &cluster.admin_token])
        .output()
        .context("running beacon reprocess")?;
    ensure!(
        out.status.success(),
        "beacon reprocess failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(report[0]["state"] == "done", "{report}");
    ensure!(
        report[0]["before"] == report[0]["after"],
        "same logic, same numbers: {report}"
    );

    // A job cancelled halfway leaves the numbers as they were.
    let doomed = client
        .start_reprocess(
            &cluster.admin_token,
            &bystander.id,
            &history_range.0,
            &today,
        )
        .await?;
    let out = Command::new(beacon_bin())
        .args(["reprocess", "--cancel", &doomed])
        .args(["--url", &cluster.admin(), "--token", &cluster.admin_token])
        .output()
        .context("running beacon reprocess --cancel")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(report[0]["state"] == "cancelled", "{report}");
    wait_stable(&client, &bystander_read, &other, WAIT, HOLD).await?;

    // The other tenant's history is still what logic 2 made: --stale finds and rebuilds it.
    let out = Command::new(beacon_bin())
        .args(["reprocess", "--stale"])
        .args(["--url", &cluster.admin(), "--token", &cluster.admin_token])
        .output()
        .context("running beacon reprocess --stale")?;
    ensure!(
        out.status.success(),
        "beacon reprocess --stale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let jobs = report.as_array().context("a list of jobs")?;
    ensure!(
        jobs.iter()
            .any(|job| job["tenant"] == bystander.id && job["state"] == "done"),
        "--stale rebuilt the other tenant: {report}"
    );
    let upgraded = before_6(
        &bystander,
        histories[1].clone(),
        &[BOT_AGENT, MONITOR_AGENT],
    );
    wait_stable(&client, &bystander_read, &upgraded, WAIT, HOLD).await?;
    Ok(())
}

/// Waits until the job `id` is done.
async fn wait_done(client: &Client, token: &str, id: &str) -> anyhow::Result<ReprocessJob> {
    let started = Instant::now();
    loop {
        let job = client.reprocess_job(token, id).await?;
        match job.state.as_str() {
            "done" if job.after.is_some() => return Ok(job),
            "failed" | "cancelled" => bail!("job {id} ended {}: {}", job.state, job.error),
            _ if started.elapsed() > WAIT => bail!("job {id} not done in {WAIT:?}: {job:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_zone_change_deletion_and_reset_restate_history() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let token = cluster.admin_token.clone();
    let now = beacon_core::time::now_ms();
    // Sixty days: Adelaide's DST start and New York's DST end fall inside.
    let window = (now - 60 * DAY, now - 4 * DAY);
    let tenants = [
        spec("moved", "America/New_York"),
        spec("fresh", "Australia/Adelaide"),
        spec("cleaned", "Asia/Kolkata"),
        spec("wiped", "UTC"),
    ];
    let base = tricky_events(33, &spec("base", "UTC"), 300, window, &[]);
    let mut reads = BTreeMap::new();
    for tenant in &tenants {
        let (server, read) = client
            .create_tenant(&token, &tenant.id, &tenant.time_zone)
            .await?;
        let events = retarget_events(&base, &tenant.id);
        import_all(&client, &server, &events, WAIT).await?;
        let expected = traffic(tenant, events, &[BOT_AGENT]);
        wait_stable(&client, &read, &expected, WAIT, Duration::ZERO)
            .await
            .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
        reads.insert(tenant.id.clone(), (read, expected));
    }

    // "moved" goes to Adelaide (UTC+9:30/+10:30), through the CLI.
    let out = Command::new(beacon_bin())
        .args([
            "reprocess",
            "--tenant",
            "moved",
            "--time-zone",
            "Australia/Adelaide",
        ])
        .args(["--url", &cluster.admin(), "--token", &token])
        .output()
        .context("running beacon reprocess --time-zone")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "cleaned" loses its /pricing events; "wiped" loses everything.
    let mut admin = client.admin();
    let (first, last) = reads["cleaned"].1.date_range();
    let request = DeleteEventsRequest {
        tenant_id: "cleaned".into(),
        first_date: first,
        last_date: last,
        page: "/pricing".into(),
        ..DeleteEventsRequest::default()
    };
    let deletion = admin
        .delete_events(with_bearer(&token, request)?)
        .await?
        .into_inner()
        .job
        .context("a deletion job")?;
    let request = ResetTenantRequest {
        tenant_id: "wiped".into(),
    };
    let reset = admin
        .reset_tenant(with_bearer(&token, request)?)
        .await?
        .into_inner()
        .job
        .context("a reset job")?;
    let deletion = wait_done(&client, &token, &deletion.id).await?;
    let reset = wait_done(&client, &token, &reset.id).await?;

    let adelaide = traffic(
        &spec("moved", "Australia/Adelaide"),
        retarget_events(&base, "moved"),
        &[BOT_AGENT],
    );
    ensure!(
        adelaide.expected != reads["moved"].1.expected,
        "the zone must matter"
    );
    let fresh = &reads["fresh"];
    ensure!(adelaide.expected == fresh.1.expected);
    wait_stable(&client, &reads["moved"].0, &adelaide, WAIT, HOLD)
        .await
        .map_err(|err| anyhow::anyhow!("moved: {err}\n{}", cluster.logs()))?;
    let kept: Vec<Event> = retarget_events(&base, "cleaned")
        .into_iter()
        .filter(|e| !e.url.contains("/pricing"))
        .collect();
    let deleted = base.len() - kept.len();
    ensure!(
        deletion.deleted == deleted as u64,
        "deleted {} of {deleted}",
        deletion.deleted
    );
    let cleaned = traffic(&spec("cleaned", "Asia/Kolkata"), kept, &[BOT_AGENT]);
    wait_stable(&client, &reads["cleaned"].0, &cleaned, WAIT, HOLD).await?;
    let (wiped_read, wiped) = &reads["wiped"];
    let range = wiped.date_range();
    ensure!(
        daily(&client, wiped_read, &range).await?.is_empty(),
        "a reset leaves no numbers"
    );
    ensure!(
        reset.deleted == base.len() as u64,
        "reset deleted {}",
        reset.deleted
    );

    // "fresh" is deleted: its keys stop working and its raw events go.
    let out = Command::new(beacon_bin())
        .args(["admin", "--url", &cluster.admin(), "--token", &token])
        .args(["delete-tenant", "--tenant", "fresh"])
        .output()
        .context("running beacon admin delete-tenant")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted_tenant: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let job = deleted_tenant["job"].as_str().context("a reset job")?;
    wait_done(&client, &token, job).await?;
    let refused = client.daily(&fresh.0, &range.0, &range.1).await;
    ensure!(refused.is_err(), "a deleted tenant's read key still works");
    let tenants = client
        .admin()
        .list_tenants(with_bearer(&token, ListTenantsRequest {})?)
        .await?
        .into_inner()
        .tenants;
    ensure!(
        tenants.iter().all(|t| t.id != "fresh"),
        "the deleted tenant is still listed"
    );

    // The raw store no longer holds them.
    let raw = cluster.raw_store().await?;
    let all = |tenant: &'static str| {
        let raw = &raw;
        async move { raw.scan(tenant, i64::MIN, i64::MAX, None, usize::MAX).await }
    };
    ensure!(all("wiped").await?.is_empty());
    ensure!(
        all("fresh").await?.is_empty(),
        "a deleted tenant's raw events remain"
    );
    let left = all("cleaned").await?;
    ensure!(left.len() == base.len() - deleted);
    for event in left {
        let logged = beacon_proto::pipeline::v1::LoggedEvent::decode(event.payload)?;
        ensure!(
            !logged.url.contains("/pricing"),
            "{} is still stored",
            logged.event_id
        );
    }
    println!(
        "time zone restated ({} days), {deleted} events deleted by filter, {} by reset",
        adelaide.expected.len(),
        reset.deleted
    );
    Ok(())
}

/// `events` under ids of `tenant`.
fn retarget_events(events: &[Event], tenant: &str) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            id: e.id.replacen("base-", &format!("{tenant}-"), 1),
            ..e.clone()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_shard_folder_is_rebuilt_from_the_raw_store() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let token = cluster.admin_token.clone();
    let now = beacon_core::time::now_ms();
    let mut tenants = Vec::new();
    for (n, (id, zone)) in [
        ("r-kathmandu", "Asia/Kathmandu"),
        ("r-utc", "UTC"),
        ("r-ny", "America/New_York"),
    ]
    .into_iter()
    .enumerate()
    {
        let tenant = spec(id, zone);
        let (server, read) = client.create_tenant(&token, id, zone).await?;
        let history = tricky_events(
            50 + n as u64,
            &tenant,
            200,
            (now - 20 * DAY, now - 4 * DAY),
            &[],
        );
        import_all(&client, &server, &history, WAIT).await?;
        let live = tricky_events(
            60 + n as u64,
            &spec(&format!("{id}-live"), zone),
            100,
            (now - 40 * 3_600_000, now - 600_000),
            &[],
        );
        for batch in live.chunks(100) {
            send_acknowledged(&client, &server, batch.to_vec(), WAIT).await?;
        }
        let mut all = history;
        all.extend(live);
        let expected = traffic(&tenant, all, &[BOT_AGENT]);
        wait_stable(&client, &read, &expected, WAIT, Duration::ZERO)
            .await
            .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
        tenants.push((expected, read));
    }
    // The replica records its position every few seconds and the rollup log is trimmed below
    // it: what the shard held can no longer be read back from the log.
    tokio::time::sleep(Duration::from_secs(7)).await;
    cluster.kill9(Role::Query);
    std::fs::remove_dir_all(cluster.dir.path().join("query").join("shards"))?;
    cluster.start_role(Role::Query)?;
    for (expected, read) in &tenants {
        wait_stable(&client, read, expected, WAIT, HOLD)
            .await
            .map_err(|err| anyhow::anyhow!("after the rebuild: {err}\n{}", cluster.logs()))?;
    }
    let mut admin = client.admin();
    let jobs = admin
        .list_reprocess(with_bearer(&token, ListReprocessRequest::default())?)
        .await?
        .into_inner()
        .jobs;
    let rebuilt = jobs
        .iter()
        .filter(|job| job.kind == "reprocess" && job.state == "done")
        .count();
    // A partition whose log was not trimmed yet is replayed from the log instead.
    ensure!(
        rebuilt >= 1,
        "no tenant was rebuilt from the raw store: {jobs:#?}"
    );
    println!(
        "shard folder deleted; {rebuilt} of {} tenants rebuilt from the raw store (the others \
         replayed from the log), every number equal",
        tenants.len()
    );
    Ok(())
}
