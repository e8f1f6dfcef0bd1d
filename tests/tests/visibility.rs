//! Stalls are visible: when the rollup log refuses the aggregator's rollups, the aggregator's
//! lag metric grows and its health turns NOT_SERVING; once the log accepts again it recovers,
//! and every event still counts once.

use std::time::{Duration, Instant};

use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(120);

async fn serving(url: &str) -> anyhow::Result<bool> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    Ok(status == ServingStatus::Serving as i32)
}

/// The largest `beacon_consumer_lag_seconds` of the aggregator's partitions, from `/metrics`.
async fn aggregator_lag_seconds(url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    let lags: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.starts_with("beacon_consumer_lag_seconds") && line.contains("role=\"aggregator\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    anyhow::ensure!(!lags.is_empty(), "no aggregator lag in /metrics:\n{text}");
    Ok(lags.into_iter().fold(0.0, f64::max))
}

/// Caps the rollup stream at the messages it holds, refusing new ones (`max_msgs`, discard new),
/// or lifts the cap.
async fn cap_rollups(cluster: &Cluster, capped: bool) -> anyhow::Result<()> {
    let client = cluster.nats_client().await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("BEACON_ROLLUPS").await?;
    let info = stream.info().await?;
    let mut config = info.config.clone();
    if capped {
        config.max_messages = i64::try_from(info.state.messages)?.max(1);
        config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    } else {
        config.max_messages = -1;
    }
    js.update_stream(config).await?;
    Ok(())
}

/// Polls `check` until it holds, failing with `what` after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(false) => anyhow::bail!("{what}: still not so after {WAIT:?}"),
            Err(err) => anyhow::bail!("{what}: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_partition_shows_in_lag_and_health_then_recovers() -> anyhow::Result<()> {
    let mut cluster = Cluster::start_with(&[("BEACON_STALL_AFTER", "3s".to_owned())])?;
    let client = Client::of(&cluster).await?;
    let aggregator = cluster.role_url(Role::Aggregator);
    let spec = TenantSpec {
        id: "stalled".into(),
        time_zone: "Asia/Kathmandu".into(),
    };
    let (ingest, read) = client
        .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
        .await?;
    let traffic = generate(17, &spec, 1200, beacon_core::time::now_ms());
    let (before, after) = traffic.events.split_at(400);
    for batch in before.chunks(BATCH) {
        send_acknowledged(&client, &ingest, batch.to_vec(), WAIT).await?;
    }
    eventually("healthy before the stall", || serving(&aggregator)).await?;

    // The query role trims the rollups it applied, which would make room under the cap and
    // end the stall early: it stops while the log is capped.
    assert!(
        cluster.terminate(Role::Query, WAIT),
        "the query role exits cleanly"
    );
    cap_rollups(&cluster, true).await?;
    for batch in after.chunks(BATCH) {
        send_acknowledged(&client, &ingest, batch.to_vec(), WAIT).await?;
    }
    eventually("NOT_SERVING while stalled", || async {
        Ok(!serving(&aggregator).await?)
    })
    .await?;
    let first = aggregator_lag_seconds(&aggregator).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = aggregator_lag_seconds(&aggregator).await?;
    println!("aggregator lag while stalled: {first:.1} s, then {second:.1} s");
    assert!(
        first > 0.0 && second > first,
        "the lag grows: {first} then {second}"
    );

    cap_rollups(&cluster, false).await?;
    cluster.start_role(Role::Query)?;
    cluster.wait_ready(Role::Query, 0, WAIT).await?;
    eventually("SERVING again", || serving(&aggregator)).await?;
    eventually("lag back to zero", || async {
        Ok(aggregator_lag_seconds(&aggregator).await? < 3.0)
    })
    .await?;
    wait_exact(&client, &read, &traffic, WAIT)
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    Ok(())
}
