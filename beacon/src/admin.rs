//! `beacon admin`: tenants and keys through the gateway's admin listener.

use anyhow::Context;
use beacon_core::auth::with_bearer;
use beacon_proto::admin::v1::admin_service_client::AdminServiceClient;
use beacon_proto::admin::v1::{
    CreateKeyRequest, CreateTenantRequest, DeleteTenantRequest, Goal, KeyKind, ListKeysRequest,
    ListTenantsRequest, RevokeKeyRequest, RotateKeyRequest, SetCurrencyRequest, SetDomainsRequest,
    SetGoalsRequest, SetRawRetentionRequest, goal,
};
use tonic::transport::Channel;

/// Where the admin API is and the token it takes.
#[derive(Debug, clap::Args)]
pub struct AdminConnection {
    /// URL of the gateway's admin listener.
    #[arg(
        long,
        env = "BEACON_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub url: String,
    /// Admin token (printed by `beacon standalone`).
    #[arg(long, env = "BEACON_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl AdminConnection {
    /// A client of the admin API.
    pub async fn connect(&self) -> anyhow::Result<AdminServiceClient<Channel>> {
        let channel = Channel::from_shared(self.url.clone())
            .with_context(|| format!("gateway URL {:?}", self.url))?
            .connect()
            .await
            .with_context(|| format!("connecting to the gateway at {}", self.url))?;
        Ok(AdminServiceClient::new(channel))
    }

    /// `message` with the admin token attached.
    pub fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        Ok(with_bearer(&self.token, message)?)
    }
}

/// `beacon admin` flags.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    connection: AdminConnection,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Creates a tenant and prints its ingest and read keys.
    CreateTenant {
        /// Tenant id, 1 to 64 characters of [a-z0-9_-]; generated when omitted.
        #[arg(long, default_value = "")]
        id: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// IANA time zone, for example Asia/Kolkata.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
    /// Lists tenants.
    ListTenants,
    /// Adds a key to a tenant.
    CreateKey {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// What the key may do.
        #[arg(long, value_enum)]
        kind: KindArg,
    },
    /// Lists a tenant's keys (ids and kinds, never the keys).
    ListKeys {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
    },
    /// Revokes a key, at once or after a grace period.
    RevokeKey {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// The key's id, as list-keys shows it.
        #[arg(long)]
        key_id: String,
        /// Seconds the key keeps working.
        #[arg(long, default_value_t = 0)]
        grace_seconds: u32,
    },
    /// Replaces a key with a new one of the same kind; the old one works for the grace period.
    RotateKey {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// The key's id, as list-keys shows it.
        #[arg(long)]
        key_id: String,
        /// Seconds the old key keeps working.
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u32,
    },
    /// Removes a tenant: its raw events and numbers (a reset job), its keys and its record.
    DeleteTenant {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
    },
    /// Sets how many days a tenant's raw events are kept (0: forever); numbers are kept, but
    /// older dates can no longer be reprocessed.
    SetRetention {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// Days raw events are kept.
        #[arg(long)]
        days: u32,
    },
    /// Sets the currency a tenant's revenue is counted in.
    SetCurrency {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// ISO 4217 code, for example EUR.
        #[arg(long)]
        currency: String,
    },
    /// Replaces the site domains whose keyless beacons (Plausible's tracker, `domain`) count
    /// for a tenant (none given: stops them).
    SetDomains {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// A host name, for example shop.example; repeat for more.
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Replaces a tenant's goals (none given: removes them all).
    SetGoals {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// A goal, `NAME=event:EVENT_NAME` or `NAME=page:/PATH_PATTERN` (`*` any characters
        /// but "/", `**` any); repeat for more.
        #[arg(long = "goal", value_parser = parse_goal)]
        goals: Vec<Goal>,
    },
}

/// A goal given as `NAME=event:EVENT_NAME` or `NAME=page:/PATH_PATTERN`.
fn parse_goal(text: &str) -> Result<Goal, String> {
    let (name, what) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=event:EVENT_NAME or NAME=page:/PATTERN"))?;
    let kind = match what.split_once(':') {
        Some(("event", event)) => goal::Kind::EventName(event.to_owned()),
        Some(("page", pattern)) => goal::Kind::PagePath(pattern.to_owned()),
        _ => {
            return Err(format!(
                "{text:?}: after NAME= comes event:EVENT_NAME or page:/PATTERN"
            ));
        }
    };
    Ok(Goal {
        name: name.to_owned(),
        kind: Some(kind),
    })
}

/// What a new key may do.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    /// Send events only; may be public (web pages).
    Ingest,
    /// Read insights only; secret.
    Read,
    /// Send events stating visitors' addresses; secret, for servers.
    Server,
    /// Read insights only, in a dashboard link (`/#key=<key>`); revoke it to end the link.
    Shared,
}

impl KindArg {
    fn to_proto(self) -> KeyKind {
        match self {
            Self::Ingest => KeyKind::Ingest,
            Self::Read => KeyKind::Read,
            Self::Server => KeyKind::Server,
            Self::Shared => KeyKind::Shared,
        }
    }
}

/// Runs one admin command and prints its result as JSON.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let admin = &args.connection;
    let mut client = admin.connect().await?;
    let output = match args.command {
        AdminCommand::CreateTenant {
            id,
            name,
            time_zone,
        } => {
            let reply = client
                .create_tenant(admin.request(CreateTenantRequest {
                    id,
                    name,
                    time_zone,
                })?)
                .await?
                .into_inner();
            let tenant = reply.tenant.unwrap_or_default();
            serde_json::json!({
                "tenant": tenant.id, "name": tenant.name, "time_zone": tenant.time_zone,
                "ingest_key": reply.ingest_key, "read_key": reply.read_key,
            })
        }
        AdminCommand::ListTenants => {
            let reply = client
                .list_tenants(admin.request(ListTenantsRequest {})?)
                .await?
                .into_inner();
            serde_json::Value::Array(
                reply
                    .tenants
                    .into_iter()
                    .map(|t| serde_json::json!({"tenant": t.id, "name": t.name, "time_zone": t.time_zone}))
                    .collect(),
            )
        }
        AdminCommand::CreateKey { tenant, kind } => {
            let reply = client
                .create_key(admin.request(CreateKeyRequest {
                    tenant_id: tenant,
                    kind: kind.to_proto() as i32,
                })?)
                .await?
                .into_inner();
            serde_json::json!({ "key": reply.key })
        }
        AdminCommand::ListKeys { tenant } => {
            let reply = client
                .list_keys(admin.request(ListKeysRequest { tenant_id: tenant })?)
                .await?
                .into_inner();
            serde_json::Value::Array(
                reply
                    .keys
                    .into_iter()
                    .map(|k| {
                        let kind = KeyKind::try_from(k.kind).map_or("unknown", |k| k.as_str_name());
                        serde_json::json!({
                            "id": k.id, "kind": kind,
                            "created_ms": k.created_ms, "expires_ms": k.expires_ms,
                        })
                    })
                    .collect(),
            )
        }
        AdminCommand::RevokeKey {
            tenant,
            key_id,
            grace_seconds,
        } => {
            let reply = client
                .revoke_key(admin.request(RevokeKeyRequest {
                    tenant_id: tenant,
                    key_id,
                    grace_seconds,
                })?)
                .await?
                .into_inner();
            serde_json::json!({ "expires_ms": reply.expires_ms })
        }
        AdminCommand::RotateKey {
            tenant,
            key_id,
            grace_seconds,
        } => {
            let reply = client
                .rotate_key(admin.request(RotateKeyRequest {
                    tenant_id: tenant,
                    key_id,
                    grace_seconds,
                })?)
                .await?
                .into_inner();
            serde_json::json!({ "key": reply.key })
        }
        AdminCommand::DeleteTenant { tenant } => {
            let reply = client
                .delete_tenant(admin.request(DeleteTenantRequest {
                    tenant_id: tenant.clone(),
                })?)
                .await?
                .into_inner();
            serde_json::json!({
                "tenant": tenant,
                "keys_revoked": reply.keys_revoked,
                "job": reply.job.map(|job| job.id),
            })
        }
        AdminCommand::SetRetention { tenant, days } => {
            client
                .set_raw_retention(admin.request(SetRawRetentionRequest {
                    tenant_id: tenant.clone(),
                    raw_retention_days: days,
                })?)
                .await?;
            serde_json::json!({ "tenant": tenant, "raw_retention_days": days })
        }
        AdminCommand::SetCurrency { tenant, currency } => {
            client
                .set_currency(admin.request(SetCurrencyRequest {
                    tenant_id: tenant.clone(),
                    currency: currency.clone(),
                })?)
                .await?;
            serde_json::json!({ "tenant": tenant, "currency": currency })
        }
        AdminCommand::SetDomains { tenant, domains } => {
            let stored = client
                .set_domains(admin.request(SetDomainsRequest {
                    tenant_id: tenant.clone(),
                    domains: domains.clone(),
                })?)
                .await?
                .into_inner()
                .domains;
            serde_json::json!({ "tenant": tenant, "domains": stored })
        }
        AdminCommand::SetGoals { tenant, goals } => {
            let count = goals.len();
            client
                .set_goals(admin.request(SetGoalsRequest {
                    tenant_id: tenant.clone(),
                    goals,
                })?)
                .await?;
            serde_json::json!({ "tenant": tenant, "goals": count })
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
