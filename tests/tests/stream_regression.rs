//! A log that went backwards (here: its streams deleted and created again, as after restoring
//! an empty or older NATS) stops the roles that had consumed it, loudly, instead of letting
//! them skip what the new stream holds under sequence numbers they had seen.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role, health};
use tonic_health::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreated_streams_stop_every_consumer_loudly() -> anyhow::Result<()> {
    let mut cluster = Cluster::start()?;
    let client = Client::connect(&cluster.gateway(), &cluster.admin()).await?;
    let spec = TenantSpec {
        id: "regressed".into(),
        time_zone: "UTC".into(),
    };
    let (ingest, read) = client
        .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
        .await?;
    let traffic = generate(11, &spec, 600, beacon_core::time::now_ms());
    for batch in traffic.events.chunks(BATCH) {
        send_acknowledged(&client, &ingest, batch.to_vec(), Duration::from_secs(30)).await?;
    }
    wait_exact(&client, &read, &traffic, Duration::from_secs(60))
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;

    // The aggregator's snapshot records what it consumed (every 2 s in the test cluster).
    let aggregator_log = cluster.dir.path().join("aggregator.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&aggregator_log)?.contains("snapshot saved") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no snapshot saved\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for role in [Role::Ingest, Role::Aggregator, Role::Query] {
        cluster.kill9(role);
    }
    let nats = cluster.nats_client().await?;
    let js = async_nats::jetstream::new(nats);
    for stream in ["BEACON_EVENTS", "BEACON_ROLLUPS"] {
        js.delete_stream(stream).await?;
    }
    for role in [Role::Ingest, Role::Aggregator, Role::Query] {
        cluster.start_role(role)?;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = Vec::new();
    while Instant::now() < deadline {
        refused.clear();
        for role in [Role::Aggregator, Role::Query] {
            let log =
                std::fs::read_to_string(cluster.dir.path().join(format!("{}.log", role.name())))?;
            let status = health::status(&cluster.role_url(role)).await;
            if log.contains("went backwards") && status != Some(ServingStatus::Serving) {
                refused.push(role);
            }
        }
        if refused.len() == 2 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "only {refused:?} refused the recreated streams\n{}",
        cluster.logs()
    )
}
