//! The gRPC `beacon.insights.v1.InsightsService`: authenticates the read key, then answers.
//!
//! Invariant: the tenant comes only from the key, never from the request.

use beacon_core::auth::{Registry, request_key};
use beacon_core::meta::{KeyKind, Tenant};
use beacon_proto::insights::v1::insights_service_server::InsightsService;
use beacon_proto::insights::v1::{
    GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest, GetBreakdownResponse,
    GetTimeseriesRequest, GetTimeseriesResponse,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::QueryError;
use crate::insights::Insights;

/// The InsightsService implementation.
#[derive(Clone)]
pub struct InsightsApi {
    registry: Registry,
    insights: Insights,
}

impl InsightsApi {
    /// Serves `insights` to callers holding a read key known to `registry`.
    pub fn new(registry: Registry, insights: Insights) -> Self {
        Self { registry, insights }
    }

    async fn tenant(&self, metadata: &MetadataMap) -> Result<Tenant, QueryError> {
        let key = request_key(metadata)?;
        Ok(self.registry.authenticate(&key, KeyKind::Read).await?)
    }
}

#[tonic::async_trait]
impl InsightsService for InsightsApi {
    async fn get_aggregate(
        &self,
        request: Request<GetAggregateRequest>,
    ) -> Result<Response<GetAggregateResponse>, Status> {
        let tenant = self.tenant(request.metadata()).await?;
        let reply = self
            .insights
            .aggregate(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(reply))
    }

    async fn get_timeseries(
        &self,
        request: Request<GetTimeseriesRequest>,
    ) -> Result<Response<GetTimeseriesResponse>, Status> {
        let tenant = self.tenant(request.metadata()).await?;
        let reply = self
            .insights
            .timeseries(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(reply))
    }

    async fn get_breakdown(
        &self,
        request: Request<GetBreakdownRequest>,
    ) -> Result<Response<GetBreakdownResponse>, Status> {
        let tenant = self.tenant(request.metadata()).await?;
        let reply = self
            .insights
            .breakdown(&tenant, request.into_inner())
            .await?;
        Ok(Response::new(reply))
    }
}
