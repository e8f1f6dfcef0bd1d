//! Test helpers: temporary folders and rollups built from hits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{RollupRow, TenantRollup};

/// A folder removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty folder under the system temp folder.
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "beacon-query-{name}-{}-{n}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&path).expect("create temp folder");
        Self(path)
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One bounced single-pageview visit at instant `at` (RFC 3339) in zone `tz`: a row with its
/// visitor for `dimension`/`value`.
pub(crate) fn hit(
    at: &str,
    tz: &str,
    dimension: Dimension,
    value: &str,
    visitor: u64,
) -> RollupRow {
    let ms = at
        .parse::<jiff::Timestamp>()
        .expect("instant")
        .as_millisecond();
    let zone = beacon_core::time::time_zone(tz).expect("zone");
    let (hour_ms, local_date) = beacon_core::time::hour_bucket(ms, &zone).expect("bucket");
    RollupRow {
        hour_ms,
        local_date,
        dimension: dimension as i32,
        value: value.into(),
        pageviews: 1,
        events: 1,
        visits: 1,
        bounces: 1,
        duration_ms: 0,
        bot_events: 0,
        visitors: vec![visitor],
        ..RollupRow::default()
    }
}

/// A tenant's rollup of `hits`.
pub(crate) fn rollup(tenant: &str, rows: Vec<RollupRow>) -> TenantRollup {
    TenantRollup {
        tenant_id: tenant.into(),
        rows,
        ..Default::default()
    }
}

/// A store of one partition (every tenant lands in partition 0) in `dir`.
pub(crate) fn one_partition_store(dir: &TempDir) -> crate::DuckShardStore {
    crate::DuckShardStore::new(dir.path().join("shards"), 1, 64_000_000).expect("store")
}

/// Applies `rollups` as message `seq` of partition 0.
pub(crate) async fn apply(
    store: &crate::DuckShardStore,
    seq: u64,
    rollups: Vec<TenantRollup>,
) -> crate::Applied {
    use crate::ShardStore;
    let tenants = rollups
        .into_iter()
        .map(|rollup| store.validate(0, rollup).expect("valid rollup"))
        .collect();
    let message = crate::RollupMessage {
        seq,
        logic_version: 0,
        tenants,
        from_dead_letter: false,
        covered: None,
    };
    store.apply(0, vec![message].into()).await.expect("apply")
}

/// A store of one partition in a temporary folder, and Insights over it.
pub(crate) struct Fixture {
    _dir: TempDir,
    /// The store.
    pub store: crate::DuckShardStore,
    /// Insights over it.
    pub insights: crate::Insights,
}

/// A new [`Fixture`] in a folder named after `name`.
pub(crate) fn fixture(name: &str) -> Fixture {
    let dir = TempDir::new(name);
    let store = one_partition_store(&dir);
    let insights = crate::Insights::new(std::sync::Arc::new(store.clone()));
    Fixture {
        _dir: dir,
        store,
        insights,
    }
}
