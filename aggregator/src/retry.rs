//! Retrying backend calls with exponential backoff, without ever skipping work.

use std::future::Future;
use std::time::Duration;

use beacon_core::retry::Backoff;
use tokio_util::sync::CancellationToken;

use crate::AggregatorError;

/// First pause after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// When to give up retrying.
#[derive(Debug, Clone, Copy)]
pub enum Limit<'a> {
    /// Retry until the call succeeds or the token is cancelled.
    UntilCancelled(&'a CancellationToken),
    /// Give up after this many attempts (used while shutting down).
    Attempts(u32),
}

/// The aggregator's backoff: 100 ms doubling up to 5 s.
pub fn backoff() -> Backoff {
    Backoff::new(FIRST_DELAY, MAX_DELAY)
}

/// Runs `op` until it succeeds. `Ok(None)` when cancelled first; an error when the attempts ran
/// out. Every failure is logged with the partition, the attempt and the operation.
pub async fn retry<T, F, Fut>(
    partition: u32,
    what: &str,
    limit: Limit<'_>,
    mut op: F,
) -> Result<Option<T>, AggregatorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = beacon_core::Result<T>>,
{
    let mut backoff = backoff();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let err = match op().await {
            Ok(value) => return Ok(Some(value)),
            Err(err) => err,
        };
        tracing::warn!(partition, attempt, what, error = %err, "backend call failed; retrying");
        let go_on = match limit {
            Limit::Attempts(max) if attempt >= max => {
                return Err(AggregatorError::backend(
                    format!("{what} (partition {partition}, {attempt} attempts)"),
                    err,
                ));
            }
            Limit::Attempts(_) => backoff.sleep(None).await,
            Limit::UntilCancelled(token) => backoff.sleep(Some(token)).await,
        };
        if !go_on {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn flaky(calls: &AtomicU32, failures: u32) -> beacon_core::Result<u32> {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n < failures {
            Err(beacon_core::Error::Unavailable(format!("call {n}")))
        } else {
            Ok(n)
        }
    }

    #[tokio::test]
    async fn retries_until_success() {
        let counter = AtomicU32::new(0);
        let calls = &counter;
        let token = CancellationToken::new();
        let got = retry(
            1,
            "test",
            Limit::UntilCancelled(&token),
            move || async move { flaky(calls, 2) },
        )
        .await;
        assert_eq!(got.expect("no error"), Some(2));
    }

    #[tokio::test]
    async fn gives_up_after_attempts() {
        let counter = AtomicU32::new(0);
        let calls = &counter;
        let err = retry(2, "publishing", Limit::Attempts(2), move || async move {
            flaky(calls, 10)
        })
        .await
        .expect_err("gives up");
        assert!(
            err.to_string()
                .contains("publishing (partition 2, 2 attempts)"),
            "{err}"
        );
        assert_eq!(counter.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let counter = AtomicU32::new(0);
        let calls = &counter;
        let token = CancellationToken::new();
        token.cancel();
        let got = retry(
            0,
            "test",
            Limit::UntilCancelled(&token),
            move || async move { flaky(calls, 10) },
        )
        .await;
        assert_eq!(got.expect("no error"), None);
    }
}
