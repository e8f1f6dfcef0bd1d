//! gRPC health checks (`grpc.health.v1`) of a role's listener.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The status the listener at `url` reports for the whole process; `None` when it does not
/// answer.
pub async fn status(url: &str) -> Option<ServingStatus> {
    let channel = Channel::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let answer = HealthClient::new(channel).check(request).await.ok()?;
    match answer.into_inner().status {
        1 => Some(ServingStatus::Serving),
        2 => Some(ServingStatus::NotServing),
        _ => Some(ServingStatus::Unknown),
    }
}

/// Polls `url` until it reports `wanted` or `within` passed; whether it did.
pub async fn reports(url: &str, wanted: ServingStatus, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if status(url).await == Some(wanted) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
