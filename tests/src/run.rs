//! Driving traffic through a gateway and checking the numbers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use beacon_proto::ingest::v1::{Event, EventResult, EventStatus};

use crate::client::{Client, Counts, all_agree};
use crate::traffic::Traffic;

/// Batch size used by [`send_all`].
pub const BATCH: usize = 100;

/// Sends `traffic` in order in gRPC batches (every `beacon_every`-th batch as HTTP beacons
/// instead, when not 0), resending every `retry_every`-th batch (the same event ids, as a
/// client retry would), retrying failed calls until `deadline`. Returns how many gRPC calls
/// were made.
pub async fn send_all(
    client: &Client,
    key: &str,
    traffic: &Traffic,
    retry_every: usize,
    beacon_every: usize,
    deadline: Duration,
) -> anyhow::Result<usize> {
    let mut calls = 0;
    for (n, batch) in traffic.events.chunks(BATCH).enumerate() {
        if beacon_every > 0 && n % beacon_every == beacon_every - 1 {
            send_beacons(client, key, batch, deadline).await?;
            continue;
        }
        calls += send_acknowledged(client, key, batch.to_vec(), deadline).await?;
        if retry_every > 0 && n % retry_every == 0 {
            calls += send_acknowledged(client, key, batch.to_vec(), deadline).await?;
        }
    }
    Ok(calls)
}

/// Sends each event of `batch` as a Plausible-style HTTP beacon (`POST /api/event`) with the
/// visitor's `User-Agent` and `X-Forwarded-For` headers, retrying until `202` or `deadline`.
pub async fn send_beacons(
    client: &Client,
    key: &str,
    batch: &[Event],
    deadline: Duration,
) -> anyhow::Result<()> {
    for event in batch {
        let ts = event
            .timestamp
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
        let props: serde_json::Map<String, serde_json::Value> = event
            .props
            .iter()
            .filter_map(|(k, v)| match &v.kind {
                Some(beacon_proto::ingest::v1::prop_value::Kind::StringValue(s)) => {
                    Some((k.clone(), s.clone().into()))
                }
                Some(beacon_proto::ingest::v1::prop_value::Kind::NumberValue(n)) => {
                    Some((k.clone(), (*n).into()))
                }
                None => None,
            })
            .collect();
        let body = serde_json::json!({
            "name": event.name, "url": event.url, "referrer": event.referrer,
            "domain": "ignored.example", "id": event.id, "timestamp": ts, "props": props,
        });
        let until = Instant::now() + deadline;
        loop {
            let headers = [
                ("user-agent", event.user_agent.as_str()),
                ("x-forwarded-for", event.client_ip.as_str()),
            ];
            match client
                .beacon(Some(key), body.to_string().into_bytes(), &headers)
                .await
            {
                Ok((202, _)) => break,
                Ok((status, text)) if status < 500 => {
                    bail!("beacon {} refused: {status} {text}", event.id)
                }
                _ if Instant::now() > until => bail!("beacon {} not acknowledged", event.id),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// Sends one batch until every event is acknowledged, retrying transport errors (a process may
/// be restarting) until `deadline`. Returns how many calls it took.
pub async fn send_acknowledged(
    client: &Client,
    key: &str,
    batch: Vec<Event>,
    deadline: Duration,
) -> anyhow::Result<usize> {
    until_acknowledged(deadline, || async {
        client.send(key, batch.clone()).await.map(|r| r.results)
    })
    .await
}

/// Imports `events` in batches, each until acknowledged (never again after that).
pub async fn import_all(
    client: &Client,
    key: &str,
    events: &[Event],
    deadline: Duration,
) -> anyhow::Result<()> {
    for batch in events.chunks(BATCH) {
        until_acknowledged(deadline, || async {
            client.import(key, batch.to_vec()).await.map(|r| r.results)
        })
        .await?;
    }
    Ok(())
}

/// Makes `call` until it answers, retrying transport errors until `deadline`; fails when an
/// event was rejected. Returns how many calls it took.
async fn until_acknowledged<F, Fut>(deadline: Duration, call: F) -> anyhow::Result<usize>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<EventResult>, tonic::Status>>,
{
    let until = Instant::now() + deadline;
    let mut calls = 0;
    loop {
        calls += 1;
        match call().await {
            Ok(results) => {
                if let Some(bad) = results
                    .iter()
                    .find(|r| r.status != EventStatus::Accepted as i32)
                {
                    bail!("event {} rejected: {}", bad.id, bad.error);
                }
                return Ok(calls);
            }
            Err(status) if Instant::now() > until => bail!("sending a batch: {status}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Polls the daily numbers of `traffic`'s tenant until they equal the expected ones, or fails
/// after `timeout` with both tables.
pub async fn wait_exact(
    client: &Client,
    read_key: &str,
    traffic: &Traffic,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (first, last) = traffic.date_range();
    let mut seen: BTreeMap<String, Counts> = BTreeMap::new();
    while started.elapsed() < timeout {
        if let Ok(daily) = client.daily(read_key, &first, &last).await {
            seen = daily
                .into_iter()
                .filter(|(_, c)| *c != Counts::default())
                .collect();
            if all_agree(&seen, &traffic.expected) {
                return Ok(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "tenant {}: numbers did not converge in {timeout:?}\nexpected {:#?}\nseen {:#?}",
        traffic.tenant.id,
        traffic.expected,
        seen
    )
}

/// [`wait_exact`], then checks that the numbers stay exact for `hold` (a restatement still
/// running could change them).
pub async fn wait_stable(
    client: &Client,
    read_key: &str,
    traffic: &Traffic,
    timeout: Duration,
    hold: Duration,
) -> anyhow::Result<Duration> {
    let lag = wait_exact(client, read_key, traffic, timeout).await?;
    let until = Instant::now() + hold;
    let (first, last) = traffic.date_range();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen: BTreeMap<String, Counts> = client
            .daily(read_key, &first, &last)
            .await?
            .into_iter()
            .filter(|(_, c)| *c != Counts::default())
            .collect();
        if !all_agree(&seen, &traffic.expected) {
            bail!(
                "tenant {}: numbers were exact, then changed\nexpected {:#?}\nseen {:#?}",
                traffic.tenant.id,
                traffic.expected,
                seen
            );
        }
    }
    Ok(lag)
}

/// Paces a sender over a disturbance (restarts, kills): a pause before each batch while the
/// disturbance lasts, and the last batches held back until it is over, so that traffic flows
/// during all of it and some follows it.
#[derive(Clone)]
pub struct Pacer {
    /// Set once the disturbance is over.
    pub over: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The pause between batches meanwhile.
    pub pause: Duration,
    /// Batches held back until the disturbance is over.
    pub hold: usize,
}

impl Pacer {
    /// A pacer pausing `pause` and holding back `hold` batches.
    pub fn new(pause: Duration, hold: usize) -> Self {
        Self {
            over: Default::default(),
            pause,
            hold,
        }
    }

    fn is_over(&self) -> bool {
        self.over.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits before batch `index` of `total`.
    pub async fn before(&self, index: usize, total: usize) {
        if index + self.hold >= total {
            while !self.is_over() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else if !self.is_over() {
            tokio::time::sleep(self.pause).await;
        }
    }

    /// Marks the disturbance over.
    pub fn finish(&self) {
        self.over.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
