//! Retention never drops unprocessed events: with a tiny event-log byte limit and the
//! aggregator stopped, ingest pushes back (UNAVAILABLE) instead of losing acknowledged events;
//! once the aggregator is back it counts every event, trims what it consumed, and ingest
//! accepts again.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_event_log_pushes_back_and_loses_nothing() -> anyhow::Result<()> {
    let mut cluster = Cluster::start_with(&[("BEACON_EVENT_LOG_MAX_BYTES", "96KiB".to_owned())])?;
    let client = Client::of(&cluster).await?;
    let spec = TenantSpec {
        id: "retained".into(),
        time_zone: "America/St_Johns".into(),
    };
    let (ingest, read) = client
        .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
        .await?;
    let traffic = generate(23, &spec, 3000, beacon_core::time::now_ms());
    cluster.kill9(Role::Aggregator);

    let mut pushed_back = 0;
    let mut restarted = false;
    let started = Instant::now();
    for batch in traffic.events.chunks(BATCH) {
        // A batch is sent again only while it was not acknowledged.
        loop {
            anyhow::ensure!(
                started.elapsed() < WAIT,
                "ingest never took the events back"
            );
            match client.send(&ingest, batch.to_vec()).await {
                Ok(reply) => {
                    anyhow::ensure!(reply.rejected == 0, "events rejected: {reply:?}");
                    break;
                }
                Err(status) if status.code() == Code::Unavailable => {
                    pushed_back += 1;
                    if !restarted {
                        println!("pushed back: {}", status.message());
                        cluster.start_role(Role::Aggregator)?;
                        restarted = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => anyhow::bail!("sending a batch: {status}"),
            }
        }
    }
    println!("{pushed_back} calls were pushed back");
    assert!(pushed_back > 0, "a 96 KiB event log never filled up");
    assert!(restarted);
    wait_exact(&client, &read, &traffic, WAIT)
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    Ok(())
}
