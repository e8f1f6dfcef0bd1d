//! Choosing and opening the backends: embedded on local disk, or NATS JetStream.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ResultExt;
use crate::lease::Leases;
use crate::log::Log;
use crate::log::embedded::EmbeddedLog;
use crate::log::nats::NatsLog;
use crate::meta::embedded::EmbeddedMeta;
use crate::meta::nats::NatsMeta;
use crate::meta::{SaltStore, SnapshotStore, TenantStore};
use crate::raw::RawStore;
use crate::raw::cassandra::{CassandraConfig, CassandraRawStore, Replication};
use crate::raw::embedded::EmbeddedRawStore;
use crate::raw::nats::NatsRawStore;
use crate::tls::{Tls, TlsArgs};
use crate::{Error, Result};

/// Where Beacon keeps its state. Every flag has an environment-variable fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Folder for embedded stores and DuckDB shards.
    #[arg(long, env = "BEACON_DATA_DIR", default_value = "beacon-data")]
    pub data_dir: PathBuf,
    /// NATS server URL, or the URLs of a cluster's nodes, comma-separated. When set, the event
    /// and rollup logs, tenants, salts and snapshots live in NATS JetStream; otherwise they are
    /// embedded on local disk (one process only).
    #[arg(long, env = "BEACON_NATS_URL")]
    pub nats_url: Option<String>,
    /// Number of partitions P, fixed by the deployment's first start. When not given: the
    /// count the deployment was set up with, else 8 with NATS (the roles scale out by
    /// partition) and 2 embedded (one process, whose per-partition flushes, apply
    /// transactions and DuckDB pools cost more than their parallelism brings).
    #[arg(long, env = "BEACON_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub partitions: Option<u32>,
    /// JetStream replicas of every stream and bucket.
    #[arg(long, env = "BEACON_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// Most bytes the event log may hold ("64MiB", "20GB"); at the limit, ingest answers
    /// UNAVAILABLE until the aggregator catches up and trims. Unlimited when not set.
    #[arg(long, env = "BEACON_EVENT_LOG_MAX_BYTES", value_parser = parse_bytes)]
    pub event_log_max_bytes: Option<u64>,
    /// How long a partition's consumer may stay behind its log's end before health reports
    /// NOT_SERVING ("60s", "2m 30s").
    #[arg(long, env = "BEACON_STALL_AFTER", default_value = "60s", value_parser = crate::time::parse_duration)]
    pub stall_after: std::time::Duration,
    /// Page caches of the embedded stores, in all ("64MiB"): half for the raw store, a quarter
    /// for the event log, the rest for the rollup log, dead letters and metadata. Pages past it
    /// are read from the files again (the kernel's page cache, outside the process).
    #[arg(long, env = "BEACON_STORE_CACHE", default_value = "64MiB", value_parser = parse_bytes)]
    pub store_cache: u64,
    /// Where raw events live: Cassandra when contact points are given, else JetStream with
    /// `--nats-url` (shared by every aggregator), else a file in the data folder (one process).
    #[arg(long, env = "BEACON_RAW_STORE", value_enum)]
    pub raw_store: Option<RawStoreKind>,
    /// The Cassandra raw store.
    #[command(flatten)]
    pub cassandra: CassandraArgs,
    /// TLS between the roles and to NATS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A raw store backend (`--raw-store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RawStoreKind {
    /// A redb file in the data folder: one aggregator process only.
    Embedded,
    /// A JetStream stream and bucket, shared by the aggregators of a cluster.
    Jetstream,
    /// Cassandra (`--cassandra-contact-points`).
    Cassandra,
}

/// Where raw events live, resolved from [`BackendArgs`].
#[derive(Clone)]
pub enum RawBackend {
    /// In the data folder, with a page cache of this many bytes.
    Embedded(usize),
    /// In JetStream, with this many replicas.
    Jetstream(async_nats::jetstream::Context, usize),
    /// In Cassandra.
    Cassandra(CassandraConfig),
}

impl RawBackend {
    /// The raw store `args` ask for, given the JetStream context of cluster mode.
    fn resolve(args: &BackendArgs, js: Option<&async_nats::jetstream::Context>) -> Result<Self> {
        let cassandra = args.cassandra.config();
        let kind = args.raw_store.unwrap_or(match (&cassandra, js) {
            (Some(_), _) => RawStoreKind::Cassandra,
            (None, Some(_)) => RawStoreKind::Jetstream,
            (None, None) => RawStoreKind::Embedded,
        });
        match (kind, cassandra, js) {
            (RawStoreKind::Embedded, _, _) => Ok(Self::Embedded(StoreCache::of(args).raw)),
            (RawStoreKind::Jetstream, _, Some(js)) => {
                Ok(Self::Jetstream(js.clone(), args.nats_replicas))
            }
            (RawStoreKind::Jetstream, _, None) => Err(Error::InvalidArgument(
                "--raw-store jetstream needs --nats-url".into(),
            )),
            (RawStoreKind::Cassandra, Some(config), _) => Ok(Self::Cassandra(config)),
            (RawStoreKind::Cassandra, None, _) => Err(Error::InvalidArgument(
                "--raw-store cassandra needs --cassandra-contact-points".into(),
            )),
        }
    }
}

/// The Cassandra raw store (cluster mode). Without contact points, raw events are embedded on
/// the aggregator's local disk.
#[derive(Debug, Clone, clap::Args)]
pub struct CassandraArgs {
    /// Cassandra contact points, `host[:port]`, comma-separated.
    #[arg(
        long = "cassandra-contact-points",
        env = "CASSANDRA_CONTACT_POINTS",
        value_delimiter = ','
    )]
    pub contact_points: Vec<String>,
    /// The local data center (data-center-aware routing, LOCAL_QUORUM).
    #[arg(long = "cassandra-datacenter", env = "CASSANDRA_DATACENTER")]
    pub datacenter: Option<String>,
    /// User name for Cassandra's password authenticator.
    #[arg(long = "cassandra-username", env = "CASSANDRA_USERNAME")]
    pub username: Option<String>,
    /// Password for Cassandra's password authenticator.
    #[arg(
        long = "cassandra-password",
        env = "CASSANDRA_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate (PEM) for TLS to Cassandra; without it, plain TCP.
    #[arg(long = "cassandra-tls-ca", env = "CASSANDRA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Name the nodes' TLS certificates must carry (default: host of the first contact point).
    #[arg(long = "cassandra-tls-server-name", env = "CASSANDRA_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// The keyspace.
    #[arg(
        long = "cassandra-keyspace",
        env = "CASSANDRA_KEYSPACE",
        default_value = "beacon"
    )]
    pub keyspace: String,
    /// Replication of the keyspace when `beacon migrate` creates it: a factor ("3",
    /// SimpleStrategy) or copies per data center ("dc1:3,dc2:3", NetworkTopologyStrategy).
    #[arg(long = "cassandra-replication", env = "CASSANDRA_REPLICATION", default_value = "1", value_parser = parse_replication)]
    pub replication: Replication,
}

impl Default for CassandraArgs {
    /// No Cassandra: raw events embedded.
    fn default() -> Self {
        Self {
            contact_points: Vec::new(),
            datacenter: None,
            username: None,
            password: None,
            tls_ca: None,
            tls_server_name: None,
            keyspace: "beacon".to_owned(),
            replication: Replication::SimpleStrategy { factor: 1 },
        }
    }
}

impl CassandraArgs {
    /// The store's configuration, when contact points are given.
    pub fn config(&self) -> Option<CassandraConfig> {
        (!self.contact_points.is_empty()).then(|| CassandraConfig {
            contact_points: self.contact_points.clone(),
            datacenter: self.datacenter.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_server_name: self.tls_server_name.clone(),
            keyspace: self.keyspace.clone(),
            replication: self.replication.clone(),
        })
    }
}

/// Parses `--cassandra-replication`: "3" or "dc1:3,dc2:3".
pub fn parse_replication(text: &str) -> std::result::Result<Replication, String> {
    if let Ok(factor) = text.trim().parse::<u32>() {
        return Ok(Replication::SimpleStrategy { factor });
    }
    let mut datacenters = std::collections::BTreeMap::new();
    for part in text.split(',') {
        let (dc, factor) = part.split_once(':').ok_or_else(|| {
            format!("{text:?} is neither a replication factor (\"3\") nor data centers (\"dc1:3,dc2:3\")")
        })?;
        let factor = factor
            .trim()
            .parse::<u32>()
            .map_err(|err| format!("replication factor of {dc:?} in {text:?}: {err}"))?;
        datacenters.insert(dc.trim().to_owned(), factor);
    }
    Ok(Replication::NetworkTopologyStrategy { datacenters })
}

/// Parses a byte size flag such as "64MiB" or "20GB" (for clap's `value_parser`).
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|err| format!("{text:?} is not a byte size such as \"64MiB\" or \"20GB\": {err}"))
}

/// Connects to NATS at `urls`: one URL or several, comma-separated (the nodes of a cluster;
/// the client tries each and learns the others from the cluster). Credentials come from the
/// first URL that has them (`nats://user:password@host:4222`; the client library does not
/// take them from a URL itself).
pub async fn connect_nats(urls: &str) -> Result<async_nats::Client> {
    connect_nats_with(urls, &Tls::default()).await
}

/// Connects like [`connect_nats`], over TLS when `tls` says so.
pub async fn connect_nats_with(urls: &str, tls: &Tls) -> Result<async_nats::Client> {
    let addrs = urls
        .split(',')
        .map(|url| {
            url.trim().parse::<async_nats::ServerAddr>().map_err(|err| {
                Error::InvalidArgument(format!("NATS URL {:?}: {err}", redact(url.trim())))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut options = tls.nats(async_nats::ConnectOptions::new().name("beacon"));
    let credentials = addrs
        .iter()
        .find_map(|addr| Some((addr.username()?, addr.password()?)));
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    let shown: Vec<String> = urls.split(',').map(|url| redact(url.trim())).collect();
    let shown = shown.join(",");
    options
        .connect(addrs)
        .await
        .map_err(|err| Error::Unavailable(format!("connecting to NATS at {shown}: {err}")))
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Name of the record of the partition count in the snapshot store.
const PARTITIONS_RECORD: &str = "cluster-partitions";

/// Partitions of a new deployment with NATS when `--partitions` is not given.
pub const NATS_PARTITIONS: u32 = 8;
/// Partitions of a new embedded (standalone) deployment when `--partitions` is not given.
pub const EMBEDDED_PARTITIONS: u32 = 2;

/// The deployment's partition count: the one recorded at its first start, else `given`, else
/// `default`, recorded now. Refuses a `given` count other than the recorded one, which would
/// move tenants to other partitions (their sessions, jobs and shard rows stay where they were).
///
/// Invariant: every process of a deployment uses the partition count it was set up with.
async fn pin_partitions(
    store: &dyn SnapshotStore,
    given: Option<u32>,
    default: u32,
) -> Result<u32> {
    let Some(stored) = store.load(PARTITIONS_RECORD).await? else {
        let partitions = given.unwrap_or(default);
        store
            .save(PARTITIONS_RECORD, Bytes::from(partitions.to_string()))
            .await?;
        return Ok(partitions);
    };
    let stored: u32 = std::str::from_utf8(&stored)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "the partition-count record {PARTITIONS_RECORD:?} holds {stored:?}"
            ))
        })?;
    match given {
        Some(partitions) if partitions != stored => Err(Error::InvalidArgument(format!(
            "--partitions is {partitions}, but this deployment was set up with {stored} \
             partitions: tenants would move to other partitions; start every process with \
             --partitions {stored}, or without the flag"
        ))),
        _ => Ok(stored),
    }
}

/// `--store-cache` split between the embedded files, by how much each is read and written.
struct StoreCache {
    raw: usize,
    events: usize,
    rollups: usize,
    dead_letters: usize,
    meta: usize,
}

impl StoreCache {
    fn of(args: &BackendArgs) -> Self {
        let total = usize::try_from(args.store_cache).unwrap_or(usize::MAX);
        Self {
            raw: total / 2,
            events: total / 4,
            rollups: total / 8,
            dead_letters: total / 16,
            meta: total / 16,
        }
    }
}

/// The opened backends of one process.
#[derive(Clone)]
pub struct Backends {
    /// Partition count.
    pub partitions: u32,
    /// Folder for local files.
    pub data_dir: PathBuf,
    /// The event log (`events.<p>`).
    pub events: Arc<dyn Log>,
    /// The rollup log (`rollups.<p>`).
    pub rollups: Arc<dyn Log>,
    /// Parked messages and events that failed after acceptance (`deadletters.<p>`).
    pub dead_letters: Arc<dyn Log>,
    /// Tenants and keys.
    pub tenants: Arc<dyn TenantStore>,
    /// Daily visitor salts.
    pub salts: Arc<dyn SaltStore>,
    /// Aggregator snapshots.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Where raw events live.
    pub raw: RawBackend,
    /// Who owns which partition's work.
    pub leases: Leases,
    /// TLS between the roles.
    pub tls: Tls,
}

impl Backends {
    /// Opens the backends `args` names, creating streams, buckets and files as needed.
    pub async fn open(args: &BackendArgs) -> Result<Self> {
        let health = crate::observe::health();
        health.set_stall_after(args.stall_after);
        static GAUGES: std::sync::Once = std::sync::Once::new();
        GAUGES.call_once(|| health.register_gauges());
        std::fs::create_dir_all(&args.data_dir)
            .context(|| format!("creating data folder {}", args.data_dir.display()))?;
        let tls = Tls::load(&args.tls)?;
        match &args.nats_url {
            Some(url) => Self::open_nats(args, url, tls).await,
            None => Self::open_embedded(args, tls).await,
        }
    }

    async fn open_embedded(args: &BackendArgs, tls: Tls) -> Result<Self> {
        let dir = &args.data_dir;
        let cache = StoreCache::of(args);
        let meta = Arc::new(EmbeddedMeta::open_with_cache(
            &dir.join("meta.redb"),
            cache.meta,
        )?);
        let partitions =
            pin_partitions(meta.as_ref(), args.partitions, EMBEDDED_PARTITIONS).await?;
        let log = |name: &str, max_bytes, cache| {
            EmbeddedLog::open_limited(&dir.join(name), max_bytes, cache).map(Arc::new)
        };
        Ok(Self {
            partitions,
            data_dir: dir.clone(),
            events: log("events.redb", args.event_log_max_bytes, cache.events)?,
            rollups: log("rollups.redb", None, cache.rollups)?,
            dead_letters: log("deadletters.redb", None, cache.dead_letters)?,
            tenants: meta.clone(),
            salts: meta.clone(),
            snapshots: meta,
            raw: RawBackend::resolve(args, None)?,
            leases: Leases::Local,
            tls,
        })
    }

    async fn open_nats(args: &BackendArgs, url: &str, tls: Tls) -> Result<Self> {
        let client = connect_nats_with(url, &tls).await?;
        let js = async_nats::jetstream::new(client);
        let replicas = args.nats_replicas;
        let meta = Arc::new(NatsMeta::open(js.clone(), replicas).await?);
        let partitions = pin_partitions(meta.as_ref(), args.partitions, NATS_PARTITIONS).await?;
        Ok(Self {
            partitions,
            data_dir: args.data_dir.clone(),
            events: Arc::new(
                NatsLog::open(js.clone(), "events", replicas, args.event_log_max_bytes).await?,
            ),
            rollups: Arc::new(NatsLog::open(js.clone(), "rollups", replicas, None).await?),
            dead_letters: Arc::new(NatsLog::open(js.clone(), "deadletters", replicas, None).await?),
            tenants: meta.clone(),
            salts: meta.clone(),
            snapshots: meta,
            raw: RawBackend::resolve(args, Some(&js))?,
            leases: Leases::nats(&js, replicas).await?,
            tls,
        })
    }

    /// Opens the raw store (see [`RawBackend`]; Cassandra's schema is applied when missing).
    /// Only the aggregator writes raw events.
    pub async fn open_raw_store(&self) -> Result<Arc<dyn RawStore>> {
        Ok(match &self.raw {
            RawBackend::Cassandra(config) => Arc::new(CassandraRawStore::open(config).await?),
            RawBackend::Jetstream(js, replicas) => {
                Arc::new(NatsRawStore::open(js.clone(), *replicas).await?)
            }
            RawBackend::Embedded(cache) => Arc::new(EmbeddedRawStore::open_with_cache(
                &self.data_dir.join("raw.redb"),
                *cache,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cluster_is_reached_through_any_of_its_urls() {
        let server = beacon_testkit::NatsServer::start().expect("nats-server");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead = format!(
            "nats://127.0.0.1:{}",
            closed.local_addr().expect("addr").port()
        );
        drop(closed);
        let urls = format!("{dead}, {}", server.url());
        let client = connect_nats(&urls)
            .await
            .expect("connect through the second URL");
        client.flush().await.expect("flush");
        let err = connect_nats("nats://a b").await.expect_err("a bad URL");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[tokio::test]
    async fn the_partition_count_is_pinned_at_the_first_start() {
        let dir = beacon_testkit::TempDir::new("partitions").expect("temp dir");
        let meta = EmbeddedMeta::open(&dir.path().join("meta.redb")).expect("meta");
        let pin = |given| pin_partitions(&meta, given, EMBEDDED_PARTITIONS);
        assert_eq!(pin(Some(8)).await.expect("first start"), 8);
        assert_eq!(pin(Some(8)).await.expect("same count"), 8);
        assert_eq!(pin(None).await.expect("no count given"), 8);
        let err = pin(Some(16)).await.expect_err("another count");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("--partitions 8"), "{err}");
    }

    #[tokio::test]
    async fn a_new_deployment_without_a_count_takes_the_default_and_keeps_it() {
        let dir = beacon_testkit::TempDir::new("partitions").expect("temp dir");
        let meta = EmbeddedMeta::open(&dir.path().join("meta.redb")).expect("meta");
        let pin = |given| pin_partitions(&meta, given, EMBEDDED_PARTITIONS);
        assert_eq!(pin(None).await.expect("first start"), EMBEDDED_PARTITIONS);
        assert_eq!(pin(None).await.expect("restart"), EMBEDDED_PARTITIONS);
        let err = pin(Some(NATS_PARTITIONS)).await.expect_err("another count");
        assert!(
            err.to_string().contains("set up with 2 partitions"),
            "{err}"
        );
    }
}
