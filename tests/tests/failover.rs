//! Two aggregators share the partitions through leases (beside two query replicas and two of
//! every other role): SIGKILL of the owner hands its partitions to the other within seconds,
//! and an owner paused past its lease (SIGSTOP, then SIGCONT) cannot publish beside the new
//! one. Counts stay exact throughout.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role};

/// Partitions of the test cluster.
const PARTITIONS: usize = 4;

/// How many "partition lease taken" lines the log of `name` holds.
fn leases_taken(cluster: &Cluster, name: &str) -> usize {
    cluster.log(name).matches("partition lease taken").count()
}

/// Waits until the log of `name` shows `count` leases taken; returns how long it took.
async fn wait_leases(cluster: &Cluster, name: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while leases_taken(cluster, name) < count {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{name} took {} of {count} leases\n{}",
            leases_taken(cluster, name),
            cluster.log(name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed())
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
    let mut cluster = Cluster::start_redundant(&[("BEACON_FLUSH_INTERVAL_MS", "2000".to_owned())])?;
    let started = Instant::now();
    while leases_taken(&cluster, "aggregator") + leases_taken(&cluster, "aggregator-2") < PARTITIONS
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the partitions were not all taken
{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The owner of the most partitions is killed, then the other is paused.
    let (owner, other) = if leases_taken(&cluster, "aggregator") >= PARTITIONS / 2 {
        (0, 1)
    } else {
        (1, 0)
    };
    let names = [
        Cluster::instance_name(Role::Aggregator, owner),
        Cluster::instance_name(Role::Aggregator, other),
    ];
    let client = Client::connect(&cluster.gateway(), &cluster.admin()).await?;
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
            let held = leases_taken(&cluster, &names[0]);
            let before = leases_taken(&cluster, &names[1]);
            cluster.kill9_instance(Role::Aggregator, owner);
            let took = wait_leases(&cluster, &names[1], before + held).await?;
            println!(
                "takeover of {held} partitions after SIGKILL of their owner: {:.1} s",
                took.as_secs_f64()
            );
            // The killed aggregator comes back and waits for leases.
            cluster.restart_instance(Role::Aggregator, owner)?;
        }
        if round == stop_at {
            let pid = cluster
                .instance_pid(Role::Aggregator, other)
                .ok_or_else(|| anyhow::anyhow!("{} is not running", names[1]))?;
            let before = leases_taken(&cluster, &names[0]);
            signal(pid, "STOP")?;
            // Its log (appended across restarts) holds the leases of its first run too.
            let took = wait_leases(&cluster, &names[0], before + PARTITIONS).await?;
            println!("takeover from a paused owner: {:.1} s", took.as_secs_f64());
            signal(pid, "CONT")?;
        }
        if round == resume_at {
            let log = cluster.log(&names[1]);
            anyhow::ensure!(
                log.contains("partition lease lost"),
                "the paused owner never noticed its lost leases\n{log}"
            );
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
