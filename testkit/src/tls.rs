//! Certificates for tests of TLS between processes: a CA and one certificate it signed, valid
//! as server and as client for `localhost` and 127.0.0.1, written as PEM files.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The PEM files of a test PKI.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// A certificate for `localhost` and 127.0.0.1 (server and client use).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// A certificate by another CA, for the same names: a stranger to [`TestCertificates::ca`].
    pub stranger_cert: PathBuf,
    /// Its private key.
    pub stranger_key: PathBuf,
}

impl TestCertificates {
    /// Generates a CA and the certificates into `dir`.
    pub fn generate(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (ca_pem, cert_pem, key_pem) = pki("Beacon test CA").map_err(io::Error::other)?;
        let (_, stranger_pem, stranger_key_pem) = pki("Another CA").map_err(io::Error::other)?;
        let write = |name: &str, text: &str| -> io::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.pem", &ca_pem)?,
            cert: write("cert.pem", &cert_pem)?,
            key: write("key.pem", &key_pem)?,
            stranger_cert: write("stranger-cert.pem", &stranger_pem)?,
            stranger_key: write("stranger-key.pem", &stranger_key_pem)?,
        })
    }
}

/// A CA named `name` and a leaf it signed: (CA PEM, leaf PEM, leaf key PEM).
fn pki(name: &str) -> Result<(String, String, String), rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}
