//! The Insights queries of one authenticated tenant: aggregate, time series, breakdown.

use std::collections::HashMap;
use std::sync::Arc;

use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    BreakdownRow, Dimension, GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest,
    GetBreakdownResponse, GetTimeseriesRequest, GetTimeseriesResponse, Interval, Metric,
    TimeseriesPoint,
};

use crate::QueryError;
use crate::metrics::{self, Sums};
use crate::range::{self, Range};
use crate::shard::{Answer, GroupBy, ShardQuery, ShardStore, Top};

/// Answers a tenant's questions from its shard. The tenant is always the authenticated one.
#[derive(Clone)]
pub struct Insights {
    store: Arc<dyn ShardStore>,
}

impl Insights {
    /// Insights over `store`.
    pub fn new(store: Arc<dyn ShardStore>) -> Self {
        Self { store }
    }

    /// Totals of the range, and its bot events.
    pub async fn aggregate(
        &self,
        tenant: &Tenant,
        req: GetAggregateRequest,
    ) -> Result<GetAggregateResponse, QueryError> {
        let range = range::parse(req.date_range.as_ref())?;
        let metrics = metrics::requested(&req.metrics)?;
        let answer = self.sums(tenant, 0, range, GroupBy::Total, None).await?;
        let total = answer.groups.into_iter().next().unwrap_or_default();
        Ok(GetAggregateResponse {
            values: metrics::values(&metrics, &total),
            bot_events: u64::try_from(total.bot_events).unwrap_or(0),
            logic_versions: answer.logic_versions,
        })
    }

    /// One point per local day or hour of the range, in order, empty ones included.
    pub async fn timeseries(
        &self,
        tenant: &Tenant,
        req: GetTimeseriesRequest,
    ) -> Result<GetTimeseriesResponse, QueryError> {
        let range = range::parse(req.date_range.as_ref())?;
        let interval = Interval::try_from(req.interval).map_err(|_| {
            QueryError::invalid(format!(
                "interval {} is not an interval: use INTERVAL_HOUR (1) or INTERVAL_DAY (2)",
                req.interval
            ))
        })?;
        let metrics = metrics::requested(&req.metrics)?;
        // (group key, label) of every point.
        let (group, points): (GroupBy, Vec<(String, String)>) = match interval {
            Interval::Hour => {
                let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
                let hours = range::hours(&range, &tz)?;
                (
                    GroupBy::Hour,
                    hours
                        .into_iter()
                        .map(|h| (h.hour_ms.to_string(), h.label))
                        .collect(),
                )
            }
            Interval::Day | Interval::Unspecified => {
                let days = range::days(&range)?;
                (
                    GroupBy::Day,
                    days.into_iter()
                        .map(|d| (d.to_string(), d.to_string()))
                        .collect(),
                )
            }
        };
        let answer = self.sums(tenant, 0, range, group, None).await?;
        let by_key: HashMap<String, Sums> = answer
            .groups
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        let empty = Sums::default();
        let points = points
            .into_iter()
            .map(|(key, label)| TimeseriesPoint {
                label,
                values: metrics::values(&metrics, by_key.get(&key).unwrap_or(&empty)),
            })
            .collect();
        Ok(GetTimeseriesResponse {
            points,
            logic_versions: answer.logic_versions,
        })
    }

    /// The top values of a dimension, by the first requested metric, then by value.
    pub async fn breakdown(
        &self,
        tenant: &Tenant,
        req: GetBreakdownRequest,
    ) -> Result<GetBreakdownResponse, QueryError> {
        let range = range::parse(req.date_range.as_ref())?;
        let dimension = breakdown_dimension(req.dimension)?;
        let metrics = metrics::requested(&req.metrics)?;
        let limit = range::limit(req.limit)?;
        let top = Top {
            metric: metrics.first().copied().unwrap_or(Metric::Visitors),
            limit,
        };
        let answer = self
            .sums(tenant, dimension as i32, range, GroupBy::Value, Some(top))
            .await?;
        let rows = answer
            .groups
            .into_iter()
            .map(|sums| BreakdownRow {
                values: metrics::values(&metrics, &sums),
                value: sums.key,
            })
            .collect();
        Ok(GetBreakdownResponse {
            rows,
            logic_versions: answer.logic_versions,
        })
    }

    async fn sums(
        &self,
        tenant: &Tenant,
        dimension: i32,
        range: Range,
        group: GroupBy,
        top: Option<Top>,
    ) -> Result<Answer, QueryError> {
        let query = ShardQuery {
            dimension,
            start: range.start,
            end: range.end,
            group,
            top,
        };
        tracing::debug!(tenant = %tenant.id, ?query, "insights query");
        self.store.query(&tenant.id, query).await
    }
}

fn breakdown_dimension(raw: i32) -> Result<Dimension, QueryError> {
    match Dimension::try_from(raw) {
        Ok(Dimension::Unspecified) => Err(QueryError::invalid(
            "dimension is required: use DIMENSION_PAGE (1) to DIMENSION_UTM_CAMPAIGN (11)",
        )),
        Ok(dimension) => Ok(dimension),
        Err(_) => Err(QueryError::invalid(format!(
            "dimension {raw} is not a dimension: use DIMENSION_PAGE (1) to DIMENSION_UTM_CAMPAIGN (11)"
        ))),
    }
}

#[cfg(test)]
mod tests;
