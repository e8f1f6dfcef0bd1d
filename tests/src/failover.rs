//! The documented client retry across gateways: a call answered UNAVAILABLE (a gateway
//! restarting, or no replica behind it able to answer in time), or CANCELLED without the client
//! cancelling it (the connection closed under it), is made again, with the same event ids, on
//! the next gateway address, backing off from 100 ms to 1 s, for up to 10 s.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;
use beacon_proto::ingest::v1::{Event, EventStatus};
use tonic::{Code, Status};

use crate::client::{Client, Counts};

/// How long a call is retried across gateways.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// What a call through several gateways took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attempts {
    /// Calls made.
    pub calls: usize,
}

/// Makes `call` on `clients` in turn from `start`, retrying as documented (see the module) on
/// the next one for up to [`RETRY_FOR`]; any other error, or one after that, fails.
pub async fn with_retry<T, F, Fut>(
    clients: &[Client],
    start: usize,
    call: F,
) -> Result<(T, Attempts), Status>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let until = Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(100);
    let mut attempts = Attempts::default();
    loop {
        let client = clients[(start + attempts.calls) % clients.len()].clone();
        attempts.calls += 1;
        match call(client).await {
            Ok(value) => return Ok((value, attempts)),
            Err(status) if !retryable(&status) || Instant::now() > until => {
                return Err(status);
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Sends `batch` with the client retry; fails when the call fails after it or an event is
/// rejected.
pub async fn send(
    clients: &[Client],
    start: usize,
    key: &str,
    batch: &[Event],
) -> anyhow::Result<Attempts> {
    let (reply, attempts) = with_retry(clients, start, |client| {
        let batch = batch.to_vec();
        async move { client.send(key, batch).await }
    })
    .await?;
    if let Some(bad) = reply
        .results
        .iter()
        .find(|r| r.status != EventStatus::Accepted as i32)
    {
        bail!("event {} rejected: {}", bad.id, bad.error);
    }
    Ok(attempts)
}

/// The totals of a date range with the client retry.
pub async fn totals(
    clients: &[Client],
    start: usize,
    key: &str,
    first: &str,
    last: &str,
) -> Result<(Counts, Attempts), Status> {
    with_retry(clients, start, |client| async move {
        client.totals(key, first, last).await
    })
    .await
}

/// Whether the client retry applies: UNAVAILABLE, or CANCELLED though the client did not
/// cancel (the connection to the gateway closed under the call).
fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Cancelled)
}
