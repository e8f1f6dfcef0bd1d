//! Answers kept until their tenant's rows change: many merchants' browsers ask the same
//! dashboard again and again (every viewer, every refresh), and between two writes of a
//! tenant's rows its answers cannot change.
//!
//! Invariant: an answer is served as current only while the count of writes that may change
//! its tenant's rows ([`ShardStore::changes`](crate::shard::ShardStore::changes)) is the one
//! read before it was computed, and only for the same tenant settings (time zone, goals, currency) and the same
//! request bytes. The count is read before computing and bumped after each write ends, so a
//! kept answer is never older than the rows it is served for.
//!
//! Invariant: an older answer is served only to callers that ask while its successor is being
//! computed, and only if its count was read at most the cache's staleness (`--result-stale`)
//! ago: it lacks no write older than that. A caller alone always gets a current answer, so
//! reading after writing sees the writes.
//!
//! Callers that ask the same question at once share one computation; while it runs, the others
//! get the answer before it, if it is recent enough (a busy merchant's dashboard under live
//! traffic changes every second, and would otherwise make every viewer wait for every write).

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use beacon_core::meta::{GoalKind, Tenant};
use tokio::sync::OnceCell;

use crate::QueryError;

/// A kept answer, type-erased.
type Value = Arc<dyn Any + Send + Sync>;

/// What an answer answers: the tenant, the answer's type (one per call) and the encoded
/// request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: String,
    answer: TypeId,
    request: Vec<u8>,
}

/// Bytes counted for an entry besides its request and answer.
const ENTRY_OVERHEAD: usize = 128;

/// One answer, or the computation of it.
struct Entry {
    changes: u64,
    /// When `changes` was read, about.
    read_at: Instant,
    tenant: Tenant,
    /// Bytes counted for the key and tenant record.
    base_bytes: usize,
    /// Encoded size of the answer in `cell`, once computed.
    answer_bytes: usize,
    cell: Arc<OnceCell<Value>>,
    /// Alive while some caller computes `cell` or waits for it.
    busy: Weak<()>,
    /// The answer of an earlier count: served while `cell` is computed, and dropped when it is.
    previous: Option<Answer>,
}

/// A computed answer, when its count was read, and its encoded size.
#[derive(Clone)]
struct Answer {
    value: Value,
    read_at: Instant,
    bytes: usize,
}

impl Entry {
    /// Bytes counted against the budget.
    fn bytes(&self) -> usize {
        self.base_bytes + self.answer_bytes + self.previous.as_ref().map_or(0, |a| a.bytes)
    }

    /// Its answer, once computed.
    fn answer(&self) -> Option<Answer> {
        Some(Answer {
            value: self.cell.get()?.clone(),
            read_at: self.read_at,
            bytes: self.answer_bytes,
        })
    }

    /// The earlier answer to serve instead of waiting: while a computation runs, and if its
    /// count was read within `stale`.
    fn stand_in(&self, stale: Duration) -> Option<Value> {
        if self.cell.initialized() || self.busy.strong_count() == 0 {
            return None;
        }
        let previous = self.previous.as_ref()?;
        (previous.read_at.elapsed() < stale).then(|| previous.value.clone())
    }
}

/// Where a caller gets its answer.
enum Route {
    /// From the cell, holding the token while it computes or waits.
    Cell(Arc<OnceCell<Value>>, Arc<()>),
    /// An earlier answer, recent enough.
    StandIn(Value),
    /// Computed without keeping it: a newer answer is kept already.
    Bypass,
}

#[derive(Default)]
struct Kept {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were first kept: the oldest go first when over budget.
    order: VecDeque<Key>,
    bytes: usize,
}

/// Answers kept up to a byte budget: their encoded size plus each entry's key and tenant
/// record (the memory held is larger, by the decoded answers' allocations).
pub struct ResultCache {
    budget: usize,
    stale: Duration,
    kept: Mutex<Kept>,
}

impl ResultCache {
    /// A cache of at most `budget` bytes of encoded answers (0 keeps nothing), serving an earlier
    /// answer read at most `stale` ago while its successor is computed.
    pub fn new(budget: u64, stale: Duration) -> Self {
        Self {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            stale,
            kept: Mutex::default(),
        }
    }

    /// Whether answers are kept at all (a budget above 0).
    pub fn keeps(&self) -> bool {
        self.budget > 0
    }

    /// The answer `T` to `request` (encoded) for `tenant`, kept while `changes` (the tenant's
    /// shard's count of writes, read before this call) stays the same; computed by `compute`
    /// otherwise, or while another caller computes it, the answer before it (see the module's
    /// invariants). Errors are never kept.
    pub async fn get_or_compute<T, F, Fut>(
        &self,
        tenant: &Tenant,
        changes: Option<u64>,
        request: Vec<u8>,
        compute: F,
    ) -> Result<T, QueryError>
    where
        T: prost::Message + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        let Some(changes) = changes.filter(|_| self.budget > 0) else {
            return compute().await;
        };
        let key = Key {
            tenant: tenant.id.clone(),
            answer: TypeId::of::<T>(),
            request,
        };
        let value = match self.route(&key, tenant, changes) {
            Route::Bypass => return compute().await,
            Route::StandIn(value) => value,
            Route::Cell(cell, _busy) => cell
                .get_or_try_init(|| async {
                    let answer = compute().await?;
                    self.account(&key, &cell, answer.encoded_len());
                    Ok::<Value, QueryError>(Arc::new(answer))
                })
                .await?
                .clone(),
        };
        // The key holds the answer's type: another type is never kept under it.
        value.downcast_ref::<T>().cloned().ok_or_else(|| {
            QueryError::Core(beacon_core::Error::Corrupt(format!(
                "a kept answer is not a {}",
                std::any::type_name::<T>()
            )))
        })
    }

    /// Where the caller of `key` at `changes` gets its answer: the kept cell, an earlier answer
    /// while another caller computes, or a cell made anew (counted at once, so that entries
    /// whose computation fails or is abandoned count too) when missing, older or of other
    /// tenant settings; nowhere when the kept one is newer.
    fn route(&self, key: &Key, tenant: &Tenant, changes: u64) -> Route {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let mut previous = None;
        if let Some(entry) = kept.entries.get_mut(key).filter(|e| e.tenant == *tenant) {
            if entry.changes > changes {
                return Route::Bypass;
            }
            // One computation at a time: a newer count waits for the running one to end.
            if let Some(value) = entry.stand_in(self.stale) {
                return Route::StandIn(value);
            }
            if entry.changes == changes {
                let busy = Arc::new(());
                if entry.busy.strong_count() == 0 {
                    entry.busy = Arc::downgrade(&busy);
                }
                return Route::Cell(entry.cell.clone(), busy);
            }
            previous = entry.answer().or_else(|| entry.previous.clone());
        }
        let busy = Arc::new(());
        let cell = Arc::new(OnceCell::new());
        let entry = Entry {
            changes,
            read_at: Instant::now(),
            tenant: tenant.clone(),
            base_bytes: ENTRY_OVERHEAD
                + key.tenant.len()
                + key.request.len()
                + tenant_bytes(tenant),
            answer_bytes: 0,
            cell: cell.clone(),
            busy: Arc::downgrade(&busy),
            previous,
        };
        kept.bytes += entry.bytes();
        match kept.entries.insert(key.clone(), entry) {
            Some(old) => kept.bytes -= old.bytes(),
            None => kept.order.push_back(key.clone()),
        }
        self.evict(&mut kept);
        Route::Cell(cell, busy)
    }

    /// Counts the answer just computed into `cell` for its entry, if it is still kept, and drops
    /// the earlier answer it replaces.
    fn account(&self, key: &Key, cell: &Arc<OnceCell<Value>>, answer_bytes: usize) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = kept.entries.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.cell, cell) {
            return;
        }
        let before = entry.bytes();
        entry.answer_bytes = answer_bytes;
        entry.previous = None;
        let after = entry.bytes();
        kept.bytes = kept.bytes - before + after;
        self.evict(&mut kept);
    }

    /// Drops the oldest entries while over budget.
    fn evict(&self, kept: &mut Kept) {
        while kept.bytes > self.budget {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            if let Some(entry) = kept.entries.remove(&oldest) {
                kept.bytes -= entry.bytes();
            }
        }
    }
}

/// Bytes of a tenant record's strings, as an entry keeps a copy.
fn tenant_bytes(tenant: &Tenant) -> usize {
    let goals: usize = tenant
        .goals
        .iter()
        .map(|goal| {
            goal.name.len()
                + match &goal.kind {
                    GoalKind::EventName(text) | GoalKind::PagePath(text) => text.len(),
                }
        })
        .sum();
    tenant.id.len()
        + tenant.name.len()
        + tenant.time_zone.len()
        + tenant.currency.len()
        + tenant.site_key.len()
        + tenant.domains.iter().map(String::len).sum::<usize>()
        + goals
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use beacon_proto::insights::v1::{GetAggregateRequest, GetAggregateResponse};
    use prost::Message;

    use super::*;

    const STALE: Duration = Duration::from_secs(60);

    fn tenant() -> Tenant {
        Tenant {
            id: "shop".into(),
            time_zone: "UTC".into(),
            ..Tenant::default()
        }
    }

    async fn ask(
        cache: &ResultCache,
        tenant: &Tenant,
        changes: u64,
        computed: &AtomicUsize,
    ) -> u64 {
        let request = GetAggregateRequest::default();
        cache
            .get_or_compute(tenant, Some(changes), request.encode_to_vec(), || async {
                let n = computed.fetch_add(1, Ordering::SeqCst) as u64;
                Ok(GetAggregateResponse {
                    bot_events: n,
                    ..Default::default()
                })
            })
            .await
            .map(|answer| answer.bot_events)
            .unwrap_or(u64::MAX)
    }

    #[tokio::test]
    async fn an_answer_is_kept_until_the_shard_or_the_tenant_changes() {
        let cache = ResultCache::new(1 << 20, STALE);
        let computed = AtomicUsize::new(0);
        let shop = tenant();
        assert_eq!(ask(&cache, &shop, 7, &computed).await, 0);
        assert_eq!(ask(&cache, &shop, 7, &computed).await, 0, "kept");
        assert_eq!(
            ask(&cache, &shop, 8, &computed).await,
            1,
            "a write: computed again"
        );
        let moved = Tenant {
            time_zone: "Asia/Kolkata".into(),
            ..shop.clone()
        };
        assert_eq!(
            ask(&cache, &moved, 8, &computed).await,
            2,
            "another zone: again"
        );
        assert_eq!(computed.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn callers_asking_at_once_share_one_computation() {
        let cache = ResultCache::new(1 << 20, STALE);
        let computed = AtomicUsize::new(0);
        let shop = tenant();
        let answers =
            futures::future::join_all((0..16).map(|_| ask(&cache, &shop, 1, &computed))).await;
        assert!(answers.iter().all(|a| *a == 0));
        assert_eq!(computed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_is_kept_without_a_budget_or_a_count_and_errors_never() {
        let computed = AtomicUsize::new(0);
        let shop = tenant();
        let off = ResultCache::new(0, STALE);
        ask(&off, &shop, 1, &computed).await;
        ask(&off, &shop, 1, &computed).await;
        assert_eq!(computed.load(Ordering::SeqCst), 2);

        let cache = ResultCache::new(1 << 20, STALE);
        let request = GetAggregateRequest::default();
        let failed: Result<GetAggregateResponse, _> = cache
            .get_or_compute(&shop, Some(1), request.encode_to_vec(), || async {
                Err(QueryError::invalid("no"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            ask(&cache, &shop, 1, &computed).await,
            2,
            "the error was not kept"
        );
    }

    #[tokio::test]
    async fn a_caller_with_an_older_count_leaves_the_newer_answer_kept() {
        let cache = ResultCache::new(1 << 20, STALE);
        let computed = AtomicUsize::new(0);
        let shop = tenant();
        assert_eq!(ask(&cache, &shop, 9, &computed).await, 0);
        assert_eq!(
            ask(&cache, &shop, 8, &computed).await,
            1,
            "computed, not kept"
        );
        assert_eq!(
            ask(&cache, &shop, 9, &computed).await,
            0,
            "the newer one stays"
        );
    }

    #[tokio::test]
    async fn failed_requests_count_against_the_budget() {
        let cache = ResultCache::new(ENTRY_OVERHEAD as u64 * 10, STALE);
        let shop = tenant();
        for n in 0..1000u32 {
            let request = GetAggregateRequest {
                metrics: vec![n as i32],
                ..Default::default()
            };
            let failed: Result<GetAggregateResponse, _> = cache
                .get_or_compute(&shop, Some(1), request.encode_to_vec(), || async {
                    Err(QueryError::invalid("no"))
                })
                .await;
            assert!(failed.is_err());
        }
        let kept = cache.kept.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(kept.bytes <= cache.budget, "{} bytes kept", kept.bytes);
        assert!(
            kept.entries.len() < 10,
            "{} entries kept",
            kept.entries.len()
        );
    }

    #[tokio::test]
    async fn the_oldest_answers_go_when_over_budget() {
        // Room for one answer: the second pushes the first out.
        let cache = ResultCache::new(ENTRY_OVERHEAD as u64 + 64, STALE);
        let computed = AtomicUsize::new(0);
        let (a, b) = (
            tenant(),
            Tenant {
                id: "other".into(),
                ..tenant()
            },
        );
        ask(&cache, &a, 1, &computed).await;
        ask(&cache, &b, 1, &computed).await;
        ask(&cache, &a, 1, &computed).await;
        assert_eq!(computed.load(Ordering::SeqCst), 3);
    }

    /// Asks at `changes` with a computation that answers `n` once `go` is notified.
    async fn ask_held(cache: &ResultCache, changes: u64, n: u64, go: &tokio::sync::Notify) -> u64 {
        let request = GetAggregateRequest::default();
        cache
            .get_or_compute(
                &tenant(),
                Some(changes),
                request.encode_to_vec(),
                || async {
                    go.notified().await;
                    Ok(GetAggregateResponse {
                        bot_events: n,
                        ..Default::default()
                    })
                },
            )
            .await
            .map(|answer| answer.bot_events)
            .unwrap_or(u64::MAX)
    }

    #[tokio::test]
    async fn while_one_caller_computes_the_others_get_the_answer_before() {
        let cache = ResultCache::new(1 << 20, STALE);
        let computed = AtomicUsize::new(0);
        assert_eq!(ask(&cache, &tenant(), 1, &computed).await, 0);
        let go = tokio::sync::Notify::new();
        let computing = ask_held(&cache, 2, 7, &go);
        tokio::pin!(computing);
        assert!(
            futures::poll!(computing.as_mut()).is_pending(),
            "computing the answer at 2"
        );
        assert_eq!(
            ask(&cache, &tenant(), 2, &computed).await,
            0,
            "the answer at 1 meanwhile"
        );
        assert_eq!(
            ask(&cache, &tenant(), 3, &computed).await,
            0,
            "a newer count waits for the running computation too"
        );
        go.notify_one();
        assert_eq!(computing.await, 7);
        assert_eq!(ask(&cache, &tenant(), 2, &computed).await, 7, "kept");
        assert_eq!(
            ask(&cache, &tenant(), 3, &computed).await,
            1,
            "alone, a caller gets the current answer"
        );
        assert_eq!(computed.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_older_than_the_staleness_is_not_served() {
        let cache = ResultCache::new(1 << 20, Duration::ZERO);
        let computed = AtomicUsize::new(0);
        assert_eq!(ask(&cache, &tenant(), 1, &computed).await, 0);
        let go = tokio::sync::Notify::new();
        let computing = ask_held(&cache, 2, 7, &go);
        tokio::pin!(computing);
        assert!(futures::poll!(computing.as_mut()).is_pending());
        let shop = tenant();
        let waiting = ask(&cache, &shop, 2, &computed);
        tokio::pin!(waiting);
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "waits for the computation"
        );
        go.notify_one();
        assert_eq!(computing.await, 7);
        assert_eq!(waiting.await, 7);
    }

    #[tokio::test]
    async fn an_abandoned_computation_leaves_the_next_caller_to_compute() {
        let cache = ResultCache::new(1 << 20, STALE);
        let computed = AtomicUsize::new(0);
        assert_eq!(ask(&cache, &tenant(), 1, &computed).await, 0);
        let go = tokio::sync::Notify::new();
        {
            let abandoned = ask_held(&cache, 2, 7, &go);
            tokio::pin!(abandoned);
            assert!(futures::poll!(abandoned.as_mut()).is_pending());
        }
        assert_eq!(
            ask(&cache, &tenant(), 2, &computed).await,
            1,
            "computed, not the answer at 1"
        );
    }
}
