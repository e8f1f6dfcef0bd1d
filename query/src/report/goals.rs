//! Goal rows of a report: each goal read from the rollups of the event names or pages it
//! stands for, beside the visitors of the same time points for its conversion rate.

use std::collections::HashMap;
use std::sync::Arc;

use beacon_core::meta::{GoalKind, Tenant};
use beacon_proto::insights::v1::Dimension;

use super::Plan;
use crate::QueryError;
use crate::filter::ValueFilter;
use crate::metrics::Sums;
use crate::range::Range;
use crate::shard::{GroupBy, ShardQuery, ShardStore};

/// The rows of `tenant`'s goals over `range` (only those named in `only`, when given), each
/// with the visitors of its time point, and the logic versions read; days are grouped as if
/// `shift` days later (a comparison range).
///
/// Each goal is one read of the event-name or page rows; a tenant has at most 100 goals.
pub(super) async fn rows(
    store: &dyn ShardStore,
    tenant: &Tenant,
    plan: &Plan,
    range: Range,
    shift: i64,
    only: Option<&[String]>,
) -> Result<(Vec<Sums>, Vec<u32>), QueryError> {
    let group = GroupBy {
        time: plan.time(),
        value: false,
    };
    let query = |dimension: i32| {
        let mut query = ShardQuery::new(dimension, range.start, range.end, group);
        query.shift_days = shift;
        query
    };
    let totals = store.query(&tenant.id, query(0)).await?;
    let visitors: HashMap<i64, u64> = totals.groups.iter().map(|s| (s.time, s.visitors)).collect();
    let mut versions = totals.logic_versions;
    let mut out = Vec::new();
    for (i, goal) in tenant.goals.iter().enumerate() {
        let kept = plan.filter.as_ref().is_none_or(|f| f.accepts(&goal.name))
            && only.is_none_or(|names| names.contains(&goal.name));
        if !kept {
            continue;
        }
        let (dimension, keep) = match &goal.kind {
            GoalKind::EventName(name) => (
                Dimension::EventName,
                ValueFilter::one_of(Dimension::EventName, [name.clone()]),
            ),
            GoalKind::PagePath(pattern) => (
                Dimension::Page,
                ValueFilter::matching(
                    Dimension::Page,
                    &page_pattern(pattern),
                    &format!("goals[{i}].page_path"),
                )?,
            ),
        };
        let mut query = query(dimension as i32);
        query.keep = Some(Arc::new(keep));
        let answer = store.query(&tenant.id, query).await?;
        versions.extend(answer.logic_versions);
        out.extend(answer.groups.into_iter().map(|mut sums| {
            sums.key = goal.name.clone();
            sums.total_visitors = visitors.get(&sums.time).copied().unwrap_or(0);
            sums.point_visitors = sums.total_visitors;
            sums
        }));
    }
    versions.sort_unstable();
    versions.dedup();
    Ok((out, versions))
}

/// The regular expression of a page path pattern: `**` is any characters, `*` any characters
/// but `/`, everything else itself; the whole path must match.
pub fn page_pattern(pattern: &str) -> String {
    let mut out = String::from("^");
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**") {
            out.push_str(".*");
            rest = after;
        } else if let Some(after) = rest.strip_prefix('*') {
            out.push_str("[^/]*");
            rest = after;
        } else {
            let end = rest.find('*').unwrap_or(rest.len());
            out.push_str(&regex::escape(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_patterns() {
        let matches = |pattern: &str, path: &str| {
            regex::Regex::new(&page_pattern(pattern))
                .expect("regex")
                .is_match(path)
        };
        assert!(matches("/pricing", "/pricing"));
        assert!(!matches("/pricing", "/pricing/x"));
        assert!(matches("/blog/*", "/blog/post"));
        assert!(!matches("/blog/*", "/blog/post/comments"));
        assert!(matches("/blog/**", "/blog/post/comments"));
        assert!(matches("/a.b?/*", "/a.b?/x"));
        assert!(!matches("/a.b", "/axb"));
    }
}
