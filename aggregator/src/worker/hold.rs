//! The hold: live events wait a moment before they are sessionized, so that a visitor's events
//! that arrive slightly out of order (a browser's beacon overtaking the batch that holds the
//! visitor's earlier event) are sessionized in time order, and their day is not recomputed.
//!
//! Invariant: what the hold releases, and when, depends on the event log alone. Its clock is
//! the latest `received_ms` of an event or `appended_ms` of a message read on the partition,
//! never the wall clock: an event is due once the clock is the hold past its `received_ms`, and
//! a due event is released with every held event of an earlier time, in time order, at most
//! [`RELEASE_PER_STEP`] at one position, so that rollups stay bounded. A replay of the same
//! messages after a restart releases the same events at the same positions. While no events
//! arrive, the worker appends a tick (a message without events, stamped with its clock, with a
//! release slot per few held events) so that the held ones are released all the same.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use beacon_core::time::now_ms;
use beacon_proto::pipeline::v1::{EventBatch, EventPosition, HeldEvent, LoggedEvent};
use bytes::Bytes;
use prost::Message;

use super::{Position, Worker};

/// How long the log clock stands still, with held events due by the wall clock, before the
/// worker appends a tick.
const QUIET: Duration = Duration::from_millis(500);
/// Most held events one position releases. By the row bounds of `rollup.rs`, the deltas of
/// one event take some 35 KiB at most (about 50 rows of 256-byte values: session and event
/// dimensions and 30 props, and its event-store row; an estimate, not a measurement), so a
/// step adds about 280 KiB at most to pending deltas published past 256 KiB, well below the
/// log's 1 MiB message limit.
pub const RELEASE_PER_STEP: usize = 8;
/// Most release slots of one tick.
const MAX_TICK_SLOTS: usize = 4096;

/// Where a held event sorts: its time, then its place in the log.
type Key = (i64, Position);

/// Events held back from sessionizing, by time and by arrival.
#[derive(Debug, Default)]
pub struct Hold {
    hold_ms: i64,
    clock_ms: i64,
    /// The events, encoded as the raw store keeps them (the same buffers).
    by_time: BTreeMap<Key, Bytes>,
    /// Each held event's due time and key, in arrival order (released ones stay until they
    /// reach the front).
    arrivals: VecDeque<(i64, Key)>,
}

impl Hold {
    /// A hold of `hold` (zero: events pass at once).
    pub fn new(hold: Duration) -> Self {
        Self {
            hold_ms: i64::try_from(hold.as_millis()).unwrap_or(i64::MAX),
            ..Self::default()
        }
    }

    /// Whether events pass at once.
    pub fn is_off(&self) -> bool {
        self.hold_ms == 0
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// The log clock, Unix milliseconds.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// Holds an event read at `position` (its time, when ingest received it, and its
    /// encoding), and moves the clock to `received_ms`.
    pub fn push(&mut self, position: Position, (ts, received_ms): (i64, i64), event: Bytes) {
        let key = (ts, position);
        self.arrivals
            .push_back((received_ms.saturating_add(self.hold_ms), key));
        self.by_time.insert(key, event);
        self.advance(received_ms);
    }

    /// Moves the clock to `ms` if that is later.
    pub fn advance(&mut self, ms: i64) {
        self.clock_ms = self.clock_ms.max(ms);
    }

    /// Takes at most `most` held events, earliest first, while the earliest-arrived one still
    /// held is due: a due event goes with every held event of an earlier time, in time order.
    pub fn release(&mut self, most: usize) -> Vec<(Position, Bytes)> {
        let mut released = Vec::new();
        while released.len() < most {
            let Some(&(due_ms, key)) = self.arrivals.front() else {
                break;
            };
            if due_ms > self.clock_ms {
                break;
            }
            if !self.by_time.contains_key(&key) {
                self.arrivals.pop_front();
                continue;
            }
            // At or before the due one.
            let Some(((_, at), event)) = self.by_time.pop_first() else {
                break;
            };
            released.push((at, event));
        }
        released
    }

    /// Drops the held events `deleted` selects; returns how many.
    pub fn drop_where(&mut self, mut deleted: impl FnMut(&LoggedEvent) -> bool) -> usize {
        let before = self.by_time.len();
        self.by_time
            .retain(|_, event| LoggedEvent::decode(event.clone()).map_or(true, |e| !deleted(&e)));
        before - self.by_time.len()
    }

    /// When the earliest held event is due by the log clock, Unix milliseconds.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.arrivals
            .iter()
            .find(|(_, key)| self.by_time.contains_key(key))
            .map(|&(due_ms, _)| due_ms)
    }

    /// The positions of `tenant`'s held events.
    pub fn positions_of(&self, tenant: &str) -> Vec<EventPosition> {
        self.by_time
            .iter()
            .filter(|(_, event)| {
                LoggedEvent::decode((*event).clone()).is_ok_and(|e| e.tenant_id == tenant)
            })
            .map(|((_, at), _)| EventPosition {
                seq: at.seq,
                index: at.index,
            })
            .collect()
    }

    /// The held events as a snapshot holds them, in time order.
    pub fn to_proto(&self) -> Vec<HeldEvent> {
        self.by_time
            .iter()
            .map(|((_, at), event)| HeldEvent {
                event: event.clone(),
                position: Some(EventPosition {
                    seq: at.seq,
                    index: at.index,
                }),
            })
            .collect()
    }

    /// The hold of a snapshot: its held events (in arrival order again) and its clock.
    pub fn restore(&mut self, held: Vec<HeldEvent>, clock_ms: i64) {
        let mut held: Vec<(Position, (i64, i64), Bytes)> = held
            .into_iter()
            .filter_map(|held| {
                let at = held.position?;
                let at = Position {
                    seq: at.seq,
                    index: at.index,
                };
                let event = LoggedEvent::decode(held.event.clone()).ok()?;
                Some((at, (event.timestamp_ms, event.received_ms), held.event))
            })
            .collect();
        held.sort_by_key(|(at, _, _)| *at);
        for (at, times, event) in held {
            self.push(at, times, event);
        }
        self.advance(clock_ms);
    }
}

impl Worker {
    /// Drops the held events when the operator moved the worker to another log: whether the
    /// old log released them into rollups after the snapshot they came from is written in
    /// messages that are gone, so they are treated as the rest of the old log past what was
    /// consumed. They stay in the raw store: reprocessing their dates counts them.
    pub(super) fn drop_held_of_old_log(&mut self) {
        let mut dates = std::collections::BTreeSet::new();
        let dropped = self.hold.drop_where(|event| {
            let date = crate::restate::local_date_of(event).map(|date| date.to_string());
            dates.insert((event.tenant_id.clone(), date.unwrap_or_default()));
            true
        });
        if dropped > 0 {
            tracing::warn!(
                partition = self.lane.partition(),
                dropped,
                dates = ?dates,
                "events held back when the log was accepted anew are not counted: they may have \
                 been counted before; reprocess their tenants' dates to be sure"
            );
        }
    }

    /// Appends a tick to the partition's event log when events are held, due by the wall
    /// clock, and the log clock stood still for [`QUIET`]: no event is arriving that would
    /// release them. Reading the tick releases them, at the same place in every replay.
    pub(super) async fn tick_if_quiet(&mut self) {
        let clock_ms = self.hold.clock_ms();
        let since = match self.quiet {
            Some((seen, since)) if seen == clock_ms => since,
            _ => {
                self.quiet = Some((clock_ms, Instant::now()));
                return;
            }
        };
        let now = now_ms();
        let due = self.hold.next_due_ms().is_some_and(|due_ms| due_ms <= now);
        if !due || since.elapsed() < QUIET {
            return;
        }
        // The next tick waits as long again.
        self.quiet = Some((clock_ms, Instant::now()));
        let partition = self.lane.partition();
        let slots = self
            .hold
            .len()
            .div_ceil(RELEASE_PER_STEP)
            .min(MAX_TICK_SLOTS);
        let tick = EventBatch {
            events: Vec::new(),
            appended_ms: now,
            releases: u32::try_from(slots).unwrap_or(u32::MAX),
        };
        let msg_id = format!("tick-{partition}-{clock_ms}-{now}");
        let events = &self.backends.events;
        match events
            .append(partition, &msg_id, tick.encode_to_vec().into())
            .await
        {
            Ok(seq) => tracing::debug!(partition, seq, held = self.hold.len(), "tick appended"),
            Err(err) => {
                tracing::warn!(partition, error = %err, "appending a tick failed; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, ts: i64, received_ms: i64) -> LoggedEvent {
        LoggedEvent {
            tenant_id: tenant.into(),
            event_id: format!("{tenant}-{ts}-{received_ms}"),
            timestamp_ms: ts,
            received_ms,
            ..LoggedEvent::default()
        }
    }

    fn at(seq: u64, index: u32) -> Position {
        Position { seq, index }
    }

    fn push(hold: &mut Hold, at: Position, event: LoggedEvent) {
        let times = (event.timestamp_ms, event.received_ms);
        hold.push(at, times, Bytes::from(event.encode_to_vec()));
    }

    fn times(released: &[(Position, Bytes)]) -> Vec<i64> {
        released
            .iter()
            .map(|(_, e)| LoggedEvent::decode(e.clone()).expect("decode").timestamp_ms)
            .collect()
    }

    #[test]
    fn an_event_that_overtook_an_earlier_one_waits_for_it() {
        let mut hold = Hold::new(Duration::from_secs(2));
        // The beacon (time 200) arrives first, the batch with the earlier event a second later.
        push(&mut hold, at(1, 0), event("t", 200, 10_000));
        assert!(hold.release(usize::MAX).is_empty());
        push(&mut hold, at(2, 0), event("t", 100, 11_000));
        assert!(hold.release(usize::MAX).is_empty());
        hold.advance(11_999);
        assert!(hold.release(usize::MAX).is_empty());
        hold.advance(12_000);
        assert_eq!(times(&hold.release(usize::MAX)), [100, 200]);
        assert_eq!(hold.len(), 0);
        assert_eq!(hold.next_due_ms(), None);
    }

    #[test]
    fn a_stream_of_earlier_events_delays_nothing_past_its_hold() {
        let mut hold = Hold::new(Duration::from_secs(2));
        push(&mut hold, at(1, 0), event("t", 1_000_000, 0));
        // Every 100 ms an event of an earlier time (an import, say) arrives.
        let mut released = Vec::new();
        for i in 1..=40 {
            push(
                &mut hold,
                at(1 + i, 0),
                event("u", 1_000 - i as i64, i as i64 * 100),
            );
            released.extend(hold.release(RELEASE_PER_STEP));
            // Due at 2,000 with the 20 earlier events held by then: three steps release them.
            if i * 100 >= 2_200 {
                assert!(
                    times(&released).contains(&1_000_000),
                    "held past its due time at {}",
                    i * 100
                );
            }
        }
        hold.advance(10_000);
        while !hold.release(RELEASE_PER_STEP).is_empty() {}
        assert_eq!(hold.len(), 0);
    }

    #[test]
    fn a_restored_hold_releases_what_the_original_releases() {
        let mut original = Hold::new(Duration::from_secs(2));
        push(&mut original, at(1, 0), event("t", 500, 1_000));
        push(&mut original, at(1, 1), event("t", 400, 1_000));
        push(&mut original, at(2, 0), event("u", 300, 1_500));
        let mut restored = Hold::new(Duration::from_secs(2));
        restored.restore(original.to_proto(), original.clock_ms());
        assert_eq!(restored.positions_of("t"), original.positions_of("t"));
        for hold in [&mut original, &mut restored] {
            push(hold, at(3, 0), event("u", 600, 3_000));
        }
        let (a, b) = (original.release(usize::MAX), restored.release(usize::MAX));
        assert_eq!(times(&a), [300, 400, 500]);
        assert_eq!(a, b);
        original.advance(5_000);
        assert_eq!(times(&original.release(usize::MAX)), [600]);
    }

    #[test]
    fn a_step_releases_a_bounded_number_of_events_earliest_first() {
        let mut hold = Hold::new(Duration::from_secs(2));
        for i in 0..20 {
            push(&mut hold, at(1, i), event("t", 1_000 - i64::from(i), 0));
        }
        hold.advance(2_000);
        let steps: Vec<Vec<i64>> = (0..4).map(|_| times(&hold.release(8))).collect();
        assert_eq!(steps[0], (981..=988).collect::<Vec<_>>());
        assert_eq!(steps[1], (989..=996).collect::<Vec<_>>());
        assert_eq!(steps[2], [997, 998, 999, 1_000]);
        assert!(steps[3].is_empty());
    }

    #[test]
    fn no_hold_releases_each_event_as_it_comes() {
        let mut hold = Hold::new(Duration::ZERO);
        assert!(hold.is_off());
        push(&mut hold, at(1, 0), event("t", 500, 1_000));
        assert_eq!(times(&hold.release(usize::MAX)), [500]);
    }
}
