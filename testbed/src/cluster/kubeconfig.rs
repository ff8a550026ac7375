//! How to reach a cluster: its kubeconfigs (admin, the daemon's restricted user, an
//! untrusted certificate, the daemon's via a proxy) and clients built from them.

use super::{Cluster, ClusterSpec};
use crate::error::{Result, TestbedError};
use crate::pki::{CertFiles, DAEMON_USER, Pki};
use kube::config::{
    AuthInfo, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use kube::{Client, Config};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The kubeconfigs written when a cluster is prepared, all with the cluster's one context.
pub(super) struct Kubeconfigs {
    admin: PathBuf,
    daemon: PathBuf,
    untrusted: PathBuf,
}

impl Kubeconfigs {
    /// Writes the admin, daemon and untrusted kubeconfigs into `dir`, for the API server at
    /// `server`.
    pub(super) fn write(
        spec: &ClusterSpec,
        dir: &Path,
        server: &str,
        pki: &Pki,
    ) -> Result<Kubeconfigs> {
        let admin = dir.join("admin.kubeconfig");
        let daemon = dir.join(format!("{DAEMON_USER}.kubeconfig"));
        let untrusted = dir.join("untrusted.kubeconfig");
        write_kubeconfig(spec, &admin, server, &pki.server_ca, "admin", &pki.admin)?;
        write_kubeconfig(
            spec,
            &daemon,
            server,
            &pki.server_ca,
            DAEMON_USER,
            &pki.daemon,
        )?;
        write_kubeconfig(
            spec,
            &untrusted,
            server,
            &pki.server_ca,
            DAEMON_USER,
            &pki.untrusted,
        )?;
        Ok(Kubeconfigs {
            admin,
            daemon,
            untrusted,
        })
    }

    pub(super) fn admin(&self) -> &Path {
        &self.admin
    }
}

impl Cluster {
    /// Kubeconfig of the admin user (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.kubeconfigs.admin
    }

    /// Kubeconfig of the restricted user `kube-failover`, bound in the agent namespace to
    /// the Role(s) of `deploy/kubernetes/target-rbac/role.yaml` and to nothing else.
    pub fn daemon_kubeconfig(&self) -> &Path {
        &self.kubeconfigs.daemon
    }

    /// The daemon's kubeconfig, but with the server at `addr` (a [`crate::FaultProxy`]).
    /// Certificates stay valid: the proxy listens on 127.0.0.1 too.
    pub fn daemon_kubeconfig_via(&self, addr: SocketAddr) -> Result<PathBuf> {
        let path = self
            .dir
            .join(format!("{DAEMON_USER}-via-{}.kubeconfig", addr.port()));
        write_kubeconfig(
            &self.spec,
            &path,
            &format!("https://{addr}"),
            &self.pki.server_ca,
            DAEMON_USER,
            &self.pki.daemon,
        )?;
        Ok(path)
    }

    /// A kubeconfig for user `kube-failover` whose client certificate comes from a CA this
    /// cluster does not trust: every request gets 401.
    pub fn untrusted_kubeconfig(&self) -> &Path {
        &self.kubeconfigs.untrusted
    }

    /// The CA file that verifies the API server's serving certificate.
    pub(crate) fn server_ca(&self) -> &Path {
        &self.pki.server_ca
    }

    /// A client built from any kubeconfig of this cluster (its one context).
    pub async fn client_from(&self, kubeconfig: &Path) -> Result<Client> {
        client_from(&self.spec.name, kubeconfig).await
    }

    pub(crate) fn pki(&self) -> &Pki {
        &self.pki
    }

    /// A client as the restricted daemon user.
    pub async fn daemon_client(&self) -> Result<Client> {
        self.client_from(&self.kubeconfigs.daemon).await
    }
}

fn write_kubeconfig(
    spec: &ClusterSpec,
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    cert: &CertFiles,
) -> Result<()> {
    let name = &spec.name;
    let config = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.clone(),
            cluster: Some(kube::config::Cluster {
                server: Some(server.to_string()),
                certificate_authority: Some(ca.display().to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.to_string(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(cert.cert.display().to_string()),
                client_key: Some(cert.key.display().to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: name.clone(),
            context: Some(Context {
                cluster: name.clone(),
                user: Some(user.to_string()),
                namespace: Some(spec.namespace.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(name.clone()),
        ..Default::default()
    };
    let text = serde_saphyr::to_string(&config).map_err(|e| TestbedError::Manifest {
        path: path.to_path_buf(),
        message: format!("cannot serialize kubeconfig: {e}"),
    })?;
    std::fs::write(path, text).map_err(|e| TestbedError::io("writing", path, e))
}

pub(super) async fn client_from(cluster: &str, kubeconfig: &Path) -> Result<Client> {
    let kc_err = |source| TestbedError::Kubeconfig {
        cluster: cluster.to_string(),
        path: kubeconfig.to_path_buf(),
        source,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(kc_err)?;
    let options = KubeConfigOptions {
        context: Some(cluster.to_string()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(kc_err)?;
    Client::try_from(config).map_err(|e| TestbedError::kube(cluster, "building a client", e))
}
