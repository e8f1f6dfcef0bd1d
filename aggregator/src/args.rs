//! Command-line flags of the aggregator role.

use std::time::Duration;

use crate::AggregatorError;

/// Aggregator flags (clap, each with an env fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct AggregatorArgs {
    /// How often pending rollups are published ("1s"; at least a millisecond).
    #[arg(
        long = "flush-interval",
        env = "BEACON_FLUSH_INTERVAL",
        default_value = "1s",
        value_parser = beacon_core::time::parse_duration
    )]
    pub flush_interval: Duration,
    /// How often the partition state is snapshotted ("30s").
    #[arg(
        long = "snapshot-interval",
        env = "BEACON_SNAPSHOT_INTERVAL",
        default_value = "30s",
        value_parser = beacon_core::time::parse_duration
    )]
    pub snapshot_interval: Duration,
    /// Partitions this instance processes (comma-separated); all when empty.
    #[arg(
        id = "aggregator_partitions",
        long = "aggregator-partitions",
        env = "BEACON_AGGREGATOR_PARTITIONS",
        value_delimiter = ','
    )]
    pub own_partitions: Vec<u32>,
    /// The processing logic to apply: the current one, or an older one (2) to reproduce what
    /// it computed.
    #[arg(
        long = "logic-version",
        env = "BEACON_LOGIC_VERSION",
        default_value_t = crate::LOGIC_VERSION,
        value_parser = clap::value_parser!(u32).range(i64::from(crate::OLDEST_LOGIC_VERSION)..=i64::from(crate::LOGIC_VERSION))
    )]
    pub logic_version: u32,
    /// Most raw events a restatement job replays per flush interval, which bounds how much it
    /// holds up live events of its partition (it also stops after 400 ms).
    #[arg(
        long = "restate-events-per-tick",
        env = "BEACON_RESTATE_EVENTS_PER_TICK",
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub restate_events_per_tick: u64,
    /// How often raw events older than their tenant's retention are deleted ("10m").
    #[arg(
        long = "retention-every",
        env = "BEACON_RETENTION_EVERY",
        default_value = "10m",
        value_parser = beacon_core::time::parse_duration
    )]
    pub retention_every: Duration,
    /// How long live events wait before they are sessionized ("2s"; "0s": not at all), by the
    /// partition's log clock: a visitor's events arriving out of order within it are
    /// sessionized in time order instead of having their day recomputed. Counts show up that
    /// much later.
    #[arg(
        long = "hold",
        env = "BEACON_HOLD",
        default_value = "2s",
        value_parser = parse_hold
    )]
    pub hold: Duration,
}

/// Longest `--hold`: held events are kept in memory and in every snapshot.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// Parses `--hold`, refusing more than [`MAX_HOLD`].
fn parse_hold(text: &str) -> Result<Duration, String> {
    let hold = beacon_core::time::parse_duration(text)?;
    if hold > MAX_HOLD {
        return Err(format!(
            "{text:?} is longer than the longest hold, {}s: held events are kept in memory",
            MAX_HOLD.as_secs()
        ));
    }
    Ok(hold)
}

impl AggregatorArgs {
    /// The flush interval, at least one millisecond.
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval.max(Duration::from_millis(1))
    }

    /// The partitions to process, sorted and deduplicated: every partition when none are named.
    pub fn partitions(&self, partitions: u32) -> Result<Vec<u32>, AggregatorError> {
        if self.own_partitions.is_empty() {
            return Ok((0..partitions).collect());
        }
        let mut own = self.own_partitions.clone();
        own.sort_unstable();
        own.dedup();
        match own.iter().find(|&&p| p >= partitions) {
            Some(bad) => Err(AggregatorError::Config(format!(
                "--aggregator-partitions names partition {bad}, but the deployment has {partitions} partitions (0 to {})",
                partitions.saturating_sub(1)
            ))),
            None => Ok(own),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(own: Vec<u32>) -> AggregatorArgs {
        AggregatorArgs {
            flush_interval: Duration::ZERO,
            snapshot_interval: Duration::from_secs(30),
            own_partitions: own,
            logic_version: crate::LOGIC_VERSION,
            restate_events_per_tick: 1_000_000,
            retention_every: Duration::from_secs(600),
            hold: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_hold_longer_than_a_minute_is_refused() {
        assert_eq!(parse_hold("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_hold("0s"), Ok(Duration::ZERO));
        let err = parse_hold("2m").expect_err("too long");
        assert!(err.contains("60s"), "{err}");
    }

    #[test]
    fn empty_means_all() {
        assert_eq!(
            args(vec![]).partitions(3).expect("partitions"),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn named_partitions_are_sorted_and_deduplicated() {
        assert_eq!(
            args(vec![2, 0, 2]).partitions(4).expect("partitions"),
            vec![0, 2]
        );
    }

    #[test]
    fn out_of_range_is_rejected() {
        let err = args(vec![1, 8]).partitions(8).expect_err("out of range");
        assert!(err.to_string().contains("partition 8"), "{err}");
    }

    #[test]
    fn intervals_are_durations_with_their_unit() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: AggregatorArgs,
        }
        let parse = |flags: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(["beacon"].iter().chain(flags)).map(|c| c.args)
        };
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(defaults.flush_interval(), Duration::from_secs(1));
        assert_eq!(defaults.snapshot_interval, Duration::from_secs(30));
        let set = parse(&["--flush-interval", "250ms", "--snapshot-interval", "2m"]).expect("set");
        assert_eq!(set.flush_interval(), Duration::from_millis(250));
        assert_eq!(set.snapshot_interval, Duration::from_secs(120));
        let err = parse(&["--flush-interval", "1000"]).expect_err("no unit");
        assert!(err.to_string().contains("--flush-interval"), "{err}");
    }

    #[test]
    fn zero_flush_interval_is_clamped() {
        assert_eq!(args(vec![]).flush_interval(), Duration::from_millis(1));
    }
}
