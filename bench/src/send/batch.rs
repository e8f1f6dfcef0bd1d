//! Groups events into calls: gRPC batches of one tenant (the tenant comes from the key), and a
//! fixed share of single events sent as HTTP beacons.

use std::collections::VecDeque;

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
    /// Tenants with pending events, in the order their first pending event came; may also
    /// hold tenants whose batch has been sent since (skipped by `flush`).
    touched: Vec<usize>,
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
            touched: Vec::new(),
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
            self.touched.push(tenant);
        }
        bucket.push(event);
        if bucket.len() >= self.batch {
            let events = std::mem::take(bucket);
            self.ready.push_back(Job::Grpc { tenant, events });
        }
    }

    /// Turns every partial batch into a job.
    pub fn flush(&mut self) {
        for tenant in std::mem::take(&mut self.touched) {
            let events = std::mem::take(&mut self.pending[tenant]);
            if !events.is_empty() {
                self.ready.push_back(Job::Grpc { tenant, events });
            }
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
