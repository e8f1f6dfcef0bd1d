//! Swaps of staged generations, gathered through a run and done together.
//!
//! A swap scans the shard's tables: rows of all tenants are interleaved, so a tenant's filter
//! prunes little. Late-event jobs of many small tenants swap in bursts (in a 300,000-event
//! benchmark run, 248 of 318 swaps came in bursts of 5 to 26 within half a second), so a run
//! often holds several swaps; done together, they cost seven statements and scans, not seven
//! per swap.

use ::duckdb::Transaction;
use ::duckdb::types::Value;
use beacon_proto::pipeline::v1::{Swap, SwapTotals, Totals};

use super::super::cell::Cell;
use super::super::schema;
use crate::error::ShardFailure;

/// A swap waiting for the rows before it to be appended.
struct Pending<'a> {
    tenant: &'a str,
    gen_id: u64,
    swap: &'a Swap,
}

/// The swaps of a run not done yet, at most one per tenant.
#[derive(Default)]
pub(super) struct Swaps<'a> {
    pending: Vec<Pending<'a>>,
}

impl<'a> Swaps<'a> {
    /// Whether `tenant` has a swap waiting: its later rows must wait until it is done.
    pub(super) fn holds(&self, tenant: &str) -> bool {
        self.pending.iter().any(|p| p.tenant == tenant)
    }

    /// Adds the swap of `tenant`'s generation `gen_id`; the tenant must have none waiting.
    pub(super) fn push(&mut self, tenant: &'a str, gen_id: u64, swap: &'a Swap) {
        debug_assert!(!self.holds(tenant), "one swap per tenant at a time");
        self.pending.push(Pending {
            tenant,
            gen_id,
            swap,
        });
    }

    /// Does every waiting swap (the rows before them are appended): replaces each tenant's
    /// live rows of the swap's dates with its generation. Returns each swap's job and totals
    /// before and after, in the order they came.
    pub(super) fn run(
        &mut self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<(String, SwapTotals)>, ShardFailure> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let params = params(&pending);
        let [totals_sql, changes @ ..] = schema::swaps(pending.len());
        let mut totals: Vec<(Option<Cell>, Option<Cell>)> = std::iter::repeat_with(|| (None, None))
            .take(pending.len())
            .collect();
        {
            let mut statement = tx.prepare(&totals_sql)?;
            let mut rows = statement.query(::duckdb::params_from_iter(&params))?;
            while let Some(row) = rows.next()? {
                let index = usize::try_from(row.get::<_, u32>(0)?).unwrap_or(usize::MAX);
                let Some((live, staged)) = totals.get_mut(index) else {
                    continue;
                };
                let total = match row.get::<_, u64>(1)? {
                    0 => live,
                    _ => staged,
                };
                let cell = Cell::read(row, 2)?;
                match total {
                    Some(sum) => sum.add(cell),
                    None => *total = Some(cell),
                }
            }
        }
        for sql in &changes {
            tx.prepare(sql)?
                .execute(::duckdb::params_from_iter(&params))?;
        }
        pending
            .into_iter()
            .zip(totals)
            .map(|(p, (before, after))| {
                let totals = SwapTotals {
                    before: Some(sum_up(before)?),
                    after: Some(sum_up(after)?),
                };
                Ok((p.swap.job_id.clone(), totals))
            })
            .collect()
    }
}

/// The parameters of [`schema::swaps`]: tenant, generation, first and last date, index.
fn params(pending: &[Pending<'_>]) -> Vec<Value> {
    let mut params = Vec::with_capacity(pending.len() * 5);
    for (index, p) in pending.iter().enumerate() {
        params.extend([
            Value::Text(p.tenant.to_owned()),
            Value::UBigInt(p.gen_id),
            Value::Text(p.swap.first_date.clone()),
            Value::Text(p.swap.last_date.clone()),
            Value::UInt(u32::try_from(index).unwrap_or(u32::MAX)),
        ]);
    }
    params
}

/// The totals of summed cells; zeros for none.
fn sum_up(total: Option<Cell>) -> Result<Totals, ShardFailure> {
    let Some(total) = total else {
        return Ok(Totals::default());
    };
    let sums = total.sums(String::new(), true)?;
    Ok(Totals {
        pageviews: sums.pageviews,
        events: sums.events,
        visits: sums.visits,
        bounces: sums.bounces,
        duration_ms: sums.duration_ms,
        bot_events: sums.bot_events,
        visitors: sums.visitors,
    })
}
