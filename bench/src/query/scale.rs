//! Scale of tenants: one probe tenant's dashboard latency with a few and with many tenants
//! loaded into the same shard store, disk bytes per tenant, and the files the store holds
//! open. Baseline: the same figures with the smaller number of tenants, same run.

use std::path::Path;
use std::sync::Arc;

use beacon_core::meta::Tenant;
use beacon_query::Insights;

use super::{DAY_MS, Loader, dashboards, month};
use crate::report::mib;
use crate::traffic::{TrafficConfig, TrafficModel};
use crate::{Plan, Table};

/// What one tenant count measured.
struct Figures {
    tenants: usize,
    /// (p50, p99) microseconds at 1 and at 16 clients.
    latency: Vec<(usize, u64, u64)>,
    bytes: u64,
    open_files: usize,
}

/// Loads `plan.scale_tenants.0`, then `.1` tenants and adds the rows.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let (few, many) = plan.scale_tenants;
    let dir = tempfile::tempdir()?;
    let mut model = TrafficModel::new(TrafficConfig {
        seed: plan.seed + 1,
        tenants: many,
        zipf_exponent: 1.1,
    });
    let now = beacon_core::time::now_ms();
    let range = month(now)?;
    let probe = tenant(&model, 0);
    let mut loader = tokio::task::block_in_place(|| -> anyhow::Result<Loader> {
        let mut loader = Loader::new(dir.path())?;
        load(
            &mut model,
            &mut loader,
            0..1,
            plan.median_tenant_events,
            now,
        )?;
        Ok(loader)
    })?;
    let mut figures = Vec::new();
    let mut loaded = 1;
    for tenants in [few, many] {
        tokio::task::block_in_place(|| {
            load(
                &mut model,
                &mut loader,
                loaded..tenants,
                plan.scale_events_per_tenant,
                now,
            )?;
            loader.finish()
        })?;
        loaded = tenants;
        let insights = Arc::new(Insights::new(Arc::new(loader.store.clone())));
        let mut latency = Vec::new();
        for clients in [1usize, 16] {
            let h = dashboards(&insights, &probe, &range, clients, plan.query_requests).await?;
            latency.push((clients, h.value_at_quantile(0.5), h.value_at_quantile(0.99)));
        }
        figures.push(Figures {
            tenants,
            latency,
            bytes: folder_bytes(&dir.path().join("shards"))?,
            open_files: open_files(&dir.path().join("shards"))?,
        });
    }
    if let [few, many] = figures.as_slice() {
        add_rows(plan, table, few, many);
    }
    Ok(())
}

fn add_rows(plan: &Plan, table: &mut Table, few: &Figures, many: &Figures) {
    for (&(clients, p50, p99), &(_, base50, base99)) in many.latency.iter().zip(&few.latency) {
        for (name, figure, baseline) in [("p50", p50, base50), ("p99", p99, base99)] {
            table.latency(
                &format!(
                    "dashboard {name}, a {}-event tenant among {} tenants, {clients} client(s)",
                    plan.median_tenant_events, many.tenants
                ),
                figure as f64 / 1000.0,
                &format!("same among {} tenants", few.tenants),
                baseline as f64 / 1000.0,
            );
        }
    }
    let per_tenant = |f: &Figures| f.bytes as f64 / f.tenants as f64;
    table.row(
        &format!(
            "shard disk bytes per tenant, {} tenants ({} events each, {} in all)",
            many.tenants,
            plan.scale_events_per_tenant,
            mib(many.bytes)
        ),
        format!("{:.0} bytes", per_tenant(many)),
        format!(
            "{:.0} bytes ({} tenants, {})",
            per_tenant(few),
            few.tenants,
            mib(few.bytes)
        ),
        format!("{:.2}x", per_tenant(many) / per_tenant(few).max(1.0)),
    );
    table.row(
        &format!("shard files open, {} tenants", many.tenants),
        format!("{} files", many.open_files),
        format!("{} files ({} tenants)", few.open_files, few.tenants),
        format!(
            "{:.2}x",
            many.open_files as f64 / (few.open_files as f64).max(1.0)
        ),
    );
}

fn tenant(model: &TrafficModel, index: usize) -> Tenant {
    super::load::tenant(&model.tenants()[index])
}

/// Loads `events` events of each tenant of `tenants` over the last 30 days.
fn load(
    model: &mut TrafficModel,
    loader: &mut Loader,
    tenants: std::ops::Range<usize>,
    events: usize,
    now: i64,
) -> anyhow::Result<()> {
    for index in tenants {
        let tenant = tenant(model, index);
        for event in model.history(index, events, now - 30 * DAY_MS, now) {
            loader.add(&tenant, event)?;
        }
    }
    Ok(())
}

/// Bytes of the files in `dir`.
fn folder_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// This process's open file descriptors on files in `dir`.
fn open_files(dir: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if std::fs::read_link(entry?.path()).is_ok_and(|target| target.starts_with(dir)) {
            count += 1;
        }
    }
    Ok(count)
}
