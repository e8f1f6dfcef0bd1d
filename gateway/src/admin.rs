//! The admin API: tenants and keys, behind the admin token.

use beacon_core::auth::{Registry, request_key};
use beacon_core::meta::{self, KeyKind};
use beacon_proto::admin::v1::admin_service_server::AdminService;
use beacon_proto::admin::v1::{
    CreateKeyRequest, CreateKeyResponse, CreateTenantRequest, CreateTenantResponse,
    ListTenantsRequest, ListTenantsResponse, Tenant,
};
use tonic::{Request, Response, Status};

/// Admin API over the tenant registry.
#[derive(Clone)]
pub struct Admin {
    /// The registry.
    pub registry: Registry,
    /// The admin token; `None` disables the API.
    pub token: Option<String>,
}

impl Admin {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.token else {
            return Err(Status::unauthenticated(
                "the admin API is disabled: start the gateway with BEACON_ADMIN_TOKEN",
            ));
        };
        let given = request_key(request.metadata())?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("wrong admin token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_proto(tenant: meta::Tenant) -> Tenant {
    Tenant {
        id: tenant.id,
        name: tenant.name,
        time_zone: tenant.time_zone,
    }
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
        let kind = match beacon_proto::admin::v1::KeyKind::try_from(req.kind) {
            Ok(beacon_proto::admin::v1::KeyKind::Ingest) => KeyKind::Ingest,
            Ok(beacon_proto::admin::v1::KeyKind::Read) => KeyKind::Read,
            _ => {
                return Err(Status::invalid_argument(
                    "kind: must be KEY_KIND_INGEST or KEY_KIND_READ",
                ));
            }
        };
        let key = self.registry.create_key(&req.tenant_id, kind).await?;
        Ok(Response::new(CreateKeyResponse { key }))
    }
}
