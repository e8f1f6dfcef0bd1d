//! `beacon standalone`: every role in one process, embedded log and raw store on local disk.
//!
//! Shutdown drains front to back: the gateway stops accepting, ingest finishes its publishes,
//! the aggregator flushes rollups and snapshots, then the query role finishes applying.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use beacon_aggregator::AggregatorArgs;
use beacon_core::auth::Registry;
use beacon_core::backends::{BackendArgs, Backends};
use beacon_core::meta::KeyKind;
use beacon_gateway::{GatewayArgs, InProcess};
use beacon_ingest::IngestArgs;
use beacon_query::QueryArgs;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::roles::{bind, signal_token};

/// `beacon standalone` flags.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    ingest: IngestArgs,
    #[command(flatten)]
    aggregator: AggregatorArgs,
    #[command(flatten)]
    query: QueryArgs,
    /// Time zone of the demo tenant created on first start.
    #[arg(
        long = "demo-time-zone",
        env = "BEACON_DEMO_TIME_ZONE",
        default_value = "UTC"
    )]
    demo_time_zone: String,
}

type Role = JoinHandle<anyhow::Result<()>>;

/// Runs all roles until a signal or until one of them fails.
pub async fn run(mut args: StandaloneArgs) -> anyhow::Result<()> {
    let backends = Backends::open(&args.backend)
        .await
        .context("opening the embedded stores")?;
    anyhow::ensure!(
        !backends.tls.is_client() && backends.tls.server().is_none(),
        "--tls-* is for cluster mode: standalone runs every role in one process"
    );
    let admin_token = admin_token(&args.backend.data_dir, args.gateway.admin_token.take())?;
    let demo = demo_tenant(&backends, &args.demo_time_zone).await?;
    if args.ingest.geoip_db.is_none() {
        args.ingest.geoip_db = installed_geoip(&args.backend.data_dir);
    }

    let query_listener = bind(localhost_any()).await?;
    let ingest_listener = bind(localhost_any()).await?;
    let gateway_listener = bind(args.gateway.listen).await?;
    let admin_listener = bind(args.gateway.admin_listen).await?;
    let admin_addr = admin_listener.local_addr().context("admin address")?;
    args.gateway.query_urls = vec![url_of(&query_listener)?];
    args.gateway.admin_token = Some(admin_token.clone());
    let gateway_addr = gateway_listener.local_addr().context("gateway address")?;

    // The gateway calls the ingest service in process: without the loopback gRPC hop (HTTP/2
    // both ways, every batch encoded and decoded again) a loaded standalone used 13 % less CPU
    // per event on average (BENCHMARKS.md, "2026-11-30 (night)"). The ingest role still
    // serves its internal port, as in a cluster, and closes its publisher when it stops.
    let ingest = Arc::new(beacon_ingest::IngestService::new(&args.ingest, &backends)?);
    let in_process = InProcess {
        ingest: Some(ingest.clone()),
    };

    let tokens: [CancellationToken; 4] = Default::default();
    let [gateway_stop, ingest_stop, aggregator_stop, query_stop] = tokens.clone();
    let roles: [Role; 4] = [
        spawn(beacon_gateway::run(
            args.gateway,
            backends.clone(),
            in_process,
            (gateway_listener, admin_listener),
            gateway_stop,
        )),
        spawn(beacon_ingest::serve(
            ingest,
            backends.clone(),
            ingest_listener,
            ingest_stop,
        )),
        spawn(beacon_aggregator::run(
            args.aggregator,
            backends.clone(),
            aggregator_stop,
        )),
        spawn(beacon_query::run(
            args.query,
            backends,
            query_listener,
            query_stop,
        )),
    ];
    announce(
        &gateway_addr.to_string(),
        &admin_addr.to_string(),
        &demo,
        &admin_token,
    );
    supervise(roles, tokens).await
}

/// The country database `scripts/geoip.sh` installs in the data folder, if it did.
fn installed_geoip(data_dir: &Path) -> Option<std::path::PathBuf> {
    let path = data_dir.join("geoip").join("country.mmdb");
    let found = path.is_file();
    if found {
        tracing::info!(path = %path.display(), "using the installed GeoIP database");
    }
    found.then_some(path)
}

fn localhost_any() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    Ok(format!(
        "http://{}",
        listener.local_addr().context("listener address")?
    ))
}

fn spawn<F, E>(role: F) -> Role
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Into<anyhow::Error> + Send + 'static,
{
    tokio::spawn(async move { role.await.map_err(Into::into) })
}

/// Waits for a signal or the first role to stop, then stops the roles in order.
async fn supervise(mut roles: [Role; 4], tokens: [CancellationToken; 4]) -> anyhow::Result<()> {
    const NAMES: [&str; 4] = ["gateway", "ingest", "aggregator", "query"];
    let signal = signal_token();
    let first = tokio::select! {
        () = signal.cancelled() => None,
        (result, index, _) = futures::future::select_all(roles.iter_mut()) => Some((index, joined(result))),
    };
    let outcome = match &first {
        None => Ok(()),
        Some((index, Ok(()))) => Err(anyhow::anyhow!(
            "the {} role stopped unexpectedly",
            NAMES[*index]
        )),
        Some((index, Err(err))) => Err(anyhow::anyhow!(
            "the {} role failed: {err:#}",
            NAMES[*index]
        )),
    };
    for (index, (token, role)) in tokens.iter().zip(roles.iter_mut()).enumerate() {
        token.cancel();
        if first.as_ref().is_some_and(|(done, _)| *done == index) {
            continue;
        }
        if let Err(err) = joined(role.await) {
            tracing::error!(role = NAMES[index], error = %format!("{err:#}"), "role failed while stopping");
        }
    }
    tracing::info!("beacon stopped");
    outcome
}

fn joined(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.map_err(|err| anyhow::anyhow!("panicked: {err}"))?
}

/// The admin token: from the flag, else the one saved in the data folder, else a new one.
fn admin_token(data_dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(token) = given {
        return Ok(token);
    }
    let path = data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_owned();
        anyhow::ensure!(
            token.chars().count() >= 24,
            "{} holds {} characters; the admin token needs at least 24 (delete the file to get \
             a new one)",
            path.display(),
            token.chars().count()
        );
        return Ok(token);
    }
    let token = beacon_core::auth::new_key(beacon_core::meta::KeyKind::Read)
        .replace("bk_read_", "bk_admin_");
    write_private(&path, &token)?;
    Ok(token)
}

/// The demo tenant's keys, created on first start and saved in the data folder.
async fn demo_tenant(backends: &Backends, time_zone: &str) -> anyhow::Result<serde_json::Value> {
    let path = backends.data_dir.join("demo-tenant.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    let registry = Registry::new(backends.tenants.clone());
    let (tenant, ingest_key, read_key) =
        match registry.create_tenant("demo", "Demo", time_zone).await {
            // Created by an earlier start that stopped before saving the keys: issue new ones.
            Err(beacon_core::Error::AlreadyExists(_)) => {
                let tenant = backends
                    .tenants
                    .tenant("demo")
                    .await?
                    .context("the demo tenant exists but cannot be read")?;
                let ingest = registry.create_key("demo", KeyKind::Ingest).await?;
                let read = registry.create_key("demo", KeyKind::Read).await?;
                (tenant, ingest, read)
            }
            created => created.context("creating the demo tenant")?,
        };
    let demo = json!({
        "tenant": tenant.id,
        "time_zone": tenant.time_zone,
        "ingest_key": ingest_key,
        "read_key": read_key,
    });
    write_private(&path, &serde_json::to_string_pretty(&demo)?)?;
    Ok(demo)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn announce(gateway: &str, admin: &str, demo: &serde_json::Value, admin_token: &str) {
    let field = |name: &str| {
        demo.get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    println!("Beacon is running (standalone).");
    println!("  gateway:      http://{gateway}  (gRPC, gRPC-web, POST /api/event)");
    println!(
        "  demo tenant:  {} ({})",
        field("tenant"),
        field("time_zone")
    );
    println!("  ingest key:   {}", field("ingest_key"));
    println!("  read key:     {}", field("read_key"));
    println!("  admin API:    http://{admin}  (tenants, keys, dead letters, /metrics)");
    println!("  admin token:  {admin_token}");
    println!(
        "BEACON_READY {}",
        json!({
            "gateway": format!("http://{gateway}"),
            "admin": format!("http://{admin}"),
            "tenant": field("tenant"),
            "ingest_key": field("ingest_key"),
            "read_key": field("read_key"),
            "admin_token": admin_token,
        })
    );
}
