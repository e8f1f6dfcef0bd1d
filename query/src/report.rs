//! Reports: metrics grouped by a dimension and time, filtered, ordered, paged and compared with
//! a second date range, read from a tenant's rollups ([`plan`] says which rows).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    DateRange, Dimension, Metric, MetricChange, ReportRow, ReportSource, RunReportResponse,
};

use crate::QueryError;
use crate::filter::ValueFilter;
use crate::metrics::{self, Sums};
use crate::range::{self, Range};
use crate::shard::{self, GroupBy, Page, ShardQuery, ShardStore};

mod goals;
pub mod plan;

pub use plan::{Column, Plan};

/// A report's rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The page of rows, in order.
    pub rows: Vec<Row>,
    /// Rows before paging.
    pub total: usize,
    /// Logic versions of the rollups read (both ranges), ascending.
    pub logic_versions: Vec<u32>,
}

/// One row of a report.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// One value per grouping column.
    pub dimensions: Vec<String>,
    /// The row's sums.
    pub sums: Sums,
    /// The matching group of the comparison range: its dimension values and sums.
    pub comparison: Option<(Vec<String>, Sums)>,
}

/// Time points of a range: group time to (place, label).
type Points = HashMap<i64, (usize, String)>;

/// Runs `plan` over `tenant`'s rollups in `store`.
pub async fn run(
    store: &dyn ShardStore,
    tenant: &Tenant,
    plan: &Plan,
) -> Result<Table, QueryError> {
    let dimension = plan.rows()?;
    let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
    let group = GroupBy {
        time: plan.time(),
        value: plan.dimension().is_some(),
    };
    let points = match plan.time() {
        Some(time) => range::points(&plan.range, time, &tz)?,
        None => Vec::new(),
    };
    // A series without a dimension has every point, empty ones included.
    let fill = group.time.is_some() && !group.value;
    let mut versions: BTreeSet<u32> = BTreeSet::new();
    let (groups, total) = if plan.dimension() == Some(Dimension::Goal) {
        let (mut rows, read) = goals::rows(store, tenant, plan, plan.range, None).await?;
        versions.extend(read);
        shard::sort(&mut rows, &plan.sort);
        let total = rows.len();
        let page = rows.into_iter().skip(plan.offset).take(plan.limit);
        (page.collect::<Vec<_>>(), total)
    } else {
        let mut query = ShardQuery::new(dimension, plan.range.start, plan.range.end, group);
        query.keep = plan.filter.clone();
        if !fill && group != GroupBy::TOTAL {
            query.page = Some(Page {
                sort: plan.sort.clone(),
                offset: plan.offset,
                limit: plan.limit,
            });
        }
        tracing::debug!(tenant = %tenant.id, ?query, "report query");
        let answer = store.query(&tenant.id, query).await?;
        versions.extend(answer.logic_versions);
        if fill || group == GroupBy::TOTAL {
            let times: Vec<i64> = if fill {
                points.iter().map(|(time, _)| *time).collect()
            } else {
                vec![0]
            };
            let all = every_point(answer.groups, times, plan);
            let total = all.len();
            let page = all.into_iter().skip(plan.offset).take(plan.limit);
            (page.collect::<Vec<_>>(), total)
        } else {
            (answer.groups, answer.total)
        }
    };
    let labels = index(points);
    let compared = match plan.comparison {
        Some(other) => Some(compare(store, tenant, plan, dimension, other, &groups).await?),
        None => None,
    };
    let rows = groups
        .into_iter()
        .map(|sums| {
            let comparison = compared
                .as_ref()
                .and_then(|other| matching(plan, &labels, other, &sums));
            Row {
                dimensions: dimensions(plan, &labels, &sums),
                sums,
                comparison,
            }
        })
        .collect();
    if let Some(other) = compared {
        versions.extend(other.versions);
    }
    Ok(Table {
        rows,
        total,
        logic_versions: versions.into_iter().collect(),
    })
}

/// One group per time in `times` (empty ones included), in the plan's order.
fn every_point(groups: Vec<Sums>, times: Vec<i64>, plan: &Plan) -> Vec<Sums> {
    let mut by_time: HashMap<i64, Sums> = groups.into_iter().map(|s| (s.time, s)).collect();
    let mut all: Vec<Sums> = times
        .into_iter()
        .map(|time| {
            by_time.remove(&time).unwrap_or(Sums {
                time,
                ..Sums::default()
            })
        })
        .collect();
    shard::sort(&mut all, &plan.sort);
    all
}

/// The comparison range's side of a report.
struct Compared {
    /// Its time points, in order.
    points: Vec<(i64, String)>,
    /// Its groups by (time, value).
    by_key: HashMap<(i64, String), Sums>,
    /// Logic versions of the rollups read.
    versions: Vec<u32>,
}

/// The comparison range's points and groups: for reports by dimension, only the values of
/// the page's rows.
async fn compare(
    store: &dyn ShardStore,
    tenant: &Tenant,
    plan: &Plan,
    dimension: i32,
    other: Range,
    groups: &[Sums],
) -> Result<Compared, QueryError> {
    let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
    let points = match plan.time() {
        Some(time) => range::points(&other, time, &tz)?,
        None => Vec::new(),
    };
    let names: Vec<String> = groups.iter().map(|s| s.key.clone()).collect();
    if plan.dimension() == Some(Dimension::Goal) {
        let (rows, versions) = goals::rows(store, tenant, plan, other, Some(&names)).await?;
        return Ok(Compared {
            points,
            by_key: rows
                .into_iter()
                .map(|s| ((s.time, s.key.clone()), s))
                .collect(),
            versions,
        });
    }
    let group = GroupBy {
        time: plan.time(),
        value: plan.dimension().is_some(),
    };
    let mut query = ShardQuery::new(dimension, other.start, other.end, group);
    query.keep = match plan.dimension() {
        Some(by) => {
            let page = ValueFilter::one_of(by, names);
            Some(Arc::new(match &plan.filter {
                Some(filter) => ValueFilter::All(vec![(**filter).clone(), page]),
                None => page,
            }))
        }
        None => plan.filter.clone(),
    };
    let answer = store.query(&tenant.id, query).await?;
    let by_key = answer
        .groups
        .into_iter()
        .map(|s| ((s.time, s.key.clone()), s))
        .collect();
    Ok(Compared {
        points,
        by_key,
        versions: answer.logic_versions,
    })
}

fn index(points: Vec<(i64, String)>) -> Points {
    points
        .into_iter()
        .enumerate()
        .map(|(place, (time, label))| (time, (place, label)))
        .collect()
}

fn dimensions(plan: &Plan, labels: &Points, sums: &Sums) -> Vec<String> {
    plan.columns
        .iter()
        .map(|column| match column {
            Column::Time(_) => labels
                .get(&sums.time)
                .map(|(_, label)| label.clone())
                .unwrap_or_default(),
            Column::Value(_) => sums.key.clone(),
        })
        .collect()
}

/// The comparison group matching `sums`: the point at the same place, the same value.
fn matching(
    plan: &Plan,
    labels: &Points,
    other: &Compared,
    sums: &Sums,
) -> Option<(Vec<String>, Sums)> {
    let point = match plan.time() {
        Some(_) => {
            let (place, _) = labels.get(&sums.time)?;
            Some(other.points.get(*place)?)
        }
        None => None,
    };
    let time = point.map_or(0, |(time, _)| *time);
    let found = other
        .by_key
        .get(&(time, sums.key.clone()))
        .cloned()
        .unwrap_or(Sums {
            key: sums.key.clone(),
            time,
            ..Sums::default()
        });
    let dims = plan
        .columns
        .iter()
        .map(|column| match column {
            Column::Time(_) => point.map(|(_, label)| label.clone()).unwrap_or_default(),
            Column::Value(_) => sums.key.clone(),
        })
        .collect();
    Some((dims, found))
}

/// The response of a report.
pub fn response(plan: &Plan, table: Table) -> RunReportResponse {
    let rows = table
        .rows
        .into_iter()
        .map(|row| {
            let (comparison_dimensions, comparison_values, changes) = match &row.comparison {
                Some((dims, before)) => (
                    dims.clone(),
                    metrics::values(&plan.metrics, before),
                    plan.metrics
                        .iter()
                        .map(|&metric| MetricChange {
                            metric: metric as i32,
                            change: change(metric, &row.sums, before),
                        })
                        .collect(),
                ),
                None => Default::default(),
            };
            ReportRow {
                dimensions: row.dimensions,
                values: metrics::values(&plan.metrics, &row.sums),
                comparison_dimensions,
                comparison_values,
                changes,
            }
        })
        .collect();
    RunReportResponse {
        rows,
        total_rows: table.total as u64,
        comparison_range: plan.comparison.map(|r| DateRange {
            start_date: r.start.to_string(),
            end_date: r.end.to_string(),
        }),
        logic_versions: table.logic_versions,
        source: ReportSource::Rollups as i32,
    }
}

/// How `metric` moved from `before` to `now`: percent, or points for the bounce rate; none
/// from nothing.
pub fn change(metric: Metric, now: &Sums, before: &Sums) -> Option<f64> {
    let (a, b) = (metrics::value(metric, now), metrics::value(metric, before));
    match metric {
        Metric::BounceRate => (before.visits > 0 && now.visits > 0).then_some(a - b),
        _ => (b != 0.0).then(|| (a - b) / b * 100.0),
    }
}

#[cfg(test)]
mod tests;
