//! The read of a [`ShardQuery`]: filtered scans, cells added up per group here, then the best
//! groups picked. Sketches are read and merged only for the groups returned.

use std::collections::{BTreeSet, HashMap, HashSet};

use ::duckdb::{Connection, params};
use beacon_proto::insights::v1::Metric;

use super::cell::Cell;
use super::{Answer, ShardQuery, Top, schema};
use crate::error::ShardFailure;
use crate::metrics::{self, Sums};

/// Most bytes of visitor sketches one read may hold (the rows of a dimension over the range).
const MAX_READ_SKETCH_BYTES: usize = 512 << 20;

/// The groups of `tenant`'s rows matching `query`; `dimension` is the query's, checked.
///
/// Ranked by a counter, the read takes two scans: counters of every group first, then the
/// sketches of the winners only, so memory grows with the groups' counters, not their
/// sketches. Otherwise every group's sketches are merged, and a read that would hold more than
/// [`MAX_READ_SKETCH_BYTES`] of them fails, naming the limit.
pub(crate) fn sums(
    conn: &Connection,
    tenant: &str,
    dimension: i16,
    query: &ShardQuery,
) -> Result<Answer, ShardFailure> {
    let mut versions = BTreeSet::new();
    let groups = groups(conn, tenant, dimension, query, &mut versions)?;
    Ok(Answer {
        groups,
        logic_versions: versions.into_iter().collect(),
    })
}

fn groups(
    conn: &Connection,
    tenant: &str,
    dimension: i16,
    query: &ShardQuery,
    versions: &mut BTreeSet<u32>,
) -> Result<Vec<Sums>, ShardFailure> {
    match query.top {
        Some(top) if top.metric != Metric::Visitors => {
            let groups = scan(conn, tenant, dimension, query, versions, |_| false)?;
            let mut ranked = all(&groups, false)?;
            rank(&mut ranked, top);
            let winners: HashSet<&str> = ranked.iter().map(|s| s.key.as_str()).collect();
            let sketches = scan(conn, tenant, dimension, query, versions, |key| {
                winners.contains(key)
            })?;
            for sums in &mut ranked {
                if let Some(merge) = sketches
                    .get(&sums.key)
                    .and_then(|cell| cell.sketch.as_ref())
                {
                    sums.visitors = merge.count()?;
                }
            }
            Ok(ranked)
        }
        top => {
            let groups = scan(conn, tenant, dimension, query, versions, |_| true)?;
            let mut out = all(&groups, true)?;
            if let Some(top) = top {
                rank(&mut out, top);
            }
            Ok(out)
        }
    }
}

/// One scan: the cells of every group added up, sketches kept only for the groups `sketch`
/// selects; the rows' logic versions are added to `versions`.
fn scan(
    conn: &Connection,
    tenant: &str,
    dimension: i16,
    query: &ShardQuery,
    versions: &mut BTreeSet<u32>,
    sketch: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Cell>, ShardFailure> {
    let mut groups: HashMap<String, Cell> = HashMap::new();
    let mut statement = conn.prepare_cached(&schema::select(query.group))?;
    let mut rows = statement.query(params![
        tenant,
        dimension,
        query.start.to_string(),
        query.end.to_string()
    ])?;
    let mut held = 0usize;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let version: i32 = row.get(8)?;
        versions.insert(u32::try_from(version).unwrap_or(0));
        let cell = if sketch(&key) {
            Cell::read(row, 1)?
        } else {
            Cell::read_counters(row, 1)?
        };
        held += cell.sketch.as_ref().map_or(0, |s| s.held_bytes());
        if held > MAX_READ_SKETCH_BYTES {
            return Err(ShardFailure::Budget(format!(
                "the query reads more than {} MiB of visitor sketches; choose a shorter date \
                 range or fewer groups",
                MAX_READ_SKETCH_BYTES >> 20
            )));
        }
        match groups.get_mut(&key) {
            Some(sum) => sum.add(cell),
            None => {
                groups.insert(key, cell);
            }
        }
    }
    Ok(groups)
}

fn all(groups: &HashMap<String, Cell>, visitors: bool) -> Result<Vec<Sums>, ShardFailure> {
    groups
        .iter()
        .map(|(key, cell)| cell.sums(key.clone(), visitors))
        .collect()
}

/// Orders by the metric, highest first, then by key; keeps the first `limit`.
fn rank(groups: &mut Vec<Sums>, top: Top) {
    groups.sort_by(|a, b| {
        metrics::value(top.metric, b)
            .total_cmp(&metrics::value(top.metric, a))
            .then_with(|| a.key.cmp(&b.key))
    });
    groups.truncate(top.limit as usize);
}
