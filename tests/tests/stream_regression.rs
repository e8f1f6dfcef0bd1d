//! A log created anew (here: its streams deleted and created again, as after restoring an empty
//! or older NATS) stops the roles that had consumed it, loudly, also once the new stream has
//! grown past their positions, instead of letting them skip what it holds under sequence
//! numbers they had seen; after `beacon accept-log` they go on with it, and the numbers of
//! events sent before and after are exact.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role, health};
use tonic_health::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreated_streams_stop_every_consumer_loudly() -> anyhow::Result<()> {
    let mut cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
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

    // Events sent to the new streams, more messages than the old ones held, for a tenant of
    // the refused partition (consumers of a partition they had consumed nothing of go on: they
    // lose nothing by it).
    let partition = beacon_core::partition::partition_of(&spec.id, 4);
    let later_id = (0..)
        .map(|n| format!("after-regression-{n}"))
        .find(|id| beacon_core::partition::partition_of(id, 4) == partition)
        .unwrap_or_default();
    let (ingest_after, read_after) = client
        .create_tenant(&cluster.admin_token, &later_id, "Asia/Kathmandu")
        .await?;
    let later = generate(
        12,
        &TenantSpec {
            id: later_id.clone(),
            time_zone: "Asia/Kathmandu".into(),
        },
        900,
        beacon_core::time::now_ms(),
    );
    for batch in later.events.chunks(BATCH / 4) {
        send_acknowledged(
            &client,
            &ingest_after,
            batch.to_vec(),
            Duration::from_secs(30),
        )
        .await?;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = Vec::new();
    while Instant::now() < deadline {
        refused.clear();
        for role in [Role::Aggregator, Role::Query] {
            let log =
                std::fs::read_to_string(cluster.dir.path().join(format!("{}.log", role.name())))?;
            let status = health::status(&cluster.role_url(role)).await;
            if log.contains("created anew") && status != Some(ServingStatus::Serving) {
                refused.push(role);
            }
        }
        if refused.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::ensure!(
        refused.len() == 2,
        "only {refused:?} refused the recreated streams\n{}",
        cluster.logs()
    );
    // A refusing replica answers UNAVAILABLE, never numbers it cannot stand behind.
    let (first, last) = later.date_range();
    let refused_read = client.totals(&read_after, &first, &last).await;
    match refused_read {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
            assert!(status.message().contains("created anew"), "{status}");
        }
        Ok(counts) => panic!("a refusing replica answered {counts:?}"),
    }

    // The operator takes the new streams as they are: both roles go on from their start.
    for role in ["aggregator", "query"] {
        let accepted = cluster.beacon(&["accept-log", "--role", role])?;
        println!("{accepted}");
    }
    wait_exact(&client, &read_after, &later, Duration::from_secs(60))
        .await
        .map_err(|err| anyhow::anyhow!("after acceptance: {err}\n{}", cluster.logs()))?;
    wait_exact(&client, &read, &traffic, Duration::from_secs(30))
        .await
        .map_err(|err| anyhow::anyhow!("the numbers from before: {err}\n{}", cluster.logs()))?;
    for role in [Role::Aggregator, Role::Query] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while health::status(&cluster.role_url(role)).await != Some(ServingStatus::Serving) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{role:?} does not serve again\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
