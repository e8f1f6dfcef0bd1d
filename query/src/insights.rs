//! The Insights queries of one authenticated tenant: reports, and the aggregate, time series
//! and breakdown conveniences over them.

use std::collections::HashMap;
use std::sync::Arc;

use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    BreakdownRow, Dimension, GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest,
    GetBreakdownResponse, GetRealtimeRequest, GetRealtimeResponse, GetTimeseriesRequest,
    GetTimeseriesResponse, Metric, RealtimeMinute, RunReportRequest, RunReportResponse,
    TimeseriesPoint,
};

use crate::QueryError;
use crate::cache::ResultCache;

/// Most property keys [`Insights::property_keys`] lists.
pub const PROPERTY_KEYS: usize = 100;
/// Most property rows (key and value) it reads for them.
const PROPERTY_ROWS: usize = 1_000;
/// The value rows fold into past a day's cap (`aggregator::cap::OTHER`).
const OTHER: &str = "(other)";
use crate::metrics;
use crate::metrics::Sums;
use crate::range;
use crate::report::{self, Column, Plan};
use crate::shard::{GroupBy, Page, RecentQuery, ShardQuery, ShardStore};

/// Answers a tenant's questions from its shard. The tenant is always the authenticated one.
#[derive(Clone)]
pub struct Insights {
    store: Arc<dyn ShardStore>,
    /// The time now, Unix milliseconds (the realtime view's "now").
    clock: fn() -> i64,
    /// Answers kept until their tenant's rows change (none by default).
    cache: Arc<ResultCache>,
}

/// One minute, milliseconds.
const MINUTE_MS: i64 = 60_000;
/// Minutes of the realtime series.
const REALTIME_MINUTES: i64 = 30;
/// Minutes whose visitors are the current visitors.
const CURRENT_MINUTES: i64 = 5;
/// Most top pages and sources of the realtime view.
const MAX_REALTIME_LIMIT: u32 = 100;

impl Insights {
    /// Insights over `store`.
    pub fn new(store: Arc<dyn ShardStore>) -> Self {
        Self {
            store,
            clock: beacon_core::time::now_ms,
            cache: Arc::new(ResultCache::new(0)),
        }
    }

    /// The same insights keeping up to `bytes` of answers until their tenant's rows change.
    pub fn with_cache(self, bytes: u64) -> Self {
        Self {
            cache: Arc::new(ResultCache::new(bytes)),
            ..self
        }
    }

    /// `compute`'s answer to `request`, or the one kept for it while `tenant`'s shard has not
    /// changed.
    async fn kept<R, T, Fut>(
        &self,
        tenant: &Tenant,
        request: R,
        compute: impl FnOnce(R) -> Fut,
    ) -> Result<T, QueryError>
    where
        R: prost::Message,
        T: prost::Message + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, QueryError>>,
    {
        // Encoding the request is only worth it when an answer may be kept.
        let changes = self
            .store
            .changes(&tenant.id)
            .filter(|_| self.cache.keeps());
        if changes.is_none() {
            return compute(request).await;
        }
        let encoded = request.encode_to_vec();
        self.cache
            .get_or_compute(tenant, changes, encoded, || compute(request))
            .await
    }

    /// The same insights reading the time from `clock`.
    pub fn with_clock(self, clock: fn() -> i64) -> Self {
        Self { clock, ..self }
    }

    /// The custom property keys of the 30 local days up to `today`, most events first, at
    /// most [`PROPERTY_KEYS`]; the folded `(other)` rows aside.
    pub async fn property_keys(
        &self,
        tenant: &Tenant,
        today: jiff::civil::Date,
    ) -> Result<Vec<String>, QueryError> {
        let start = today.saturating_sub(jiff::Span::new().days(29));
        let mut query = ShardQuery::new(Dimension::Property as i32, start, today, GroupBy::VALUE);
        query.page = Some(Page::top(Metric::Events, PROPERTY_ROWS));
        let answer = self.store.query(&tenant.id, query).await?;
        let mut keys: Vec<String> = Vec::new();
        for group in &answer.groups {
            let Some((key, _)) = group.key.split_once(beacon_core::property::SEPARATOR) else {
                continue;
            };
            if key != OTHER && !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
            if keys.len() == PROPERTY_KEYS {
                break;
            }
        }
        Ok(keys)
    }

    /// What is happening now: current visitors, the last 30 minutes, top pages and sources.
    pub async fn realtime(
        &self,
        tenant: &Tenant,
        req: GetRealtimeRequest,
    ) -> Result<GetRealtimeResponse, QueryError> {
        let limit = match req.limit {
            0 => 10,
            1..=MAX_REALTIME_LIMIT => req.limit,
            n => {
                return Err(QueryError::invalid(format!(
                    "limit {n} is above the maximum of {MAX_REALTIME_LIMIT}"
                )));
            }
        };
        let now = (self.clock)();
        let minute = now - now.rem_euclid(MINUTE_MS);
        let query = RecentQuery {
            from_ms: minute - (REALTIME_MINUTES - 1) * MINUTE_MS,
            current_from_ms: minute - (CURRENT_MINUTES - 1) * MINUTE_MS,
            to_ms: minute,
            limit: limit as usize,
        };
        let recent = self.store.recent(&tenant.id, query).await?;
        let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
        let by_minute: HashMap<i64, &Sums> = recent.minutes.iter().map(|s| (s.time, s)).collect();
        let minutes = (0..REALTIME_MINUTES)
            .map(|i| {
                let start = query.from_ms + i * MINUTE_MS;
                let label = jiff::Timestamp::from_millisecond(start)
                    .map(|ts| {
                        ts.to_zoned_datetime(tz.clone())
                            .strftime("%Y-%m-%dT%H:%M")
                            .to_string()
                    })
                    .unwrap_or_default();
                let sums = by_minute.get(&start);
                RealtimeMinute {
                    label,
                    visitors: sums.map_or(0, |s| s.visitors),
                    pageviews: sums.map_or(0, |s| u64::try_from(s.pageviews).unwrap_or(0)),
                }
            })
            .collect();
        let rows = |groups: Vec<Sums>| {
            groups
                .into_iter()
                .map(|sums| BreakdownRow {
                    values: metrics::values(&[Metric::Visitors, Metric::Pageviews], &sums),
                    value: sums.key,
                })
                .collect()
        };
        Ok(GetRealtimeResponse {
            current_visitors: recent.current_visitors,
            minutes,
            top_pages: rows(recent.pages),
            top_sources: rows(recent.sources),
        })
    }

    /// Any report ([`report::Plan`]).
    pub async fn report(
        &self,
        tenant: &Tenant,
        req: RunReportRequest,
    ) -> Result<RunReportResponse, QueryError> {
        self.kept(tenant, req, |req| self.report_now(tenant, req))
            .await
    }

    async fn report_now(
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
        self.kept(tenant, req, |req| self.aggregate_now(tenant, req))
            .await
    }

    async fn aggregate_now(
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
        self.kept(tenant, req, |req| self.timeseries_now(tenant, req))
            .await
    }

    async fn timeseries_now(
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
        self.kept(tenant, req, |req| self.breakdown_now(tenant, req))
            .await
    }

    async fn breakdown_now(
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
        Ok(Dimension::Property) => Err(QueryError::invalid(
            "dimension DIMENSION_PROPERTY needs a property key: use RunReport with \
             ReportDimension.property",
        )),
        _ => crate::filter::dimension(raw, "dimension"),
    }
}

#[cfg(test)]
mod tests;
