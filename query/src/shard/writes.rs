//! The writes of a shard, numbered, and which tenants' rows (and from which day on) each may
//! have changed: what kept answers and kept sums of settled days are checked against.

use std::collections::{BTreeMap, HashMap};

/// Whose rows a write may change.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Touched<'a> {
    /// Any tenant's, any day's.
    All,
    /// No sums: the write only adds up rows of equal keys (a fold), and every read gives the
    /// same counters before and after it (visitor estimates above the sketches' exact range
    /// may move within their error, as merged in another order).
    NoSums,
    /// These tenants' only, each from a local day on ([`Written`]).
    Tenants(&'a [Written<'a>]),
}

/// A tenant whose rows a write may change, and the first local day (days since 1970-01-01)
/// of the rows it may change: [`Written::ANY_DAY`] when any, [`Written::NO_DAY`] when only
/// rows of no day (the realtime minutes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The first local day whose rows may change.
    pub from_day: i32,
}

impl<'a> Written<'a> {
    /// The first day of a write that may change rows of any day.
    pub(crate) const ANY_DAY: i32 = i32::MIN;
    /// The first day of a write that changes rows of no day.
    pub(crate) const NO_DAY: i32 = i32::MAX;

    /// A write of any of `tenant`'s rows.
    pub(crate) fn any_day(tenant: &'a str) -> Self {
        Self {
            tenant,
            from_day: Self::ANY_DAY,
        }
    }
}

/// The writes of one partition's shard, numbered, and the last one that may have changed each
/// tenant's rows.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Writes so far.
    done: u64,
    /// The last write that may have changed every tenant's rows.
    all: u64,
    /// Each tenant's writes since `all`.
    tenants: HashMap<String, TenantWrites>,
}

/// One tenant's writes since the last write of every tenant.
#[derive(Debug, Default)]
struct TenantWrites {
    /// The last write of the tenant's rows.
    last: u64,
    /// The first day of a write → that write's number, for the writes not followed by one
    /// that starts on an earlier or the same day: days and numbers ascend together, so the
    /// last write that may have changed a day up to `d` is the entry of the greatest day up to
    /// `d`, and the last entry is the newest write's.
    from_days: BTreeMap<i32, u64>,
}

impl Writes {
    /// Counts a write of `touched`.
    pub(crate) fn count(&mut self, touched: Touched<'_>) {
        self.done += 1;
        match touched {
            Touched::All => {
                self.all = self.done;
                self.tenants.clear();
            }
            Touched::NoSums => {}
            Touched::Tenants(written) => {
                for write in written {
                    let tenant = match self.tenants.get_mut(write.tenant) {
                        Some(tenant) => tenant,
                        None => self.tenants.entry(write.tenant.to_owned()).or_default(),
                    };
                    tenant.last = self.done;
                    if write.from_day != Written::NO_DAY {
                        tenant.from_days.split_off(&write.from_day);
                        tenant.from_days.insert(write.from_day, self.done);
                    }
                }
            }
        }
    }

    /// The number of the last write that may have changed `tenant`'s rows.
    pub(crate) fn of(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(self.all, |t| t.last)
    }

    /// The number of the last write that may have changed `tenant`'s rows of a day up to
    /// `day`.
    pub(crate) fn of_days(&self, tenant: &str, day: i32) -> u64 {
        self.tenants
            .get(tenant)
            .and_then(|t| t.from_days.range(..=day).next_back())
            .map_or(self.all, |(_, write)| *write)
    }

    /// The first day of `tenant`'s newest write that changed rows of a day, if any since the
    /// last write of every tenant.
    pub(crate) fn newest_from_day(&self, tenant: &str) -> Option<i32> {
        let tenant = self.tenants.get(tenant)?;
        tenant.from_days.last_key_value().map(|(day, _)| *day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(tenant: &str) -> [Written<'_>; 1] {
        [Written::any_day(tenant)]
    }

    #[test]
    fn a_write_changes_the_count_of_the_tenants_it_touched_only() {
        let mut writes = Writes::default();
        assert_eq!((writes.of("a"), writes.of("b")), (0, 0));
        writes.count(Touched::Tenants(&of("a")));
        assert_eq!((writes.of("a"), writes.of("b")), (1, 0));
        writes.count(Touched::Tenants(&[
            Written::any_day("b"),
            Written::any_day("c"),
        ]));
        assert_eq!((writes.of("a"), writes.of("b"), writes.of("c")), (1, 2, 2));
        writes.count(Touched::NoSums);
        assert_eq!((writes.of("a"), writes.of("b"), writes.of("c")), (1, 2, 2));
        writes.count(Touched::All);
        assert_eq!((writes.of("a"), writes.of("b"), writes.of("z")), (4, 4, 4));
        writes.count(Touched::Tenants(&of("a")));
        assert_eq!((writes.of("a"), writes.of("b")), (5, 4));
    }

    #[test]
    fn days_before_a_write_keep_their_count() {
        let at = |tenant, from_day| [Written { tenant, from_day }];
        let mut writes = Writes::default();
        writes.count(Touched::Tenants(&at("a", 100)));
        writes.count(Touched::Tenants(&at("a", 102)));
        // Days up to 99 were never written; 100 and 101 by write 1; 102 on by write 2.
        assert_eq!(writes.of_days("a", 99), 0);
        assert_eq!(writes.of_days("a", 101), 1);
        assert_eq!(writes.of_days("a", 102), 2);
        assert_eq!(writes.newest_from_day("a"), Some(102));
        // A late write from day 90 changes every day from 90 on.
        writes.count(Touched::Tenants(&at("a", 90)));
        assert_eq!(writes.of_days("a", 89), 0);
        assert_eq!(writes.of_days("a", 101), 3);
        assert_eq!(writes.newest_from_day("a"), Some(90));
        // Realtime rows only: no day's count changes, the tenant's does.
        writes.count(Touched::Tenants(&at("a", Written::NO_DAY)));
        assert_eq!(writes.of_days("a", 101), 3);
        assert_eq!(writes.newest_from_day("a"), Some(90));
        assert_eq!(writes.of("a"), 4);
        writes.count(Touched::Tenants(&at("b", Written::ANY_DAY)));
        assert_eq!(writes.of_days("b", i32::MIN + 1), 5);
        assert_eq!(writes.newest_from_day("b"), Some(Written::ANY_DAY));
        writes.count(Touched::All);
        assert_eq!(writes.of_days("a", 101), 6);
        assert_eq!(writes.newest_from_day("a"), None);
    }
}
