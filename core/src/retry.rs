//! Exponential backoff between attempts at a backend call, interruptible by shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Pauses that double after each failure, from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    delay: Duration,
}

impl Backoff {
    /// A backoff starting at `first` and never pausing longer than `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            delay: first,
        }
    }

    /// Starts over at the shortest pause (after a success).
    pub fn reset(&mut self) {
        self.delay = self.first;
    }

    /// Sleeps for the current pause, then doubles it. False when `token` is cancelled first.
    pub async fn sleep(&mut self, token: Option<&CancellationToken>) -> bool {
        let delay = self.delay;
        self.delay = (delay * 2).min(self.max);
        match token {
            Some(token) => tokio::select! {
                () = token.cancelled() => false,
                () = tokio::time::sleep(delay) => true,
            },
            None => {
                tokio::time::sleep(delay).await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(30));
        for expected in [10, 20, 30, 30] {
            let started = tokio::time::Instant::now();
            assert!(backoff.sleep(None).await);
            assert!(started.elapsed() >= ms(expected), "{expected} ms");
        }
        assert_eq!(backoff.delay, ms(30));
        backoff.reset();
        assert_eq!(backoff.delay, ms(10));
    }

    #[tokio::test]
    async fn cancellation_interrupts_the_pause() {
        let token = CancellationToken::new();
        token.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!backoff.sleep(Some(&token)).await);
    }
}
