//! The read of a [`ShardQuery`]: counters summed by DuckDB, visitor sketches merged here,
//! then the best groups picked.

use std::collections::{HashMap, HashSet};

use ::duckdb::{Connection, params};
use beacon_proto::insights::v1::Metric;

use super::sketch::Merge;
use super::{ShardQuery, Top, schema};
use crate::error::ShardFailure;
use crate::metrics::{self, Sums};

/// The groups of `tenant`'s rows matching `query`; `dimension` is the query's, checked.
pub(crate) fn sums(
    conn: &Connection,
    tenant: &str,
    dimension: i16,
    query: &ShardQuery,
) -> Result<Vec<Sums>, ShardFailure> {
    let (start, end) = (query.start.to_string(), query.end.to_string());
    let mut groups = counters(conn, tenant, dimension, query, &start, &end)?;
    // Ranked by a counter: only the winners need their sketches merged.
    let wanted: Option<HashSet<String>> = match query.top {
        Some(top) if top.metric != Metric::Visitors => {
            let mut ranked: Vec<Sums> = groups.values().cloned().collect();
            rank(&mut ranked, top);
            Some(ranked.into_iter().map(|sums| sums.key).collect())
        }
        _ => None,
    };
    let mut merges: HashMap<String, Merge> = HashMap::new();
    let mut statement = conn.prepare_cached(&schema::select_sketches(query.group))?;
    let mut rows = statement.query(params![tenant, dimension, start, end])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        if wanted.as_ref().is_some_and(|wanted| !wanted.contains(&key)) {
            continue;
        }
        let sketch: Vec<u8> = row.get(1)?;
        match merges.get_mut(&key) {
            Some(merge) => merge.add(&sketch)?,
            None => {
                merges.insert(key, Merge::of(sketch));
            }
        }
    }
    for (key, merge) in merges {
        let visitors = merge.count()?;
        groups
            .entry(key)
            .or_insert_with_key(|key| Sums {
                key: key.clone(),
                ..Sums::default()
            })
            .visitors = visitors;
    }
    let mut out: Vec<Sums> = groups.into_values().collect();
    if let Some(top) = query.top {
        rank(&mut out, top);
    }
    Ok(out)
}

fn counters(
    conn: &Connection,
    tenant: &str,
    dimension: i16,
    query: &ShardQuery,
    start: &str,
    end: &str,
) -> Result<HashMap<String, Sums>, ShardFailure> {
    let mut statement = conn.prepare_cached(&schema::select_counters(query.group))?;
    let rows = statement.query_map(params![tenant, dimension, start, end], |row| {
        Ok(Sums {
            key: row.get(0)?,
            visitors: 0,
            visits: row.get(1)?,
            pageviews: row.get(2)?,
            events: row.get(3)?,
            bounces: row.get(4)?,
            duration_ms: row.get(5)?,
            bot_events: row.get(6)?,
        })
    })?;
    let mut groups = HashMap::new();
    for sums in rows {
        let sums = sums?;
        groups.insert(sums.key.clone(), sums);
    }
    Ok(groups)
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
