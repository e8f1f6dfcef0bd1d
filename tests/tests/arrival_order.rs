//! Arrival order: the same traffic (several zones, sessions at the 30-minute boundary and across
//! local midnight, sessions starting with a custom event, bots) sent in time order, visitor by
//! visitor, and shuffled, gives identical numbers for every metric, equal to an oracle that
//! sorts the events itself. Late events are counted at once and their days recomputed in time
//! order from the raw store.

use std::time::Duration;

use beacon_tests::run::{BATCH, send_acknowledged, wait_stable};
use beacon_tests::sessions::{Order, arrange, retarget, tricky};
use beacon_tests::traffic::TenantSpec;
use beacon_tests::{Client, Cluster};

const ZONES: &[(&str, &str)] = &[
    ("kathmandu", "Asia/Kathmandu"),
    ("adelaide", "Australia/Adelaide"),
    ("newyork", "America/New_York"),
];
const ORDERS: &[(&str, Order)] = &[
    ("time", Order::Time),
    ("visitor", Order::VisitorByVisitor),
    ("shuffled", Order::Shuffled),
];
/// Visitors per zone.
const VISITORS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_arrival_order_gives_the_numbers_of_time_order() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let now = beacon_core::time::now_ms();
    let mut work = Vec::new();
    for (z, (zone, tz)) in ZONES.iter().enumerate() {
        let base = TenantSpec {
            id: format!("{zone}-base"),
            time_zone: (*tz).into(),
        };
        let traffic = tricky(11 + z as u64, &base, VISITORS, now);
        for (order_name, order) in ORDERS {
            let spec = TenantSpec {
                id: format!("{zone}-{order_name}"),
                time_zone: (*tz).into(),
            };
            let (ingest, read) = client
                .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
                .await?;
            let traffic = retarget(&traffic, &spec);
            let events = arrange(&traffic.events, *order, 5 + z as u64);
            work.push((traffic, events, ingest, read));
        }
    }
    let client = &client;
    let sends = work.iter().map(|(_, events, ingest, _)| async move {
        for batch in events.chunks(BATCH) {
            send_acknowledged(client, ingest, batch.to_vec(), Duration::from_secs(30)).await?;
        }
        anyhow::Ok(())
    });
    futures::future::try_join_all(sends).await?;
    for (traffic, _, _, read) in &work {
        let lag = wait_stable(
            client,
            read,
            traffic,
            Duration::from_secs(120),
            Duration::from_secs(3),
        )
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
        println!(
            "tenant {}: {} events exact {lag:?} after the last acknowledgement",
            traffic.tenant.id,
            traffic.events.len()
        );
    }
    Ok(())
}
