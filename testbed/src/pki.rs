//! Certificates and keys of one cluster, written as PEM files into its directory.
//!
//! Two CAs per cluster: one signs the API server's serving certificate, the other the
//! client certificates the API server accepts. A third, unrelated CA makes credentials
//! the API server must reject.

use crate::error::{Result, TestbedError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every PEM file a cluster's components and kubeconfigs refer to.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub server_ca: PathBuf,
    pub client_ca: PathBuf,
    pub serving: CertFiles,
    /// Signs service account tokens; the API server insists on having one.
    pub service_account_key: PathBuf,
    /// Its public half, which verifies them.
    pub service_account_pub: PathBuf,
    pub admin: CertFiles,
    pub daemon: CertFiles,
    /// A client certificate for the daemon's user name from a CA the cluster never saw.
    pub untrusted: CertFiles,
}

/// User name of the restricted identity the daemon runs as.
pub const DAEMON_USER: &str = "kube-failover";

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn generate(cluster: &str, dir: &Path) -> Result<Pki> {
        let cert_err = |what: &'static str| {
            move |source| TestbedError::Certificate {
                cluster: cluster.to_string(),
                what,
                source,
            }
        };
        let server_ca = new_ca(&format!("{cluster} server CA")).map_err(cert_err("server CA"))?;
        let client_ca = new_ca(&format!("{cluster} client CA")).map_err(cert_err("client CA"))?;
        let rogue_ca =
            new_ca("kube-failover testbed untrusted CA").map_err(cert_err("rogue CA"))?;

        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(cert_err("serving certificate"))?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serving_key = KeyPair::generate().map_err(cert_err("serving key"))?;
        let serving_cert = serving
            .signed_by(&serving_key, &server_ca.issuer)
            .map_err(cert_err("serving certificate"))?;

        let sa_key = KeyPair::generate().map_err(cert_err("service account key"))?;

        let admin = client_cert("admin", &["system:masters"], &client_ca)
            .map_err(cert_err("admin client certificate"))?;
        let daemon = client_cert(DAEMON_USER, &[], &client_ca)
            .map_err(cert_err("daemon client certificate"))?;
        let untrusted = client_cert(DAEMON_USER, &[], &rogue_ca)
            .map_err(cert_err("untrusted client certificate"))?;

        let write = |name: &str, contents: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            write_private(&path, contents)?;
            Ok(path)
        };
        let pair = |name: &str, (cert, key): (String, String)| -> Result<CertFiles> {
            Ok(CertFiles {
                cert: write(&format!("{name}.crt"), &cert)?,
                key: write(&format!("{name}.key"), &key)?,
            })
        };
        Ok(Pki {
            server_ca: write("server-ca.crt", &server_ca.cert_pem)?,
            client_ca: write("client-ca.crt", &client_ca.cert_pem)?,
            serving: pair("serving", (serving_cert.pem(), serving_key.serialize_pem()))?,
            service_account_key: write("service-account.key", &sa_key.serialize_pem())?,
            service_account_pub: write("service-account.pub", &sa_key.public_key_pem())?,
            admin: pair("admin", admin)?,
            daemon: pair(DAEMON_USER, daemon)?,
            untrusted: pair("untrusted", untrusted)?,
        })
    }
}

fn new_ca(name: &str) -> Result<Ca, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

/// A client certificate: the API server takes CN as the user name and each O as a group.
fn client_cert(user: &str, groups: &[&str], ca: &Ca) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ClientAuth);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TestbedError::io("creating", path, e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| TestbedError::io("writing", path, e))
}
