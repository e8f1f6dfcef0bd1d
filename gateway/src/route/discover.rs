//! Where a role's replicas are: fixed URLs, and DNS names written `dns+http://name:port` or
//! `dns+https://name:port`, which stand for every address the name resolves to (a Kubernetes
//! headless service lists one per ready pod). Names are looked up again every
//! [`RESOLVE_EVERY`]; over TLS each address is verified against the name, not the address.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::GatewayError;

/// How often DNS names are looked up again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// One entry of `--ingest-url` or `--query-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One replica at this URL.
    Url(String),
    /// Every address of a DNS name.
    Dns {
        /// `http` or `https`.
        scheme: &'static str,
        /// The name, also the name TLS certificates are verified against.
        host: String,
        /// The replicas' port.
        port: u16,
    },
}

/// One replica to call: its URL, and the name its certificate carries when that is not the
/// URL's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http(s)://address:port`.
    pub url: String,
    /// The DNS name the address came from.
    pub server_name: Option<String>,
}

/// Looks a DNS name up: every address it has, with `port`.
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system's resolver (`getaddrinfo`: /etc/hosts, then DNS).
pub fn system_resolver() -> Resolver {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

impl Source {
    /// Parses one URL; `dns+` URLs need a name and a port.
    pub fn parse(url: &str) -> Result<Self, GatewayError> {
        let invalid = |why: &str| GatewayError::Discovery {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let Some(rest) = url.strip_prefix("dns+") else {
            return Ok(Self::Url(url.to_owned()));
        };
        let (scheme, authority) = if let Some(authority) = rest.strip_prefix("https://") {
            ("https", authority)
        } else if let Some(authority) = rest.strip_prefix("http://") {
            ("http", authority)
        } else {
            return Err(invalid(
                "a DNS source is dns+http://name:port or dns+https://name:port",
            ));
        };
        let authority = authority.trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| invalid("the port is missing (dns+https://name:port)"))?;
        let port = port
            .parse()
            .map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
        if host.is_empty() || host.contains(['/', '@', '[']) {
            return Err(invalid("the host must be a DNS name"));
        }
        Ok(Self::Dns {
            scheme,
            host: host.to_owned(),
            port,
        })
    }

    /// The replicas this source stands for now.
    pub async fn targets(&self, resolve: &Resolver) -> io::Result<Vec<Target>> {
        match self {
            Self::Url(url) => Ok(vec![Target {
                url: url.clone(),
                server_name: None,
            }]),
            Self::Dns { scheme, host, port } => {
                let mut addresses = resolve(host.clone(), *port).await?;
                addresses.sort();
                addresses.dedup();
                Ok(addresses
                    .into_iter()
                    .map(|address| Target {
                        url: format!("{scheme}://{address}"),
                        server_name: Some(host.clone()),
                    })
                    .collect())
            }
        }
    }

    /// Whether the replicas of this source may change while the gateway runs.
    pub fn is_dynamic(&self) -> bool {
        matches!(self, Self::Dns { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_sources_parse_and_bad_ones_say_why() {
        assert_eq!(
            Source::parse("dns+https://query.beacon.svc:7003").expect("dns"),
            Source::Dns {
                scheme: "https",
                host: "query.beacon.svc".into(),
                port: 7003
            }
        );
        assert_eq!(
            Source::parse("http://10.0.0.1:7003").expect("url"),
            Source::Url("http://10.0.0.1:7003".into())
        );
        for bad in ["dns+grpc://query:1", "dns+http://query", "dns+http://:7003"] {
            let err = Source::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[tokio::test]
    async fn a_name_stands_for_each_of_its_addresses() {
        let resolve: Resolver = Arc::new(|host: String, port: u16| {
            Box::pin(async move {
                assert_eq!(host, "query");
                Ok(vec![
                    SocketAddr::from(([10, 0, 0, 2], port)),
                    SocketAddr::from(([10, 0, 0, 1], port)),
                    SocketAddr::from(([10, 0, 0, 2], port)),
                ])
            })
        });
        let source = Source::parse("dns+https://query:7003").expect("dns");
        let targets = source.targets(&resolve).await.expect("targets");
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["https://10.0.0.1:7003", "https://10.0.0.2:7003"]);
        assert!(
            targets
                .iter()
                .all(|t| t.server_name.as_deref() == Some("query"))
        );
    }
}
