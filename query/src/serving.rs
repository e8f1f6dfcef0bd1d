//! Which partitions this replica answers for: those it holds, once its shard has caught up with
//! the partition's rollup log to within the stated lag, and never while shutting down or while
//! the partition's log is refused (a gap or a regression). Reads of any other partition's
//! tenants are `UNAVAILABLE`, never zeros, and gateways learn the state through
//! `beacon.pipeline.v1.ReplicaService` to route around it.

use std::sync::Arc;
use std::time::Duration;

use beacon_core::observe::{self, Lag};
use beacon_core::partition::partition_of;
use beacon_proto::pipeline::v1::replica_service_server::ReplicaService;
use beacon_proto::pipeline::v1::{GetServingRequest, GetServingResponse, PartitionServing};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::QueryError;

/// The role name of the query lanes in the process's health.
const ROLE: &str = "query";

/// This replica's serving state.
#[derive(Clone)]
pub struct Serving {
    inner: Arc<Inner>,
}

struct Inner {
    replica: String,
    partitions: u32,
    held: Vec<u32>,
    max_lag: Duration,
    shutdown: CancellationToken,
}

impl Serving {
    /// Replica `replica` holds `held` of `partitions` partitions and serves each while it is at
    /// most `max_lag` behind, until `shutdown`.
    pub fn new(
        replica: &str,
        partitions: u32,
        held: Vec<u32>,
        max_lag: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let mut held = held;
        held.sort_unstable();
        held.dedup();
        Self {
            inner: Arc::new(Inner {
                replica: replica.to_owned(),
                partitions,
                held,
                max_lag,
                shutdown,
            }),
        }
    }

    /// Whether reads of `tenant_id` are answered here: `Unavailable` saying why when not.
    pub fn check(&self, tenant_id: &str) -> Result<(), QueryError> {
        let partition = partition_of(tenant_id, self.inner.partitions);
        match self.state(partition).1 {
            None => Ok(()),
            Some(reason) => Err(QueryError::Core(beacon_core::Error::Unavailable(format!(
                "replica {:?} does not serve partition {partition} now: {reason}; \
                 another replica may",
                self.inner.replica
            )))),
        }
    }

    /// The lag of `partition`'s lane, when it runs, and why the partition is not served, or
    /// `None` when it is.
    fn state(&self, partition: u32) -> (Option<Lag>, Option<String>) {
        let inner = &self.inner;
        let lag = observe::health().lane_lag(ROLE, partition);
        let refusal = if inner.shutdown.is_cancelled() {
            Some("it is shutting down".to_owned())
        } else if inner.held.binary_search(&partition).is_err() {
            Some("it does not hold the partition".to_owned())
        } else if let Some(error) = observe::health().fault_of(&observe::lane_name(ROLE, partition))
        {
            Some(error)
        } else {
            lag.as_ref().and_then(|lag| self.behind(lag)).or_else(|| {
                lag.is_none()
                    .then(|| "its consumer has not started".to_owned())
            })
        };
        (lag, refusal)
    }

    /// Why a lane with `lag` is too far behind to serve, or `None`.
    fn behind(&self, lag: &Lag) -> Option<String> {
        let max = self.inner.max_lag.as_secs_f64();
        if !lag.caught_up {
            return Some(format!(
                "it has not caught up with the rollup log since it started ({} sequences behind)",
                lag.messages
            ));
        }
        (lag.seconds > max).then(|| {
            format!(
                "it is {:.1} s behind the rollup log ({} sequences), more than {max:.1} s",
                lag.seconds, lag.messages
            )
        })
    }

    /// The state of every held partition.
    pub fn report(&self) -> GetServingResponse {
        let inner = &self.inner;
        let partitions = inner
            .held
            .iter()
            .map(|&partition| {
                let (lag, reason) = self.state(partition);
                PartitionServing {
                    partition,
                    serving: reason.is_none(),
                    lag_seconds: lag.map_or(0.0, |lag| lag.seconds),
                    reason: reason.unwrap_or_default(),
                }
            })
            .collect();
        GetServingResponse {
            replica: inner.replica.clone(),
            partition_count: inner.partitions,
            partitions,
            max_lag_seconds: inner.max_lag.as_secs_f64(),
        }
    }
}

#[tonic::async_trait]
impl ReplicaService for Serving {
    async fn get_serving(
        &self,
        _request: Request<GetServingRequest>,
    ) -> Result<Response<GetServingResponse>, Status> {
        Ok(Response::new(self.report()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_of(partition: u32, partitions: u32) -> String {
        (0..)
            .map(|i| format!("t{i}"))
            .find(|t| partition_of(t, partitions) == partition)
            .expect("a tenant")
    }

    #[test]
    fn serves_held_caught_up_partitions_only() {
        let shutdown = CancellationToken::new();
        // Partitions no other test of this process uses: the health is process-wide.
        let serving = Serving::new(
            "r1",
            64,
            vec![42, 41],
            Duration::from_secs(5),
            shutdown.clone(),
        );
        let (one, three) = (tenant_of(41, 64), tenant_of(43, 64));
        let err = serving.check(&three).expect_err("not held");
        assert!(err.to_string().contains("does not hold"), "{err}");
        let err = serving.check(&one).expect_err("no consumer yet");
        assert!(err.to_string().contains("has not started"), "{err}");

        let lane = observe::health().lane(ROLE, 41);
        let err = serving.check(&one).expect_err("lag unknown");
        assert!(err.to_string().contains("not caught up"), "{err}");
        lane.handled(5);
        lane.log_end(7);
        let err = serving.check(&one).expect_err("behind since its start");
        assert!(err.to_string().contains("2 sequences behind"), "{err}");
        lane.handled(7);
        serving.check(&one).expect("caught up");
        let report = serving.report();
        assert_eq!(report.partitions.len(), 2);
        assert!(report.partitions[0].serving, "{report:?}");
        assert!(!report.partitions[1].serving, "{report:?}");

        observe::health().fault(&observe::lane_name(ROLE, 41), "the log went backwards");
        let err = serving.check(&one).expect_err("refused log");
        assert!(err.to_string().contains("went backwards"), "{err}");
        observe::health().clear(&observe::lane_name(ROLE, 41));
        serving.check(&one).expect("served again");

        shutdown.cancel();
        let err = serving.check(&one).expect_err("shutting down");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    }
}
