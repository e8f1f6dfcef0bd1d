//! End to end in cluster mode: one process per role, a real nats-server, 10,000 events across
//! tenants in four time zones (one UTC+5:30), with client retries; exact daily numbers.

use std::time::{Duration, Instant};

use beacon_tests::run::{send_all, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster};

const ZONES: &[(&str, &str)] = &[
    ("shop-utc", "UTC"),
    ("shop-india", "Asia/Kolkata"),
    ("shop-ny", "America/New_York"),
    ("shop-adelaide", "Australia/Adelaide"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_give_exact_daily_numbers() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let now = beacon_core::time::now_ms();
    let mut work = Vec::new();
    for (i, (id, tz)) in ZONES.iter().enumerate() {
        let (ingest, read) = client.create_tenant(&cluster.admin_token, id, tz).await?;
        let spec = TenantSpec {
            id: (*id).into(),
            time_zone: (*tz).into(),
        };
        work.push((generate(42 + i as u64, &spec, 2500, now), ingest, read));
    }
    let started = Instant::now();
    let sends = work.iter().map(|(traffic, ingest, _)| {
        send_all(&client, ingest, traffic, 10, 5, Duration::from_secs(30))
    });
    let calls: usize = futures::future::try_join_all(sends)
        .await?
        .into_iter()
        .sum();
    let sent = started.elapsed();
    let total: u64 = work.iter().map(|(t, _, _)| t.total_events()).sum();
    for (traffic, _, read) in &work {
        let lag = wait_exact(&client, read, traffic, Duration::from_secs(90))
            .await
            .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
        println!(
            "tenant {}: exact after {lag:?} from the last acknowledgement",
            traffic.tenant.id
        );
    }
    println!(
        "sent {total} events in {calls} calls in {sent:?}: {:.0} events/s acknowledged",
        total as f64 / sent.as_secs_f64()
    );
    Ok(())
}
