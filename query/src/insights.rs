//! The Insights queries of one authenticated tenant: reports, and the aggregate, time series
//! and breakdown conveniences over them.

use std::sync::Arc;

use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    BreakdownRow, Dimension, GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest,
    GetBreakdownResponse, GetTimeseriesRequest, GetTimeseriesResponse, RunReportRequest,
    RunReportResponse, TimeseriesPoint,
};

use crate::QueryError;
use crate::metrics;
use crate::range;
use crate::report::{self, Column, Plan};
use crate::shard::ShardStore;

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

    /// Any report ([`report::Plan`]).
    pub async fn report(
        &self,
        tenant: &Tenant,
        req: RunReportRequest,
    ) -> Result<RunReportResponse, QueryError> {
        let plan = Plan::parse(&req)?;
        let table = report::run(self.store.as_ref(), tenant, &plan).await?;
        Ok(report::response(&plan, table))
    }

    /// Totals of the range, and its bot events.
    pub async fn aggregate(
        &self,
        tenant: &Tenant,
        req: GetAggregateRequest,
    ) -> Result<GetAggregateResponse, QueryError> {
        let range = range::parse(req.date_range.as_ref())?;
        let metrics = metrics::requested(&req.metrics)?;
        let plan = Plan::unfiltered(range, metrics, Vec::new());
        let table = report::run(self.store.as_ref(), tenant, &plan).await?;
        let total = table.rows.into_iter().next().unwrap_or_default().sums;
        Ok(GetAggregateResponse {
            values: metrics::values(&plan.metrics, &total),
            bot_events: u64::try_from(total.bot_events).unwrap_or(0),
            logic_versions: table.logic_versions,
        })
    }

    /// One point per local hour, day, week or month of the range, in order, empty ones
    /// included.
    pub async fn timeseries(
        &self,
        tenant: &Tenant,
        req: GetTimeseriesRequest,
    ) -> Result<GetTimeseriesResponse, QueryError> {
        let range = range::parse(req.date_range.as_ref())?;
        let time = report::plan::time(req.interval, "interval")?;
        let metrics = metrics::requested(&req.metrics)?;
        let plan = Plan::unfiltered(range, metrics, vec![Column::Time(time)]);
        let table = report::run(self.store.as_ref(), tenant, &plan).await?;
        let points = table
            .rows
            .into_iter()
            .map(|row| TimeseriesPoint {
                values: metrics::values(&plan.metrics, &row.sums),
                label: row.dimensions.into_iter().next().unwrap_or_default(),
            })
            .collect();
        Ok(GetTimeseriesResponse {
            points,
            logic_versions: table.logic_versions,
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
        let mut plan = Plan::unfiltered(range, metrics, vec![Column::Value(dimension)]);
        plan.limit = range::limit(req.limit)? as usize;
        let table = report::run(self.store.as_ref(), tenant, &plan).await?;
        let rows = table
            .rows
            .into_iter()
            .map(|row| BreakdownRow {
                values: metrics::values(&plan.metrics, &row.sums),
                value: row.sums.key,
            })
            .collect();
        Ok(GetBreakdownResponse {
            rows,
            logic_versions: table.logic_versions,
        })
    }
}

fn breakdown_dimension(raw: i32) -> Result<Dimension, QueryError> {
    match Dimension::try_from(raw) {
        Ok(Dimension::Unspecified) => Err(QueryError::invalid(
            "dimension is required: use DIMENSION_PAGE (1) to DIMENSION_GOAL (19)",
        )),
        Ok(dimension) => Ok(dimension),
        Err(_) => Err(QueryError::invalid(format!(
            "dimension {raw} is not a dimension: use DIMENSION_PAGE (1) to DIMENSION_GOAL (19)"
        ))),
    }
}

#[cfg(test)]
mod tests;
