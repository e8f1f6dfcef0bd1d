use std::sync::Arc;

use beacon_proto::insights::v1::{Dimension, Metric};
use jiff::civil::Date;

use super::*;
use crate::shard::{GroupBy, Top};
use crate::testing::{TempDir, hit, rollup};

fn date(text: &str) -> Date {
    text.parse().expect("date")
}

fn totals(start: &str, end: &str) -> ShardQuery {
    ShardQuery {
        dimension: 0,
        start: date(start),
        end: date(end),
        group: GroupBy::Total,
        top: None,
    }
}

fn store(dir: &TempDir, max_open: usize) -> DuckShardStore {
    DuckShardStore::new(dir.path().join("shards"), max_open).expect("store")
}

fn one_visit(tenant: &str, at: &str, visitor: u64) -> Arc<TenantRollup> {
    Arc::new(rollup(
        tenant,
        vec![
            hit(at, "UTC", Dimension::Unspecified, "", visitor),
            hit(at, "UTC", Dimension::Page, "/", visitor),
        ],
    ))
}

#[tokio::test]
async fn same_rollup_twice_counts_once() {
    let dir = TempDir::new("twice");
    let store = store(&dir, 8);
    let batch = one_visit("acme", "2026-03-01T10:15:00Z", 7);
    assert_eq!(
        store.apply(0, 5, batch.clone()).await.expect("apply"),
        ApplyOutcome::Applied
    );
    let again = store.apply(0, 5, batch.clone()).await.expect("apply again");
    assert_eq!(again, ApplyOutcome::AlreadyApplied { watermark: 5 });
    let older = store.apply(0, 4, batch).await.expect("apply older");
    assert_eq!(older, ApplyOutcome::AlreadyApplied { watermark: 5 });

    let sums = store
        .query("acme", totals("2026-03-01", "2026-03-01"))
        .await
        .expect("query");
    assert_eq!(sums.len(), 1);
    assert_eq!(
        (sums[0].pageviews, sums[0].visits, sums[0].visitors),
        (1, 1, 1)
    );
    assert_eq!(
        store.watermark("acme", 0).await.expect("watermark"),
        Some(5)
    );
    assert_eq!(store.watermark("acme", 1).await.expect("watermark"), None);
}

#[tokio::test]
async fn visitors_are_distinct_and_rows_add_up() {
    let dir = TempDir::new("distinct");
    let store = store(&dir, 8);
    store
        .apply(0, 1, one_visit("acme", "2026-03-01T10:15:00Z", 7))
        .await
        .expect("apply");
    store
        .apply(0, 2, one_visit("acme", "2026-03-01T10:45:00Z", 7))
        .await
        .expect("apply");
    store
        .apply(0, 3, one_visit("acme", "2026-03-02T11:00:00Z", 8))
        .await
        .expect("apply");
    let sums = store
        .query("acme", totals("2026-03-01", "2026-03-02"))
        .await
        .expect("query");
    assert_eq!((sums[0].pageviews, sums[0].visitors), (3, 2));
    let first = store
        .query("acme", totals("2026-03-01", "2026-03-01"))
        .await
        .expect("query");
    assert_eq!((first[0].pageviews, first[0].visitors), (2, 1));
}

#[tokio::test]
async fn repeated_keys_in_one_rollup_are_summed() {
    let dir = TempDir::new("repeat");
    let store = store(&dir, 8);
    let hits = vec![
        hit("2026-03-01T10:15:00Z", "UTC", Dimension::Unspecified, "", 1),
        hit("2026-03-01T10:20:00Z", "UTC", Dimension::Unspecified, "", 2),
    ];
    store
        .apply(3, 9, Arc::new(rollup("acme", hits)))
        .await
        .expect("apply");
    let sums = store
        .query("acme", totals("2026-03-01", "2026-03-01"))
        .await
        .expect("query");
    assert_eq!(
        (sums[0].pageviews, sums[0].visits, sums[0].visitors),
        (2, 2, 2)
    );
}

#[tokio::test]
async fn fresh_folder_answers_nothing_and_creates_no_file() {
    let dir = TempDir::new("fresh");
    let store = store(&dir, 8);
    assert!(
        store
            .query("nobody", totals("2026-03-01", "2026-03-31"))
            .await
            .expect("query")
            .is_empty()
    );
    assert!(!dir.path().join("shards/nobody.duckdb").exists());
    assert_eq!(store.watermark("nobody", 0).await.expect("watermark"), None);
}

#[tokio::test]
async fn watermark_survives_reopening() {
    let dir = TempDir::new("reopen");
    {
        let store = store(&dir, 8);
        store
            .apply(2, 11, one_visit("acme", "2026-03-01T10:15:00Z", 7))
            .await
            .expect("apply");
        store.close_idle().await.expect("close");
    }
    let store = store(&dir, 8);
    assert_eq!(
        store.watermark("acme", 2).await.expect("watermark"),
        Some(11)
    );
    let again = store
        .apply(2, 11, one_visit("acme", "2026-03-01T10:15:00Z", 7))
        .await
        .expect("apply");
    assert_eq!(again, ApplyOutcome::AlreadyApplied { watermark: 11 });
}

#[tokio::test]
async fn lru_closes_idle_shards_and_reopens_them() {
    let dir = TempDir::new("lru");
    let store = store(&dir, 1);
    for (seq, tenant) in ["a", "b", "c"].into_iter().enumerate() {
        store
            .apply(
                0,
                seq as u64 + 1,
                one_visit(tenant, "2026-03-01T10:15:00Z", 1),
            )
            .await
            .expect("apply");
    }
    assert_eq!(store.shards.held(), 1);
    for tenant in ["a", "b", "c"] {
        let sums = store
            .query(tenant, totals("2026-03-01", "2026-03-01"))
            .await
            .expect("query");
        assert_eq!(sums[0].pageviews, 1, "{tenant}");
    }
}

#[tokio::test]
async fn invalid_rollup_is_rejected_without_a_write() {
    let dir = TempDir::new("invalid");
    let store = store(&dir, 8);
    let mut bad = rollup(
        "acme",
        vec![hit("2026-03-01T10:15:00Z", "UTC", Dimension::Page, "/", 1)],
    );
    bad.rows[0].local_date = "March 1st".into();
    let err = store.apply(0, 1, Arc::new(bad)).await.expect_err("invalid");
    assert!(matches!(err, QueryError::InvalidRollup(_)), "{err}");
    assert!(!dir.path().join("shards/acme.duckdb").exists());
}

#[tokio::test]
async fn top_values_ordered_by_metric_then_value() {
    let dir = TempDir::new("top");
    let store = store(&dir, 8);
    let at = "2026-03-01T10:15:00Z";
    let mut hits = Vec::new();
    for (page, n) in [("/a", 3u64), ("/c", 5), ("/b", 5), ("/d", 1)] {
        for v in 0..n {
            hits.push(hit(at, "UTC", Dimension::Page, page, v));
        }
    }
    store
        .apply(0, 1, Arc::new(rollup("acme", hits)))
        .await
        .expect("apply");
    let query = ShardQuery {
        dimension: Dimension::Page as i32,
        group: GroupBy::Value,
        top: Some(Top {
            metric: Metric::Pageviews,
            limit: 3,
        }),
        ..totals("2026-03-01", "2026-03-01")
    };
    let sums = store.query("acme", query.clone()).await.expect("query");
    let keys: Vec<&str> = sums.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["/b", "/c", "/a"]);
    let by_rate = ShardQuery {
        top: Some(Top {
            metric: Metric::BounceRate,
            limit: 2,
        }),
        ..query
    };
    let sums = store.query("acme", by_rate).await.expect("query");
    let keys: Vec<&str> = sums.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["/a", "/b"]);
}

#[tokio::test]
async fn bad_tenant_id_never_becomes_a_path() {
    let dir = TempDir::new("path");
    let store = store(&dir, 8);
    let err = store
        .query("../x", totals("2026-03-01", "2026-03-01"))
        .await
        .expect_err("bad id");
    assert!(err.to_string().contains("../x"), "{err}");
}

#[tokio::test]
async fn compaction_keeps_sums_and_distinct_visitors() {
    let dir = TempDir::new("compact");
    let store = store(&dir, 8);
    for (seq, visitor) in [(1, 7), (2, 7), (3, 8)] {
        store
            .apply(0, seq, one_visit("acme", "2026-03-01T10:15:00Z", visitor))
            .await
            .expect("apply");
    }
    let before = store
        .query("acme", totals("2026-03-01", "2026-03-01"))
        .await
        .expect("query");
    let shard = store
        .shards
        .get("acme", false)
        .expect("open")
        .expect("exists");
    shard.with_writer(compact).expect("compact");
    let rows: i64 = shard
        .with_reader(|conn| {
            conn.query_row(
                "SELECT count(*) FROM rollups WHERE dimension = 0",
                [],
                |r| r.get(0),
            )
        })
        .expect("count");
    drop(shard);
    let after = store
        .query("acme", totals("2026-03-01", "2026-03-01"))
        .await
        .expect("query");
    assert_eq!(
        rows, 1,
        "one row per (hour, dimension, value) after compaction"
    );
    assert_eq!(
        (after[0].pageviews, after[0].visits, after[0].visitors),
        (3, 3, 2)
    );
    assert_eq!(
        (before[0].pageviews, before[0].visits, before[0].visitors),
        (after[0].pageviews, after[0].visits, after[0].visitors)
    );
}
