//! Two aggregators share the partitions through leases (beside two query replicas and two of
//! every other role), half each once balanced: SIGKILL of an owner hands its partitions to the
//! other within seconds (and its restart gets it its half back),
//! and an owner paused past its lease (SIGSTOP, then SIGCONT) cannot publish beside the new
//! one. Counts stay exact throughout.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role};

/// Partitions of the test cluster.
const PARTITIONS: usize = 4;

/// The aggregator instance holding each partition's lease now (`None`: nobody).
async fn holders(cluster: &Cluster) -> anyhow::Result<Vec<Option<usize>>> {
    let mut holders = Vec::new();
    for partition in 0..PARTITIONS as u32 {
        holders.push(cluster.lease_holder(partition).await?);
    }
    Ok(holders)
}

/// Waits up to 30 s until `done` holds for the lease holders; returns how long it took.
async fn wait_holders(
    cluster: &Cluster,
    what: &str,
    done: impl Fn(&[Option<usize>]) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        // The lease bucket exists once an aggregator opened it.
        let now = holders(cluster).await.unwrap_or_default();
        if now.len() == PARTITIONS && done(&now) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: the leases are held by {now:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether both aggregators hold half of the partitions.
fn balanced(holders: &[Option<usize>]) -> bool {
    (0..2).all(|i| holders.iter().filter(|h| **h == Some(i)).count() == PARTITIONS / 2)
}

/// The partitions `instance` holds.
fn held_by(holders: &[Option<usize>], instance: usize) -> Vec<usize> {
    (0..holders.len())
        .filter(|&p| holders[p] == Some(instance))
        .collect()
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_or_paused_owner_hands_its_partitions_over_and_counts_stay_exact()
-> anyhow::Result<()> {
    // Rollups every 2 s: a paused owner then holds deltas it has not published, which it tries
    // to publish when it wakes up, after the new owner published its own.
    let mut cluster = Cluster::start_redundant(&[("BEACON_FLUSH_INTERVAL", "2s".to_owned())])?;
    // The first aggregator to start takes every partition, then hands half to the second.
    let took = wait_holders(&cluster, "balancing", balanced).await?;
    println!(
        "partitions balanced between the two aggregators after {:.1} s",
        took.as_secs_f64()
    );
    // One is killed, then the other is paused.
    let (owner, other) = (0, 1);
    let names = [
        Cluster::instance_name(Role::Aggregator, owner),
        Cluster::instance_name(Role::Aggregator, other),
    ];
    let client = Client::of(&cluster).await?;
    let mut tenants = Vec::new();
    for (n, zone) in [
        "UTC",
        "Asia/Kolkata",
        "America/New_York",
        "Australia/Adelaide",
    ]
    .into_iter()
    .enumerate()
    {
        let spec = TenantSpec {
            id: format!("failover-{n}"),
            time_zone: zone.into(),
        };
        let (ingest, read) = client
            .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
            .await?;
        let traffic = generate(31 + n as u64, &spec, 1500, beacon_core::time::now_ms());
        tenants.push((ingest, read, traffic));
    }
    let rounds = tenants[0].2.events.len().div_ceil(BATCH);
    let (kill_at, stop_at, resume_at) = (rounds / 4, rounds / 2, rounds / 2 + 3);
    for round in 0..rounds {
        if round == kill_at {
            let held = held_by(&holders(&cluster).await?, owner);
            cluster.kill9_instance(Role::Aggregator, owner);
            let took = wait_holders(&cluster, "takeover after SIGKILL", |now| {
                held.iter().all(|&p| now[p] == Some(other))
            })
            .await?;
            println!(
                "takeover of {} partitions after SIGKILL of their owner: {:.1} s",
                held.len(),
                took.as_secs_f64()
            );
            // The killed aggregator comes back and gets its share again.
            cluster.restart_instance(Role::Aggregator, owner)?;
            let took = wait_holders(&cluster, "balancing after the restart", balanced).await?;
            println!(
                "balanced again {:.1} s after the restart",
                took.as_secs_f64()
            );
        }
        if round == stop_at {
            let pid = cluster
                .instance_pid(Role::Aggregator, other)
                .ok_or_else(|| anyhow::anyhow!("{} is not running", names[1]))?;
            let held = held_by(&holders(&cluster).await?, other);
            signal(pid, "STOP")?;
            let took = wait_holders(&cluster, "takeover from a paused owner", |now| {
                held.iter().all(|&p| now[p] == Some(owner))
            })
            .await?;
            println!(
                "takeover of {} partitions from a paused owner: {:.1} s",
                held.len(),
                took.as_secs_f64()
            );
            signal(pid, "CONT")?;
        }
        if round == resume_at {
            // It notices at its next lease check or flush after waking, which three rounds of
            // sending may not outlast.
            let deadline = Instant::now() + Duration::from_secs(15);
            while !cluster.log(&names[1]).contains("partition lease lost") {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the paused owner did not notice its lost leases within 15 s\n{}",
                    cluster.log(&names[1])
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for (ingest, _, traffic) in &tenants {
            let Some(batch) = traffic.events.chunks(BATCH).nth(round) else {
                continue;
            };
            send_acknowledged(&client, ingest, batch.to_vec(), Duration::from_secs(30)).await?;
        }
    }
    for (_, read, traffic) in &tenants {
        wait_exact(&client, read, traffic, Duration::from_secs(120))
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "{err}\n{}\n--- {}\n{}",
                    cluster.logs(),
                    names[1],
                    cluster.log(&names[1])
                )
            })?;
    }
    Ok(())
}
