//! The documented client retry across gateways: a call answered UNAVAILABLE (a gateway
//! restarting, or no replica behind it able to answer in time), CANCELLED without the client
//! cancelling it, or INTERNAL "h2 protocol error" (the connection closed or broke under it), is
//! made again, with the same event ids, on the next gateway address, backing off from 100 ms to
//! 1 s, for up to [`RETRY_FOR`].

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::Status;

/// How long a call is retried across gateways.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// Whether the client retry applies to a failed call.
pub fn retryable(status: &Status) -> bool {
    beacon_core::grpc::worth_another(status)
}

/// Makes `call` on `targets` (one per gateway) in turn from `start`, retrying as documented.
/// Returns the calls made and the outcome: the first success, or the error that ended it.
pub async fn with_retry<C, T, F, Fut>(
    targets: &[C],
    start: usize,
    call: F,
) -> (u32, Result<T, Status>)
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let until = Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(100);
    let mut calls = 0u32;
    loop {
        let target = targets[(start + calls as usize) % targets.len()].clone();
        calls += 1;
        match call(target).await {
            Ok(value) => return (calls, Ok(value)),
            Err(status) if !retryable(&status) || Instant::now() > until => {
                return (calls, Err(status));
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}
