//! Every role answers gRPC health checks and server reflection.

use std::time::{Duration, Instant};

use beacon_tests::{Client, Cluster, Role, health};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn services(url: &str) -> anyhow::Result<Vec<String>> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    anyhow::ensure!(
        status == ServingStatus::Serving as i32,
        "{url} is not serving"
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let reply = replies
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection reply"))?;
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("unexpected reflection reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_serves_health_and_reflection() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    Client::of(&cluster).await?;
    for (role, url, service) in [
        (
            "gateway",
            cluster.gateway(),
            "beacon.insights.v1.InsightsService",
        ),
        (
            "gateway admin listener",
            cluster.admin(),
            "beacon.admin.v1.AdminService",
        ),
        (
            "ingest",
            cluster.role_url(beacon_tests::Role::Ingest),
            "beacon.ingest.v1.IngestService",
        ),
        (
            "query",
            cluster.role_url(beacon_tests::Role::Query),
            "beacon.insights.v1.InsightsService",
        ),
        (
            "aggregator",
            cluster.role_url(beacon_tests::Role::Aggregator),
            "grpc.health.v1.Health",
        ),
    ] {
        let mut listed = Vec::new();
        for _ in 0..100 {
            if let Ok(found) = services(&url).await {
                listed = found;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            listed.iter().any(|s| s == service),
            "{role} at {url} lists {listed:?}"
        );
        assert!(
            listed.iter().any(|s| s == "grpc.health.v1.Health"),
            "{role} lists {listed:?}"
        );
    }
    // The public port shows only what the public may call.
    let public = services(&cluster.gateway()).await?;
    assert!(
        !public.iter().any(|s| s == "beacon.admin.v1.AdminService"),
        "public port lists {public:?}"
    );
    assert!(public.iter().any(|s| s == "beacon.ingest.v1.IngestService"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_turns_every_role_not_serving_before_it_exits_cleanly() -> anyhow::Result<()> {
    let mut cluster = Cluster::start()?;
    Client::of(&cluster).await?;
    for role in [Role::Query, Role::Ingest, Role::Aggregator, Role::Gateway] {
        let url = cluster.role_url(role);
        anyhow::ensure!(
            health::reports(
                &url,
                tonic_health::ServingStatus::Serving,
                Duration::from_secs(20)
            )
            .await,
            "{} never served\n{}",
            role.name(),
            cluster.logs()
        );
        let pid = cluster
            .pid(role)
            .ok_or_else(|| anyhow::anyhow!("{} is not running", role.name()))?;
        let signalled = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        // It keeps answering for a moment, NOT_SERVING, so balancers see it leave first.
        anyhow::ensure!(
            health::reports(
                &url,
                tonic_health::ServingStatus::NotServing,
                Duration::from_secs(2)
            )
            .await,
            "{} never answered NOT_SERVING after SIGTERM\n{}",
            role.name(),
            cluster.logs()
        );
        anyhow::ensure!(
            cluster.terminate(role, Duration::from_secs(30)),
            "{} did not exit cleanly after SIGTERM\n{}",
            role.name(),
            cluster.logs()
        );
        println!(
            "{}: NOT_SERVING, then a clean exit {:.1} s after SIGTERM",
            role.name(),
            signalled.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
