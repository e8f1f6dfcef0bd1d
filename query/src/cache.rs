//! Answers kept until their tenant's rows change: many merchants' browsers ask the same
//! dashboard again and again (every viewer, every refresh), and between two writes of a
//! tenant's rows its answers cannot change.
//!
//! Invariant: an answer is served only while the count of writes that may change its tenant's
//! rows ([`ShardStore::changes`](crate::shard::ShardStore::changes)) is the one read before it
//! was computed, and only for the same tenant settings (time zone, goals, currency) and the same
//! request bytes. The count is read before computing and bumped after each write ends, so a
//! kept answer is never older than the rows it is served for.
//!
//! Callers that ask the same question at once share one computation.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

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
    tenant: Tenant,
    bytes: usize,
    cell: Arc<OnceCell<Value>>,
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
    kept: Mutex<Kept>,
}

impl ResultCache {
    /// A cache of at most `budget` bytes of encoded answers; 0 keeps nothing.
    pub fn new(budget: u64) -> Self {
        Self {
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            kept: Mutex::default(),
        }
    }

    /// Whether answers are kept at all (a budget above 0).
    pub fn keeps(&self) -> bool {
        self.budget > 0
    }

    /// The answer `T` to `request` (encoded) for `tenant`, kept while `changes` (the count of
    /// writes of the tenant's rows, read before this call) stays the same; computed by
    /// `compute` otherwise. Errors are never kept.
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
        let Some(cell) = self.cell(&key, tenant, changes) else {
            // A newer answer is kept already: this caller read the count before a write.
            return compute().await;
        };
        let value = cell
            .get_or_try_init(|| async {
                let answer = compute().await?;
                self.account(&key, &cell, answer.encoded_len());
                Ok::<Value, QueryError>(Arc::new(answer))
            })
            .await?;
        // The key holds the answer's type: another type is never kept under it.
        value.downcast_ref::<T>().cloned().ok_or_else(|| {
            QueryError::Core(beacon_core::Error::Corrupt(format!(
                "a kept answer is not a {}",
                std::any::type_name::<T>()
            )))
        })
    }

    /// The cell of `key` at `changes`: the kept one, or one made anew (counted at once, so that
    /// entries whose computation fails or is abandoned count too) when missing, older or of
    /// other tenant settings; `None` when the kept one is newer.
    fn cell(&self, key: &Key, tenant: &Tenant, changes: u64) -> Option<Arc<OnceCell<Value>>> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = kept.entries.get(key) {
            if entry.changes == changes && entry.tenant == *tenant {
                return Some(entry.cell.clone());
            }
            if entry.changes > changes {
                return None;
            }
        }
        let cell = Arc::new(OnceCell::new());
        let bytes = ENTRY_OVERHEAD + key.tenant.len() + key.request.len() + tenant_bytes(tenant);
        let entry = Entry {
            changes,
            tenant: tenant.clone(),
            bytes,
            cell: cell.clone(),
        };
        match kept.entries.insert(key.clone(), entry) {
            Some(old) => kept.bytes -= old.bytes,
            None => kept.order.push_back(key.clone()),
        }
        kept.bytes += bytes;
        self.evict(&mut kept);
        Some(cell)
    }

    /// Adds the size of the answer just computed into `cell` to its entry, if it is still kept.
    fn account(&self, key: &Key, cell: &Arc<OnceCell<Value>>, answer_bytes: usize) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = kept.entries.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.cell, cell) {
            return;
        }
        entry.bytes += answer_bytes;
        kept.bytes += answer_bytes;
        self.evict(&mut kept);
    }

    /// Drops the oldest entries while over budget.
    fn evict(&self, kept: &mut Kept) {
        while kept.bytes > self.budget {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            if let Some(entry) = kept.entries.remove(&oldest) {
                kept.bytes -= entry.bytes;
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
        let cache = ResultCache::new(1 << 20);
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
        let cache = ResultCache::new(1 << 20);
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
        let off = ResultCache::new(0);
        ask(&off, &shop, 1, &computed).await;
        ask(&off, &shop, 1, &computed).await;
        assert_eq!(computed.load(Ordering::SeqCst), 2);

        let cache = ResultCache::new(1 << 20);
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
        let cache = ResultCache::new(1 << 20);
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
        let cache = ResultCache::new(ENTRY_OVERHEAD as u64 * 10);
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
        let cache = ResultCache::new(ENTRY_OVERHEAD as u64 + 64);
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
}
