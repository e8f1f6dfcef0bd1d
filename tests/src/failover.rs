//! The documented client retry across gateways (see `beacon_bench::retry`), for the tests'
//! calls: sends and totals through a list of gateway clients.

use anyhow::bail;
use beacon_bench::retry::with_retry;
use beacon_proto::ingest::v1::{Event, EventStatus};
use tonic::Status;

use crate::client::{Client, Counts};

/// Sends `batch` with the client retry from gateway `start`; fails when the call fails after
/// it or an event is rejected. Returns the calls made.
pub async fn send(
    clients: &[Client],
    start: usize,
    key: &str,
    batch: &[Event],
) -> anyhow::Result<u32> {
    let (calls, reply) = with_retry(clients, start, |client| {
        let batch = batch.to_vec();
        async move { client.send(key, batch).await }
    })
    .await;
    let reply = reply?;
    if let Some(bad) = reply
        .results
        .iter()
        .find(|r| r.status != EventStatus::Accepted as i32)
    {
        bail!("event {} rejected: {}", bad.id, bad.error);
    }
    Ok(calls)
}

/// The totals of a date range with the client retry from gateway `start`, and the calls made.
pub async fn totals(
    clients: &[Client],
    start: usize,
    key: &str,
    first: &str,
    last: &str,
) -> Result<(Counts, u32), Status> {
    let (calls, counts) = with_retry(clients, start, |client| async move {
        client.totals(key, first, last).await
    })
    .await;
    Ok((counts?, calls))
}
