use beacon_proto::insights::v1::{Dimension, Metric};
use beacon_proto::pipeline::v1::{RollupRow, TenantRollup};

use crate::DuckShardStore;
use crate::shard::{GroupBy, Page, ShardQuery, ShardStore, Time};
use crate::testing::{TempDir, apply, hit, one_partition_store, rollup};

/// Day `day` of March 2026 at `hour`, UTC.
fn at(day: u32, hour: u32) -> String {
    format!("2026-03-{day:02}T{hour:02}:30:00Z")
}

/// A day of traffic: page `/p{k}` gets events from `k % 7 + 1` visitors, each seen
/// `40 / (k + 1) + 1` times, so events and visitors rank pages differently; every event adds
/// its visitor to the totals and to one of three sources.
fn day_of_traffic(day: u32, salt: u64) -> TenantRollup {
    let mut rows: Vec<RollupRow> = Vec::new();
    for k in 0..40u64 {
        for v in 0..(k % 7 + 1) {
            let visitor = salt * 1_000 + k * 10 + v;
            for repeat in 0..(40 / (k + 1) + 1) {
                let time = at(day, (repeat % 24) as u32);
                rows.push(hit(
                    &time,
                    "UTC",
                    Dimension::Page,
                    &format!("/p{k}"),
                    visitor,
                ));
                rows.push(hit(&time, "UTC", Dimension::Unspecified, "", visitor));
                let source = ["Google", "Direct / None", "Bing"][(visitor % 3) as usize];
                rows.push(hit(&time, "UTC", Dimension::Source, source, visitor));
            }
        }
    }
    rollup("acme", rows)
}

fn queries(end: &str) -> Vec<ShardQuery> {
    let (start, end) = (
        "2026-03-01".parse().expect("date"),
        end.parse().expect("date"),
    );
    let page = |page: Option<Page>, group: GroupBy, dimension: Dimension| ShardQuery {
        page,
        ..ShardQuery::new(dimension as i32, start, end, group)
    };
    vec![
        page(None, GroupBy::TOTAL, Dimension::Unspecified),
        page(None, GroupBy::time(Time::Day), Dimension::Unspecified),
        page(None, GroupBy::time(Time::Week), Dimension::Unspecified),
        page(None, GroupBy::time(Time::Hour), Dimension::Unspecified),
        page(
            Some(Page::top(Metric::Visitors, 10)),
            GroupBy::VALUE,
            Dimension::Page,
        ),
        page(
            Some(Page::top(Metric::Pageviews, 5)),
            GroupBy::VALUE,
            Dimension::Page,
        ),
        page(None, GroupBy::VALUE, Dimension::Source),
    ]
}

/// Every query's answer from the store keeping spans equals the one from the store keeping
/// none: the same groups, counters and versions, and the same visitors where the sketches
/// hold every visitor (below 1,500); above, sketches merged in another order may estimate
/// another count within their error.
async fn same_answers(kept: &DuckShardStore, fresh: &DuckShardStore, end: &str, when: &str) {
    for query in queries(end) {
        let mut a = kept.query("acme", query.clone()).await.expect("kept read");
        let mut b = fresh
            .query("acme", query.clone())
            .await
            .expect("fresh read");
        assert!(!a.groups.is_empty(), "{when}: {query:?}");
        for answer in [&mut a, &mut b] {
            answer
                .groups
                .sort_by(|x, y| (x.time, &x.key).cmp(&(y.time, &y.key)));
        }
        for (x, y) in a.groups.iter_mut().zip(&mut b.groups) {
            let off = x.visitors.abs_diff(y.visitors) as f64 / y.visitors.max(1) as f64;
            if y.visitors < 1_500 {
                assert_eq!(x.visitors, y.visitors, "{when}: {query:?} {x:?} {y:?}");
            }
            assert!(off < 0.01, "{when}: {query:?} {x:?} {y:?}");
            x.visitors = y.visitors;
        }
        assert_eq!(a, b, "{when}: {query:?}");
    }
}

#[tokio::test]
async fn kept_sums_of_settled_days_answer_as_a_fresh_read_through_live_and_late_writes() {
    let (dir_kept, dir_fresh) = (TempDir::new("spans-kept"), TempDir::new("spans-fresh"));
    let kept = one_partition_store(&dir_kept);
    let fresh = one_partition_store(&dir_fresh).with_settled_cache(0);
    let mut seq = 0;
    let mut write = async |rollup: TenantRollup| {
        seq += 1;
        apply(&kept, seq, vec![rollup.clone()]).await;
        apply(&fresh, seq, vec![rollup]).await;
    };
    for day in 1..=10 {
        write(day_of_traffic(day, u64::from(day))).await;
    }
    same_answers(&kept, &fresh, "2026-03-10", "history").await;
    // Live traffic on the last day, read between writes.
    for salt in 100..103 {
        write(day_of_traffic(10, salt)).await;
        same_answers(&kept, &fresh, "2026-03-10", "live writes").await;
    }
    // A late write in the middle of the range, then live traffic again.
    write(day_of_traffic(3, 200)).await;
    same_answers(&kept, &fresh, "2026-03-10", "a late write").await;
    write(day_of_traffic(10, 201)).await;
    same_answers(&kept, &fresh, "2026-03-10", "live after late").await;
    // A new day, read with and without it.
    write(day_of_traffic(11, 300)).await;
    same_answers(&kept, &fresh, "2026-03-11", "a new day").await;
    same_answers(&kept, &fresh, "2026-03-10", "a range before the new day").await;
    kept.fold().await.expect("fold");
    fresh.fold().await.expect("fold");
    same_answers(&kept, &fresh, "2026-03-11", "after folding").await;

    assert!(kept.spans_kept(0) > 0, "the store keeping spans kept some");
    assert_eq!(fresh.spans_kept(0), 0);
}
