//! `beacon health`: asks a role's gRPC health service whether it is serving (for container
//! health checks).

use anyhow::Context;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `beacon health` flags.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The role's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Also require a query replica to serve every partition it holds (caught up with its
    /// rollup log): readiness of a query replica, so that a rolling update waits for it.
    #[arg(long)]
    partitions: bool,
    /// TLS to the role (`https://` URLs).
    #[command(flatten)]
    tls: beacon_core::tls::TlsArgs,
}

/// Exits successfully when the role reports SERVING.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let tls = beacon_core::tls::Tls::load(&args.tls)?;
    let channel = tls
        .endpoint(&args.url, None)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let mut client = HealthClient::new(channel.clone());
    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .with_context(|| format!("health check of {}", args.url))?
        .into_inner();
    anyhow::ensure!(
        reply.status == ServingStatus::Serving as i32,
        "{} is not serving (status {})",
        args.url,
        reply.status
    );
    if args.partitions {
        check_partitions(channel, &args.url).await?;
    }
    println!("serving");
    Ok(())
}

/// Fails unless the query replica on `channel` serves every partition it holds.
async fn check_partitions(channel: tonic::transport::Channel, url: &str) -> anyhow::Result<()> {
    use beacon_proto::pipeline::v1::GetServingRequest;
    use beacon_proto::pipeline::v1::replica_service_client::ReplicaServiceClient;
    let reply = ReplicaServiceClient::new(channel)
        .get_serving(GetServingRequest {})
        .await
        .with_context(|| format!("asking {url} which partitions it serves"))?
        .into_inner();
    let refused: Vec<String> = reply
        .partitions
        .iter()
        .filter(|p| !p.serving)
        .map(|p| format!("partition {}: {}", p.partition, p.reason))
        .collect();
    anyhow::ensure!(
        refused.is_empty(),
        "{url} does not serve {} of its {} partitions: {}",
        refused.len(),
        reply.partitions.len(),
        refused.join("; ")
    );
    Ok(())
}
