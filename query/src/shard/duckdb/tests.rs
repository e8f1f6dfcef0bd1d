use beacon_proto::insights::v1::{Dimension, Metric};
use beacon_proto::pipeline::v1::{RollupRow, Swap, TenantRollup, Totals};
use jiff::civil::Date;

use super::*;
use crate::metrics::Sums;
use crate::shard::open::DuckFailure;
use crate::shard::{GroupBy, Page, Time};
use crate::testing::{TempDir, apply as apply_one, hit, one_partition_store as store, rollup};

fn date(text: &str) -> Date {
    text.parse().expect("date")
}

fn totals(start: &str, end: &str) -> ShardQuery {
    ShardQuery::new(0, date(start), date(end), GroupBy::TOTAL)
}

fn one_visit(tenant: &str, at: &str, visitor: u64) -> TenantRollup {
    rollup(
        tenant,
        vec![
            hit(at, "UTC", Dimension::Unspecified, "", visitor),
            hit(at, "UTC", Dimension::Page, "/", visitor),
        ],
    )
}

async fn total(store: &DuckShardStore, tenant: &str, start: &str, end: &str) -> Sums {
    let sums = store
        .query(tenant, totals(start, end))
        .await
        .expect("query")
        .groups;
    assert!(sums.len() <= 1, "{sums:?}");
    sums.into_iter().next().unwrap_or_default()
}

#[tokio::test]
async fn same_message_twice_counts_once() {
    let dir = TempDir::new("twice");
    let store = store(&dir);
    let visit = || vec![one_visit("acme", "2026-03-01T10:15:00Z", 7)];
    let applied = apply_one(&store, 5, visit()).await;
    assert_eq!(
        applied,
        Applied {
            messages: 1,
            watermark: 5,
            swaps: Vec::new(),
        }
    );
    assert_eq!(apply_one(&store, 5, visit()).await.messages, 0);
    let older = apply_one(&store, 4, visit()).await;
    assert_eq!(
        older,
        Applied {
            messages: 0,
            watermark: 5,
            swaps: Vec::new(),
        }
    );

    let sums = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!((sums.pageviews, sums.visits, sums.visitors), (1, 1, 1));
    assert_eq!(store.watermark(0).await.expect("watermark"), Some(5));
}

#[tokio::test]
async fn a_run_of_messages_applies_only_past_the_watermark() {
    let dir = TempDir::new("run");
    let store = store(&dir);
    apply_one(
        &store,
        2,
        vec![one_visit("acme", "2026-03-01T10:15:00Z", 1)],
    )
    .await;
    let messages: Vec<RollupMessage> = (1..=4)
        .map(|seq| RollupMessage {
            logic_version: 0,
            seq,
            from_dead_letter: false,
            covered: None,
            tenants: vec![
                store
                    .validate(0, one_visit("acme", "2026-03-01T10:15:00Z", seq))
                    .expect("valid"),
            ],
        })
        .collect();
    let applied = store.apply(0, messages.into()).await.expect("apply");
    assert_eq!(
        applied,
        Applied {
            messages: 2,
            watermark: 4,
            swaps: Vec::new(),
        }
    );
    let sums = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!((sums.pageviews, sums.visitors), (3, 3));
}

#[tokio::test]
async fn the_covered_event_moves_with_the_watermark_and_stays_when_a_run_names_none() {
    let dir = TempDir::new("covered");
    let store = store(&dir);
    let message = |seq, covered: Option<(u64, u32, &str)>| RollupMessage {
        logic_version: 0,
        seq,
        from_dead_letter: false,
        covered: covered.map(|(seq, index, log)| Covered {
            to: EventPosition { seq, index },
            log: Some(log.to_owned()),
        }),
        tenants: vec![
            store
                .validate(0, one_visit("acme", "2026-03-01T10:15:00Z", seq))
                .expect("valid"),
        ],
    };
    let covered = |seq, index, log: &str| {
        Some(Covered {
            to: EventPosition { seq, index },
            log: Some(log.to_owned()),
        })
    };
    // The first run records the partition; the later ones move what it recorded.
    for (seq, named, expected) in [
        (1, Some((10, 3, "events-a")), covered(10, 3, "events-a")),
        (2, None, covered(10, 3, "events-a")),
        (3, Some((12, 0, "events-b")), covered(12, 0, "events-b")),
    ] {
        store
            .apply(0, vec![message(seq, named)].into())
            .await
            .expect("apply");
        let position = store.position(0).await.expect("position");
        assert_eq!(position.watermark, Some(seq));
        assert_eq!(position.covered, expected, "after message {seq}");
    }
}

#[tokio::test]
async fn visitors_are_unique_and_rows_add_up() {
    let dir = TempDir::new("distinct");
    let store = store(&dir);
    apply_one(
        &store,
        1,
        vec![one_visit("acme", "2026-03-01T10:15:00Z", 7)],
    )
    .await;
    apply_one(
        &store,
        2,
        vec![one_visit("acme", "2026-03-01T11:45:00Z", 7)],
    )
    .await;
    apply_one(
        &store,
        3,
        vec![one_visit("acme", "2026-03-02T11:00:00Z", 8)],
    )
    .await;
    let both = total(&store, "acme", "2026-03-01", "2026-03-02").await;
    assert_eq!((both.pageviews, both.visitors), (3, 2));
    let first = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!((first.pageviews, first.visitors), (2, 1));
    let hours = store
        .query(
            "acme",
            ShardQuery {
                group: GroupBy::time(Time::Hour),
                ..totals("2026-03-01", "2026-03-01")
            },
        )
        .await
        .expect("hours")
        .groups;
    assert_eq!(hours.len(), 2);
    assert!(hours.iter().all(|h| h.visitors == 1), "{hours:?}");
}

#[tokio::test]
async fn a_read_without_visitors_counts_the_same_and_shows_none() {
    let dir = TempDir::new("no-visitors");
    let store = store(&dir);
    for (seq, at, visitor) in [
        (1, "2026-03-01T10:15:00Z", 7),
        (2, "2026-03-01T11:45:00Z", 8),
        (3, "2026-03-02T11:00:00Z", 7),
    ] {
        apply_one(&store, seq, vec![one_visit("acme", at, visitor)]).await;
    }
    let reads = [
        totals("2026-03-01", "2026-03-02"),
        ShardQuery {
            group: GroupBy::time(Time::Day),
            ..totals("2026-03-01", "2026-03-02")
        },
        ShardQuery {
            page: Some(Page::top(Metric::Pageviews, 10)),
            ..ShardQuery::new(
                Dimension::Page as i32,
                date("2026-03-01"),
                date("2026-03-02"),
                GroupBy::VALUE,
            )
        },
    ];
    for read in reads {
        let with = store.query("acme", read.clone()).await.expect("read");
        let without = ShardQuery {
            visitors: false,
            ..read.clone()
        };
        let without = store.query("acme", without).await.expect("read");
        assert!(with.groups.iter().all(|g| g.visitors > 0), "{read:?}");
        let counted = |mut groups: Vec<Sums>| {
            groups.iter_mut().for_each(|g| g.visitors = 0);
            groups.sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
            groups
        };
        assert!(without.groups.iter().all(|g| g.visitors == 0), "{read:?}");
        assert_eq!(counted(with.groups), counted(without.groups), "{read:?}");
    }
}

#[tokio::test]
async fn tenants_of_one_partition_stay_apart() {
    let dir = TempDir::new("apart");
    let store = store(&dir);
    apply_one(
        &store,
        1,
        vec![
            one_visit("acme", "2026-03-01T10:15:00Z", 1),
            one_visit("zeta", "2026-03-01T10:15:00Z", 2),
            one_visit("zeta", "2026-03-01T10:20:00Z", 3),
        ],
    )
    .await;
    assert_eq!(
        total(&store, "acme", "2026-03-01", "2026-03-01")
            .await
            .visitors,
        1
    );
    assert_eq!(
        total(&store, "zeta", "2026-03-01", "2026-03-01")
            .await
            .visitors,
        2
    );
    assert_eq!(
        total(&store, "nobody", "2026-03-01", "2026-03-01").await,
        Sums::default()
    );
}

#[tokio::test]
async fn rollups_of_another_partition_are_invalid() {
    let dir = TempDir::new("owner");
    let store = DuckShardStore::new(dir.path().join("shards"), 8, 64_000_000).expect("store");
    let owner = partition_of("acme", 8);
    let other = (owner + 1) % 8;
    let err = store
        .validate(other, one_visit("acme", "2026-03-01T10:15:00Z", 1))
        .expect_err("wrong partition")
        .error;
    assert!(
        err.to_string()
            .contains(&format!("belongs to partition {owner} of 8, not {other}")),
        "{err}"
    );
    assert!(
        store
            .validate(owner, one_visit("acme", "2026-03-01T10:15:00Z", 1))
            .is_ok()
    );
}

#[tokio::test]
async fn fresh_folder_answers_nothing_and_creates_no_file() {
    let dir = TempDir::new("fresh");
    let store = store(&dir);
    assert_eq!(
        total(&store, "nobody", "2026-03-01", "2026-03-31").await,
        Sums::default()
    );
    assert!(!dir.path().join("shards/partition.0.duckdb").exists());
    assert_eq!(store.watermark(0).await.expect("watermark"), None);
}

#[tokio::test]
async fn watermark_and_rows_survive_reopening() {
    let dir = TempDir::new("reopen");
    {
        let store = store(&dir);
        apply_one(
            &store,
            11,
            vec![one_visit("acme", "2026-03-01T10:15:00Z", 7)],
        )
        .await;
        store.close().await.expect("close");
    }
    let store = store(&dir);
    assert_eq!(store.watermark(0).await.expect("watermark"), Some(11));
    let again = apply_one(
        &store,
        11,
        vec![one_visit("acme", "2026-03-01T10:15:00Z", 7)],
    )
    .await;
    assert_eq!(
        again,
        Applied {
            messages: 0,
            watermark: 11,
            swaps: Vec::new(),
        }
    );
    assert_eq!(
        total(&store, "acme", "2026-03-01", "2026-03-01")
            .await
            .visitors,
        1
    );
}

#[tokio::test]
async fn invalid_rollup_names_the_field() {
    let dir = TempDir::new("invalid");
    let store = store(&dir);
    let mut bad = rollup(
        "acme",
        vec![hit("2026-03-01T10:15:00Z", "UTC", Dimension::Page, "/", 1)],
    );
    bad.rows[0].local_date = "March 1st".into();
    let err = store.validate(0, bad).expect_err("invalid").error;
    assert!(matches!(err, QueryError::InvalidRollup(_)), "{err}");
    assert!(err.to_string().contains("rows[0].local_date"), "{err}");
}

#[tokio::test]
async fn top_values_ordered_by_metric_then_value() {
    let dir = TempDir::new("top");
    let store = store(&dir);
    let at = "2026-03-01T10:15:00Z";
    let mut hits = Vec::new();
    for (page, n) in [("/a", 3u64), ("/c", 5), ("/b", 5), ("/d", 1)] {
        for v in 0..n {
            hits.push(hit(at, "UTC", Dimension::Page, page, v));
        }
    }
    apply_one(&store, 1, vec![rollup("acme", hits)]).await;
    let query = ShardQuery {
        dimension: Dimension::Page as i32,
        group: GroupBy::VALUE,
        page: Some(Page::top(Metric::Pageviews, 3)),
        ..totals("2026-03-01", "2026-03-01")
    };
    let sums = store
        .query("acme", query.clone())
        .await
        .expect("query")
        .groups;
    let keys: Vec<&str> = sums.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["/b", "/c", "/a"]);
    assert_eq!(sums[0].visitors, 5, "winners get their visitors");
    for (metric, want) in [
        (Metric::BounceRate, ["/a", "/b"]),
        (Metric::Visitors, ["/b", "/c"]),
    ] {
        let ranked = ShardQuery {
            page: Some(Page::top(metric, 2)),
            ..query.clone()
        };
        let sums = store.query("acme", ranked).await.expect("query").groups;
        let keys: Vec<&str> = sums.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, want, "{metric:?}");
    }
}

#[tokio::test]
async fn a_page_by_visitors_is_the_page_of_every_group_by_visitors() {
    let dir = TempDir::new("top-visitors");
    let store = store(&dir);
    let at = "2026-03-01T10:15:00Z";
    let mut hits = Vec::new();
    // Page k: (k * 7) % 60 + 1 visitors, each seen (60 - k) / 10 + 1 times, so that the
    // pages with the most events are not the ones with the most visitors.
    for k in 0..60u64 {
        for v in 0..((k * 7) % 60 + 1) {
            for _ in 0..((60 - k) / 10 + 1) {
                hits.push(hit(
                    at,
                    "UTC",
                    Dimension::Page,
                    &format!("/p{k}"),
                    k * 100 + v,
                ));
            }
        }
    }
    apply_one(&store, 1, vec![rollup("acme", hits)]).await;
    let every = ShardQuery {
        dimension: Dimension::Page as i32,
        group: GroupBy::VALUE,
        ..totals("2026-03-01", "2026-03-01")
    };
    let mut all = store
        .query("acme", every.clone())
        .await
        .expect("query")
        .groups;
    assert_eq!(all.len(), 60);
    crate::shard::sort(&mut all, &Page::top(Metric::Visitors, 1).sort);
    for (offset, limit) in [(0, 10), (3, 4), (55, 10), (0, 0)] {
        let page = Page {
            offset,
            limit,
            ..Page::top(Metric::Visitors, 1)
        };
        let answer = store
            .query(
                "acme",
                ShardQuery {
                    page: Some(page),
                    ..every.clone()
                },
            )
            .await
            .expect("query");
        let want: Vec<_> = all.iter().skip(offset).take(limit).cloned().collect();
        assert_eq!(answer.groups, want, "offset {offset}, limit {limit}");
        assert_eq!(answer.total, 60);
    }
}

#[tokio::test]
async fn bad_tenant_id_is_refused() {
    let dir = TempDir::new("path");
    let store = store(&dir);
    let err = store
        .query("../x", totals("2026-03-01", "2026-03-01"))
        .await
        .expect_err("bad id");
    assert!(err.to_string().contains("../x"), "{err}");
}

#[tokio::test]
async fn folding_keeps_sums_and_unique_visitors() {
    let dir = TempDir::new("fold");
    let store = store(&dir);
    for (seq, (visitor, at)) in [
        (7, "2026-03-01T10:15:00Z"),
        (7, "2026-03-01T10:25:00Z"),
        (8, "2026-03-02T09:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        apply_one(&store, seq as u64 + 1, vec![one_visit("acme", at, visitor)]).await;
    }
    let before = total(&store, "acme", "2026-03-01", "2026-03-02").await;
    store.fold().await.expect("fold");
    let shard = store.shards.get(0, false).expect("open").expect("exists");
    let count = |sql: &str| -> i64 {
        shard
            .with_reader(|conn| conn.query_row(sql, [], |r| r.get(0)))
            .expect("count")
    };
    assert_eq!(count("SELECT count(*) FROM days WHERE dimension = 0"), 2);
    assert_eq!(count("SELECT count(*) FROM hours"), 2);
    assert_eq!(count("SELECT count(*) FROM days WHERE NOT folded"), 0);
    let after = total(&store, "acme", "2026-03-01", "2026-03-02").await;
    assert_eq!((after.pageviews, after.visits, after.visitors), (3, 3, 2));
    assert_eq!(before, after);
    // Deltas after a fold fold again, merging with the folded rows of their hour.
    apply_one(
        &store,
        9,
        vec![one_visit("acme", "2026-03-02T09:30:00Z", 9)],
    )
    .await;
    store.fold().await.expect("fold again");
    assert_eq!(count("SELECT count(*) FROM days WHERE dimension = 0"), 2);
    assert_eq!(count("SELECT count(*) FROM hours"), 2);
    let day = total(&store, "acme", "2026-03-02", "2026-03-02").await;
    assert_eq!((day.pageviews, day.visitors), (2, 2));
}

/// A part of generation `generation` of "acme".
fn staged(generation: u64, stage: u32, rows: Vec<RollupRow>) -> TenantRollup {
    TenantRollup {
        generation,
        stage,
        ..rollup("acme", rows)
    }
}

/// A part of `generation` at `stage` that swaps it in for March 1 2026, as job `job`.
fn swap_of_march_1(generation: u64, stage: u32, job: &str) -> TenantRollup {
    TenantRollup {
        swap: Some(Swap {
            first_date: "2026-03-01".into(),
            last_date: "2026-03-01".into(),
            job_id: job.into(),
        }),
        ..staged(generation, stage, Vec::new())
    }
}

async fn apply_versioned(
    store: &DuckShardStore,
    seq: u64,
    version: u32,
    parts: Vec<TenantRollup>,
) -> Applied {
    let tenants = parts
        .into_iter()
        .map(|part| store.validate(0, part).expect("valid"))
        .collect();
    let message = RollupMessage {
        seq,
        logic_version: version,
        tenants,
        from_dead_letter: false,
        covered: None,
    };
    store.apply(0, vec![message].into()).await.expect("apply")
}

#[tokio::test]
async fn a_generation_is_staged_out_of_sight_then_swapped_in_at_once() {
    let dir = TempDir::new("generations");
    let store = store(&dir);
    let day = |at: &str, visitor| hit(at, "UTC", Dimension::Unspecified, "", visitor);
    // Live: two pageviews on March 1 and one on March 2, made by logic version 2.
    let live = rollup(
        "acme",
        vec![
            day("2026-03-01T10:00:00Z", 1),
            day("2026-03-02T10:00:00Z", 2),
        ],
    );
    apply_versioned(&store, 1, 2, vec![live.clone(), live]).await;
    let before = total(&store, "acme", "2026-03-01", "2026-03-02").await;
    assert_eq!(before.pageviews, 4);

    // Generation 7 restates March 1 only; its stage 1 arrives twice (a resumed job).
    let stage = staged(7, 1, vec![day("2026-03-01T11:00:00Z", 3)]);
    apply_versioned(&store, 2, 3, vec![stage.clone()]).await;
    apply_versioned(&store, 3, 3, vec![stage]).await;
    assert_eq!(
        total(&store, "acme", "2026-03-01", "2026-03-02").await,
        before,
        "staged rows are out of sight"
    );

    // A live change copied into the generation, then the swap.
    let copy = staged(7, 0, vec![day("2026-03-01T12:00:00Z", 4)]);
    let swap = swap_of_march_1(7, 2, "acme.1");
    let applied = apply_versioned(&store, 4, 3, vec![copy, swap.clone()]).await;
    let (job, totals) = &applied.swaps[0];
    assert_eq!(job, "acme.1");
    let pageviews = |t: &Option<Totals>| t.as_ref().map(|t| t.pageviews);
    assert_eq!(pageviews(&totals.before), Some(2), "March 1 before");
    assert_eq!(
        pageviews(&totals.after),
        Some(2),
        "stage 1 once, and the copy"
    );
    let after = store
        .query("acme", totals_of("2026-03-01", "2026-03-02"))
        .await
        .expect("query");
    assert_eq!(
        after.groups[0].pageviews, 4,
        "March 2 kept (2), March 1 replaced (2)"
    );
    assert_eq!(after.logic_versions, [2, 3], "both versions answered");

    // A swap published again (a job resumed after it) changes nothing.
    let again = apply_versioned(&store, 5, 3, vec![swap]).await;
    assert!(again.swaps.is_empty());
    store.fold().await.expect("fold");
    assert_eq!(
        total(&store, "acme", "2026-03-01", "2026-03-02")
            .await
            .pageviews,
        4
    );
    let versions = store.versions(0).await.expect("versions");
    let dates: Vec<_> = versions
        .iter()
        .map(|v| (v.logic_version, v.first_date.as_str(), v.last_date.as_str()))
        .collect();
    assert_eq!(
        dates,
        [
            (2, "2026-03-02", "2026-03-02"),
            (3, "2026-03-01", "2026-03-01")
        ]
    );

    // A dropped generation leaves no trace.
    apply_versioned(
        &store,
        6,
        3,
        vec![staged(8, 1, vec![day("2026-03-02T11:00:00Z", 5)])],
    )
    .await;
    let drop = TenantRollup {
        drop: true,
        ..staged(8, 0, Vec::new())
    };
    apply_versioned(&store, 7, 3, vec![drop]).await;
    assert_eq!(
        total(&store, "acme", "2026-03-01", "2026-03-02")
            .await
            .pageviews,
        4
    );
}

#[tokio::test]
async fn a_generation_missing_a_stage_or_replayed_late_is_dropped_not_swapped() {
    let dir = TempDir::new("generation-gaps");
    let store = store(&dir);
    let day = |at: &str, visitor| hit(at, "UTC", Dimension::Unspecified, "", visitor);
    let live = rollup("acme", vec![day("2026-03-01T10:00:00Z", 1)]);
    apply_versioned(&store, 1, 2, vec![live]).await;
    let swap =
        |generation, stage| swap_of_march_1(generation, stage, &format!("acme.{generation}"));

    // Stage 2 of generation 7 was parked: stage 3 skips it, and the swap changes nothing.
    let stage = |generation, stage, visitor| {
        staged(
            generation,
            stage,
            vec![day("2026-03-01T11:00:00Z", visitor)],
        )
    };
    apply_versioned(&store, 2, 3, vec![stage(7, 1, 2)]).await;
    apply_versioned(&store, 3, 3, vec![stage(7, 3, 3)]).await;
    let applied = apply_versioned(&store, 4, 3, vec![swap(7, 4)]).await;
    assert!(applied.swaps.is_empty(), "{applied:?}");

    // Generation 8 is complete but its swap was parked and is replayed after newer live rows.
    apply_versioned(&store, 5, 3, vec![stage(8, 1, 4)]).await;
    apply_versioned(
        &store,
        6,
        2,
        vec![rollup("acme", vec![day("2026-03-01T12:00:00Z", 5)])],
    )
    .await;
    let tenants = vec![store.validate(0, swap(8, 2)).expect("valid")];
    let replayed = RollupMessage {
        seq: 7,
        logic_version: 3,
        tenants,
        from_dead_letter: true,
        covered: None,
    };
    let applied = store.apply(0, vec![replayed].into()).await.expect("apply");
    assert!(applied.swaps.is_empty(), "{applied:?}");

    let live = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!(live.pageviews, 2, "both live pageviews kept");
    let versions = store.versions(0).await.expect("versions");
    assert!(
        versions.iter().all(|v| v.logic_version == 2),
        "no restated row went live: {versions:?}"
    );
}

fn totals_of(start: &str, end: &str) -> ShardQuery {
    totals(start, end)
}

#[tokio::test]
async fn a_shard_that_duckdb_invalidated_is_opened_again_with_what_it_committed() {
    let dir = TempDir::new("invalidated");
    let store = store(&dir);
    let visit = |at: &str, visitor| vec![one_visit("acme", at, visitor)];
    apply_one(&store, 1, visit("2026-03-01T10:15:00Z", 1)).await;
    // DuckDB's own switch for a fatal error in a checkpoint: the instance is invalidated.
    let shard = store.shards.get(0, false).expect("open").expect("shard");
    let err = shard
        .with_writer(Touched::NoSums, |conn| {
            conn.execute_batch("SET debug_checkpoint_abort = 'before_header'; CHECKPOINT")
        })
        .expect_err("the checkpoint aborts");
    assert!(err.invalidates(), "{err}");
    drop(shard);

    // The reopened file kept the committed watermark: the first message again counts nothing.
    assert_eq!(
        apply_one(&store, 1, visit("2026-03-01T10:15:00Z", 1))
            .await
            .messages,
        0
    );
    let applied = apply_one(&store, 2, visit("2026-03-01T11:15:00Z", 2)).await;
    assert_eq!((applied.messages, applied.watermark), (1, 2));
    let sums = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!((sums.pageviews, sums.visits, sums.visitors), (2, 2, 2));
}

#[tokio::test]
async fn a_read_that_meets_an_invalidated_instance_reads_again_from_the_file() {
    let dir = TempDir::new("invalidated-read");
    let store = store(&dir);
    apply_one(
        &store,
        1,
        vec![one_visit("acme", "2026-03-01T10:15:00Z", 1)],
    )
    .await;
    // A fatal error the shard has not seen yet: a read taking the shard now meets the
    // invalidated instance, as one does that took it just before another call's fatal error.
    let shard = store.shards.get(0, false).expect("open").expect("shard");
    let unseen = shard.with_reader(|conn| {
        let err = conn
            .execute_batch("SET debug_checkpoint_abort = 'before_header'; CHECKPOINT")
            .expect_err("the checkpoint aborts");
        assert!(err.invalidates(), "{err}");
        Ok::<_, ShardFailure>(())
    });
    unseen.expect("the error stays unseen");
    drop(shard);

    let sums = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!((sums.pageviews, sums.visits, sums.visitors), (1, 1, 1));
}

/// A store of one partition in `dir` with the least pool `--shard-memory` takes (32MB), and
/// its shard.
fn smallest_pool_shard(dir: &TempDir) -> (DuckShardStore, Arc<Shard>) {
    let store = DuckShardStore::new(dir.path().join("shards"), 1, 32_000_000).expect("store");
    let shard = store.shards.get(0, true).expect("open").expect("shard");
    (store, shard)
}

#[test]
fn reads_that_fit_the_shard_memory_one_at_a_time_all_answer_when_run_at_once() {
    const READS: usize = 8;
    const ITEMS: i64 = 700_000;
    let dir = TempDir::new("crowded");
    let (_store, shard) = smallest_pool_shard(&dir);
    // A list of 700,000 numbers takes about 12 MiB of the 32MB pool as it grows, and DuckDB
    // cannot spill it: eight at once do not fit, one at a time does.
    let sql = format!("SELECT len(list(i)) FROM range({ITEMS}) t(i)");
    let start = std::sync::Barrier::new(READS);
    std::thread::scope(|scope| {
        let reads: Vec<_> = (0..READS)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    shard.with_reader(|conn| conn.query_row(&sql, [], |r| r.get::<_, i64>(0)))
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.join().expect("thread").expect("read"), ITEMS);
        }
    });
}

#[test]
fn a_read_too_big_for_the_shard_memory_alone_names_the_limit() {
    let dir = TempDir::new("too-big");
    let (_store, shard) = smallest_pool_shard(&dir);
    // 3 million numbers in one list: 24 MiB, growing into 32 MiB.
    let err = shard
        .with_reader(|conn| {
            conn.query_row("SELECT len(list(i)) FROM range(3000000) t(i)", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .expect_err("too big");
    assert!(err.out_of_memory(), "{err}");
    let status = tonic::Status::from(QueryError::shard(&shard.name, "reading", err));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("--shard-memory"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_fold_of_more_sketch_bytes_than_the_shard_memory_keeps_every_row() {
    const VALUES: usize = 3_000;
    let dir = TempDir::new("fold-big");
    let (store, shard) = smallest_pool_shard(&dir);
    // A sketch of 1,000 visitors is about 4 KiB: two deltas of each of 3,000 pages hold
    // about 24 MiB of sketches, most of the 32MB pool, as a big tenant's day does. Folded by
    // a sort in DuckDB, they ran out of the pool ("could not allocate block of size 256.0 KiB
    // (30.4 MiB/30.5 MiB used)", as in a 10,000,000-event import).
    let mut sketch = crate::shard::sketch::new().expect("sketch");
    (0..1_000u64).for_each(|visitor| sketch.update(visitor));
    let bytes = sketch.serialize();
    assert!(bytes.len() > 4_000, "{}", bytes.len());
    let day = 20_500;
    for round in 0..2 {
        for chunk in (0..VALUES).collect::<Vec<_>>().chunks(250) {
            shard
                .with_writer(Touched::All, |conn| {
                    let mut appender = conn.appender("days")?;
                    for value in chunk {
                        let key = DayKey {
                            tenant: "acme",
                            day,
                            dimension: Dimension::Page as i16,
                            value: &format!("/page/{value}"),
                            stamp: Stamp {
                                gen_id: 0,
                                version: 1,
                            },
                        };
                        let counters = [1, 1, 1, 0, 0, 0, 0, 0];
                        append_day(&mut appender, &key, &counters, Some(bytes.clone()), false)?;
                    }
                    appender.flush()
                })
                .unwrap_or_else(|err| panic!("appending round {round}: {err}"));
        }
    }
    store.fold().await.expect("fold");
    let (rows, unfolded, pageviews): (i64, i64, i64) = shard
        .with_reader(|conn| {
            conn.query_row(
                "SELECT count(*), count(*) FILTER (NOT folded), sum(pageviews) FROM days",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .expect("count");
    assert_eq!(
        (rows, unfolded, pageviews),
        (VALUES as i64, 0, 2 * VALUES as i64)
    );
}

#[tokio::test]
async fn a_probed_stage_is_not_taken_as_applied() {
    let dir = TempDir::new("probed-stage");
    let store = store(&dir);
    let day = |at: &str, visitor| hit(at, "UTC", Dimension::Unspecified, "", visitor);
    apply_versioned(
        &store,
        1,
        2,
        vec![rollup("acme", vec![day("2026-03-01T10:00:00Z", 1)])],
    )
    .await;
    // Stage 1 of generation 7 opens it; stage 2 is probed (applied, then rolled back) before
    // it is applied for real, which must not find it applied already.
    let stage = |stage, visitor| staged(7, stage, vec![day("2026-03-01T11:00:00Z", visitor)]);
    apply_versioned(&store, 2, 3, vec![stage(1, 2)]).await;
    let probed = store.validate(0, stage(2, 3)).expect("valid");
    store.probe(0, probed).await.expect("probe");
    apply_versioned(&store, 3, 3, vec![stage(2, 3)]).await;
    let swap = swap_of_march_1(7, 3, "acme.7");
    let applied = apply_versioned(&store, 4, 3, vec![swap]).await;
    let (_, totals) = &applied.swaps[0];
    let pageviews = |t: &Option<Totals>| t.as_ref().map(|t| t.pageviews);
    assert_eq!(pageviews(&totals.before), Some(1));
    assert_eq!(pageviews(&totals.after), Some(2), "both stages, once each");
    let live = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!(live.pageviews, 2);
}

#[tokio::test]
async fn swaps_of_one_run_replace_what_came_before_them_only() {
    let dir = TempDir::new("swaps-in-one-run");
    let store = store(&dir);
    let day = |visitor| {
        hit(
            "2026-03-01T10:00:00Z",
            "UTC",
            Dimension::Unspecified,
            "",
            visitor,
        )
    };
    let part = |tenant: &str, generation, stage, visitors: &[u64]| TenantRollup {
        generation,
        stage,
        ..rollup(tenant, visitors.iter().map(|&v| day(v)).collect())
    };
    let swap = |tenant: &str, generation, stage| TenantRollup {
        swap: Some(Swap {
            first_date: "2026-03-01".into(),
            last_date: "2026-03-01".into(),
            job_id: format!("{tenant}.{generation}"),
        }),
        ..part(tenant, generation, stage, &[])
    };
    apply_versioned(
        &store,
        1,
        2,
        vec![part("acme", 0, 0, &[1, 2]), part("globex", 0, 0, &[1])],
    )
    .await;
    apply_versioned(
        &store,
        2,
        3,
        vec![part("acme", 7, 1, &[3]), part("globex", 9, 1, &[2, 3])],
    )
    .await;
    // One run: two tenants swap, acme's live rows come after its swap, and acme swaps a
    // second generation, with a live row between its swaps and one after.
    let run = vec![
        swap("acme", 7, 2),
        swap("globex", 9, 2),
        part("acme", 0, 0, &[5]),
        part("acme", 8, 1, &[7, 8, 9]),
        swap("acme", 8, 2),
        part("acme", 0, 0, &[6]),
        part("globex", 0, 0, &[4]),
    ];
    let applied = apply_versioned(&store, 3, 3, run).await;
    let pageviews = |t: &Option<Totals>| t.as_ref().map_or(-1, |t| t.pageviews);
    let swaps: Vec<_> = applied
        .swaps
        .iter()
        .map(|(job, t)| (job.as_str(), pageviews(&t.before), pageviews(&t.after)))
        .collect();
    assert_eq!(
        swaps,
        [("acme.7", 2, 1), ("globex.9", 1, 2), ("acme.8", 2, 3)],
        "each swap's totals as the rows before it made them"
    );
    let acme = total(&store, "acme", "2026-03-01", "2026-03-01").await;
    assert_eq!(
        acme.pageviews, 4,
        "generation 8 (3) and the live row after it"
    );
    let globex = total(&store, "globex", "2026-03-01", "2026-03-01").await;
    assert_eq!(
        globex.pageviews, 3,
        "generation 9 (2) and the live row after it"
    );
}
