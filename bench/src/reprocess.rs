//! Reprocessing speed: a tenant's month read from the embedded raw store, replayed by the
//! restatement engine into a staged generation of a DuckDB shard, and swapped in. Baseline: the
//! raw store's bare scan of the same events, same run. The swap's totals must count every
//! scanned event once (as an event or a bot event) before a speed is reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_aggregator::restate::{DateRange, Replay, STAGE_BYTES};
use beacon_core::raw::embedded::EmbeddedRawStore;
use beacon_core::raw::{Origin, RawEvent, RawStore};
use beacon_proto::pipeline::v1::{RestatementJob, Swap, TenantRollup};
use beacon_query::{Applied, DuckShardStore, RollupMessage, ShardStore};
use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

use crate::query::{DAY_MS, load};
use crate::traffic::{TrafficConfig, TrafficModel};
use crate::{Plan, Table};

/// Raw events stored per write.
const INSERT_BATCH: usize = 10_000;
/// Events a replay step reads.
const STEP: usize = 4096;
/// The generation the benchmark stages.
const GENERATION: u64 = 7;

/// Measures the reprocessing rate and adds its row.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = EmbeddedRawStore::open(&dir.path().join("raw.redb"))?;
    let mut model = TrafficModel::new(TrafficConfig {
        seed: plan.seed,
        tenants: plan.tenants,
        zipf_exponent: 1.1,
    });
    let tenant = load::tenant(&model.tenants()[0]);
    let now = beacon_core::time::now_ms();
    let count = plan.reprocess_events;
    let mut batch = Vec::with_capacity(INSERT_BATCH);
    let mut stored = 0u64;
    for day in 0..30usize {
        let per_day = count / 30 + usize::from(day < count % 30);
        let start = now - (30 - day as i64) * DAY_MS;
        for event in model.history(0, per_day, start, start + DAY_MS) {
            let event = load::logged(&tenant, event);
            batch.push(RawEvent {
                tenant_id: tenant.id.clone(),
                event_id: event.event_id.clone(),
                timestamp_ms: event.timestamp_ms,
                origin: Origin {
                    seq: stored / 1000 + 1,
                    index: (stored % 1000) as u32,
                },
                payload: Bytes::from(event.encode_to_vec()),
            });
            stored += 1;
            if batch.len() == INSERT_BATCH {
                raw.insert(&std::mem::take(&mut batch)).await?;
            }
        }
    }
    raw.insert(&batch).await?;

    let (scanned, scan_s) = scan(&raw, &tenant.id).await?;
    let store = DuckShardStore::new(dir.path().join("shards"), 1, 512_000_000)?;
    let (replayed, replay_s, counted) = replay(&raw, &store, &tenant.id, now).await?;
    anyhow::ensure!(
        replayed == scanned && counted == scanned,
        "reprocessing read {replayed} and counted {counted} of {scanned} stored events"
    );
    let rate = replayed as f64 / replay_s;
    let baseline = scanned as f64 / scan_s;
    table.row(
        &format!("reprocessing, raw store to a swapped generation ({replayed} events, 30 days)"),
        format!("{rate:.0} events/s"),
        format!("{baseline:.0} events/s (bare raw-store scan)"),
        format!("{:.2}x", rate / baseline.max(f64::MIN_POSITIVE)),
    );
    Ok(())
}

/// Reads every event of `tenant`; returns the count and the seconds it took.
async fn scan(raw: &EmbeddedRawStore, tenant: &str) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let (mut after, mut count) = (None, 0u64);
    loop {
        let page = raw.scan(tenant, i64::MIN, i64::MAX, after, STEP).await?;
        count += page.len() as u64;
        let Some(last) = page.last() else {
            break;
        };
        after = Some((last.timestamp_ms, last.event_id.clone()));
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Replays `tenant`'s history into generation [`GENERATION`] of `store` and swaps it in;
/// returns the events read, the seconds it took and the events the swap's totals count.
///
/// Stages are applied by another task while the replay goes on, as the query role applies
/// them while the aggregator replays.
async fn replay(
    raw: &EmbeddedRawStore,
    store: &DuckShardStore,
    tenant: &str,
    now: i64,
) -> anyhow::Result<(u64, f64, u64)> {
    let started = Instant::now();
    let range = beacon_aggregator::restate::history_range(raw, tenant, now).await?;
    let job = job(tenant, &range);
    let mut replay = Replay::of(&job)?;
    let (parts, applier) = applier(store.clone());
    let mut stage = 0u32;
    while !replay.is_done() {
        replay.step(raw, STEP, STAGE_BYTES).await?;
        if replay.pending_size_bound() >= STAGE_BYTES || replay.is_done() {
            stage += 1;
            parts.send(staged(replay.take_parts(), stage)).await?;
        }
    }
    let replaying = started.elapsed();
    stage += 1;
    let swap = TenantRollup {
        tenant_id: tenant.to_owned(),
        generation: GENERATION,
        stage,
        swap: Some(Swap {
            first_date: job.first_date.clone(),
            last_date: job.last_date.clone(),
            job_id: job.id.clone(),
        }),
        ..TenantRollup::default()
    };
    parts.send(vec![swap]).await?;
    drop(parts);
    let (applied, applying) = applier.await??;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "bench: reprocessing spent {:.2} s replaying (scan, decode, process) and, meanwhile, \
         {:.2} s applying {stage} staged parts to DuckDB; {seconds:.2} s in all",
        replaying.as_secs_f64(),
        applying.as_secs_f64()
    );
    let after = applied
        .swaps
        .first()
        .and_then(|(_, totals)| totals.after)
        .unwrap_or_default();
    let counted = u64::try_from(after.events + after.bot_events).unwrap_or(0);
    let mut finished = job;
    replay.checkpoint(&mut finished);
    Ok((finished.events, seconds, counted))
}

/// What the applier ends with: the last message's outcome and the time spent applying.
type Applying = anyhow::Result<(Applied, Duration)>;

/// A task applying each message's parts to `store` in order; it ends when the sender is
/// dropped, with what the last message applied and the time spent applying.
fn applier(store: DuckShardStore) -> (Sender<Vec<TenantRollup>>, JoinHandle<Applying>) {
    let (sender, mut parts) = tokio::sync::mpsc::channel::<Vec<TenantRollup>>(4);
    let task = tokio::spawn(async move {
        let (mut seq, mut last, mut busy) = (0u64, None, Duration::ZERO);
        while let Some(message) = parts.recv().await {
            let began = Instant::now();
            seq += 1;
            let tenants = message
                .into_iter()
                .map(|part| store.validate(0, part))
                .collect::<Result<Vec<_>, _>>()?;
            last = Some(store.apply(0, message_of(seq, tenants)).await?);
            busy += began.elapsed();
        }
        let last = last.ok_or_else(|| anyhow::anyhow!("nothing was applied"))?;
        Ok((last, busy))
    });
    (sender, task)
}

/// A job over `range` that replays every stored event.
fn job(tenant: &str, range: &DateRange) -> RestatementJob {
    let (from_ms, to_ms) = range.scan_bounds();
    RestatementJob {
        id: format!("{tenant}.bench"),
        tenant_id: tenant.to_owned(),
        first_date: range.first.to_string(),
        last_date: range.last.to_string(),
        generation: GENERATION,
        cut_seq: u64::MAX,
        cut_index: u32::MAX,
        logic_version: beacon_aggregator::LOGIC_VERSION,
        from_ms,
        to_ms,
        ..RestatementJob::default()
    }
}

/// The parts as stage `stage` of the generation.
fn staged(parts: Vec<TenantRollup>, stage: u32) -> Vec<TenantRollup> {
    parts
        .into_iter()
        .map(|part| TenantRollup {
            generation: GENERATION,
            stage,
            ..part
        })
        .collect()
}

fn message_of(seq: u64, tenants: Vec<beacon_query::ValidRollup>) -> Arc<[RollupMessage]> {
    Arc::new([RollupMessage {
        seq,
        logic_version: beacon_aggregator::LOGIC_VERSION,
        tenants,
        from_dead_letter: false,
        covered: None,
    }])
}
