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
}

/// Exits successfully when the role reports SERVING.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(args.url.clone())
        .with_context(|| format!("role URL {:?}", args.url))?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let mut client = HealthClient::new(channel);
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
    println!("serving");
    Ok(())
}
