//! A report request, validated, and where it is read from.
//!
//! The rollups hold, per local day, the counters and visitor sketch of each value of each
//! dimension on its own. So they answer a report grouped by at most one dimension and time,
//! filtered on that dimension's own values; without a dimension, filtered on one dimension's
//! values, since every visit has one value of a visit dimension. Everything else is read from
//! the event store ([`Route::Events`]); goal rows, made from the rollups only, refuse what
//! they cannot answer with UNIMPLEMENTED.

use std::sync::Arc;

use beacon_proto::insights::v1::{
    ComparisonMode, Dimension, Interval, Metric, RunReportRequest, order_by, report_dimension,
};

use crate::QueryError;
use crate::filter::{Field, ValueFilter};
use crate::metrics;
use crate::range::{self, Range};
use crate::shard::{GroupBy, Sort, SortKey, Time};

/// Report rows returned when the request's limit is 0.
pub const DEFAULT_LIMIT: u32 = 1_000;
/// Most report rows one request may ask for.
pub const MAX_LIMIT: u32 = 10_000;
/// Most sort keys.
pub const MAX_ORDER_BY: usize = 4;
/// Most dimensions besides time one report groups by.
pub const MAX_VALUE_COLUMNS: usize = 2;
/// Days between a date and the same weekday a year earlier.
const YEAR_OF_WEEKS: i64 = 364;

/// Where a report is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The rollup rows of this dimension (0: the totals).
    Rollups(i32),
    /// The event store.
    Events,
}

/// What a report groups by, in the request's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The time points.
    Time(Time),
    /// The values of a dimension.
    Value(Dimension),
}

/// A validated report.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The date range.
    pub range: Range,
    /// The range compared with, if any.
    pub comparison: Option<Range>,
    /// Metrics, in the request's order.
    pub metrics: Vec<Metric>,
    /// Grouping columns, in the request's order.
    pub columns: Vec<Column>,
    /// With a [`Dimension::Property`] column: the property key (as rows keep it).
    pub property: Option<String>,
    /// The filter, if any.
    pub filter: Option<Arc<ValueFilter>>,
    /// Sort keys.
    pub sort: Vec<Sort>,
    /// Rows skipped.
    pub offset: usize,
    /// Most rows returned.
    pub limit: usize,
}

impl Plan {
    /// Validates a request: every field is named in the error it causes.
    pub fn parse(req: &RunReportRequest) -> Result<Self, QueryError> {
        let range = range::parse(req.date_range.as_ref())?;
        let (columns, property) = columns(req)?;
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            1..=MAX_LIMIT => req.limit,
            n => {
                return Err(QueryError::invalid(format!(
                    "limit {n} is above the maximum of 10,000"
                )));
            }
        };
        let metrics = metrics::requested(&req.metrics)?;
        let plan = Self {
            range,
            comparison: comparison(req, range)?,
            sort: sort(req, &columns, &metrics)?,
            metrics,
            filter: req
                .filter
                .as_ref()
                .map(|f| ValueFilter::compile(f, "filter").map(Arc::new))
                .transpose()?,
            columns,
            property,
            offset: req.offset as usize,
            limit: limit as usize,
        };
        plan.route()?;
        Ok(plan)
    }

    /// An unfiltered report of `metrics` grouped by `columns`, in the default order, every
    /// row returned.
    pub fn unfiltered(range: Range, metrics: Vec<Metric>, columns: Vec<Column>) -> Self {
        Self {
            range,
            comparison: None,
            sort: default_sort(&columns, &metrics),
            metrics,
            columns,
            property: None,
            filter: None,
            offset: 0,
            limit: usize::MAX,
        }
    }

    /// How the rollup rows are grouped: by the time column and the dimension column.
    pub fn group(&self) -> GroupBy {
        GroupBy {
            time: self.time(),
            value: self.dimension().is_some(),
        }
    }

    /// The time column, if any.
    pub fn time(&self) -> Option<Time> {
        self.columns.iter().find_map(|c| match c {
            Column::Time(t) => Some(*t),
            Column::Value(_) => None,
        })
    }

    /// The dimension column, if any.
    pub fn dimension(&self) -> Option<Dimension> {
        self.columns.iter().find_map(|c| match c {
            Column::Value(d) => Some(*d),
            Column::Time(_) => None,
        })
    }

    /// The dimensions the report groups by, in order (time aside).
    pub fn dimensions(&self) -> Vec<Dimension> {
        self.columns
            .iter()
            .filter_map(|c| match c {
                Column::Value(d) => Some(*d),
                Column::Time(_) => None,
            })
            .collect()
    }

    /// Where the report is read from: the rollups when they hold it exactly, else the event
    /// store; an error for what neither answers.
    pub fn route(&self) -> Result<Route, QueryError> {
        if self.uses(Metric::ConversionRate) && self.dimension() != Some(Dimension::Goal) {
            return Err(QueryError::invalid(
                "metrics: METRIC_CONVERSION_RATE is the share of visitors who reached a goal: \
                 group by DIMENSION_GOAL to ask for it",
            ));
        }
        if self.uses(Metric::GroupConversionRate) && self.goal_conditions().is_empty() {
            return Err(QueryError::invalid(
                "metrics: METRIC_GROUP_CONVERSION_RATE is the share of each group's visitors \
                 who reached a goal: give a filter whose top level requires DIMENSION_GOAL \
                 OPERATOR_IS",
            ));
        }
        let fields = self.filter.as_ref().map(|f| f.fields()).unwrap_or_default();
        let events_only = self.dimensions().len() > 1
            || self.dimensions().contains(&Dimension::ExitPage)
            || fields.iter().any(|(d, _)| *d == Dimension::ExitPage)
            || [
                Metric::GroupConversionRate,
                Metric::ScrollDepth,
                Metric::TimeOnPage,
            ]
            .into_iter()
            .any(|m| self.uses(m));
        if self.dimensions().contains(&Dimension::Goal) {
            return match (events_only, self.rows()) {
                (false, Some(dimension)) => Ok(Route::Rollups(dimension)),
                _ => Err(QueryError::unimplemented(
                    "goal rows are read from the rollups: with DIMENSION_GOAL, group by no \
                     other dimension, filter on goals only and ask for rollup metrics; filter \
                     on a goal (DIMENSION_GOAL OPERATOR_IS) to scan the event store instead",
                )),
            };
        }
        if events_only {
            return Ok(Route::Events);
        }
        Ok(match self.rows() {
            Some(dimension) => Route::Rollups(dimension),
            None => Route::Events,
        })
    }

    /// The top-level goal conditions every passing event must meet (`is` only).
    pub fn goal_conditions(&self) -> Vec<&crate::filter::Test> {
        self.filter.as_ref().map_or_else(Vec::new, |f| {
            f.required()
                .into_iter()
                .filter(|t| t.dimension == Dimension::Goal && t.is_exact())
                .collect()
        })
    }

    /// Whether the report needs distinct visitors: a metric made of them, asked for or sorted
    /// by. Without, reads leave the visitor sketches unread.
    pub fn needs_visitors(&self) -> bool {
        const OF_VISITORS: [Metric; 4] = [
            Metric::Visitors,
            Metric::ConversionRate,
            Metric::GroupConversionRate,
            Metric::Percentage,
        ];
        OF_VISITORS.into_iter().any(|m| self.uses(m))
    }

    /// Whether the report asks for the metric or sorts by it.
    fn uses(&self, metric: Metric) -> bool {
        self.metrics.contains(&metric) || self.sort.iter().any(|s| s.key == SortKey::Metric(metric))
    }

    /// The rollup rows that answer the report exactly: their dimension (0 for totals); none
    /// when the rollups cannot answer it.
    fn rows(&self) -> Option<i32> {
        let filtered = self.filter.as_ref().map(|f| f.fields());
        let by: Option<Field> = self
            .dimension()
            .map(|d| (d, self.property.clone().unwrap_or_default()));
        // Hours are kept for the unfiltered totals only.
        if self.time() == Some(Time::Hour) && (by.is_some() || filtered.is_some()) {
            return None;
        }
        let Some(filtered) = filtered else {
            return Some(by.map_or(0, |(d, _)| d as i32));
        };
        // One dimension each value of which is kept apart.
        let [only] = &filtered.into_iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        match by {
            Some(by) if by != *only => None,
            Some((by, _)) => Some(by as i32),
            None => self.filtered_totals(only.0),
        }
    }

    /// The filter the rollup rows are read with: the request's, and for a custom property
    /// only the rows of its key.
    pub fn keep(&self) -> Option<Arc<ValueFilter>> {
        let key = match (&self.property, &self.filter) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(filter)) => filter
                .fields()
                .into_iter()
                .find(|(d, _)| *d == Dimension::Property)
                .map(|(_, key)| key),
            (None, None) => None,
        };
        match (key, &self.filter) {
            (None, filter) => filter.clone(),
            (Some(key), None) => Some(Arc::new(ValueFilter::property(&key))),
            (Some(key), Some(filter)) => Some(Arc::new(ValueFilter::All(vec![
                ValueFilter::property(&key),
                (**filter).clone(),
            ]))),
        }
    }

    /// The rows of `only` summed over the values the filter keeps: exact for a visit
    /// dimension (each visit has one value), and for an event dimension only for the event
    /// metrics.
    fn filtered_totals(&self, only: Dimension) -> Option<i32> {
        // A goal's visits are not kept apart.
        if only == Dimension::Goal {
            return None;
        }
        let event_metric = |m: &Metric| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::TotalRevenue
                    | Metric::AverageRevenue
            )
        };
        // An event dimension's rows add up events, not visits.
        if is_event_dimension(only) && !self.metrics.iter().all(event_metric) {
            return None;
        }
        // Visits and events without the dimension have no rows of it.
        let optional = matches!(
            only,
            Dimension::UtmSource
                | Dimension::UtmMedium
                | Dimension::UtmCampaign
                | Dimension::UtmTerm
                | Dimension::UtmContent
                | Dimension::Property
        );
        if optional && self.filter.as_ref().is_some_and(|f| f.accepts_missing()) {
            return None;
        }
        Some(only as i32)
    }
}

/// Whether each event has its own value of `dimension` (else each visit has one).
pub fn is_event_dimension(dimension: Dimension) -> bool {
    matches!(
        dimension,
        Dimension::Page
            | Dimension::EventName
            | Dimension::Hostname
            | Dimension::Goal
            | Dimension::Property
    )
}

/// The grouping columns of a request, and the property key of a property column.
fn columns(req: &RunReportRequest) -> Result<(Vec<Column>, Option<String>), QueryError> {
    let mut columns: Vec<Column> = Vec::with_capacity(req.dimensions.len());
    let mut property = None;
    for (i, dimension) in req.dimensions.iter().enumerate() {
        let field = format!("dimensions[{i}]");
        let column = match &dimension.kind {
            None => {
                return Err(QueryError::invalid(format!(
                    "{field} is empty: set dimension, time or property"
                )));
            }
            Some(report_dimension::Kind::Dimension(raw)) => {
                match crate::filter::dimension(*raw, &format!("{field}.dimension"))? {
                    Dimension::Property => {
                        return Err(QueryError::invalid(format!(
                            "{field}.dimension DIMENSION_PROPERTY needs its key: set \
                             {field}.property instead"
                        )));
                    }
                    d => Column::Value(d),
                }
            }
            Some(report_dimension::Kind::Time(raw)) => Column::Time(time(*raw, &field)?),
            Some(report_dimension::Kind::Property(key)) => {
                if key.is_empty() {
                    return Err(QueryError::invalid(format!(
                        "{field}.property: the custom property key is empty"
                    )));
                }
                if property.is_some() {
                    return Err(QueryError::invalid(format!(
                        "{field}: a report groups by at most one custom property"
                    )));
                }
                property = Some(beacon_core::property::row_key(key));
                Column::Value(Dimension::Property)
            }
        };
        let times = |c: &&Column| matches!(c, Column::Time(_));
        let (time_columns, value_columns) = (
            columns.iter().filter(times).count(),
            columns.iter().filter(|c| !times(c)).count(),
        );
        let too_many = match column {
            Column::Time(_) => time_columns >= 1,
            Column::Value(_) => value_columns >= MAX_VALUE_COLUMNS,
        };
        if too_many {
            return Err(QueryError::invalid(format!(
                "{field}: a report groups by at most {MAX_VALUE_COLUMNS} dimensions and one \
                 time dimension"
            )));
        }
        columns.push(column);
    }
    Ok((columns, property))
}

/// The point width of a time dimension or interval.
pub fn time(raw: i32, field: &str) -> Result<Time, QueryError> {
    match Interval::try_from(raw) {
        Ok(Interval::Hour) => Ok(Time::Hour),
        Ok(Interval::Day | Interval::Unspecified) => Ok(Time::Day),
        Ok(Interval::Week) => Ok(Time::Week),
        Ok(Interval::Month) => Ok(Time::Month),
        Err(_) => Err(QueryError::invalid(format!(
            "{field} {raw} is not an interval: use INTERVAL_HOUR (1), INTERVAL_DAY (2), \
             INTERVAL_WEEK (3) or INTERVAL_MONTH (4)"
        ))),
    }
}

fn comparison(req: &RunReportRequest, range: Range) -> Result<Option<Range>, QueryError> {
    let Some(comparison) = &req.comparison else {
        return Ok(None);
    };
    let mode = ComparisonMode::try_from(comparison.mode).map_err(|_| {
        QueryError::invalid(format!(
            "comparison.mode {} is not a comparison mode: use COMPARISON_MODE_PREVIOUS_PERIOD \
             (1), COMPARISON_MODE_YEAR_OVER_YEAR (2) or COMPARISON_MODE_CUSTOM (3)",
            comparison.mode
        ))
    })?;
    if mode != ComparisonMode::Custom && comparison.date_range.is_some() {
        return Err(QueryError::invalid(
            "comparison.date_range is only for COMPARISON_MODE_CUSTOM",
        ));
    }
    Ok(match mode {
        ComparisonMode::Unspecified => None,
        ComparisonMode::PreviousPeriod => Some(range.shifted(-range.days())),
        ComparisonMode::YearOverYear => Some(range.shifted(-YEAR_OF_WEEKS)),
        ComparisonMode::Custom => Some(range::parse_field(
            comparison.date_range.as_ref(),
            "comparison.date_range",
        )?),
    })
}

/// Time ascending, then the first metric highest first.
fn default_sort(columns: &[Column], metrics: &[Metric]) -> Vec<Sort> {
    let mut sort = Vec::new();
    if columns.iter().any(|c| matches!(c, Column::Time(_))) {
        sort.push(Sort {
            key: SortKey::Time,
            descending: false,
        });
    }
    if let (true, Some(&metric)) = (
        columns.iter().any(|c| matches!(c, Column::Value(_))),
        metrics.first(),
    ) {
        sort.push(Sort {
            key: SortKey::Metric(metric),
            descending: true,
        });
    }
    sort
}

fn sort(
    req: &RunReportRequest,
    columns: &[Column],
    metrics: &[Metric],
) -> Result<Vec<Sort>, QueryError> {
    if req.order_by.len() > MAX_ORDER_BY {
        return Err(QueryError::invalid(format!(
            "order_by has {} keys; at most {MAX_ORDER_BY} are allowed",
            req.order_by.len()
        )));
    }
    if req.order_by.is_empty() {
        return Ok(default_sort(columns, metrics));
    }
    req.order_by
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let field = format!("order_by[{i}]");
            let key = match order.key {
                None => {
                    return Err(QueryError::invalid(format!(
                        "{field} is empty: set metric or dimension_index"
                    )));
                }
                Some(order_by::Key::Metric(raw)) => {
                    SortKey::Metric(metrics::parse(raw, &format!("{field}.metric"))?)
                }
                Some(order_by::Key::DimensionIndex(index)) => match columns.get(index as usize) {
                    Some(Column::Time(_)) => SortKey::Time,
                    Some(Column::Value(_)) => SortKey::Value(
                        columns[..index as usize]
                            .iter()
                            .filter(|c| matches!(c, Column::Value(_)))
                            .count(),
                    ),
                    None => {
                        return Err(QueryError::invalid(format!(
                            "{field}.dimension_index {index} is not below the {} \
                                 dimensions of the report",
                            columns.len()
                        )));
                    }
                },
            };
            Ok(Sort {
                key,
                descending: order.descending,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
