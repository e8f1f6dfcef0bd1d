//! Fault tests: SIGKILL under load, restart, exact counts.

use std::time::Duration;

use beacon_tests::process::free_port;
use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role, Standalone};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_survives_sigkill_of_aggregator_and_query() -> anyhow::Result<()> {
    let mut cluster = Cluster::start()?;
    let client = Client::connect(&cluster.gateway()).await?;
    let spec = TenantSpec { id: "faulty".into(), time_zone: "Asia/Kolkata".into() };
    let (ingest, read) = client.create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone).await?;
    let traffic = generate(7, &spec, 4000, beacon_core::time::now_ms());
    let batches: Vec<_> = traffic.events.chunks(BATCH).map(<[_]>::to_vec).collect();
    let third = batches.len() / 3;
    for (n, batch) in batches.into_iter().enumerate() {
        if n == third {
            cluster.kill9(Role::Aggregator);
        }
        if n == third + 3 {
            cluster.start_role(Role::Aggregator)?;
        }
        if n == 2 * third {
            cluster.kill9(Role::Query);
        }
        if n == 2 * third + 3 {
            cluster.start_role(Role::Query)?;
        }
        send_acknowledged(&client, &ingest, batch, Duration::from_secs(30)).await?;
    }
    wait_exact(&client, &read, &traffic, Duration::from_secs(120))
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_survives_sigkill_during_ingest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port();
    let mut beacon = Standalone::start(&data, port, &[])?;
    let ready = beacon.ready.clone();
    let client = Client::connect(&ready.gateway).await?;
    let spec = TenantSpec { id: ready.tenant.clone(), time_zone: "UTC".into() };
    let traffic = generate(11, &spec, 3000, beacon_core::time::now_ms());
    let batches: Vec<_> = traffic.events.chunks(BATCH).map(<[_]>::to_vec).collect();

    // Send concurrently, and SIGKILL the process while calls are in flight.
    let mut pending = Vec::new();
    let mut sends = futures::stream::FuturesUnordered::new();
    for batch in &batches {
        let (client, key, batch) = (client.clone(), ready.ingest_key.clone(), batch.clone());
        sends.push(async move {
            let acked = client.send(&key, batch.clone()).await.is_ok();
            (acked, batch)
        });
    }
    let mut done = 0;
    while let Some((acked, batch)) = futures::StreamExt::next(&mut sends).await {
        done += 1;
        if done == batches.len() / 2 {
            beacon.proc.kill9();
        }
        if !acked {
            pending.push(batch);
        }
    }
    assert!(!pending.is_empty(), "the kill came too late to interrupt any call");

    // Restart on the same data folder and port; the client retries what was not acknowledged,
    // and also retries some that were (the same ids must not count twice).
    let _beacon = Standalone::start(&data, port, &[])?;
    let client = Client::connect(&ready.gateway).await?;
    for batch in pending.into_iter().chain(batches.iter().take(3).cloned()) {
        send_acknowledged(&client, &ready.ingest_key, batch, Duration::from_secs(30)).await?;
    }
    wait_exact(&client, &ready.read_key, &traffic, Duration::from_secs(120)).await?;
    Ok(())
}
