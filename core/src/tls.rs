//! TLS between Beacon's processes: the internal gRPC ports of ingest, aggregator and query, the
//! gateway's and `beacon health`'s calls to them, and every connection to NATS.
//!
//! Certificates come from files, so that cert-manager, a mesh's CA or an operator's own PKI can
//! provide and rotate them (a process reads them at start). One set serves both ends of every
//! hop: a process presents `--tls-cert` as server and as client, and trusts `--tls-ca` for
//! its peers. Client certificates are asked for with `--tls-client-auth optional` (a migration
//! step: clients without one still get in) and demanded with `required`.
//!
//! Invariant: with `--tls-ca` set, a process never calls another role or NATS in plaintext: an
//! `http://` upstream URL is refused at start.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::{Error, Result};

/// TLS flags of every role and of `beacon health`; each has an environment-variable fallback.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// This process's certificate chain (PEM): served on its internal gRPC port, and shown to
    /// peers that ask for a client certificate. Needs `--tls-key`.
    #[arg(
        id = "mesh_tls_cert",
        long = "tls-cert",
        env = "BEACON_TLS_CERT",
        requires = "mesh_tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(
        id = "mesh_tls_key",
        long = "tls-key",
        env = "BEACON_TLS_KEY",
        requires = "mesh_tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that peers' certificates must chain to. When set, this process
    /// calls other roles (`https://` URLs only) and NATS over TLS.
    #[arg(id = "mesh_tls_ca", long = "tls-ca", env = "BEACON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates at this process's internal gRPC port: not asked for, verified when
    /// shown, or demanded. Verified against `--tls-ca`.
    #[arg(
        id = "mesh_tls_client_auth",
        long = "tls-client-auth",
        env = "BEACON_TLS_CLIENT_AUTH",
        value_enum,
        default_value = "none"
    )]
    pub tls_client_auth: ClientAuth,
}

/// Whether a server asks its clients for certificates (`--tls-client-auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    #[default]
    None,
    /// A client's certificate is verified when shown; clients without one still get in.
    Optional,
    /// Every client must show a certificate signed by `--tls-ca`.
    Required,
}

/// The loaded TLS material of one process; plaintext everywhere when empty.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    identity: Option<Identity>,
    ca: Option<Certificate>,
    files: TlsArgs,
}

impl Tls {
    /// Reads the files `args` names, refusing a missing or empty file, or a setting that
    /// cannot work, with the flag and the path named.
    pub fn load(args: &TlsArgs) -> Result<Self> {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "--tls-cert and --tls-key go together".into(),
                ));
            }
        };
        let ca = args.tls_ca.as_deref().map(load_ca).transpose()?;
        if args.tls_client_auth != ClientAuth::None && (identity.is_none() || ca.is_none()) {
            return Err(Error::InvalidArgument(
                "--tls-client-auth needs --tls-cert, --tls-key (the server's own certificate) \
                 and --tls-ca (to verify the clients')"
                    .into(),
            ));
        }
        Ok(Self {
            identity,
            ca,
            files: args.clone(),
        })
    }

    /// Whether this process calls other roles and NATS over TLS.
    pub fn is_client(&self) -> bool {
        self.ca.is_some()
    }

    /// The internal gRPC port's TLS, when this process has a certificate.
    pub fn server(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.clone()?;
        let mut config = ServerTlsConfig::new().identity(identity);
        if let (Some(ca), auth) = (&self.ca, self.files.tls_client_auth)
            && auth != ClientAuth::None
        {
            config = config
                .client_ca_root(ca.clone())
                .client_auth_optional(auth == ClientAuth::Optional);
        }
        Some(config)
    }

    /// An endpoint for the gRPC `url` of another role: TLS (trusting `--tls-ca`, verifying the
    /// certificate against `server_name`, else the URL's host, and showing this process's
    /// certificate) when `--tls-ca` is set, plaintext otherwise. A URL whose scheme does not
    /// match is refused.
    pub fn endpoint(&self, url: &str, server_name: Option<&str>) -> Result<Endpoint> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|err| Error::InvalidArgument(format!("gRPC URL {url:?}: {err}")))?;
        let https = endpoint.uri().scheme_str() == Some("https");
        let Some(ca) = &self.ca else {
            return if https {
                Err(Error::InvalidArgument(format!(
                    "gRPC URL {url:?} asks for TLS: set --tls-ca to the CA its certificate \
                     chains to"
                )))
            } else {
                Ok(endpoint)
            };
        };
        if !https {
            return Err(Error::InvalidArgument(format!(
                "gRPC URL {url:?} is plaintext, but TLS is on (--tls-ca): use https://"
            )));
        }
        let host = server_name
            .map(str::to_owned)
            .or_else(|| {
                endpoint
                    .uri()
                    .host()
                    .map(|host| host.trim_matches(['[', ']']).to_owned())
            })
            .ok_or_else(|| Error::InvalidArgument(format!("gRPC URL {url:?} has no host")))?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .domain_name(host);
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        endpoint
            .tls_config(config)
            .map_err(|err| Error::InvalidArgument(format!("TLS for {url:?}: {err}")))
    }

    /// `options` with TLS to NATS when `--tls-ca` is set: the server's certificate must chain
    /// to it, and this process's certificate is shown when it has one.
    pub fn nats(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        let Some(ca) = &self.files.tls_ca else {
            return options;
        };
        let mut options = options.require_tls(true).add_root_certificates(ca.clone());
        if let (Some(cert), Some(key)) = (&self.files.tls_cert, &self.files.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
    }
}

/// Reads `path`, naming `flag` and the path when it fails.
fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|err| Error::InvalidArgument(format!("{flag} {}: {err}", path.display())))
}

fn load_identity(cert: &Path, key: &Path) -> Result<Identity> {
    let cert_pem = read("--tls-cert", cert)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|err| Error::InvalidArgument(format!("--tls-cert {}: {err}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "--tls-cert {} holds no PEM certificate",
            cert.display()
        )));
    }
    let key_pem = read("--tls-key", key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| {
        Error::InvalidArgument(format!(
            "--tls-key {} holds no PEM private key: {err}",
            key.display()
        ))
    })?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

fn load_ca(path: &Path) -> Result<Certificate> {
    let pem = read("--tls-ca", path)?;
    let count = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| Error::InvalidArgument(format!("--tls-ca {}: {err}", path.display())))?
        .len();
    if count == 0 {
        return Err(Error::InvalidArgument(format!(
            "--tls-ca {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(Certificate::from_pem(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> TlsArgs {
        TlsArgs {
            tls_cert: Some(dir.join("cert.pem")),
            tls_key: Some(dir.join("key.pem")),
            tls_ca: Some(dir.join("ca.pem")),
            tls_client_auth: ClientAuth::Required,
        }
    }

    #[test]
    fn missing_or_empty_files_are_refused_with_the_flag_and_path() {
        let dir = beacon_testkit::TempDir::new("tls").expect("temp dir");
        let err = Tls::load(&args(dir.path())).expect_err("no files");
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("write");
        let err = Tls::load(&args(dir.path())).expect_err("no PEM");
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn client_auth_needs_a_certificate_and_a_ca() {
        let only_auth = TlsArgs {
            tls_client_auth: ClientAuth::Optional,
            ..TlsArgs::default()
        };
        let err = Tls::load(&only_auth).expect_err("nothing to verify with");
        assert!(err.to_string().contains("--tls-client-auth"), "{err}");
    }

    #[test]
    fn url_schemes_must_match_the_tls_setting() {
        let plain = Tls::default();
        plain
            .endpoint("http://query:7003", None)
            .expect("plaintext");
        let err = plain
            .endpoint("https://query:7003", None)
            .expect_err("TLS without a CA");
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        let secure = Tls {
            ca: Some(Certificate::from_pem("unused")),
            ..Tls::default()
        };
        let err = secure
            .endpoint("http://query:7003", None)
            .expect_err("plaintext with TLS on");
        assert!(err.to_string().contains("use https://"), "{err}");
        secure
            .endpoint("https://query:7003", None)
            .expect("TLS endpoint");
    }
}
