//! Forwarding the public gRPC APIs to ingest and query replicas after the guard admitted them.

use std::net::IpAddr;

use std::sync::Arc;
use std::time::Duration;

use beacon_core::partition::partition_of;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::ingest_service_server::IngestService;
use beacon_proto::ingest::v1::{
    ImportEventsRequest, ImportEventsResponse, SendEventsRequest, SendEventsResponse,
};
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::insights_service_server::InsightsService;
use beacon_proto::insights::v1::{
    GetAggregateRequest, GetAggregateResponse, GetBreakdownRequest, GetBreakdownResponse,
    GetRealtimeRequest, GetRealtimeResponse, GetSiteRequest, GetSiteResponse, GetTimeseriesRequest,
    GetTimeseriesResponse, RunReportRequest, RunReportResponse,
};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::guard::Guard;
use crate::route::{Upstreams, deadline_of};

/// What an upstream request carries besides its message: the API key and the client's address
/// (as the edge resolved it) in `x-forwarded-for`, replacing whatever the caller sent.
#[derive(Clone)]
pub struct Forwarded {
    metadata: MetadataMap,
}

impl Forwarded {
    /// The metadata to forward from `metadata`, for `client`.
    pub fn new(metadata: &MetadataMap, client: Option<IpAddr>) -> Self {
        let mut out = MetadataMap::new();
        for name in ["authorization", "x-beacon-key"] {
            if let Some(value) = metadata.get(name) {
                out.insert(name, value.clone());
            }
        }
        if let Some(value) = client.and_then(|ip| MetadataValue::try_from(ip.to_string()).ok()) {
            out.insert("x-forwarded-for", value);
        }
        Self { metadata: out }
    }

    /// An upstream request of `message` that may take `timeout`, in the current trace.
    pub fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(timeout);
        beacon_core::trace::inject(request.metadata_mut());
        request
    }
}

/// Public `IngestService`: admits, then forwards to an ingest replica, or to the ingest service
/// of its own process when it has one. A batch whose every event carries an id is retried on
/// another replica after UNAVAILABLE (the ids make the retry count once); others are not.
#[derive(Clone)]
pub struct IngestProxy {
    /// The edge checks.
    pub guard: Guard,
    /// Where admitted events go.
    pub route: IngestRoute,
    /// Longest time a request may take.
    pub timeout: Duration,
}

/// Where the gateway sends admitted events.
#[derive(Clone)]
pub enum IngestRoute {
    /// Ingest replicas, over gRPC.
    Replicas(Arc<Upstreams>),
    /// The ingest service of this process (standalone), called directly.
    InProcess(Arc<dyn IngestService>),
}

impl IngestProxy {
    /// Admits events sent by `client`, then forwards them.
    pub async fn send(
        &self,
        request: Request<SendEventsRequest>,
        client: Option<IpAddr>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        let (count, ids) = events_and_ids(&request.get_ref().events);
        self.relay(
            request,
            client,
            (count, ids),
            |mut ingest, request| async move { ingest.send_events(request).await },
            |local, request| async move { local.send_events(request).await },
        )
        .await
    }

    /// Admits `count` events of `request` sent by `client`, then makes `call` on an ingest
    /// replica, retried on another after UNAVAILABLE when every event carries an id (`ids`),
    /// or `local_call` on the ingest service of this process.
    async fn relay<Q, A, F, Fut, L, LFut>(
        &self,
        request: Request<Q>,
        client: Option<IpAddr>,
        (count, ids): (usize, bool),
        call: F,
        local_call: L,
    ) -> Result<Response<A>, Status>
    where
        Q: Clone,
        F: Fn(IngestServiceClient<tonic::transport::Channel>, Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<A>, Status>>,
        L: FnOnce(Arc<dyn IngestService>, Request<Q>) -> LFut,
        LFut: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        self.guard.ingest(request.metadata(), count, client).await?;
        let deadline = deadline_of(request.metadata(), self.timeout);
        let forwarded = Forwarded::new(request.metadata(), client);
        let message = request.into_inner();
        let replicas = match &self.route {
            IngestRoute::Replicas(replicas) => replicas,
            IngestRoute::InProcess(service) => {
                let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
                let request = forwarded.request(message, timeout);
                return tokio::time::timeout(timeout, local_call(service.clone(), request))
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded(format!(
                            "ingest did not answer within {timeout:?}"
                        ))
                    })?;
            }
        };
        replicas
            .call(None, deadline, ids, |channel, timeout| {
                call(
                    ingest_client(channel),
                    forwarded.request(message.clone(), timeout),
                )
            })
            .await
    }
}

/// How many events there are, and whether every one carries an id.
fn events_and_ids(events: &[beacon_proto::ingest::v1::Event]) -> (usize, bool) {
    (events.len(), events.iter().all(|e| !e.id.is_empty()))
}

/// An ingest client on `channel`, sized for the largest batch.
fn ingest_client(
    channel: tonic::transport::Channel,
) -> IngestServiceClient<tonic::transport::Channel> {
    IngestServiceClient::new(channel).max_encoding_message_size(beacon_core::MAX_BODY_BYTES * 2)
}

#[tonic::async_trait]
impl IngestService for IngestProxy {
    async fn send_events(
        &self,
        request: Request<SendEventsRequest>,
    ) -> Result<Response<SendEventsResponse>, Status> {
        let client = self.guard.client_of(&request);
        self.send(request, client).await
    }

    async fn import_events(
        &self,
        request: Request<ImportEventsRequest>,
    ) -> Result<Response<ImportEventsResponse>, Status> {
        let client = self.guard.client_of(&request);
        let (count, ids) = events_and_ids(&request.get_ref().events);
        self.relay(
            request,
            client,
            (count, ids),
            |mut ingest, request| async move { ingest.import_events(request).await },
            |local, request| async move { local.import_events(request).await },
        )
        .await
    }
}

/// Public `InsightsService`: admits, then forwards to a query replica serving the tenant's
/// partition, retrying UNAVAILABLE on another within the caller's deadline (reads repeat
/// safely).
#[derive(Clone)]
pub struct InsightsProxy {
    /// The edge checks.
    pub guard: Guard,
    /// Query replicas.
    pub upstream: Arc<Upstreams>,
    /// The cluster's partition count.
    pub partitions: u32,
    /// Longest time a request may take.
    pub timeout: Duration,
}

impl InsightsProxy {
    /// Admits `request`, then sends it with `call` to a query replica serving its tenant.
    async fn read<Q, A, F, Fut>(&self, request: Request<Q>, call: F) -> Result<Response<A>, Status>
    where
        Q: Clone,
        F: Fn(InsightsServiceClient<tonic::transport::Channel>, Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        let client = self.guard.client_of(&request);
        let tenant = self.guard.query(request.metadata(), client).await?;
        let partition = partition_of(&tenant.id, self.partitions);
        let deadline = deadline_of(request.metadata(), self.timeout);
        let forwarded = Forwarded::new(request.metadata(), None);
        let message = request.into_inner();
        self.upstream
            .call(Some(partition), deadline, true, |channel, timeout| {
                let request = forwarded.request(message.clone(), timeout);
                call(InsightsServiceClient::new(channel), request)
            })
            .await
    }
}

#[tonic::async_trait]
impl InsightsService for InsightsProxy {
    async fn get_aggregate(
        &self,
        request: Request<GetAggregateRequest>,
    ) -> Result<Response<GetAggregateResponse>, Status> {
        self.read(request, |mut client, request| async move {
            client.get_aggregate(request).await
        })
        .await
    }

    async fn get_timeseries(
        &self,
        request: Request<GetTimeseriesRequest>,
    ) -> Result<Response<GetTimeseriesResponse>, Status> {
        self.read(request, |mut client, request| async move {
            client.get_timeseries(request).await
        })
        .await
    }

    async fn get_breakdown(
        &self,
        request: Request<GetBreakdownRequest>,
    ) -> Result<Response<GetBreakdownResponse>, Status> {
        self.read(request, |mut client, request| async move {
            client.get_breakdown(request).await
        })
        .await
    }

    async fn get_realtime(
        &self,
        request: Request<GetRealtimeRequest>,
    ) -> Result<Response<GetRealtimeResponse>, Status> {
        self.read(request, |mut client, request| async move {
            client.get_realtime(request).await
        })
        .await
    }

    async fn run_report(
        &self,
        request: Request<RunReportRequest>,
    ) -> Result<Response<RunReportResponse>, Status> {
        self.read(request, |mut client, request| async move {
            client.run_report(request).await
        })
        .await
    }

    async fn get_site(
        &self,
        request: Request<GetSiteRequest>,
    ) -> Result<Response<GetSiteResponse>, Status> {
        self.read(request, |mut client, request| async move {
            client.get_site(request).await
        })
        .await
    }
}
