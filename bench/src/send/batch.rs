//! Groups events into calls: gRPC batches of one tenant (the tenant comes from the key), and a
//! fixed share of single events sent as HTTP beacons.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use beacon_proto::ingest::v1::Event;

/// Most events the ingest service takes in one call.
pub const MAX_BATCH: usize = 1000;

/// One call to make.
#[derive(Debug)]
pub enum Job {
    /// A `SendEvents` call with events of one tenant.
    Grpc {
        /// Tenant index.
        tenant: usize,
        /// The events, 1 to the batch size.
        events: Vec<Event>,
    },
    /// An HTTP beacon.
    Http {
        /// Tenant index.
        tenant: usize,
        /// The event.
        event: Box<Event>,
    },
}

impl Job {
    /// Number of events.
    pub fn events(&self) -> usize {
        match self {
            Self::Grpc { events, .. } => events.len(),
            Self::Http { .. } => 1,
        }
    }
}

/// Collects events per tenant and hands out jobs in the order they fill up.
#[derive(Debug)]
pub struct Batcher {
    batch: usize,
    http_share: f64,
    http_credit: f64,
    pending: Vec<Vec<Event>>,
    /// When each tenant's first pending event came.
    since: Vec<Option<Instant>>,
    /// Tenants with pending events and when their first pending event came, oldest first; may
    /// also hold batches sent since (their time no longer matches `since`).
    touched: VecDeque<(usize, Instant)>,
    ready: VecDeque<Job>,
}

impl Batcher {
    /// A batcher for `tenants` tenants, `batch` events per gRPC call (clamped to 1..=1000)
    /// and `http_share` of the events (clamped to 0..=1) as beacons.
    pub fn new(tenants: usize, batch: usize, http_share: f64) -> Self {
        let http_share = if http_share.is_finite() {
            http_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            batch: batch.clamp(1, MAX_BATCH),
            http_share,
            http_credit: 0.0,
            pending: (0..tenants).map(|_| Vec::new()).collect(),
            since: vec![None; tenants],
            touched: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Adds an event of `tenant`. Callers check that `tenant` is below the tenant count; an
    /// event of another tenant would have no key to be sent with and is dropped.
    pub fn push(&mut self, tenant: usize, event: Event) {
        self.http_credit += self.http_share;
        if self.http_credit >= 1.0 {
            self.http_credit -= 1.0;
            self.ready.push_back(Job::Http {
                tenant,
                event: Box::new(event),
            });
            return;
        }
        let Some(bucket) = self.pending.get_mut(tenant) else {
            return;
        };
        if bucket.is_empty() {
            bucket.reserve(self.batch);
            let now = Instant::now();
            self.since[tenant] = Some(now);
            self.touched.push_back((tenant, now));
        }
        bucket.push(event);
        if bucket.len() >= self.batch {
            self.send(tenant);
        }
    }

    /// Turns every partial batch into a job.
    pub fn flush(&mut self) {
        self.flush_older(Duration::ZERO);
    }

    /// Turns every partial batch whose first event came at least `age` ago into a job, the way a
    /// client SDK sends what it buffered every so often even when no batch filled.
    pub fn flush_older(&mut self, age: Duration) {
        let now = Instant::now();
        while let Some(&(tenant, since)) = self.touched.front() {
            if now.saturating_duration_since(since) < age {
                break;
            }
            self.touched.pop_front();
            if self.since[tenant] == Some(since) {
                self.send(tenant);
            }
        }
    }

    /// Makes `tenant`'s pending events a job.
    fn send(&mut self, tenant: usize) {
        self.since[tenant] = None;
        let events = std::mem::take(&mut self.pending[tenant]);
        if !events.is_empty() {
            self.ready.push_back(Job::Grpc { tenant, events });
        }
    }

    /// The next job, if one is ready.
    pub fn pop(&mut self) -> Option<Job> {
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event {
            id: n.to_string(),
            ..Default::default()
        }
    }

    fn drain(batcher: &mut Batcher) -> Vec<Job> {
        std::iter::from_fn(|| batcher.pop()).collect()
    }

    #[test]
    fn batches_hold_one_tenant_and_keep_order() {
        let mut b = Batcher::new(3, 2, 0.0);
        for n in 0..7 {
            b.push(n % 2, event(n));
        }
        let full = drain(&mut b);
        assert_eq!(full.len(), 3);
        b.flush();
        let jobs: Vec<Job> = full.into_iter().chain(drain(&mut b)).collect();
        let mut seen = Vec::new();
        for job in jobs {
            let Job::Grpc { tenant, events } = job else {
                panic!("no beacons were asked for");
            };
            assert!(events.len() <= 2);
            for e in events {
                let n: usize = e.id.parse().unwrap_or(usize::MAX);
                assert_eq!(n % 2, tenant);
                seen.push(n);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn only_batches_older_than_the_age_are_flushed() {
        let mut b = Batcher::new(3, 2, 0.0);
        b.push(0, event(0));
        b.push(0, event(1));
        b.push(0, event(2));
        std::thread::sleep(Duration::from_millis(300));
        b.push(1, event(3));
        // Tenant 1's batch is younger unless this thread stalls for a quarter of a second.
        b.flush_older(Duration::from_millis(250));
        let sizes: Vec<(usize, usize)> = drain(&mut b)
            .into_iter()
            .map(|job| match job {
                Job::Grpc { tenant, events } => (tenant, events.len()),
                Job::Http { tenant, .. } => (tenant, 0),
            })
            .collect();
        assert_eq!(sizes, [(0, 2), (0, 1)], "tenant 1's batch is too young");
        b.flush_older(Duration::from_secs(60));
        assert!(b.pop().is_none());
        b.flush();
        assert_eq!(b.pop().map(|job| job.events()), Some(1));
    }

    #[test]
    fn the_http_share_is_exact() {
        let mut b = Batcher::new(1, 1000, 0.25);
        for n in 0..1000 {
            b.push(0, event(n));
        }
        b.flush();
        let jobs = drain(&mut b);
        let beacons = jobs
            .iter()
            .filter(|j| matches!(j, Job::Http { .. }))
            .count();
        assert_eq!(beacons, 250);
        assert_eq!(jobs.iter().map(Job::events).sum::<usize>(), 1000);
    }
}
