//! The clustered [`RawStore`]: raw events in Apache Cassandra, through the `cdrs-tokio` driver.
//!
//! Tables of the keyspace (see [`schema`]):
//!
//! - `events`: one partition per tenant and UTC day (`bucket`, whole days since the Unix epoch,
//!   rounded down, so an event before 1970 lands in a negative bucket), rows ordered by
//!   (timestamp, event id). A day of 100k events of about 1 KB is about 100 MB, the size at
//!   which Cassandra partitions start to hurt: tenants much larger than that need a finer bucket
//!   (a new [`SCHEMA_VERSION`]). Compaction is by time window, one window a day.
//! - `event_ids`: (tenant, event id) to the origin and timestamp of its first insert, the
//!   record that makes a client's retries count once whichever aggregator sees them. It is
//!   written and removed only with lightweight transactions (Paxos), so concurrent writers agree
//!   on which insert was first, and a removal is never ordered before the insert it removes.
//! - `tenant_days`: the day buckets a tenant has, so scans and bounds visit only those. Rows are
//!   never removed (a bucket whose events were all deleted stays listed and is skipped), so an
//!   event row is always listed: its bucket is written before it.
//! - `schema_version`: the version of this schema applied to the keyspace.
//!
//! Writes and reads use `QUORUM` (`LOCAL_QUORUM` when a data center is configured) and the
//! lightweight transactions `SERIAL` (`LOCAL_SERIAL`), so an insert that returned is seen by
//! every later read. Durability on each replica is Cassandra's commit log (by default synced to
//! disk every 10 seconds: a quorum of replicas failing at once may lose that much).
//!
//! An insert records the id first, then the day and the event row. A crash in between leaves
//! an id without its row: a replay of the event log (same origin) writes the row again, but a
//! client retry of the same event id (another origin) finds the id and is a duplicate, so that
//! event is missing from the raw store until the log is replayed.
//!
//! TLS (rustls) is used when a CA certificate is configured; see [`session`] for how nodes are
//! verified.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdrs_tokio::consistency::Consistency;
use cdrs_tokio::error::Error as CdrsError;
use cdrs_tokio::frame::Envelope;
use cdrs_tokio::frame::message_error::ErrorType;
use cdrs_tokio::query::{PreparedQuery, QueryValues};
use cdrs_tokio::statement::{StatementParams, StatementParamsBuilder};
use cdrs_tokio::types::blob::Blob;
use cdrs_tokio::types::rows::Row;
use cdrs_tokio::types::value::Value;
use cdrs_tokio::types::{IntoRustByIndex, IntoRustByName};
use tokio::sync::OnceCell;

mod session;

use self::session::CdrsSession;
use super::{Inserted, Origin, RawEvent, RawStore};
use crate::retry::Backoff;
use crate::{Error, Result};

/// Version of the schema that [`schema`] creates, recorded in the table `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// Milliseconds in a day bucket.
const DAY_MS: i64 = 86_400_000;
/// Port of a contact point given without one (Cassandra's native protocol port).
const DEFAULT_PORT: u16 = 9042;
/// Longest wait for a TCP connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the session to start (first connection, authentication, topology).
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the answer to one request, above Cassandra's own server-side timeouts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a request failing with a transient error before giving up.
const ATTEMPTS: u32 = 5;
/// First pause between attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait for the nodes to agree on the schema after a schema change.
const SCHEMA_AGREEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most rows one scan request asks for.
const PAGE_ROWS: usize = 1_000;
/// Events inserted, or keys deleted, concurrently.
const CONCURRENCY: usize = 32;
/// Longest keyspace name Cassandra accepts.
const MAX_KEYSPACE_LEN: usize = 48;

/// How the keyspace is replicated when [`CassandraRawStore::migrate`] creates it. An existing
/// keyspace keeps its replication (change it with `ALTER KEYSPACE`, then run a repair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy`: copies placed without regard to data centers; one data center or tests.
    SimpleStrategy {
        /// Copies of every row.
        factor: u32,
    },
    /// `NetworkTopologyStrategy`: copies per data center.
    NetworkTopologyStrategy {
        /// Data center name to the copies of every row kept there.
        datacenters: BTreeMap<String, u32>,
    },
}

impl Replication {
    /// Checks that every factor is at least 1 and that data centers are named.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::SimpleStrategy { factor: 0 } => Err(Error::InvalidArgument(
                "Cassandra replication factor must be at least 1, got 0".to_owned(),
            )),
            Self::SimpleStrategy { .. } => Ok(()),
            Self::NetworkTopologyStrategy { datacenters } if datacenters.is_empty() => {
                Err(Error::InvalidArgument(
                    "Cassandra NetworkTopologyStrategy replication names no data center".to_owned(),
                ))
            }
            Self::NetworkTopologyStrategy { datacenters } => {
                for (datacenter, factor) in datacenters {
                    if datacenter.trim().is_empty() {
                        return Err(Error::InvalidArgument(
                            "Cassandra replication names an empty data center".to_owned(),
                        ));
                    }
                    if *factor == 0 {
                        return Err(Error::InvalidArgument(format!(
                            "Cassandra replication factor of data center {datacenter:?} must be \
                             at least 1, got 0"
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// The replication map in CQL, such as `{'class': 'SimpleStrategy', 'replication_factor': 3}`.
    pub fn to_cql(&self) -> String {
        match self {
            Self::SimpleStrategy { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Self::NetworkTopologyStrategy { datacenters } => {
                let factors: Vec<String> = datacenters
                    .iter()
                    .map(|(datacenter, factor)| {
                        format!(", '{}': {factor}", datacenter.replace('\'', "''"))
                    })
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy'{}}}", factors.concat())
            }
        }
    }
}

/// Where and how to reach Cassandra.
#[derive(Clone)]
pub struct CassandraConfig {
    /// Nodes to connect to first, `host[:port]` (port 9042 when absent); the others are
    /// discovered from them.
    pub contact_points: Vec<String>,
    /// The local data center. When set, requests go to its nodes only (data-center-aware load
    /// balancing) and use `LOCAL_QUORUM` / `LOCAL_SERIAL`; otherwise every node is local and
    /// requests use `QUORUM` / `SERIAL`.
    pub datacenter: Option<String>,
    /// User name for Cassandra's `PasswordAuthenticator`; set together with `password`.
    pub username: Option<String>,
    /// Password for Cassandra's `PasswordAuthenticator`; set together with `username`.
    pub password: Option<String>,
    /// CA certificate (PEM): when set, requests go over TLS and the nodes' certificates must
    /// be signed by it.
    pub tls_ca: Option<PathBuf>,
    /// The name every node's certificate must carry (TLS only); by default the host of the
    /// first contact point.
    pub tls_server_name: Option<String>,
    /// The keyspace: letters, digits and underscores, starting with a letter, at most 48
    /// characters (Cassandra folds it to lower case).
    pub keyspace: String,
    /// Replication of the keyspace when it is created.
    pub replication: Replication,
}

impl fmt::Debug for CassandraConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CassandraConfig")
            .field("contact_points", &self.contact_points)
            .field("datacenter", &self.datacenter)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_server_name", &self.tls_server_name)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .finish()
    }
}

impl CassandraConfig {
    /// Checks the contact points, keyspace name, credentials and replication.
    pub fn validate(&self) -> Result<()> {
        if self
            .contact_points
            .iter()
            .all(|point| point.trim().is_empty())
        {
            return Err(Error::InvalidArgument(
                "no Cassandra contact point given".to_owned(),
            ));
        }
        validate_keyspace(&self.keyspace)?;
        if matches!(&self.datacenter, Some(datacenter) if datacenter.trim().is_empty()) {
            return Err(Error::InvalidArgument(
                "the Cassandra data center name is empty".to_owned(),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::InvalidArgument(
                "Cassandra username and password must be given together".to_owned(),
            ));
        }
        self.replication.validate()
    }
}

/// Checks that `keyspace` can be used unquoted in CQL.
fn validate_keyspace(keyspace: &str) -> Result<()> {
    let starts_with_letter = keyspace
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic());
    let valid_chars = keyspace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if starts_with_letter && valid_chars && keyspace.len() <= MAX_KEYSPACE_LEN {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "Cassandra keyspace {keyspace:?} must be 1 to {MAX_KEYSPACE_LEN} letters, digits or \
             underscores, starting with a letter"
        )))
    }
}

/// The CQL statements creating version [`SCHEMA_VERSION`] of the schema in `keyspace` (which
/// must be a valid unquoted name, see [`CassandraConfig::keyspace`]), keyspace first. Each is
/// idempotent (`IF NOT EXISTS`).
pub fn schema(keyspace: &str, replication: &Replication) -> Vec<String> {
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
            replication.to_cql()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.events (\
             tenant text, bucket bigint, ts bigint, event_id text, \
             origin_seq bigint, origin_index int, payload blob, \
             PRIMARY KEY ((tenant, bucket), ts, event_id)) \
             WITH CLUSTERING ORDER BY (ts ASC, event_id ASC) \
             AND compaction = {{'class': 'TimeWindowCompactionStrategy', \
             'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.event_ids (\
             tenant text, event_id text, origin_seq bigint, origin_index int, ts bigint, \
             PRIMARY KEY ((tenant, event_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.tenant_days (\
             tenant text, bucket bigint, \
             PRIMARY KEY ((tenant), bucket)) \
             WITH CLUSTERING ORDER BY (bucket ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.schema_version (\
             id int PRIMARY KEY, version bigint)"
        ),
    ]
}

/// The day bucket of an event time: whole days since the Unix epoch, rounded down.
fn bucket_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(DAY_MS)
}

/// `point` with the default port when it has none.
fn with_default_port(point: &str) -> String {
    let point = point.trim();
    if point.parse::<SocketAddr>().is_ok() {
        return point.to_owned();
    }
    let bare = point
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(point);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return SocketAddr::new(ip, DEFAULT_PORT).to_string();
    }
    match point.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => point.to_owned(),
        _ => format!("{point}:{DEFAULT_PORT}"),
    }
}

/// Tries a TCP connection to each point until one answers; otherwise why each failed.
async fn probe(points: &[String]) -> std::result::Result<(), String> {
    let mut failures = Vec::with_capacity(points.len());
    for point in points {
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(point.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) => failures.push(format!("{point}: {err}")),
            Err(_) => failures.push(format!("{point}: no answer within {CONNECT_TIMEOUT:?}")),
        }
    }
    Err(failures.join("; "))
}

/// The origin sequence as a CQL `bigint` (the same 64 bits).
fn seq_to_cql(seq: u64) -> i64 {
    seq as i64
}

/// The origin sequence from a CQL `bigint`.
fn seq_from_cql(seq: i64) -> u64 {
    seq as u64
}

/// The origin index as a CQL `int` (the same 32 bits).
fn index_to_cql(index: u32) -> i32 {
    index as i32
}

/// The origin index from a CQL `int`.
fn index_from_cql(index: i32) -> u32 {
    index as u32
}

fn text(value: &str) -> Value {
    Value::from(value)
}

fn bigint(value: i64) -> Value {
    Value::from(value)
}

fn int(value: i32) -> Value {
    Value::from(value)
}

fn blob(value: &[u8]) -> Value {
    Value::from(Blob::from(value))
}

/// Whether trying again may succeed: the connection, a timeout, or a node that is down, busy or
/// starting.
fn is_transient(err: &CdrsError) -> bool {
    match err {
        CdrsError::Io(_) | CdrsError::Timeout(_) | CdrsError::General(_) => true,
        CdrsError::Server { body, .. } => matches!(
            body.ty,
            ErrorType::Server
                | ErrorType::Unavailable(_)
                | ErrorType::Overloaded
                | ErrorType::IsBootstrapping
                | ErrorType::Truncate
                | ErrorType::WriteTimeout(_)
                | ErrorType::ReadTimeout(_)
        ),
        _ => false,
    }
}

/// A driver error for a message: the server's message and kind when there is one.
fn describe(err: &CdrsError) -> String {
    match err {
        CdrsError::Server { body, addr } => {
            format!("{} from {addr}: {}", error_kind(&body.ty), body.message)
        }
        other => other.to_string(),
    }
}

fn error_kind(ty: &ErrorType) -> &'static str {
    match ty {
        ErrorType::Server => "server error",
        ErrorType::Protocol => "protocol error",
        ErrorType::Authentication => "authentication error",
        ErrorType::Unavailable(_) => "not enough replicas available",
        ErrorType::Overloaded => "overloaded",
        ErrorType::IsBootstrapping => "node bootstrapping",
        ErrorType::Truncate => "truncate error",
        ErrorType::WriteTimeout(_) => "write timeout",
        ErrorType::ReadTimeout(_) => "read timeout",
        ErrorType::ReadFailure(_) => "read failure",
        ErrorType::FunctionFailure(_) => "function failure",
        ErrorType::WriteFailure(_) => "write failure",
        ErrorType::Syntax => "syntax error",
        ErrorType::Unauthorized => "unauthorized",
        ErrorType::Invalid => "invalid request",
        ErrorType::Config => "configuration error",
        ErrorType::AlreadyExists(_) => "already exists",
        ErrorType::Unprepared(_) => "unprepared statement",
        _ => "error",
    }
}

/// The rows of a result (none for a result without rows).
fn rows(envelope: &Envelope, what: &dyn Fn() -> String) -> Result<Vec<Row>> {
    let body = envelope.response_body().map_err(|err| {
        Error::Corrupt(format!(
            "{}: undecodable answer from Cassandra: {err}",
            what()
        ))
    })?;
    Ok(body.into_rows().unwrap_or_default())
}

/// The non-null column `name` of `row`.
fn column<T>(row: &Row, name: &str, what: &dyn Fn() -> String) -> Result<T>
where
    Row: IntoRustByName<T>,
{
    <Row as IntoRustByName<T>>::get_r_by_name(row, name)
        .map_err(|err| Error::Corrupt(format!("{}: column {name}: {err}", what())))
}

/// A row of `events` (columns `ts, event_id, origin_seq, origin_index, payload`).
fn decode_event(tenant: &str, row: &Row, what: &dyn Fn() -> String) -> Result<RawEvent> {
    let payload = <Row as IntoRustByName<Blob>>::get_by_name(row, "payload")
        .map_err(|err| Error::Corrupt(format!("{}: column payload: {err}", what())))?
        .map(Blob::into_vec)
        .unwrap_or_default();
    Ok(RawEvent {
        tenant_id: tenant.to_owned(),
        event_id: column(row, "event_id", what)?,
        timestamp_ms: column(row, "ts", what)?,
        origin: Origin {
            seq: seq_from_cql(column(row, "origin_seq", what)?),
            index: index_from_cql(column(row, "origin_index", what)?),
        },
        payload: Bytes::from(payload),
    })
}

/// The prepared statements, prepared once the schema exists.
struct Statements {
    /// Records an event id unless recorded: `[applied]`, or the recorded origin and time.
    claim_id: PreparedQuery,
    /// Removes an id record (a lightweight transaction, like its insert).
    forget_id: PreparedQuery,
    /// Lists a day bucket of a tenant.
    add_day: PreparedQuery,
    /// The day buckets of a tenant in an inclusive range, ascending.
    days: PreparedQuery,
    /// Writes an event row.
    put_event: PreparedQuery,
    /// Whether an event row exists.
    find_event: PreparedQuery,
    /// Removes an event row.
    delete_event: PreparedQuery,
    /// Events of one bucket with `from <= ts < to`, in order, limited.
    scan_from: PreparedQuery,
    /// Events of one bucket after a (ts, event id) cursor with `ts < to`, in order, limited.
    scan_after: PreparedQuery,
    /// The earliest event time of one bucket.
    first_in_day: PreparedQuery,
    /// The latest event time of one bucket.
    last_in_day: PreparedQuery,
}

impl Statements {
    async fn prepare(store: &CassandraRawStore) -> Result<Self> {
        let ks = &store.keyspace;
        let columns = "ts, event_id, origin_seq, origin_index, payload";
        Ok(Self {
            claim_id: store
                .prepare(format!(
                    "INSERT INTO {ks}.event_ids (tenant, event_id, origin_seq, origin_index, ts) \
                     VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
                ))
                .await?,
            forget_id: store
                .prepare(format!(
                    "DELETE FROM {ks}.event_ids WHERE tenant = ? AND event_id = ? IF EXISTS"
                ))
                .await?,
            add_day: store
                .prepare(format!(
                    "INSERT INTO {ks}.tenant_days (tenant, bucket) VALUES (?, ?)"
                ))
                .await?,
            days: store
                .prepare(format!(
                    "SELECT bucket FROM {ks}.tenant_days \
                     WHERE tenant = ? AND bucket >= ? AND bucket <= ?"
                ))
                .await?,
            put_event: store
                .prepare(format!(
                    "INSERT INTO {ks}.events \
                     (tenant, bucket, ts, event_id, origin_seq, origin_index, payload) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)"
                ))
                .await?,
            find_event: store
                .prepare(format!(
                    "SELECT ts FROM {ks}.events \
                     WHERE tenant = ? AND bucket = ? AND ts = ? AND event_id = ?"
                ))
                .await?,
            delete_event: store
                .prepare(format!(
                    "DELETE FROM {ks}.events \
                     WHERE tenant = ? AND bucket = ? AND ts = ? AND event_id = ?"
                ))
                .await?,
            scan_from: store
                .prepare(format!(
                    "SELECT {columns} FROM {ks}.events \
                     WHERE tenant = ? AND bucket = ? AND ts >= ? AND ts < ? LIMIT ?"
                ))
                .await?,
            // Cassandra refuses a tuple and a single-column inequality on the same column, so
            // the upper bound is a one-element tuple too.
            scan_after: store
                .prepare(format!(
                    "SELECT {columns} FROM {ks}.events \
                     WHERE tenant = ? AND bucket = ? AND (ts, event_id) > (?, ?) AND (ts) < (?) \
                     LIMIT ?"
                ))
                .await?,
            first_in_day: store
                .prepare(format!(
                    "SELECT ts FROM {ks}.events WHERE tenant = ? AND bucket = ? LIMIT 1"
                ))
                .await?,
            last_in_day: store
                .prepare(format!(
                    "SELECT ts FROM {ks}.events WHERE tenant = ? AND bucket = ? \
                     ORDER BY ts DESC LIMIT 1"
                ))
                .await?,
        })
    }
}

/// Raw events in a Cassandra keyspace.
pub struct CassandraRawStore {
    session: CdrsSession,
    keyspace: String,
    /// The contact points, for messages.
    points: String,
    consistency: Consistency,
    serial_consistency: Consistency,
    statements: OnceCell<Statements>,
}

impl CassandraRawStore {
    /// Connects to the cluster `config` names and makes sure the keyspace has the current
    /// schema: when it has none or an older one, applies it with [`Self::migrate`] (with
    /// `config.replication`). Run the first open of a new cluster from one process: Cassandra
    /// handles concurrent schema changes poorly.
    pub async fn open(config: &CassandraConfig) -> Result<Self> {
        let store = Self::connect(config).await?;
        match store.schema_version().await? {
            Some(version) if version == SCHEMA_VERSION => {
                store.statements().await?;
            }
            Some(version) if version > SCHEMA_VERSION => return Err(store.too_new(version)),
            _ => {
                store.migrate(&config.replication).await?;
            }
        }
        tracing::info!(
            keyspace = %store.keyspace,
            contact_points = %store.points,
            "Cassandra raw store opened"
        );
        Ok(store)
    }

    /// Connects to the cluster `config` names without touching the schema: call
    /// [`Self::migrate`] before using the store on a keyspace that does not have it.
    pub async fn connect(config: &CassandraConfig) -> Result<Self> {
        config.validate()?;
        if let Some(ca) = &config.tls_ca {
            session::client_config(ca)?;
        }
        let points: Vec<String> = config
            .contact_points
            .iter()
            .filter(|point| !point.trim().is_empty())
            .map(|point| with_default_port(point))
            .collect();
        let shown = points.join(", ");
        let no_node = |err: String| {
            Error::Unavailable(format!("no Cassandra node reachable at {shown}: {err}"))
        };
        probe(&points).await.map_err(&no_node)?;

        let building = CdrsSession::start(config, &points);
        let session: CdrsSession = match tokio::time::timeout(SESSION_TIMEOUT, building).await {
            Ok(Ok(session)) => session,
            Ok(Err(err)) => return Err(no_node(err)),
            Err(_) => {
                return Err(no_node(format!(
                    "a node accepts connections but no session started within \
                     {SESSION_TIMEOUT:?} (wrong credentials, TLS on one side only, a \
                     certificate not matching the server name, or an unsupported protocol \
                     version?)"
                )));
            }
        };
        let (consistency, serial_consistency) = if config.datacenter.is_some() {
            (Consistency::LocalQuorum, Consistency::LocalSerial)
        } else {
            (Consistency::Quorum, Consistency::Serial)
        };
        Ok(Self {
            session,
            keyspace: config.keyspace.clone(),
            points: shown,
            consistency,
            serial_consistency,
            statements: OnceCell::new(),
        })
    }

    /// The keyspace of this store.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Applies the schema (idempotent: every statement is `IF NOT EXISTS`), creating the
    /// keyspace with `replication` if it does not exist, records [`SCHEMA_VERSION`] and prepares
    /// the statements. Returns the version now applied. Refuses a keyspace whose recorded
    /// version is newer than this build knows.
    pub async fn migrate(&self, replication: &Replication) -> Result<u32> {
        replication.validate()?;
        let recorded = self.schema_version().await?;
        if let Some(version) = recorded.filter(|version| *version > SCHEMA_VERSION) {
            return Err(self.too_new(version));
        }
        for cql in schema(&self.keyspace, replication) {
            self.query(|| format!("applying `{cql}`"), &cql, Vec::new())
                .await?;
            self.await_schema_agreement().await;
        }
        let record = format!(
            "INSERT INTO {}.schema_version (id, version) VALUES (0, ?)",
            self.keyspace
        );
        self.query(
            || {
                format!(
                    "recording schema version {SCHEMA_VERSION} in keyspace {}",
                    self.keyspace
                )
            },
            &record,
            vec![bigint(i64::from(SCHEMA_VERSION))],
        )
        .await?;
        self.statements().await?;
        tracing::info!(
            keyspace = %self.keyspace,
            version = SCHEMA_VERSION,
            "Cassandra raw store schema applied"
        );
        Ok(SCHEMA_VERSION)
    }

    /// The schema version recorded in the keyspace; `None` when the keyspace or its
    /// `schema_version` table does not exist or has no version yet.
    pub async fn schema_version(&self) -> Result<Option<u32>> {
        let cql = format!(
            "SELECT version FROM {}.schema_version WHERE id = 0",
            self.keyspace
        );
        let what = || format!("reading the schema version of keyspace {}", self.keyspace);
        let envelope = match self.query(&what, &cql, Vec::new()).await {
            Ok(envelope) => envelope,
            // Cassandra answers "keyspace does not exist" or "unconfigured table".
            Err(Error::InvalidArgument(_)) => return Ok(None),
            Err(err) => return Err(err),
        };
        let Some(row) = rows(&envelope, &what)?.into_iter().next() else {
            return Ok(None);
        };
        let version: i64 = column(&row, "version", &what)?;
        u32::try_from(version).map(Some).map_err(|_| {
            Error::Corrupt(format!(
                "keyspace {} records the schema version {version}",
                self.keyspace
            ))
        })
    }

    fn too_new(&self, version: u32) -> Error {
        Error::InvalidArgument(format!(
            "Cassandra keyspace {} has raw store schema version {version}, newer than version \
             {SCHEMA_VERSION} that this build of Beacon knows; upgrade Beacon",
            self.keyspace
        ))
    }

    /// Waits (boundedly) until every node reports the same schema version, so that the next
    /// statement, whichever node coordinates it, sees the last schema change. Best effort: a
    /// failure to check is logged, not returned.
    async fn await_schema_agreement(&self) {
        let deadline = tokio::time::Instant::now() + SCHEMA_AGREEMENT_TIMEOUT;
        loop {
            match self.schema_versions().await {
                Ok(versions) if versions.len() <= 1 => return,
                Ok(versions) => {
                    tracing::debug!(
                        versions = versions.len(),
                        "waiting for the Cassandra nodes to agree on the schema"
                    );
                }
                Err(err) => {
                    tracing::warn!(%err, "could not check Cassandra schema agreement");
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    contact_points = %self.points,
                    timeout = ?SCHEMA_AGREEMENT_TIMEOUT,
                    "the Cassandra nodes did not agree on the schema in time; going on"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The distinct schema versions of the nodes (as seen by whichever nodes answer).
    async fn schema_versions(&self) -> Result<HashSet<Vec<u8>>> {
        let mut versions = HashSet::new();
        for cql in [
            "SELECT uuidAsBlob(schema_version) FROM system.local WHERE key = 'local'",
            "SELECT uuidAsBlob(schema_version) FROM system.peers",
        ] {
            let what = || format!("reading schema versions with `{cql}`");
            let envelope = self.query(&what, cql, Vec::new()).await?;
            for row in rows(&envelope, &what)? {
                let version = <Row as IntoRustByIndex<Blob>>::get_by_index(&row, 0)
                    .map_err(|err| Error::Corrupt(format!("{}: {err}", what())))?;
                if let Some(version) = version {
                    versions.insert(version.into_vec());
                }
            }
        }
        Ok(versions)
    }

    /// The prepared statements, prepared on first use.
    async fn statements(&self) -> Result<&Statements> {
        self.statements
            .get_or_try_init(|| Statements::prepare(self))
            .await
    }

    /// Prepares `cql`.
    async fn prepare(&self, cql: String) -> Result<PreparedQuery> {
        let session = &self.session;
        let query = cql.as_str();
        self.retrying(
            || format!("preparing `{cql}`"),
            move || session.prepare(query),
        )
        .await
        .map_err(|err| match err {
            // "unconfigured table", "keyspace does not exist": not the caller's fault.
            Error::InvalidArgument(message) => Error::backend(
                format!(
                    "preparing a statement in keyspace {} (has its schema been applied?)",
                    self.keyspace
                ),
                message,
            ),
            other => other,
        })
    }

    /// Parameters of every request: the configured consistency, retries allowed.
    fn params(&self, values: Vec<Value>) -> StatementParams {
        let mut builder = StatementParamsBuilder::new()
            .with_consistency(self.consistency)
            .with_serial_consistency(self.serial_consistency)
            .idempotent(true);
        if !values.is_empty() {
            builder = builder.with_values(QueryValues::SimpleValues(values));
        }
        builder.build()
    }

    /// Executes a prepared statement.
    async fn exec<W>(
        &self,
        what: W,
        statement: &PreparedQuery,
        values: Vec<Value>,
    ) -> Result<Envelope>
    where
        W: Fn() -> String + Send + Sync,
    {
        let params = self.params(values);
        let (session, params) = (&self.session, &params);
        self.retrying(what, move || session.exec_with_params(statement, params))
            .await
    }

    /// Runs an unprepared statement (schema changes, system tables).
    async fn query<W>(&self, what: W, cql: &str, values: Vec<Value>) -> Result<Envelope>
    where
        W: Fn() -> String + Send + Sync,
    {
        let params = self.params(values);
        let (session, params) = (&self.session, &params);
        self.retrying(what, move || session.query_with_params(cql, params.clone()))
            .await
    }

    /// Runs `call` until it succeeds, fails permanently or fails transiently [`ATTEMPTS`]
    /// times, pausing with exponential backoff in between.
    async fn retrying<T, W, F, Fut>(&self, what: W, mut call: F) -> Result<T>
    where
        T: Send,
        W: Fn() -> String + Send + Sync,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, CdrsError>> + Send,
    {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(REQUEST_TIMEOUT, call()).await {
                Ok(result) => result,
                Err(_) => Err(CdrsError::Timeout(format!(
                    "no answer within {REQUEST_TIMEOUT:?}"
                ))),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(err) if is_transient(&err) && attempt < ATTEMPTS => {
                    tracing::warn!(
                        attempt,
                        error = %describe(&err),
                        contact_points = %self.points,
                        "{} failed; retrying",
                        what()
                    );
                    backoff.sleep(None).await;
                    attempt += 1;
                }
                Err(err) => return Err(self.failure(&what(), &err, attempt)),
            }
        }
    }

    /// The crate error for a request that failed for good.
    fn failure(&self, what: &str, err: &CdrsError, attempts: u32) -> Error {
        let detail = describe(err);
        if is_transient(err) {
            return Error::Unavailable(format!(
                "{what}: Cassandra at {} failed {attempts} times, last with {detail}",
                self.points
            ));
        }
        match err {
            CdrsError::Server { body, .. } if matches!(body.ty, ErrorType::Invalid) => {
                Error::InvalidArgument(format!("{what}: Cassandra refused it: {detail}"))
            }
            _ => Error::backend(format!("{what} on Cassandra at {}", self.points), detail),
        }
    }

    /// Inserts one event whose id is not earlier in its batch.
    /// Inserts `event`, or reports it a duplicate when an earlier event of the same batch had
    /// its id.
    async fn insert_unless_repeated(
        &self,
        st: &Statements,
        event: &RawEvent,
        first: bool,
    ) -> Result<Inserted> {
        if first {
            self.insert_one(st, event).await
        } else {
            Ok(Inserted::Duplicate)
        }
    }

    async fn insert_one(&self, st: &Statements, event: &RawEvent) -> Result<Inserted> {
        let (tenant, id) = (event.tenant_id.as_str(), event.event_id.as_str());
        let what = || {
            format!(
                "recording the id of raw event {tenant}/{id} in {}.event_ids",
                self.keyspace
            )
        };
        let values = vec![
            text(tenant),
            text(id),
            bigint(seq_to_cql(event.origin.seq)),
            int(index_to_cql(event.origin.index)),
            bigint(event.timestamp_ms),
        ];
        let envelope = self.exec(&what, &st.claim_id, values).await?;
        let answer = rows(&envelope, &what)?;
        let row = answer.first().ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: Cassandra answered the conditional insert without a row",
                what()
            ))
        })?;
        let applied: bool = column(row, "[applied]", &what)?;
        let outcome = if applied {
            Inserted::New
        } else {
            let stored = Origin {
                seq: seq_from_cql(column(row, "origin_seq", &what)?),
                index: index_from_cql(column(row, "origin_index", &what)?),
            };
            if stored != event.origin {
                return Ok(Inserted::Duplicate);
            }
            let stored_ms: i64 = column(row, "ts", &what)?;
            if stored_ms != event.timestamp_ms {
                tracing::warn!(
                    tenant,
                    event_id = id,
                    stored_ms,
                    replayed_ms = event.timestamp_ms,
                    "a replayed raw event has another time than its first insert; keeping the first"
                );
                return Ok(Inserted::Replay);
            }
            // Written again in case the first insert stopped between the id and the row.
            Inserted::Replay
        };
        self.write_event(st, event).await?;
        Ok(outcome)
    }

    /// Lists the event's day, then writes its row (two partitions: two statements).
    async fn write_event(&self, st: &Statements, event: &RawEvent) -> Result<()> {
        let tenant = event.tenant_id.as_str();
        let bucket = bucket_of(event.timestamp_ms);
        self.exec(
            || {
                format!(
                    "listing day {bucket} of {tenant} in {}.tenant_days",
                    self.keyspace
                )
            },
            &st.add_day,
            vec![text(tenant), bigint(bucket)],
        )
        .await?;
        let values = vec![
            text(tenant),
            bigint(bucket),
            bigint(event.timestamp_ms),
            text(&event.event_id),
            bigint(seq_to_cql(event.origin.seq)),
            int(index_to_cql(event.origin.index)),
            blob(&event.payload),
        ];
        self.exec(
            || {
                format!(
                    "writing raw event {tenant}/{} at {} into {}.events",
                    event.event_id, event.timestamp_ms, self.keyspace
                )
            },
            &st.put_event,
            values,
        )
        .await?;
        Ok(())
    }

    /// The day buckets of `tenant` in `first..=last`, ascending.
    async fn days(&self, st: &Statements, tenant: &str, first: i64, last: i64) -> Result<Vec<i64>> {
        let what = || {
            format!(
                "listing the days of {tenant} in {}.tenant_days",
                self.keyspace
            )
        };
        let values = vec![text(tenant), bigint(first), bigint(last)];
        let envelope = self.exec(&what, &st.days, values).await?;
        let found = rows(&envelope, &what)?;
        let mut buckets = Vec::with_capacity(found.len());
        for row in &found {
            buckets.push(column(row, "bucket", &what)?);
        }
        Ok(buckets)
    }

    /// The event time `statement` (first or last of a bucket) finds, if any.
    async fn edge(
        &self,
        statement: &PreparedQuery,
        tenant: &str,
        bucket: i64,
    ) -> Result<Option<i64>> {
        let what = || {
            format!(
                "reading the time bounds of {tenant} on day {bucket} in {}.events",
                self.keyspace
            )
        };
        let envelope = self
            .exec(&what, statement, vec![text(tenant), bigint(bucket)])
            .await?;
        match rows(&envelope, &what)?.first() {
            Some(row) => column(row, "ts", &what).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes one event row and its id record; whether the row existed.
    async fn delete_one(&self, st: &Statements, tenant: &str, ts: i64, id: &str) -> Result<bool> {
        let bucket = bucket_of(ts);
        let key = || vec![text(tenant), bigint(bucket), bigint(ts), text(id)];
        let what = || {
            format!(
                "deleting raw event {tenant}/{id} at {ts} from keyspace {}",
                self.keyspace
            )
        };
        let envelope = self.exec(&what, &st.find_event, key()).await?;
        if rows(&envelope, &what)?.is_empty() {
            return Ok(false);
        }
        self.exec(&what, &st.delete_event, key()).await?;
        self.exec(&what, &st.forget_id, vec![text(tenant), text(id)])
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl RawStore for CassandraRawStore {
    async fn insert(&self, events: &[RawEvent]) -> Result<Vec<Inserted>> {
        super::check(events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let st = self.statements().await?;
        let mut seen = HashSet::with_capacity(events.len());
        let first: Vec<bool> = events
            .iter()
            .map(|event| seen.insert((event.tenant_id.as_str(), event.event_id.as_str())))
            .collect();
        let mut out = Vec::with_capacity(events.len());
        let pairs: Vec<(&RawEvent, bool)> = events.iter().zip(first).collect();
        for chunk in pairs.chunks(CONCURRENCY) {
            let calls: Vec<_> = chunk
                .iter()
                .map(|&(event, first)| self.insert_unless_repeated(st, event, first))
                .collect();
            out.extend(futures::future::try_join_all(calls).await?);
        }
        Ok(out)
    }

    async fn scan(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<RawEvent>> {
        if super::nothing_to_scan(from_ms, to_ms, after.as_ref(), limit) {
            return Ok(Vec::new());
        }
        let st = self.statements().await?;
        // A cursor before the range is the start of the range.
        let mut cursor = after.filter(|(ts, _)| *ts >= from_ms);
        let first_bucket = bucket_of(cursor.as_ref().map_or(from_ms, |(ts, _)| *ts));
        let last_bucket = bucket_of(to_ms - 1);
        let buckets = self.days(st, tenant_id, first_bucket, last_bucket).await?;
        let what = || {
            format!(
                "scanning raw events of {tenant_id} in [{from_ms}, {to_ms}) from {}.events",
                self.keyspace
            )
        };
        let mut events: Vec<RawEvent> = Vec::new();
        for bucket in buckets {
            loop {
                let want = (limit - events.len()).min(PAGE_ROWS);
                let want_cql = i32::try_from(want).unwrap_or(i32::MAX);
                let (statement, values) = match &cursor {
                    Some((ts, id)) if bucket_of(*ts) == bucket => (
                        &st.scan_after,
                        vec![
                            text(tenant_id),
                            bigint(bucket),
                            bigint(*ts),
                            text(id),
                            bigint(to_ms),
                            int(want_cql),
                        ],
                    ),
                    _ => (
                        &st.scan_from,
                        vec![
                            text(tenant_id),
                            bigint(bucket),
                            bigint(from_ms),
                            bigint(to_ms),
                            int(want_cql),
                        ],
                    ),
                };
                let envelope = self.exec(&what, statement, values).await?;
                let page = rows(&envelope, &what)?;
                let got = page.len();
                for row in &page {
                    events.push(decode_event(tenant_id, row, &what)?);
                }
                if events.len() >= limit {
                    events.truncate(limit);
                    return Ok(events);
                }
                if got < want {
                    break;
                }
                cursor = events
                    .last()
                    .map(|event| (event.timestamp_ms, event.event_id.clone()));
            }
        }
        Ok(events)
    }

    async fn delete(&self, tenant_id: &str, keys: &[(i64, String)]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let st = self.statements().await?;
        let mut seen = HashSet::with_capacity(keys.len());
        let unique: Vec<(i64, &str)> = keys
            .iter()
            .map(|(ts, id)| (*ts, id.as_str()))
            .filter(|key| seen.insert(*key))
            .collect();
        let mut removed = 0u64;
        for chunk in unique.chunks(CONCURRENCY) {
            let calls: Vec<_> = chunk
                .iter()
                .map(|&(ts, id)| self.delete_one(st, tenant_id, ts, id))
                .collect();
            let done = futures::future::try_join_all(calls).await?;
            removed += done.into_iter().filter(|removed| *removed).count() as u64;
        }
        Ok(removed)
    }

    async fn bounds(&self, tenant_id: &str) -> Result<Option<(i64, i64)>> {
        let st = self.statements().await?;
        let buckets = self.days(st, tenant_id, i64::MIN, i64::MAX).await?;
        let mut first = None;
        for &bucket in &buckets {
            if let Some(ts) = self.edge(&st.first_in_day, tenant_id, bucket).await? {
                first = Some(ts);
                break;
            }
        }
        let Some(first) = first else {
            return Ok(None);
        };
        for &bucket in buckets.iter().rev() {
            if let Some(last) = self.edge(&st.last_in_day, tenant_id, bucket).await? {
                return Ok(Some((first, last)));
            }
        }
        Ok(Some((first, first)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CassandraConfig {
        CassandraConfig {
            contact_points: vec!["127.0.0.1:1".to_owned()],
            datacenter: None,
            username: None,
            password: None,
            tls_ca: None,
            tls_server_name: None,
            keyspace: "beacon".to_owned(),
            replication: Replication::SimpleStrategy { factor: 1 },
        }
    }

    #[test]
    fn buckets_are_utc_days_rounded_down() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(DAY_MS - 1), 0);
        assert_eq!(bucket_of(DAY_MS), 1);
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_of(-DAY_MS), -1);
        assert_eq!(bucket_of(-DAY_MS - 1), -2);
        assert!(bucket_of(i64::MIN) <= bucket_of(i64::MAX));
    }

    #[test]
    fn origins_round_trip_through_signed_columns() {
        for seq in [0, 1, u64::from(u32::MAX), i64::MAX as u64, u64::MAX] {
            assert_eq!(seq_from_cql(seq_to_cql(seq)), seq);
        }
        for index in [0, 1, i32::MAX as u32, u32::MAX] {
            assert_eq!(index_from_cql(index_to_cql(index)), index);
        }
    }

    #[test]
    fn contact_points_get_the_default_port() {
        assert_eq!(with_default_port("10.0.0.1"), "10.0.0.1:9042");
        assert_eq!(with_default_port(" 10.0.0.1:9043 "), "10.0.0.1:9043");
        assert_eq!(with_default_port("::1"), "[::1]:9042");
        assert_eq!(with_default_port("[::1]"), "[::1]:9042");
        assert_eq!(with_default_port("[::1]:9043"), "[::1]:9043");
        assert_eq!(with_default_port("cassandra"), "cassandra:9042");
        assert_eq!(with_default_port("cassandra:9043"), "cassandra:9043");
    }

    #[test]
    fn keyspaces_must_be_plain_names() {
        assert!(validate_keyspace("beacon").is_ok());
        assert!(validate_keyspace("beacon_test_0123abcd").is_ok());
        let long = "k".repeat(MAX_KEYSPACE_LEN + 1);
        for bad in [
            "",
            "1beacon",
            "_beacon",
            "beacon-raw",
            "beacon.raw",
            "b\"x",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_keyspace(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replication_renders_as_cql() {
        assert_eq!(
            Replication::SimpleStrategy { factor: 3 }.to_cql(),
            "{'class': 'SimpleStrategy', 'replication_factor': 3}"
        );
        let datacenters = BTreeMap::from([("dc1".to_owned(), 3), ("o'dc".to_owned(), 2)]);
        assert_eq!(
            Replication::NetworkTopologyStrategy { datacenters }.to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'o''dc': 2}"
        );
        assert!(
            Replication::SimpleStrategy { factor: 0 }
                .validate()
                .is_err()
        );
        assert!(
            Replication::NetworkTopologyStrategy {
                datacenters: BTreeMap::new()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn schema_creates_the_keyspace_first() {
        let statements = schema("beacon", &Replication::SimpleStrategy { factor: 1 });
        assert_eq!(statements.len(), 5);
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS beacon "));
        for table in ["events", "event_ids", "tenant_days", "schema_version"] {
            let create = format!("CREATE TABLE IF NOT EXISTS beacon.{table} (");
            assert!(
                statements.iter().any(|cql| cql.starts_with(&create)),
                "{table}"
            );
        }
    }

    #[test]
    fn configs_are_checked_and_hide_the_password() {
        assert!(config().validate().is_ok());
        let no_points = CassandraConfig {
            contact_points: vec![" ".to_owned()],
            ..config()
        };
        assert!(no_points.validate().is_err());
        let half_credentials = CassandraConfig {
            username: Some("beacon".to_owned()),
            ..config()
        };
        assert!(half_credentials.validate().is_err());
        let with_password = CassandraConfig {
            username: Some("beacon".to_owned()),
            password: Some("hunter2".to_owned()),
            ..config()
        };
        assert!(!format!("{with_password:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn tls_needs_a_readable_ca_file_with_a_certificate() {
        let dir = beacon_testkit::TempDir::new("cassandra-tls").expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        for (ca, expected) in [
            (dir.path().join("missing.pem"), "missing.pem"),
            (empty, "holds no PEM certificate"),
        ] {
            let tls = CassandraConfig {
                tls_ca: Some(ca),
                ..config()
            };
            match CassandraRawStore::connect(&tls).await {
                Err(Error::InvalidArgument(message)) => {
                    assert!(message.contains(expected), "{message}")
                }
                Err(other) => panic!("unexpected error: {other}"),
                Ok(_) => panic!("connected"),
            }
        }
    }

    #[tokio::test]
    async fn unreachable_clusters_are_named() {
        match CassandraRawStore::connect(&config()).await {
            Err(Error::Unavailable(message)) => assert!(
                message.starts_with("no Cassandra node reachable at 127.0.0.1:1: "),
                "{message}"
            ),
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("connected to port 1"),
        }
    }
}
