//! The dashboard computed again after a live write, in process: one month of the largest
//! tenant (at most [`MAX_EVENTS`] events) is loaded into two shard stores, one keeping the
//! sums of settled days (the default) and one keeping none; then, round after round, the
//! same 100 live events are written to both and one dashboard is computed from each, no
//! answer kept. Both dashboards are compared every round before any speed is printed.
//! Baseline: the store keeping no sums, same run.

use std::sync::Arc;
use std::time::Instant;

use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    Metric, MetricValue,
};
use beacon_query::Insights;
use hdrhistogram::Histogram;

use super::{DAY_MS, Loader, dashboard_metrics, load, month};
use crate::traffic::{TrafficConfig, TrafficModel};
use crate::{Plan, Table};

/// Most events of the month loaded (twice).
const MAX_EVENTS: usize = 1_000_000;
/// Live events written before each dashboard.
const LIVE_EVENTS: usize = 100;
/// Dashboards computed from each store.
const ROUNDS: usize = 40;

/// One dashboard's answers: totals, the daily series' points and the top pages' and sources'
/// rows, each a label and its metric values.
type Answer = Vec<(String, Vec<MetricValue>)>;

/// Adds the rows comparing the two stores.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let events = plan.largest_tenant_events.min(MAX_EVENTS);
    let now = beacon_core::time::now_ms();
    let range = month(now)?;
    let mut stores = Vec::new();
    for keeps in [true, false] {
        let dir = tempfile::tempdir()?;
        let mut model = TrafficModel::new(TrafficConfig {
            seed: plan.seed + 2,
            tenants: plan.tenants,
            zipf_exponent: 1.1,
        });
        let tenant = load::tenant(&model.tenants()[0]);
        let loader = tokio::task::block_in_place(|| -> anyhow::Result<Loader> {
            let mut loader = Loader::new(dir.path())?;
            if !keeps {
                loader.store = loader.store.clone().with_settled_cache(0);
            }
            for event in model.history(0, events, now - 30 * DAY_MS, now - DAY_MS / 2) {
                loader.add(&tenant, event)?;
            }
            loader.finish()?;
            Ok(loader)
        })?;
        stores.push((dir, model, tenant, loader));
    }
    let mut histograms = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
    for round in 0..ROUNDS as i64 {
        let from = now - DAY_MS / 2 + round * 1_000;
        let mut answers = Vec::new();
        for ((_, model, tenant, loader), histogram) in stores.iter_mut().zip(&mut histograms) {
            tokio::task::block_in_place(|| -> anyhow::Result<()> {
                for event in model.history(0, LIVE_EVENTS, from, from + 1_000) {
                    loader.add(tenant, event)?;
                }
                loader.flush()
            })?;
            let insights = Insights::new(Arc::new(loader.store.clone()));
            let started = Instant::now();
            answers.push(dashboard(&insights, tenant, &range).await?);
            histogram.record(started.elapsed().as_micros() as u64)?;
        }
        if let [kept, fresh] = answers.as_slice() {
            agree(kept, fresh).map_err(|why| anyhow::anyhow!("round {round}: {why}"))?;
        }
    }
    let [kept, fresh] = &histograms;
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        table.latency(
            &format!(
                "dashboard {name} computed after each write of {LIVE_EVENTS} live events \
                 (settled days kept; in process, 1 client), a tenant of {events} events in \
                 30 days"
            ),
            kept.value_at_quantile(q) as f64 / 1000.0,
            "the same, no settled days kept",
            fresh.value_at_quantile(q) as f64 / 1000.0,
        );
    }
    Ok(())
}

/// The four parts of the dashboard, computed (no answer kept).
async fn dashboard(
    insights: &Insights,
    tenant: &Tenant,
    range: &DateRange,
) -> anyhow::Result<Answer> {
    let date_range = Some(range.clone());
    let metrics = dashboard_metrics();
    let breakdown = |dimension: Dimension| GetBreakdownRequest {
        date_range: date_range.clone(),
        dimension: dimension as i32,
        metrics: metrics.clone(),
        limit: 10,
    };
    let totals = insights
        .aggregate(
            tenant,
            GetAggregateRequest {
                date_range: date_range.clone(),
                metrics: metrics.clone(),
            },
        )
        .await?;
    let series = insights
        .timeseries(
            tenant,
            GetTimeseriesRequest {
                date_range: date_range.clone(),
                interval: Interval::Day as i32,
                metrics: metrics.clone(),
            },
        )
        .await?;
    let mut answer = vec![("totals".to_owned(), totals.values)];
    answer.extend(series.points.into_iter().map(|p| (p.label, p.values)));
    for dimension in [Dimension::Page, Dimension::Source] {
        let rows = insights.breakdown(tenant, breakdown(dimension)).await?.rows;
        let label = |value: &str| format!("{dimension:?} {value}");
        answer.extend(rows.into_iter().map(|row| (label(&row.value), row.values)));
    }
    Ok(answer)
}

/// Whether two answers agree: every metric equal but visitors, within 2 % (sketches merged in
/// another order); a top row only one of them has must be within 2 % of the other's last row
/// of its part (a tie at the edge).
fn agree(kept: &Answer, fresh: &Answer) -> Result<(), String> {
    let find = |answer: &Answer, label: &str| {
        answer
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, values)| values.clone())
    };
    let near = |a: f64, b: f64| (a - b).abs() <= 0.02 * a.max(b);
    let visitors = |values: &[MetricValue]| values.first().map_or(0.0, |v| v.value);
    for (one, other) in [(kept, fresh), (fresh, kept)] {
        for (label, values) in one {
            let Some(theirs) = find(other, label) else {
                let part = label.split(' ').next().unwrap_or_default();
                let last = other.iter().rev().find(|(l, _)| l.starts_with(part));
                match last {
                    Some((_, last)) if near(visitors(values), visitors(last)) => continue,
                    _ => return Err(format!("{label:?} is in one answer only")),
                }
            };
            for (mine, their) in values.iter().zip(&theirs) {
                let same = match Metric::try_from(mine.metric) {
                    Ok(Metric::Visitors) => near(mine.value, their.value),
                    _ => mine.value == their.value,
                };
                if !same || mine.metric != their.metric {
                    return Err(format!("{label:?}: {values:?} against {theirs:?}"));
                }
            }
        }
    }
    Ok(())
}
