//! The driver session: plain TCP, or TLS (rustls) when a CA certificate is configured.
//!
//! Over TLS every node must present a certificate, signed by the configured CA, for one
//! server name: `tls_server_name`, or the host of the first contact point. cdrs-tokio checks
//! every node against that single name, so a cluster needs a certificate valid for it on each
//! node (a shared cluster name, or a wildcard).

use std::path::Path;
use std::sync::Arc;

use cdrs_tokio::authenticators::{
    NoneAuthenticatorProvider, SaslAuthenticatorProvider, StaticPasswordAuthenticatorProvider,
};
use cdrs_tokio::cluster::connection_pool::ConnectionPoolConfigBuilder;
use cdrs_tokio::cluster::session::{
    RustlsSessionBuilder, Session, SessionBuilder, TcpSessionBuilder,
};
use cdrs_tokio::cluster::{
    NodeAddress, NodeRustlsConfigBuilder, NodeTcpConfigBuilder, RustlsConnectionManager,
    TcpConnectionManager,
};
use cdrs_tokio::error::Result as CdrsResult;
use cdrs_tokio::frame::Envelope;
use cdrs_tokio::load_balancing::TopologyAwareLoadBalancingStrategy;
use cdrs_tokio::load_balancing::node_distance_evaluator::{
    AllLocalNodeDistanceEvaluator, NodeDistanceEvaluator, TopologyAwareNodeDistanceEvaluator,
};
use cdrs_tokio::query::PreparedQuery;
use cdrs_tokio::statement::StatementParams;
use cdrs_tokio::transport::{TransportRustls, TransportTcp};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{CONNECT_TIMEOUT, CassandraConfig};
use crate::{Error, Result};

/// Token-aware load balancing preferring the local data center, over transport `T`.
type Balancer<T, M> = TopologyAwareLoadBalancingStrategy<T, M>;

/// A session over plain TCP or over TLS.
pub(super) enum CdrsSession {
    /// Plain TCP.
    Tcp(Session<TransportTcp, TcpConnectionManager, Balancer<TransportTcp, TcpConnectionManager>>),
    /// TLS through rustls.
    Tls(
        Session<
            TransportRustls,
            RustlsConnectionManager,
            Balancer<TransportRustls, RustlsConnectionManager>,
        >,
    ),
}

impl CdrsSession {
    /// Starts a session with the nodes at `points` (`host:port`). The error says why, for the
    /// caller to wrap; the driver keeps trying forever, so callers bound the wait.
    pub(super) async fn start(
        config: &CassandraConfig,
        points: &[String],
    ) -> std::result::Result<Self, String> {
        let addresses: Vec<NodeAddress> = points
            .iter()
            .map(|point| NodeAddress::from(point.as_str()))
            .collect();
        let authenticator: Arc<dyn SaslAuthenticatorProvider + Send + Sync> =
            match (&config.username, &config.password) {
                (Some(username), Some(password)) => Arc::new(
                    StaticPasswordAuthenticatorProvider::new(username.as_str(), password.as_str()),
                ),
                _ => Arc::new(NoneAuthenticatorProvider),
            };
        let pool = ConnectionPoolConfigBuilder::new()
            .with_connect_timeout(Some(CONNECT_TIMEOUT))
            .build();
        let Some(ca) = &config.tls_ca else {
            let nodes = NodeTcpConfigBuilder::new()
                .with_contact_points(addresses)
                .with_authenticator_provider(authenticator)
                .build()
                .await
                .map_err(|err| super::describe(&err))?;
            return TcpSessionBuilder::new(Balancer::new(None, false), nodes)
                .with_node_distance_evaluator(distances(config))
                .with_connection_pool_config(pool)
                .build()
                .await
                .map(Self::Tcp)
                .map_err(|err| err.to_string());
        };
        let name = server_name(config, points).map_err(|err| err.to_string())?;
        let tls = client_config(ca).map_err(|err| err.to_string())?;
        let nodes = NodeRustlsConfigBuilder::new(name, Arc::new(tls))
            .with_contact_points(addresses)
            .with_authenticator_provider(authenticator)
            .build()
            .await
            .map_err(|err| super::describe(&err))?;
        RustlsSessionBuilder::new(Balancer::new(None, false), nodes)
            .with_node_distance_evaluator(distances(config))
            .with_connection_pool_config(pool)
            .build()
            .await
            .map(Self::Tls)
            .map_err(|err| err.to_string())
    }

    /// Prepares `cql`.
    pub(super) async fn prepare(&self, cql: &str) -> CdrsResult<PreparedQuery> {
        match self {
            Self::Tcp(session) => session.prepare(cql).await,
            Self::Tls(session) => session.prepare(cql).await,
        }
    }

    /// Executes a prepared statement.
    pub(super) async fn exec_with_params(
        &self,
        statement: &PreparedQuery,
        params: &StatementParams,
    ) -> CdrsResult<Envelope> {
        match self {
            Self::Tcp(session) => session.exec_with_params(statement, params).await,
            Self::Tls(session) => session.exec_with_params(statement, params).await,
        }
    }

    /// Runs an unprepared statement.
    pub(super) async fn query_with_params(
        &self,
        cql: &str,
        params: StatementParams,
    ) -> CdrsResult<Envelope> {
        match self {
            Self::Tcp(session) => session.query_with_params(cql, params).await,
            Self::Tls(session) => session.query_with_params(cql, params).await,
        }
    }
}

/// Data-center-aware node distances when a data center is configured; otherwise all local.
fn distances(config: &CassandraConfig) -> Box<dyn NodeDistanceEvaluator + Send + Sync> {
    match &config.datacenter {
        Some(datacenter) => Box::new(TopologyAwareNodeDistanceEvaluator::new(datacenter.clone())),
        None => Box::new(AllLocalNodeDistanceEvaluator),
    }
}

/// The name the nodes' certificates must carry.
fn server_name(config: &CassandraConfig, points: &[String]) -> Result<ServerName<'static>> {
    let name = match &config.tls_server_name {
        Some(name) => name.clone(),
        None => {
            let first = points.first().map(String::as_str).unwrap_or_default();
            let host = first.rsplit_once(':').map_or(first, |(host, _)| host);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        }
    };
    ServerName::try_from(name.clone()).map_err(|err| {
        Error::InvalidArgument(format!(
            "Cassandra TLS server name {name:?} is neither a DNS name nor an IP address: {err}"
        ))
    })
}

/// A rustls client trusting the CA certificates in the PEM file `ca`.
pub(super) fn client_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let invalid = |why: String| {
        Error::InvalidArgument(format!(
            "Cassandra TLS CA certificate file {}: {why}",
            ca.display()
        ))
    };
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca).map_err(|err| invalid(err.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|err| invalid(err.to_string()))?;
        roots
            .add(certificate)
            .map_err(|err| invalid(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("holds no PEM certificate".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| invalid(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
