//! Forwarding the public gRPC APIs to ingest and query replicas after the guard admitted them.

use std::net::IpAddr;

use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::ingest_service_server::IngestService;
use beacon_proto::ingest::v1::{
    ImportEventsRequest, ImportEventsResponse, SendEventsRequest, SendEventsResponse,
};
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::insights_service_server::InsightsService;
use beacon_proto::insights::v1::{
    GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest, GetBreakdownResponse,
    GetTimeseriesRequest, GetTimeseriesResponse,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::GatewayError;
use crate::guard::Guard;

/// A load-balanced channel over `urls`, connecting lazily.
pub fn channel(urls: &[String]) -> Result<Channel, GatewayError> {
    let endpoints = urls
        .iter()
        .map(|url| {
            Endpoint::from_shared(url.clone())
                .map(|e| e.tcp_nodelay(true))
                .map_err(|source| GatewayError::Upstream {
                    url: url.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}

/// Re-wraps a request for an upstream: keeps the API key and states the client's address (as
/// the edge resolved it) in `x-forwarded-for`, replacing whatever the caller sent.
pub fn forward<T>(request: Request<T>, client_ip: Option<IpAddr>) -> Request<T> {
    let metadata = request.metadata().clone();
    let mut out = Request::new(request.into_inner());
    for name in ["authorization", "x-beacon-key"] {
        if let Some(value) = metadata.get(name) {
            out.metadata_mut().insert(name, value.clone());
        }
    }
    if let Some(value) = client_ip.and_then(|ip| MetadataValue::try_from(ip.to_string()).ok()) {
        out.metadata_mut().insert("x-forwarded-for", value);
    }
    out
}

/// Public `IngestService`: admits, then forwards to an ingest replica.
#[derive(Clone)]
pub struct IngestProxy {
    /// The edge checks.
    pub guard: Guard,
    /// Ingest replicas.
    pub upstream: IngestServiceClient<Channel>,
}

impl IngestProxy {
    /// Admits events sent by `client`, then forwards them.
    pub async fn send(
        &self,
        request: Request<SendEventsRequest>,
        client: Option<IpAddr>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        self.guard
            .ingest(request.metadata(), request.get_ref().events.len(), client)
            .await?;
        self.upstream
            .clone()
            .send_events(forward(request, client))
            .await
    }
}

#[tonic::async_trait]
impl IngestService for IngestProxy {
    async fn send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        let client = self.client_of(&request);
        self.send(request, client).await
    }

    async fn import_events(
        &self,
        request: Request<ImportEventsRequest>,
    ) -> Result<Response<ImportEventsResponse>, Status> {
        let client = self.client_of(&request);
        self.guard
            .ingest(request.metadata(), request.get_ref().events.len(), client)
            .await?;
        self.upstream
            .clone()
            .import_events(forward(request, client))
            .await
    }
}

impl IngestProxy {
    /// The address of the client that sent `request`.
    fn client_of<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        self.guard
            .edge
            .client(request.remote_addr().map(|a| a.ip()), request.metadata())
    }
}

/// Public `InsightsService`: admits, then forwards to a query replica.
#[derive(Clone)]
pub struct InsightsProxy {
    /// The edge checks.
    pub guard: Guard,
    /// Query replicas.
    pub upstream: InsightsServiceClient<Channel>,
}

#[tonic::async_trait]
impl InsightsService for InsightsProxy {
    async fn get_aggregate(
        &self,
        request: Request<GetAggregateRequest>,
    ) -> Result<Response<GetAggregateResponse>, Status> {
        let client = self
            .guard
            .edge
            .client(request.remote_addr().map(|a| a.ip()), request.metadata());
        self.guard.query(request.metadata(), client).await?;
        self.upstream
            .clone()
            .get_aggregate(forward(request, None))
            .await
    }

    async fn get_timeseries(
        &self,
        request: Request<GetTimeseriesRequest>,
    ) -> Result<Response<GetTimeseriesResponse>, Status> {
        let client = self
            .guard
            .edge
            .client(request.remote_addr().map(|a| a.ip()), request.metadata());
        self.guard.query(request.metadata(), client).await?;
        self.upstream
            .clone()
            .get_timeseries(forward(request, None))
            .await
    }

    async fn get_breakdown(
        &self,
        request: Request<GetBreakdownRequest>,
    ) -> Result<Response<GetBreakdownResponse>, Status> {
        let client = self
            .guard
            .edge
            .client(request.remote_addr().map(|a| a.ip()), request.metadata());
        self.guard.query(request.metadata(), client).await?;
        self.upstream
            .clone()
            .get_breakdown(forward(request, None))
            .await
    }
}
