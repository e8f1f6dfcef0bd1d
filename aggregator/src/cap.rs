//! Bounds on dimension values, so that no sender can grow rollups, shards or reads without
//! limit: a length cap on every value, and a cap on the distinct values one
//! (tenant, local day, dimension) counts under their own name.
//!
//! Invariant: admission is part of the processor's state (snapshotted, replayed), so the same
//! events in the same order always fold the same values into [`OTHER`].

use std::collections::HashMap;

use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap as FastMap, HashSet};

use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::AdmittedValues;
use jiff::Timestamp;

/// Longest dimension value, bytes; longer ones are cut at a character boundary and end in "…".
pub const MAX_VALUE_BYTES: usize = 256;
/// Distinct values one (tenant, local day, dimension) keeps under their own name.
pub const MAX_VALUES_PER_DAY: usize = 1_000;
/// The value later new values of a full (tenant, day, dimension) count under.
pub const OTHER: &str = "(other)";
/// Admission records are kept this long behind the tenant's newest event (late events are
/// accepted up to 72 hours, and local days differ from UTC ones by up to 14 hours).
const KEEP_MS: i64 = 4 * 24 * 3600 * 1000;
const ELLIPSIS: &str = "…";

/// `value`, cut to at most [`MAX_VALUE_BYTES`] bytes.
pub fn cap_length(mut value: String) -> String {
    if value.len() <= MAX_VALUE_BYTES {
        return value;
    }
    let mut end = MAX_VALUE_BYTES - ELLIPSIS.len();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
    value.push_str(ELLIPSIS);
    value
}

/// Whether a dimension's values are chosen by senders (and so need the cardinality cap).
pub fn is_open_ended(dim: Dimension) -> bool {
    matches!(
        dim,
        Dimension::Page
            | Dimension::EntryPage
            | Dimension::Source
            | Dimension::UtmSource
            | Dimension::UtmMedium
            | Dimension::UtmCampaign
            | Dimension::UtmTerm
            | Dimension::UtmContent
            | Dimension::EventName
            | Dimension::Hostname
            | Dimension::Referrer
            | Dimension::City
            | Dimension::Property
    )
}

/// The values admitted so far, by tenant, local date and dimension (as value hashes).
#[derive(Debug, Default)]
pub struct Admitted {
    tenants: FastMap<String, FastMap<String, FastMap<i32, HashSet<u64>>>>,
}

impl Admitted {
    /// `value` if it keeps its own name on `date`, else [`OTHER`]. Admits it while there is room.
    pub fn admit<'v>(
        &mut self,
        tenant: &str,
        date: &str,
        dim: Dimension,
        value: &'v str,
    ) -> &'v str {
        if !is_open_ended(dim) {
            return value;
        }
        let days = match self.tenants.entry_ref(tenant) {
            EntryRef::Occupied(occupied) => occupied.into_mut(),
            EntryRef::Vacant(vacant) => vacant.insert(FastMap::default()),
        };
        let dims = match days.entry_ref(date) {
            EntryRef::Occupied(occupied) => occupied.into_mut(),
            EntryRef::Vacant(vacant) => vacant.insert(FastMap::default()),
        };
        let values = dims.entry(dim as i32).or_default();
        let hash = value_hash(value);
        if values.contains(&hash) {
            value
        } else if values.len() < MAX_VALUES_PER_DAY {
            values.insert(hash);
            value
        } else {
            OTHER
        }
    }

    /// Forgets the days of a tenant that lie more than four days behind its newest event.
    pub fn prune(&mut self, watermarks: &HashMap<String, i64>) {
        self.tenants.retain(|tenant, days| {
            let Some(&newest) = watermarks.get(tenant) else {
                return true;
            };
            let Ok(cutoff) = Timestamp::from_millisecond(newest.saturating_sub(KEEP_MS)) else {
                return true;
            };
            let cutoff = cutoff.strftime("%Y-%m-%d").to_string();
            days.retain(|date, _| date.as_str() >= cutoff.as_str());
            !days.is_empty()
        });
    }

    /// The records, in a deterministic order.
    pub fn to_proto(&self) -> Vec<AdmittedValues> {
        let mut out = Vec::new();
        for (tenant, days) in &self.tenants {
            for (date, dims) in days {
                for (&dimension, values) in dims {
                    let mut value_hashes: Vec<u64> = values.iter().copied().collect();
                    value_hashes.sort_unstable();
                    out.push(AdmittedValues {
                        tenant_id: tenant.clone(),
                        local_date: date.clone(),
                        dimension,
                        value_hashes,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.tenant_id, &a.local_date, a.dimension).cmp(&(
                &b.tenant_id,
                &b.local_date,
                b.dimension,
            ))
        });
        out
    }

    /// The records of a snapshot.
    pub fn from_proto(records: Vec<AdmittedValues>) -> Self {
        let mut admitted = Self::default();
        for record in records {
            admitted
                .tenants
                .entry(record.tenant_id)
                .or_default()
                .entry(record.local_date)
                .or_default()
                .entry(record.dimension)
                .or_default()
                .extend(record.value_hashes);
        }
        admitted
    }
}

/// The first 8 bytes of the value's BLAKE3 hash: stable across processes and versions.
fn value_hash(value: &str) -> u64 {
    let hash = blake3::hash(value.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        assert_eq!(cap_length("short".into()), "short");
        let long = "é".repeat(300);
        let cut = cap_length(long);
        assert!(cut.len() <= MAX_VALUE_BYTES, "{}", cut.len());
        assert!(cut.ends_with(ELLIPSIS));
        assert!(cut.starts_with("éé"));
        let exact = "a".repeat(MAX_VALUE_BYTES);
        assert_eq!(cap_length(exact.clone()), exact);
    }

    #[test]
    fn new_values_beyond_the_cap_count_as_other() {
        let mut admitted = Admitted::default();
        let values: Vec<String> = (0..MAX_VALUES_PER_DAY + 5)
            .map(|n| format!("/p{n}"))
            .collect();
        for value in &values {
            admitted.admit("a", "2026-03-01", Dimension::Page, value);
        }
        assert_eq!(
            admitted.admit("a", "2026-03-01", Dimension::Page, "/p0"),
            "/p0"
        );
        assert_eq!(
            admitted.admit("a", "2026-03-01", Dimension::Page, "/new"),
            OTHER
        );
        assert_eq!(
            admitted.admit("a", "2026-03-02", Dimension::Page, "/new"),
            "/new"
        );
        assert_eq!(
            admitted.admit("b", "2026-03-01", Dimension::Page, "/new"),
            "/new"
        );
        assert_eq!(
            admitted.admit("a", "2026-03-01", Dimension::Country, "ZZ"),
            "ZZ"
        );
        let restored = Admitted::from_proto(admitted.to_proto());
        assert_eq!(restored.to_proto(), admitted.to_proto());
    }

    #[test]
    fn old_days_are_forgotten() {
        let mut admitted = Admitted::default();
        admitted.admit("a", "2026-03-01", Dimension::Page, "/");
        admitted.admit("a", "2026-03-05", Dimension::Page, "/");
        // 2026-03-06T00:00:00Z
        let watermarks = HashMap::from([("a".to_owned(), 1_772_755_200_000)]);
        admitted.prune(&watermarks);
        let days: Vec<String> = admitted
            .to_proto()
            .into_iter()
            .map(|r| r.local_date)
            .collect();
        assert_eq!(days, ["2026-03-05"]);
    }
}
