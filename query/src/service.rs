//! The gRPC `beacon.insights.v1.InsightsService`: authenticates the read key, then answers.
//!
//! Invariant: the tenant comes only from the key, never from the request.

use std::time::Instant;

use beacon_core::auth::{Registry, request_key};
use beacon_core::meta::{KeyKind, Tenant};
use beacon_proto::insights::v1::insights_service_server::InsightsService;
use beacon_proto::insights::v1::{
    GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest, GetBreakdownResponse,
    GetRealtimeRequest, GetRealtimeResponse, GetSiteRequest, GetSiteResponse, GetTimeseriesRequest,
    GetTimeseriesResponse, RunReportRequest, RunReportResponse,
};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::QueryError;
use crate::insights::Insights;
use crate::serving::Serving;

/// The InsightsService implementation.
#[derive(Clone)]
pub struct InsightsApi {
    registry: Registry,
    insights: Insights,
    serving: Serving,
    latency: Histogram<f64>,
}

impl InsightsApi {
    /// Serves `insights` to callers holding a read key known to `registry`, for the tenants of
    /// the partitions `serving` says this replica answers for.
    pub fn new(registry: Registry, insights: Insights, serving: Serving) -> Self {
        let latency = beacon_core::observe::meter()
            .f64_histogram("beacon_query_duration")
            .with_description("Time to answer an Insights call, by method and outcome")
            .with_unit("s")
            .build();
        Self {
            registry,
            insights,
            serving,
            latency,
        }
    }

    async fn tenant(&self, metadata: &MetadataMap) -> Result<Tenant, QueryError> {
        let key = request_key(metadata)?;
        let tenant = self.registry.authenticate(&key, KeyKind::Read).await?;
        self.serving.check(&tenant.id)?;
        Ok(tenant)
    }

    /// Authenticates `request`, answers it with `answer`, and records how long `method` took.
    async fn answer<Q, R, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Q>,
        answer: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Insights, Tenant, Q) -> Fut,
        Fut: Future<Output = Result<R, QueryError>>,
    {
        let started = Instant::now();
        let result: Result<Response<R>, Status> = async {
            let tenant = self.tenant(request.metadata()).await?;
            let reply = answer(self.insights.clone(), tenant, request.into_inner()).await?;
            Ok(Response::new(reply))
        }
        .await;
        self.observe(method, started, &result);
        result
    }

    /// Records how long `method` took and how it ended.
    fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => "ok".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        self.latency.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("method", method), KeyValue::new("code", code)],
        );
    }
}

#[tonic::async_trait]
impl InsightsService for InsightsApi {
    async fn get_aggregate(
        &self,
        request: Request<GetAggregateRequest>,
    ) -> Result<Response<GetAggregateResponse>, Status> {
        self.answer("aggregate", request, |insights, tenant, req| async move {
            insights.aggregate(&tenant, req).await
        })
        .await
    }

    async fn get_timeseries(
        &self,
        request: Request<GetTimeseriesRequest>,
    ) -> Result<Response<GetTimeseriesResponse>, Status> {
        self.answer("timeseries", request, |insights, tenant, req| async move {
            insights.timeseries(&tenant, req).await
        })
        .await
    }

    async fn get_breakdown(
        &self,
        request: Request<GetBreakdownRequest>,
    ) -> Result<Response<GetBreakdownResponse>, Status> {
        self.answer("breakdown", request, |insights, tenant, req| async move {
            insights.breakdown(&tenant, req).await
        })
        .await
    }

    async fn get_realtime(
        &self,
        request: Request<GetRealtimeRequest>,
    ) -> Result<Response<GetRealtimeResponse>, Status> {
        self.answer("realtime", request, |insights, tenant, req| async move {
            insights.realtime(&tenant, req).await
        })
        .await
    }

    async fn run_report(
        &self,
        request: Request<RunReportRequest>,
    ) -> Result<Response<RunReportResponse>, Status> {
        self.answer("report", request, |insights, tenant, req| async move {
            insights.report(&tenant, req).await
        })
        .await
    }

    async fn get_site(
        &self,
        request: Request<GetSiteRequest>,
    ) -> Result<Response<GetSiteResponse>, Status> {
        self.answer("site", request, |insights, tenant, _| async move {
            site(&insights, tenant).await
        })
        .await
    }
}

/// What a dashboard shows of `tenant`.
async fn site(insights: &Insights, tenant: Tenant) -> Result<GetSiteResponse, QueryError> {
    let zone = beacon_core::time::time_zone(&tenant.time_zone)?;
    let (_, today) = beacon_core::time::hour_bucket(beacon_core::time::now_ms(), &zone)?;
    let date: jiff::civil::Date = today
        .parse()
        .map_err(|err| QueryError::invalid(format!("today {today:?}: {err}")))?;
    Ok(GetSiteResponse {
        property_keys: insights.property_keys(&tenant, date).await?,
        today,
        goals: tenant.goals.into_iter().map(|goal| goal.name).collect(),
        tenant_id: tenant.id,
        name: tenant.name,
        time_zone: tenant.time_zone,
        currency: tenant.currency,
    })
}
