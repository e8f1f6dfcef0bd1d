//! The fault matrix: eight tenants send at once (eight calls in flight) while ingest,
//! aggregator, query, gateway and nats-server are each SIGKILLed five times at random moments
//! (snapshots every 2 s and folds run meanwhile) and restarted. A batch is resent only until it
//! is acknowledged, never after, so a lost acknowledged event would show. The numbers equal the
//! oracle and stay equal for 10 s.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, Pacer, send_acknowledged, wait_stable};
use beacon_tests::traffic::{TenantSpec, Traffic, generate};
use beacon_tests::{Client, Cluster, Role};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Kills of each process.
const KILLS_EACH: usize = 5;
/// What the matrix kills.
#[derive(Debug, Clone, Copy)]
enum Target {
    Role(Role),
    Nats,
}

/// Sends every batch of `traffic` in order, each until acknowledged, paced by `pacer`.
/// Returns the calls made.
async fn send(
    client: Client,
    key: String,
    traffic: Traffic,
    pacer: Pacer,
) -> anyhow::Result<usize> {
    let mut calls = 0;
    let batches: Vec<&[_]> = traffic.events.chunks(BATCH).collect();
    for (n, batch) in batches.iter().enumerate() {
        pacer.before(n, batches.len()).await;
        calls += send_acknowledged(&client, &key, batch.to_vec(), Duration::from_secs(90)).await?;
    }
    Ok(calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_every_process_at_random_moments_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let seed: u64 = match std::env::var("BEACON_FAULT_SEED") {
        Ok(seed) => seed
            .parse()
            .map_err(|err| anyhow::anyhow!("BEACON_FAULT_SEED={seed:?}: {err}"))?,
        Err(_) => beacon_core::time::now_ms().unsigned_abs(),
    };
    println!("fault seed {seed} (BEACON_FAULT_SEED repeats its kill schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let zones = [
        "UTC",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Europe/London",
        "Australia/Lord_Howe",
        "America/New_York",
        "Pacific/Chatham",
    ];
    let pacer = Pacer::new(Duration::from_millis(600), 3);
    let mut senders = Vec::new();
    let mut tenants = Vec::new();
    for (n, zone) in zones.into_iter().enumerate() {
        let spec = TenantSpec {
            id: format!("matrix-{n}"),
            time_zone: zone.into(),
        };
        let (ingest, read) = client
            .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
            .await?;
        let traffic = generate(seed ^ n as u64, &spec, 3000, beacon_core::time::now_ms());
        senders.push(tokio::spawn(send(
            client.clone(),
            ingest,
            traffic.clone(),
            pacer.clone(),
        )));
        tenants.push((read, traffic));
    }

    let mut targets: Vec<Target> = [
        Target::Role(Role::Ingest),
        Target::Role(Role::Aggregator),
        Target::Role(Role::Query),
        Target::Role(Role::Gateway),
        Target::Nats,
    ]
    .into_iter()
    .flat_map(|target| std::iter::repeat_n(target, KILLS_EACH))
    .collect();
    targets.shuffle(&mut rng);
    let started = Instant::now();
    for target in &targets {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        match *target {
            Target::Role(role) => cluster.kill9(role),
            Target::Nats => cluster.nats.kill(),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..700))).await;
        match *target {
            Target::Role(role) => cluster.start_role(role)?,
            Target::Nats => cluster.nats.restart()?,
        }
    }
    pacer.finish();
    println!(
        "{} kills in {:.0} s: {targets:?}",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    let mut calls = 0;
    for sender in senders {
        calls += sender.await??;
    }
    for (read, traffic) in &tenants {
        wait_stable(
            &client,
            read,
            traffic,
            Duration::from_secs(180),
            Duration::from_secs(10),
        )
        .await
        .map_err(|err| anyhow::anyhow!("seed {seed}: {err}\n{}", cluster.logs()))?;
    }
    let snapshots = cluster.log("aggregator").matches("snapshot saved").count();
    println!(
        "{calls} calls for {} batches; {snapshots} aggregator snapshots saved meanwhile",
        tenants
            .iter()
            .map(|(_, t)| t.events.len().div_ceil(BATCH))
            .sum::<usize>()
    );
    Ok(())
}
