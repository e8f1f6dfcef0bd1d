//! The admin API: tenants and keys, and the dead-letter tools, behind the admin token.

use std::sync::Arc;
use std::time::Duration;

use beacon_core::auth::{Registry, request_key};
use beacon_core::deadletter::{DeadLetters, Parked, source_name};
use beacon_core::log::Log;
use beacon_core::meta::{self, KeyKind};
use beacon_proto::admin::v1::admin_service_server::AdminService;
use beacon_proto::admin::v1::{
    CancelReprocessRequest, CancelReprocessResponse, CreateKeyRequest, CreateKeyResponse,
    CreateTenantRequest, CreateTenantResponse, DeadLetterInfo, DeleteEventsRequest,
    DeleteEventsResponse, DeleteTenantRequest, DeleteTenantResponse, DropDeadLetterRequest,
    DropDeadLetterResponse, GetDeadLetterRequest, GetDeadLetterResponse, GetReprocessRequest,
    GetReprocessResponse, Goal, KeyInfo as ProtoKeyInfo, KeyKind as ProtoKeyKind,
    ListDeadLettersRequest, ListDeadLettersResponse, ListKeysRequest, ListKeysResponse,
    ListReprocessRequest, ListReprocessResponse, ListStaleRequest, ListStaleResponse,
    ListTenantsRequest, ListTenantsResponse, ReplayDeadLetterRequest, ReplayDeadLetterResponse,
    ResetTenantRequest, ResetTenantResponse, RevokeKeyRequest, RevokeKeyResponse, RotateKeyRequest,
    RotateKeyResponse, SetCurrencyRequest, SetCurrencyResponse, SetDomainsRequest,
    SetDomainsResponse, SetGoalsRequest, SetGoalsResponse, SetRawRetentionRequest,
    SetRawRetentionResponse, SetTimeZoneRequest, SetTimeZoneResponse, StartReprocessRequest,
    StartReprocessResponse, Tenant, goal,
};
use tonic::{Request, Response, Status};

mod reprocess;

/// Most days of raw-event retention (a hundred years).
const MAX_RETENTION_DAYS: u32 = 36_600;
/// Most dead letters one list call returns.
const MAX_LIST: u32 = 1000;
/// Dead letters one list call returns when the request does not say.
const DEFAULT_LIST: u32 = 100;

/// Admin API over the tenant registry and the dead-letter log.
#[derive(Clone)]
pub struct Admin {
    /// The registry.
    pub registry: Registry,
    /// The admin token (checked for strength at startup).
    pub token: String,
    /// The dead-letter log.
    pub dead_letters: DeadLetters,
    /// The event log, for replays.
    pub events: Arc<dyn Log>,
    /// The rollup log, for replays.
    pub rollups: Arc<dyn Log>,
    /// Partition count.
    pub partitions: u32,
    /// Reprocessing jobs.
    pub jobs: beacon_core::jobs::Jobs,
    /// Where query replicas report the logic versions of their shards.
    pub snapshots: Arc<dyn beacon_core::meta::SnapshotStore>,
}

impl Admin {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request_key(request.metadata())?;
        if constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong admin token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn info(parked: &Parked) -> DeadLetterInfo {
    let letter = &parked.letter;
    DeadLetterInfo {
        partition: parked.partition,
        seq: parked.seq,
        source: source_name(letter.source).to_owned(),
        source_seq: letter.seq,
        index: letter.index,
        cause: letter.cause.clone(),
        reason: letter.reason.clone(),
        tenant_id: letter.tenant_id.clone(),
        parked_ms: letter.parked_ms,
        payload_bytes: letter.payload_bytes,
        payload_kept: !letter.payload.is_empty(),
    }
}

/// A page position: "<partition>:<seq>", the last letter returned.
fn parse_token(token: &str) -> Result<(u32, u64), Status> {
    if token.is_empty() {
        return Ok((0, 0));
    }
    token
        .split_once(':')
        .and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "page_token {token:?} is not a token from a previous response"
            ))
        })
}

impl Admin {
    /// One page of letters from `(partition, after)` on.
    async fn page(
        &self,
        mut partition: u32,
        mut after: u64,
        limit: usize,
        cause: &str,
    ) -> Result<(Vec<DeadLetterInfo>, String), Status> {
        let mut letters = Vec::new();
        while partition < self.partitions && letters.len() < limit {
            let page = self.dead_letters.list(partition, after, limit).await?;
            let Some(last) = page.last() else {
                partition += 1;
                after = 0;
                continue;
            };
            after = last.seq;
            for parked in &page {
                if letters.len() < limit && (cause.is_empty() || parked.letter.cause == cause) {
                    letters.push(info(parked));
                }
            }
        }
        let token = match letters.last() {
            Some(last) if letters.len() >= limit => format!("{}:{}", last.partition, last.seq),
            _ => String::new(),
        };
        Ok((letters, token))
    }
}

fn kind_from_proto(kind: i32) -> Result<KeyKind, Status> {
    match ProtoKeyKind::try_from(kind) {
        Ok(ProtoKeyKind::Ingest) => Ok(KeyKind::Ingest),
        Ok(ProtoKeyKind::Read) => Ok(KeyKind::Read),
        Ok(ProtoKeyKind::Server) => Ok(KeyKind::Server),
        Ok(ProtoKeyKind::Shared) => Ok(KeyKind::Shared),
        _ => Err(Status::invalid_argument(
            "kind: must be KEY_KIND_INGEST, KEY_KIND_READ, KEY_KIND_SERVER or KEY_KIND_SHARED",
        )),
    }
}

fn kind_to_proto(kind: KeyKind) -> ProtoKeyKind {
    match kind {
        KeyKind::Ingest => ProtoKeyKind::Ingest,
        KeyKind::Read => ProtoKeyKind::Read,
        KeyKind::Server => ProtoKeyKind::Server,
        KeyKind::Shared => ProtoKeyKind::Shared,
    }
}

fn to_proto(tenant: meta::Tenant) -> Tenant {
    Tenant {
        id: tenant.id,
        name: tenant.name,
        time_zone: tenant.time_zone,
        raw_retention_days: tenant.raw_retention_days,
        goals: tenant.goals.into_iter().map(goal_to_proto).collect(),
        currency: tenant.currency,
        domains: tenant.domains,
    }
}

fn goal_to_proto(goal: meta::Goal) -> Goal {
    Goal {
        name: goal.name,
        kind: Some(match goal.kind {
            meta::GoalKind::EventName(name) => goal::Kind::EventName(name),
            meta::GoalKind::PagePath(pattern) => goal::Kind::PagePath(pattern),
        }),
    }
}

fn goal_from_proto(index: usize, goal: Goal) -> Result<meta::Goal, Status> {
    let kind = match goal.kind {
        Some(goal::Kind::EventName(name)) => meta::GoalKind::EventName(name),
        Some(goal::Kind::PagePath(pattern)) => meta::GoalKind::PagePath(pattern),
        None => {
            return Err(Status::invalid_argument(format!(
                "goals[{index}]: set event_name or page_path"
            )));
        }
    };
    Ok(meta::Goal {
        name: goal.name,
        kind,
    })
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let (tenant, ingest_key, read_key) = self
            .registry
            .create_tenant(&req.id, &req.name, &req.time_zone)
            .await?;
        tracing::info!(tenant = %tenant.id, time_zone = %tenant.time_zone, "tenant created");
        Ok(Response::new(CreateTenantResponse {
            tenant: Some(to_proto(tenant)),
            ingest_key,
            read_key,
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        self.check(&request)?;
        let tenants = self.registry.tenants().await?;
        Ok(Response::new(ListTenantsResponse {
            tenants: tenants.into_iter().map(to_proto).collect(),
        }))
    }

    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let kind = kind_from_proto(req.kind)?;
        let key = self.registry.create_key(&req.tenant_id, kind).await?;
        tracing::info!(tenant = %req.tenant_id, kind = ?kind, "key created");
        Ok(Response::new(CreateKeyResponse { key }))
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let keys = self.registry.keys(&req.tenant_id).await?;
        Ok(Response::new(ListKeysResponse {
            keys: keys
                .into_iter()
                .map(|key| ProtoKeyInfo {
                    id: key.id,
                    kind: kind_to_proto(key.kind) as i32,
                    created_ms: key.created_ms,
                    expires_ms: key.expires_ms.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let grace = Duration::from_secs(u64::from(req.grace_seconds));
        let expires_ms = self
            .registry
            .revoke_key(&req.tenant_id, &req.key_id, grace)
            .await?;
        tracing::info!(tenant = %req.tenant_id, key = %req.key_id, expires_ms, "key revoked");
        Ok(Response::new(RevokeKeyResponse { expires_ms }))
    }

    async fn rotate_key(
        &self,
        request: Request<RotateKeyRequest>,
    ) -> Result<Response<RotateKeyResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let grace = Duration::from_secs(u64::from(req.grace_seconds));
        let key = self
            .registry
            .rotate_key(&req.tenant_id, &req.key_id, grace)
            .await?;
        tracing::info!(tenant = %req.tenant_id, key = %req.key_id, grace_seconds = req.grace_seconds, "key rotated");
        Ok(Response::new(RotateKeyResponse { key }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIST,
            n if n <= MAX_LIST => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is over the maximum of {MAX_LIST}"
                )));
            }
        };
        let (partition, after) = parse_token(&req.page_token)?;
        let (letters, next_page_token) = self
            .page(partition, after, limit as usize, &req.cause)
            .await?;
        let counts_by_cause = self
            .dead_letters
            .counts(self.partitions)
            .await?
            .into_iter()
            .collect();
        Ok(Response::new(ListDeadLettersResponse {
            letters,
            next_page_token,
            counts_by_cause,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<GetDeadLetterResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let parked = self.dead_letters.get(req.partition, req.seq).await?;
        Ok(Response::new(GetDeadLetterResponse {
            letter: Some(info(&parked)),
            payload: parked.letter.payload,
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<ReplayDeadLetterRequest>,
    ) -> Result<Response<ReplayDeadLetterResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let (log, seq) = self
            .dead_letters
            .replay(
                req.partition,
                req.seq,
                self.events.as_ref(),
                self.rollups.as_ref(),
            )
            .await?;
        tracing::info!(
            partition = req.partition,
            dead_letter = req.seq,
            log,
            seq,
            "dead letter replayed"
        );
        Ok(Response::new(ReplayDeadLetterResponse {
            log: log.to_owned(),
            seq,
        }))
    }

    async fn drop_dead_letter(
        &self,
        request: Request<DropDeadLetterRequest>,
    ) -> Result<Response<DropDeadLetterResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        self.dead_letters.remove(req.partition, req.seq).await?;
        tracing::info!(
            partition = req.partition,
            dead_letter = req.seq,
            "dead letter dropped"
        );
        Ok(Response::new(DropDeadLetterResponse {}))
    }

    async fn start_reprocess(
        &self,
        request: Request<StartReprocessRequest>,
    ) -> Result<Response<StartReprocessResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let jobs = reprocess::start(&self.jobs, &self.registry, &req).await?;
        Ok(Response::new(StartReprocessResponse { jobs }))
    }

    async fn get_reprocess(
        &self,
        request: Request<GetReprocessRequest>,
    ) -> Result<Response<GetReprocessResponse>, Status> {
        self.check(&request)?;
        let id = request.into_inner().id;
        let Some(job) = self.jobs.get(&id).await? else {
            return Err(Status::not_found(format!(
                "id {id:?} is not a reprocessing job"
            )));
        };
        let totals = self.jobs.totals(&id).await?;
        Ok(Response::new(GetReprocessResponse {
            job: Some(reprocess::view(&job, totals)),
        }))
    }

    async fn list_reprocess(
        &self,
        request: Request<ListReprocessRequest>,
    ) -> Result<Response<ListReprocessResponse>, Status> {
        self.check(&request)?;
        let tenant = request.into_inner().tenant_id;
        let jobs = self
            .jobs
            .all()
            .await?
            .into_iter()
            .filter(|job| tenant.is_empty() || job.tenant_id == tenant)
            .map(|job| reprocess::view(&job, None))
            .collect();
        Ok(Response::new(ListReprocessResponse { jobs }))
    }

    async fn cancel_reprocess(
        &self,
        request: Request<CancelReprocessRequest>,
    ) -> Result<Response<CancelReprocessResponse>, Status> {
        self.check(&request)?;
        let id = request.into_inner().id;
        if self.jobs.get(&id).await?.is_none() {
            return Err(Status::not_found(format!(
                "id {id:?} is not a reprocessing job"
            )));
        }
        self.jobs.cancel(&id).await?;
        tracing::info!(job = %id, "reprocessing job cancel requested");
        Ok(Response::new(CancelReprocessResponse {}))
    }

    async fn set_time_zone(
        &self,
        request: Request<SetTimeZoneRequest>,
    ) -> Result<Response<SetTimeZoneResponse>, Status> {
        self.check(&request)?;
        let job = reprocess::set_time_zone(&self.jobs, &self.registry, request.get_ref()).await?;
        Ok(Response::new(SetTimeZoneResponse { job: Some(job) }))
    }

    async fn delete_events(
        &self,
        request: Request<DeleteEventsRequest>,
    ) -> Result<Response<DeleteEventsResponse>, Status> {
        self.check(&request)?;
        let job = reprocess::delete_events(&self.jobs, &self.registry, request.get_ref()).await?;
        tracing::info!(job = %job.id, "event deletion job created");
        Ok(Response::new(DeleteEventsResponse { job: Some(job) }))
    }

    async fn reset_tenant(
        &self,
        request: Request<ResetTenantRequest>,
    ) -> Result<Response<ResetTenantResponse>, Status> {
        self.check(&request)?;
        let job = reprocess::reset(
            &self.jobs,
            &self.registry,
            &request.get_ref().tenant_id,
            false,
        )
        .await?;
        tracing::info!(job = %job.id, "tenant reset job created");
        Ok(Response::new(ResetTenantResponse { job: Some(job) }))
    }

    async fn list_stale(
        &self,
        request: Request<ListStaleRequest>,
    ) -> Result<Response<ListStaleResponse>, Status> {
        self.check(&request)?;
        let version = request.get_ref().logic_version;
        let ranges = reprocess::stale(self.snapshots.as_ref(), version).await?;
        Ok(Response::new(ListStaleResponse { ranges }))
    }

    async fn set_raw_retention(
        &self,
        request: Request<SetRawRetentionRequest>,
    ) -> Result<Response<SetRawRetentionResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        if req.raw_retention_days > MAX_RETENTION_DAYS {
            return Err(Status::invalid_argument(format!(
                "raw_retention_days: {}, the limit is {MAX_RETENTION_DAYS} (0 keeps raw events forever)",
                req.raw_retention_days
            )));
        }
        self.registry
            .set_raw_retention(&req.tenant_id, req.raw_retention_days)
            .await?;
        tracing::info!(tenant = %req.tenant_id, days = req.raw_retention_days, "raw retention set");
        Ok(Response::new(SetRawRetentionResponse {}))
    }

    async fn set_currency(
        &self,
        request: Request<SetCurrencyRequest>,
    ) -> Result<Response<SetCurrencyResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        self.registry
            .set_currency(&req.tenant_id, &req.currency)
            .await?;
        tracing::info!(tenant = %req.tenant_id, currency = %req.currency, "currency set");
        Ok(Response::new(SetCurrencyResponse {}))
    }

    async fn set_domains(
        &self,
        request: Request<SetDomainsRequest>,
    ) -> Result<Response<SetDomainsResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let tenant = self
            .registry
            .set_domains(&req.tenant_id, req.domains)
            .await?;
        tracing::info!(tenant = %tenant.id, domains = ?tenant.domains, "site domains set");
        Ok(Response::new(SetDomainsResponse {
            domains: tenant.domains,
        }))
    }

    async fn set_goals(
        &self,
        request: Request<SetGoalsRequest>,
    ) -> Result<Response<SetGoalsResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let goals = req
            .goals
            .into_iter()
            .enumerate()
            .map(|(i, goal)| goal_from_proto(i, goal))
            .collect::<Result<Vec<_>, _>>()?;
        let count = goals.len();
        self.registry.set_goals(&req.tenant_id, goals).await?;
        tracing::info!(tenant = %req.tenant_id, goals = count, "goals set");
        Ok(Response::new(SetGoalsResponse {}))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<DeleteTenantResponse>, Status> {
        self.check(&request)?;
        let tenant = request.into_inner().tenant_id;
        let job = reprocess::reset(&self.jobs, &self.registry, &tenant, true).await?;
        let revoked = self.registry.revoke_all_keys(&tenant).await?;
        tracing::info!(tenant, job = %job.id, keys_revoked = revoked, "tenant deleted");
        Ok(Response::new(DeleteTenantResponse {
            job: Some(job),
            keys_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }
}
