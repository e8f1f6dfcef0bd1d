//! The aggregator's error type.

/// What went wrong in the aggregator, with the operation and its inputs.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// A backend (event log, rollup log, raw store, snapshot store) failed.
    #[error("{context}: {source}")]
    Backend {
        /// What the aggregator was doing, with its inputs.
        context: String,
        /// The backend's error.
        #[source]
        source: beacon_core::Error,
    },
    /// Stored bytes could not be decoded.
    #[error("decoding {what}: {source}")]
    Decode {
        /// What was being decoded, and where it came from.
        what: String,
        /// The decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// An event cannot be processed (unknown time zone, timestamp out of range).
    #[error("invalid event {event_id:?} of tenant {tenant_id:?}: {reason}")]
    InvalidEvent {
        /// The event's tenant.
        tenant_id: String,
        /// The event id.
        event_id: String,
        /// Why it cannot be processed.
        reason: String,
    },
    /// A snapshot is structurally inconsistent.
    #[error("corrupt snapshot of partition {partition}: {reason}")]
    CorruptSnapshot {
        /// The partition the snapshot belongs to.
        partition: u32,
        /// What is inconsistent.
        reason: String,
    },
    /// The configuration names something that does not exist.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Another writer appended to the partition's rollup log since this worker last did (a
    /// new owner of the partition, or a dead letter published again): the worker stops, and
    /// starts over from the snapshot and the log's new end if it still holds the lease.
    #[error("partition {partition} is fenced: {reason}")]
    Fenced {
        /// The partition.
        partition: u32,
        /// What the log said.
        reason: String,
    },
    /// A partition worker stopped abnormally.
    #[error("worker of partition {partition} failed: {reason}")]
    Worker {
        /// The partition.
        partition: u32,
        /// What happened.
        reason: String,
    },
}

impl From<beacon_core::Error> for AggregatorError {
    fn from(source: beacon_core::Error) -> Self {
        Self::backend("consuming the event log", source)
    }
}

impl AggregatorError {
    /// Wraps a backend error with a description of the failed operation.
    pub fn backend(context: impl Into<String>, source: beacon_core::Error) -> Self {
        Self::Backend {
            context: context.into(),
            source,
        }
    }

    /// Wraps a decode error with a description of what was decoded.
    pub fn decode(what: impl Into<String>, source: prost::DecodeError) -> Self {
        Self::Decode {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation() {
        let err = AggregatorError::backend(
            "loading snapshot aggregator-p3",
            beacon_core::Error::Unavailable("down".into()),
        );
        assert_eq!(
            err.to_string(),
            "loading snapshot aggregator-p3: unavailable: down"
        );
        let err = AggregatorError::InvalidEvent {
            tenant_id: "acme".into(),
            event_id: "e1".into(),
            reason: "bad zone".into(),
        };
        assert!(err.to_string().contains("\"e1\""));
    }
}
