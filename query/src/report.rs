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
use crate::shard::{self, GroupBy, Page, ShardQuery, ShardStore, Time};

mod goals;
pub mod plan;
mod scan;

pub use plan::{Column, Plan, Route};

/// A report's rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The page of rows, in order.
    pub rows: Vec<Row>,
    /// Rows before paging.
    pub total: usize,
    /// Logic versions of the rollups read (both ranges), ascending.
    pub logic_versions: Vec<u32>,
    /// What was read.
    pub source: ReportSource,
}

/// One row of a report.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// One value per grouping column.
    pub dimensions: Vec<String>,
    /// The row's sums.
    pub sums: Sums,
    /// With a comparison, the matching group of the comparison range: its dimension values
    /// (an empty time label when the range has no such point) and sums (zero when empty).
    pub comparison: Option<(Vec<String>, Sums)>,
}

/// Runs `plan` over `tenant`'s rollups in `store`.
pub async fn run(
    store: &dyn ShardStore,
    tenant: &Tenant,
    plan: &Plan,
) -> Result<Table, QueryError> {
    let route = plan.route()?;
    let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
    let points = match plan.time() {
        Some(time) => range::points(&plan.range, time, &tz)?,
        None => Vec::new(),
    };
    let mut versions: BTreeSet<u32> = BTreeSet::new();
    let (groups, total) = match route {
        Route::Events => {
            let query = scan::query(plan, tenant, plan.range, 0)?;
            tracing::debug!(tenant = %tenant.id, ?query, "report scan");
            let answer = store.scan(&tenant.id, query).await?;
            versions.extend(answer.logic_versions);
            let mut groups = answer.groups;
            if plan.dimensions().is_empty() {
                let times = match plan.time() {
                    Some(_) => points.iter().map(|(time, _)| *time).collect(),
                    None => vec![0],
                };
                groups = every_point(groups, times, plan);
            } else {
                shard::sort(&mut groups, &plan.sort);
            }
            paged(groups, plan)
        }
        Route::Rollups(_) if plan.dimension() == Some(Dimension::Goal) => {
            let (mut rows, read) = goals::rows(store, tenant, plan, plan.range, 0, None).await?;
            versions.extend(read);
            shard::sort(&mut rows, &plan.sort);
            paged(rows, plan)
        }
        Route::Rollups(dimension) => {
            let group = plan.group();
            // A series without a dimension has every point, empty ones included; totals have one.
            let every = match group.time {
                Some(_) if !group.value => Some(points.iter().map(|(time, _)| *time).collect()),
                None if !group.value => Some(vec![0]),
                _ => None,
            };
            let mut query = ShardQuery::new(dimension, plan.range.start, plan.range.end, group);
            query.keep = plan.keep();
            query.visitors = plan.needs_visitors();
            // Percentages are known only after the read: sort by them here.
            let by_percentage = plan
                .sort
                .iter()
                .any(|s| s.key == shard::SortKey::Metric(Metric::Percentage));
            if every.is_none() && !by_percentage {
                query.page = Some(Page {
                    sort: plan.sort.clone(),
                    offset: plan.offset,
                    limit: plan.limit,
                });
            }
            tracing::debug!(tenant = %tenant.id, ?query, "report query");
            let mut answer = store.query(&tenant.id, query).await?;
            versions.extend(answer.logic_versions.iter().copied());
            if plan.metrics.contains(&Metric::Percentage) {
                point_visitors(store, tenant, plan, plan.range, 0, &mut answer.groups).await?;
            }
            match every {
                Some(times) => paged(every_point(answer.groups, times, plan), plan),
                None if by_percentage => {
                    shard::sort(&mut answer.groups, &plan.sort);
                    paged(answer.groups, plan)
                }
                None => (answer.groups, answer.total),
            }
        }
    };
    let compared = match plan.comparison {
        Some(other) => {
            let compared = compare(store, tenant, plan, route, other, &groups).await?;
            versions.extend(compared.versions.iter().copied());
            Some(compared)
        }
        None => None,
    };
    let labels: HashMap<i64, (usize, String)> = points
        .into_iter()
        .enumerate()
        .map(|(place, (time, label))| (time, (place, label)))
        .collect();
    let label = |time: i64| {
        labels
            .get(&time)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let rows = groups
        .into_iter()
        .map(|sums| Row {
            dimensions: dimensions(plan, &label(sums.time), &sums.key),
            comparison: compared
                .as_ref()
                .map(|other| other.matching(plan, &labels, &sums)),
            sums,
        })
        .collect();
    Ok(Table {
        rows,
        total,
        logic_versions: versions.into_iter().collect(),
        source: match route {
            Route::Rollups(_) => ReportSource::Rollups,
            Route::Events => ReportSource::Events,
        },
    })
}

/// Sets each group's [`Sums::point_visitors`]: the visitors of its time point in every group
/// the plan's filter keeps (goal rows: all visitors; totals: their own).
async fn point_visitors(
    store: &dyn ShardStore,
    tenant: &Tenant,
    plan: &Plan,
    range: Range,
    shift: i64,
    groups: &mut [Sums],
) -> Result<(), QueryError> {
    let Some(dimension) = plan.dimension() else {
        groups
            .iter_mut()
            .for_each(|s| s.point_visitors = s.visitors);
        return Ok(());
    };
    let mut query = ShardQuery::new(
        dimension as i32,
        range.start,
        range.end,
        GroupBy {
            time: plan.time(),
            value: false,
        },
    );
    query.keep = plan.keep();
    query.shift_days = shift;
    let points: HashMap<i64, u64> = store
        .query(&tenant.id, query)
        .await?
        .groups
        .into_iter()
        .map(|s| (s.time, s.visitors))
        .collect();
    for sums in groups {
        sums.point_visitors = points.get(&sums.time).copied().unwrap_or(0);
    }
    Ok(())
}

/// The page of `groups` the plan asks for, and how many there were.
fn paged(groups: Vec<Sums>, plan: &Plan) -> (Vec<Sums>, usize) {
    let total = groups.len();
    let page = groups.into_iter().skip(plan.offset).take(plan.limit);
    (page.collect(), total)
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

/// A row's dimension values, in the plan's column order (a property's value without its key).
fn dimensions(plan: &Plan, time_label: &str, key: &str) -> Vec<String> {
    // Only keys of two values are joined: a single value is whole, whatever it holds.
    let values_columns = plan
        .columns
        .iter()
        .filter(|c| matches!(c, Column::Value(_)))
        .count();
    let mut values: Box<dyn Iterator<Item = &str>> = if values_columns > 1 {
        Box::new(key.split(shard::KEY_SEPARATOR))
    } else {
        Box::new(std::iter::once(key))
    };
    plan.columns
        .iter()
        .map(|column| match column {
            Column::Time(_) => time_label.to_owned(),
            Column::Value(dimension) => {
                let value = values.next().unwrap_or_default();
                match dimension {
                    Dimension::Property => beacon_core::property::split(value)
                        .map_or(value, |(_, v)| v)
                        .to_owned(),
                    _ => value.to_owned(),
                }
            }
        })
        .collect()
}

/// The comparison range's side of a report.
struct Compared {
    /// The range.
    range: Range,
    /// Days from its start to the report's: its days are grouped as the report's days this
    /// much later.
    shift: i64,
    /// Its hourly points, in order (hours are matched by place).
    hours: Vec<(i64, String)>,
    /// Its groups by (time, value).
    by_key: HashMap<(i64, String), Sums>,
    /// Logic versions of the rollups read.
    versions: Vec<u32>,
}

impl Compared {
    /// The comparison group matching `sums`, zero when there is none: the same days shifted
    /// (hours: the hour at the same place), the same value.
    fn matching(
        &self,
        plan: &Plan,
        labels: &HashMap<i64, (usize, String)>,
        sums: &Sums,
    ) -> (Vec<String>, Sums) {
        let (time, label) = match plan.time() {
            None => (0, String::new()),
            Some(Time::Hour) => labels
                .get(&sums.time)
                .and_then(|(place, _)| self.hours.get(*place))
                .cloned()
                .unwrap_or((i64::MIN, String::new())),
            Some(_) => {
                let time = sums.time - self.shift;
                let day = range::from_epoch_day(time);
                let inside = day >= self.range.start && day <= self.range.end;
                (
                    time,
                    if inside {
                        day.to_string()
                    } else {
                        String::new()
                    },
                )
            }
        };
        let found = self
            .by_key
            .get(&(time, sums.key.clone()))
            .cloned()
            .unwrap_or(Sums {
                key: sums.key.clone(),
                time,
                ..Sums::default()
            });
        (dimensions(plan, &label, &sums.key), found)
    }
}

/// The comparison range's groups: for reports by dimension, only the values of the page's
/// rows; days grouped as the report's days they are compared with.
async fn compare(
    store: &dyn ShardStore,
    tenant: &Tenant,
    plan: &Plan,
    route: Route,
    other: Range,
    groups: &[Sums],
) -> Result<Compared, QueryError> {
    let shift = range::epoch_day(plan.range.start) - range::epoch_day(other.start);
    let hours = match plan.time() {
        Some(Time::Hour) => {
            let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
            range::points(&other, Time::Hour, &tz)?
        }
        _ => Vec::new(),
    };
    let names: Vec<String> = groups.iter().map(|s| s.key.clone()).collect();
    let (rows, versions) = if let Route::Events = route {
        let answer = store
            .scan(&tenant.id, scan::query(plan, tenant, other, shift)?)
            .await?;
        (answer.groups, answer.logic_versions)
    } else if plan.dimension() == Some(Dimension::Goal) {
        goals::rows(store, tenant, plan, other, shift, Some(&names)).await?
    } else {
        let Route::Rollups(dimension) = route else {
            unreachable!("the event store's route is taken above");
        };
        let mut query = ShardQuery::new(dimension, other.start, other.end, plan.group());
        query.visitors = plan.needs_visitors();
        query.shift_days = shift;
        let keep = plan.keep();
        query.keep = match plan.dimension() {
            Some(by) => {
                let page = ValueFilter::one_of(by, names);
                Some(Arc::new(match keep {
                    Some(keep) => ValueFilter::All(vec![(*keep).clone(), page]),
                    None => page,
                }))
            }
            None => keep,
        };
        let mut answer = store.query(&tenant.id, query).await?;
        if plan.metrics.contains(&Metric::Percentage) {
            point_visitors(store, tenant, plan, other, shift, &mut answer.groups).await?;
        }
        (answer.groups, answer.logic_versions)
    };
    Ok(Compared {
        range: other,
        shift,
        hours,
        by_key: rows
            .into_iter()
            .map(|s| ((s.time, s.key.clone()), s))
            .collect(),
        versions,
    })
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
        source: table.source as i32,
    }
}

/// How `metric` moved from `before` to `now`: percent, or points for the bounce rate; none
/// when either side has no visits (bounce rate) or the compared value is 0 (the others).
pub fn change(metric: Metric, now: &Sums, before: &Sums) -> Option<f64> {
    let (a, b) = (metrics::value(metric, now), metrics::value(metric, before));
    match metric {
        Metric::BounceRate => (before.visits > 0 && now.visits > 0).then_some(a - b),
        _ => (b != 0.0).then(|| (a - b) / b * 100.0),
    }
}

#[cfg(test)]
mod tests;
