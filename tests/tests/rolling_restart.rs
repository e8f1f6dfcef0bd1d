//! Rolling restart: two processes of every role on one nats-server. While events (with ids)
//! stream in and dashboards are read through both gateways, every process is restarted with
//! SIGTERM, one at a time, gateways included. No ingest call and no query fails after the
//! documented client retry ([`beacon_tests::failover`]), and the counts are exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use beacon_tests::failover;
use beacon_tests::run::{BATCH, Pacer, wait_stable};
use beacon_tests::traffic::{TenantSpec, Traffic, generate};
use beacon_tests::{Client, Cluster};

/// Longest a process may take to exit after SIGTERM, or to be ready after its start.
const RESTART_WITHIN: Duration = Duration::from_secs(60);

/// Counts of the dashboard reader.
#[derive(Default)]
struct Reads {
    made: AtomicUsize,
    retried: AtomicUsize,
    failed: AtomicUsize,
}

/// Reads the totals of every tenant through the gateways in turn until `stop`.
async fn read_dashboards(
    clients: Vec<Client>,
    tenants: Vec<(String, (String, String))>,
    reads: Arc<Reads>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        for (read, (first, last)) in &tenants {
            turn += 1;
            reads.made.fetch_add(1, Ordering::Relaxed);
            match failover::totals(&clients, turn, read, first, last).await {
                Ok((_, calls)) if calls > 1 => {
                    reads.retried.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(status) => {
                    reads.failed.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    errors
}

/// Sends every batch of every tenant once (never again once acknowledged), paced by `pacer`.
/// Returns the calls that needed the client retry.
async fn ingest(
    clients: Vec<Client>,
    tenants: Vec<(String, Traffic)>,
    pacer: Pacer,
) -> anyhow::Result<usize> {
    let rounds = tenants
        .iter()
        .map(|(_, t)| t.events.len().div_ceil(BATCH))
        .max()
        .unwrap_or(0);
    let mut retried = 0;
    for round in 0..rounds {
        pacer.before(round, rounds).await;
        for (n, (key, traffic)) in tenants.iter().enumerate() {
            let Some(batch) = traffic.events.chunks(BATCH).nth(round) else {
                continue;
            };
            let attempts = failover::send(&clients, round + n, key, batch).await?;
            retried += usize::from(attempts > 1);
        }
    }
    Ok(retried)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_process_one_at_a_time_fails_no_call_and_loses_no_event()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start_redundant(&[
        ("BEACON_SNAPSHOT_INTERVAL", "30s".to_owned()),
        ("BEACON_FLUSH_INTERVAL", "1s".to_owned()),
    ])?;
    cluster.wait_all_ready(RESTART_WITHIN).await?;
    let mut clients = Vec::new();
    for url in cluster.gateways() {
        clients.push(Client::connect(&url, &cluster.admin()).await?);
    }
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    let mut traffics = Vec::new();
    for (n, zone) in ["UTC", "Asia/Kathmandu", "America/St_Johns", "Europe/Berlin"]
        .into_iter()
        .enumerate()
    {
        let spec = TenantSpec {
            id: format!("rolling-{n}"),
            time_zone: zone.into(),
        };
        let (ingest_key, read_key) = clients[0]
            .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
            .await?;
        let traffic = generate(71 + n as u64, &spec, 5000, beacon_core::time::now_ms());
        readers.push((read_key.clone(), traffic.date_range()));
        senders.push((ingest_key, traffic.clone()));
        traffics.push((read_key, traffic));
    }

    let pacer = Pacer::new(Duration::from_millis(500), 3);
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Reads::default());
    let sender = tokio::spawn(ingest(clients.clone(), senders, pacer.clone()));
    let reader = tokio::spawn(read_dashboards(
        clients.clone(),
        readers,
        reads.clone(),
        stop_reading.clone(),
    ));

    tokio::time::sleep(Duration::from_secs(2)).await;
    for restart in cluster.rolling_restart(RESTART_WITHIN).await? {
        println!(
            "{}: exited {:.1} s after SIGTERM, ready {:.1} s after its start",
            restart.name,
            restart.exited.as_secs_f64(),
            restart.ready.as_secs_f64()
        );
    }
    pacer.finish();
    let retried_sends = sender.await??;
    for (read, traffic) in &traffics {
        wait_stable(
            &clients[0],
            read,
            traffic,
            Duration::from_secs(120),
            Duration::from_secs(10),
        )
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    }
    stop_reading.store(true, Ordering::Relaxed);
    let errors = reader.await?;
    let (made, retried, failed) = (
        reads.made.load(Ordering::Relaxed),
        reads.retried.load(Ordering::Relaxed),
        reads.failed.load(Ordering::Relaxed),
    );
    println!(
        "queries: {made} made, {retried} needed the client retry, {failed} failed; \
         ingest calls that needed the client retry: {retried_sends}"
    );
    anyhow::ensure!(failed == 0, "{failed} of {made} queries failed: {errors:?}");
    Ok(())
}
