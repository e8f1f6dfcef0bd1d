//! Fault tests: SIGKILL under load, restart, exact counts.

use std::time::Duration;

use beacon_tests::process::free_port;
use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role, Standalone};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_survives_sigkill_of_aggregator_and_query() -> anyhow::Result<()> {
    let mut cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let spec = TenantSpec {
        id: "faulty".into(),
        time_zone: "Asia/Kolkata".into(),
    };
    let (ingest, read) = client
        .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
        .await?;
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
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    let now = beacon_core::time::now_ms();
    let mut tenants = Vec::new();
    for (i, tz) in [
        "UTC",
        "Asia/Kolkata",
        "Europe/Berlin",
        "America/Los_Angeles",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("kill-{i}");
        let (ingest, read) = client.create_tenant(&ready.admin_token, &id, tz).await?;
        let spec = TenantSpec {
            id,
            time_zone: (*tz).into(),
        };
        tenants.push((generate(11 + i as u64, &spec, 1500, now), ingest, read));
    }

    // Each tenant sends its batches in order; all tenants at once, so calls are in flight when
    // the process is killed. A tenant stops at its first unacknowledged batch.
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let sent = futures::future::join_all(tenants.iter().map(|(traffic, ingest, _)| {
        let (client, progress) = (client.clone(), &progress);
        async move {
            let mut acked = 0;
            for batch in traffic.events.chunks(BATCH) {
                if client.send(ingest, batch.to_vec()).await.is_err() {
                    break;
                }
                acked += 1;
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            acked
        }
    }));
    let total_batches: usize = tenants
        .iter()
        .map(|(t, _, _)| t.events.chunks(BATCH).count())
        .sum();
    let killer = async {
        while progress.load(std::sync::atomic::Ordering::SeqCst) < total_batches / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        beacon.proc.kill9();
    };
    let (acked, ()) = tokio::join!(sent, killer);
    let batches = tenants[0].0.events.chunks(BATCH).count();
    assert!(
        acked.iter().any(|&n| n < batches),
        "the kill came after every call: {acked:?}"
    );

    // Restart on the same data folder and port. Each tenant retries from its first
    // unacknowledged batch (which may or may not have been stored) and also resends its last
    // acknowledged one: the same ids must count once.
    let restarted = Standalone::start(&data, port, &[])?;
    let ready = restarted.ready.clone();
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    for ((traffic, ingest, _), acked) in tenants.iter().zip(&acked) {
        for batch in traffic.events.chunks(BATCH).skip(acked.saturating_sub(1)) {
            send_acknowledged(&client, ingest, batch.to_vec(), Duration::from_secs(30)).await?;
        }
    }
    for (traffic, _, read) in &tenants {
        wait_exact(&client, read, traffic, Duration::from_secs(120)).await?;
    }
    Ok(())
}
