//! Bearer-token identities for the daemon, to prove what it does when credentials change
//! under it: a ServiceAccount in the agent namespace bound to the same Role(s) as the
//! restricted `kube-failover` user (`deploy/kubernetes/target-rbac/role.yaml`), a token
//! from the TokenRequest API, and two kubeconfigs that carry it: inline, and printed by
//! an exec credential plugin (a shell script that can be told to hang).
//!
//! [`TokenCredentials::revoke`] deletes the ServiceAccount, so the API server itself
//! rejects the token with 401; [`TokenCredentials::rotate`] issues a new one into the
//! same files (written to a temporary file and renamed over, as credential tools do) and
//! then revokes the old one. [`TokenCredentials::unbind`] deletes the ServiceAccount's
//! RoleBindings (403) and [`TokenCredentials::bind`] puts them back.
//! [`TokenCredentials::create_via`] writes kubeconfigs whose server is a proxy in front
//! of the API server, while the test bed's own checks of the token go to the API server.

use crate::cluster::Cluster;
use crate::error::{Result, TestbedError};
use crate::objects;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{
    AuthInfo, Context, ExecConfig, ExecInteractiveMode, KubeConfigOptions, Kubeconfig,
    NamedAuthInfo, NamedCluster, NamedContext,
};
use kube::{Client, Config};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How long a new token may take to be accepted, or a revoked one to be rejected: the
/// API server authenticates from caches.
const SETTLE: Duration = Duration::from_secs(30);

/// Lifetime asked of each token.
const TOKEN_SECONDS: i64 = 3600;

const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// The exec plugin: prints the token in `exec-token` next to it as an ExecCredential,
/// after sleeping the seconds in `exec-sleep` when that file exists; counts its runs in
/// `exec-runs`.
const PLUGIN: &str = r#"#!/bin/sh
# Exec credential plugin of the kube-failover test bed.
dir="$(dirname "$0")"
echo run >> "$dir/exec-runs"
if [ -f "$dir/exec-sleep" ]; then sleep "$(cat "$dir/exec-sleep")"; fi
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}\n' "$(cat "$dir/exec-token")"
"#;

/// A ServiceAccount identity of one cluster with its kubeconfigs. Its files live in the
/// cluster's directory; its objects in the cluster's agent namespace.
pub struct TokenCredentials {
    admin: Client,
    cluster: String,
    namespace: String,
    /// The API server, for the test bed's own checks of a token.
    server: String,
    /// The server the kubeconfigs name (the API server, or a proxy in front of it).
    kubeconfig_server: String,
    ca: PathBuf,
    dir: PathBuf,
    name: String,
    serial: u32,
    service_account: String,
    /// Whether `service_account` was deleted and no other issued since.
    revoked: AtomicBool,
    /// When the current token was written to the files.
    written_at: Option<SystemTime>,
    kubeconfig: PathBuf,
    exec_kubeconfig: PathBuf,
}

/// What a request with a token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200: authenticated and allowed.
    Allowed,
    /// 403: authenticated, not allowed.
    Forbidden,
    /// 401: not authenticated.
    Unauthorized,
}

impl Answer {
    fn code(self) -> u16 {
        match self {
            Answer::Allowed => 200,
            Answer::Forbidden => 403,
            Answer::Unauthorized => 401,
        }
    }
}

impl std::fmt::Debug for TokenCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCredentials")
            .field("cluster", &self.cluster)
            .field("service_account", &self.service_account)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl TokenCredentials {
    /// Creates ServiceAccount `kube-failover-<name>-1` bound to the daemon's Role(s),
    /// waits until its token is accepted, and writes the kubeconfigs. `name` keeps
    /// several identities of one cluster apart.
    pub async fn create(cluster: &Cluster, name: &str) -> Result<TokenCredentials> {
        TokenCredentials::create_with_server(cluster, name, cluster.server_url()).await
    }

    /// As [`TokenCredentials::create`], but the kubeconfigs name `addr` as the server (a
    /// [`crate::FaultProxy`] in front of the cluster's API server: certificates stay
    /// valid, it listens on 127.0.0.1 too). The test bed's own checks (a new token
    /// accepted, an old one rejected) still go straight to the API server, so they hold
    /// whatever the proxy does.
    pub async fn create_via(
        cluster: &Cluster,
        name: &str,
        addr: SocketAddr,
    ) -> Result<TokenCredentials> {
        TokenCredentials::create_with_server(cluster, name, format!("https://{addr}")).await
    }

    async fn create_with_server(
        cluster: &Cluster,
        name: &str,
        kubeconfig_server: String,
    ) -> Result<TokenCredentials> {
        let dir = cluster.dir().join(format!("credentials-{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| TestbedError::io("creating", &dir, e))?;
        let mut creds = TokenCredentials {
            admin: cluster.client(),
            cluster: cluster.name().to_string(),
            namespace: cluster.namespace().to_string(),
            server: cluster.server_url(),
            kubeconfig_server,
            ca: cluster.server_ca().to_path_buf(),
            kubeconfig: dir.join("token.kubeconfig"),
            exec_kubeconfig: dir.join("exec.kubeconfig"),
            dir,
            name: name.to_string(),
            serial: 0,
            service_account: String::new(),
            revoked: AtomicBool::new(false),
            written_at: None,
        };
        let plugin = creds.exec_plugin();
        write_atomically(&plugin, PLUGIN)?;
        set_executable(&plugin)?;
        let token = creds.issue().await?;
        creds.write(&token)?;
        let exec_user = AuthInfo {
            exec: Some(ExecConfig {
                api_version: Some(EXEC_API_VERSION.to_string()),
                command: Some(plugin.display().to_string()),
                interactive_mode: Some(ExecInteractiveMode::Never),
                ..Default::default()
            }),
            ..Default::default()
        };
        write_atomically(&creds.exec_kubeconfig, &creds.kubeconfig_text(exec_user)?)?;
        Ok(creds)
    }

    /// Kubeconfig with the token inline (context: the cluster's name).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Kubeconfig whose user runs the exec plugin, which prints the same token.
    pub fn exec_kubeconfig(&self) -> &Path {
        &self.exec_kubeconfig
    }

    /// The exec plugin script the exec kubeconfig runs.
    pub fn exec_plugin(&self) -> PathBuf {
        self.dir.join("exec-plugin.sh")
    }

    /// The token the files hold now (for a test to check that it is never logged).
    pub fn token(&self) -> Result<String> {
        let path = self.dir.join("exec-token");
        std::fs::read_to_string(&path).map_err(|e| TestbedError::io("reading", &path, e))
    }

    /// The ServiceAccount whose token the files hold now.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The user name the API server gives the current token
    /// (`system:serviceaccount:<namespace>:<account>`), as its audit log records it.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// When the current token was written to the files.
    pub fn written_at(&self) -> Option<SystemTime> {
        self.written_at
    }

    /// Whether the current token was revoked, or its revocation tried
    /// ([`TokenCredentials::revoke`]), and no new one written since.
    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Deletes the current ServiceAccount and waits until the API server rejects its
    /// token with 401. Returns how long the rejection took to take effect.
    /// [`TokenCredentials::revoked`] holds from the call on, even when it fails (the
    /// deletion may have happened without its 401 seen yet).
    pub async fn revoke(&self) -> Result<Duration> {
        let token = self.token()?;
        self.revoked.store(true, Ordering::Relaxed);
        self.revoke_account(&self.service_account, &token).await
    }

    /// Deletes the current ServiceAccount's RoleBindings and waits until the API server
    /// answers its token 403 (listing Deployments in the agent namespace). Returns how
    /// long the 403 took to appear.
    pub async fn unbind(&self) -> Result<Duration> {
        let start = Instant::now();
        let bindings: Api<RoleBinding> = Api::namespaced(self.admin.clone(), &self.namespace);
        for role in objects::daemon_roles()? {
            let name = binding_name(
                &self.service_account,
                &role.metadata.name.unwrap_or_default(),
            );
            match bindings.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.kube_err(format!("deleting rolebinding {name}"), e)),
            }
        }
        let token = self.token()?;
        let what = format!("token of {} answered 403", self.service_account);
        self.wait_token(&token, Answer::Forbidden, &what).await?;
        Ok(start.elapsed())
    }

    /// Re-creates the current ServiceAccount's RoleBindings (existing ones are left
    /// alone) and waits until its token may list Deployments again. Returns how long
    /// that took.
    pub async fn bind(&self) -> Result<Duration> {
        let start = Instant::now();
        self.create_bindings(&self.service_account, true).await?;
        let token = self.token()?;
        let what = format!("token of {} allowed again", self.service_account);
        self.wait_token(&token, Answer::Allowed, &what).await?;
        Ok(start.elapsed())
    }

    /// Issues a token for a new ServiceAccount, waits until it is accepted, writes it
    /// into both kubeconfigs' sources (renamed over the old files), then revokes the
    /// previous ServiceAccount (waiting for its token to be rejected).
    pub async fn rotate(&mut self) -> Result<()> {
        let old_account = self.service_account.clone();
        let old_token = self.token()?;
        let token = self.issue().await?;
        self.write(&token)?;
        self.revoke_account(&old_account, &old_token).await?;
        self.revoked.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the exec plugin sleep `delay` (whole seconds, rounded up) before it answers,
    /// or answer at once with `None`.
    pub fn set_exec_delay(&self, delay: Option<Duration>) -> Result<()> {
        let path = self.dir.join("exec-sleep");
        match delay {
            Some(d) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                write_atomically(&path, &secs.to_string())
            }
            None => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(TestbedError::io("removing", &path, e)),
            },
        }
    }

    /// How many times the exec plugin has been started.
    pub fn exec_runs(&self) -> usize {
        std::fs::read_to_string(self.dir.join("exec-runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Creates the next ServiceAccount and its RoleBindings, requests a token and waits
    /// until the API server accepts it for what the Role allows.
    async fn issue(&mut self) -> Result<String> {
        self.serial += 1;
        let account = format!("kube-failover-{}-{}", self.name, self.serial);
        let pp = PostParams::default();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &self.namespace);
        let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": account } }))
            .expect("static ServiceAccount manifest");
        accounts
            .create(&pp, &sa)
            .await
            .map_err(|e| self.kube_err(format!("creating serviceaccount {account}"), e))?;
        self.create_bindings(&account, false).await?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(&account, &pp, &request)
            .await
            .map_err(|e| self.kube_err(format!("requesting a token for {account}"), e))?;
        let token = issued
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TestbedError::State {
                cluster: self.cluster.clone(),
                message: format!("TokenRequest for {account} returned no token"),
            })?;
        self.wait_token(
            &token,
            Answer::Allowed,
            &format!("token of {account} accepted"),
        )
        .await?;
        self.service_account = account;
        Ok(token)
    }

    /// Binds `account` to the daemon's Role(s); with `existing_ok`, a binding already
    /// there is left alone.
    async fn create_bindings(&self, account: &str, existing_ok: bool) -> Result<()> {
        let bindings: Api<RoleBinding> = Api::namespaced(self.admin.clone(), &self.namespace);
        for role in objects::daemon_roles()? {
            let role = role.metadata.name.unwrap_or_default();
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": { "name": binding_name(account, &role) },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
                "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": self.namespace }],
            }))
            .expect("static RoleBinding manifest");
            match bindings.create(&PostParams::default(), &binding).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 && existing_ok => {}
                Err(e) => {
                    return Err(self.kube_err(format!("binding role {role} to {account}"), e));
                }
            }
        }
        Ok(())
    }

    async fn revoke_account(&self, account: &str, token: &str) -> Result<Duration> {
        let start = Instant::now();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &self.namespace);
        match accounts.delete(account, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(self.kube_err(format!("deleting serviceaccount {account}"), e)),
        }
        self.wait_token(
            token,
            Answer::Unauthorized,
            &format!("token of {account} rejected with 401"),
        )
        .await?;
        Ok(start.elapsed())
    }

    /// Waits until a request with `token` (listing Deployments) gets `want`.
    async fn wait_token(&self, token: &str, want: Answer, what: &str) -> Result<()> {
        let client = self.token_client(token).await?;
        let deployments: Api<Deployment> = Api::namespaced(client, &self.namespace);
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < SETTLE {
            match deployments.list(&ListParams::default().limit(1)).await {
                Ok(_) if want == Answer::Allowed => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == want.code() => return Ok(()),
                Ok(_) => last = "HTTP 200".to_string(),
                Err(kube::Error::Api(s)) => last = format!("HTTP {}", s.code),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(TestbedError::Timeout {
            cluster: self.cluster.clone(),
            what: what.to_string(),
            after: SETTLE,
            detail: format!("\nlast answer: {last}"),
        })
    }

    async fn token_client(&self, token: &str) -> Result<Client> {
        let kubeconfig = self.kubeconfig_struct(
            AuthInfo {
                token: Some(token.to_string().into()),
                ..Default::default()
            },
            &self.server,
        );
        let options = KubeConfigOptions {
            context: Some(self.cluster.clone()),
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|source| TestbedError::Kubeconfig {
                cluster: self.cluster.clone(),
                path: self.kubeconfig.clone(),
                source,
            })?;
        Client::try_from(config)
            .map_err(|e| self.kube_err("building a token client".to_string(), e))
    }

    /// Writes `token` into the inline kubeconfig and the exec plugin's source.
    fn write(&mut self, token: &str) -> Result<()> {
        let user = AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        write_atomically(&self.kubeconfig, &self.kubeconfig_text(user)?)?;
        write_atomically(&self.dir.join("exec-token"), token)?;
        self.written_at = Some(SystemTime::now());
        Ok(())
    }

    fn kubeconfig_struct(&self, user: AuthInfo, server: &str) -> Kubeconfig {
        let name = &self.cluster;
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: name.clone(),
                cluster: Some(kube::config::Cluster {
                    server: Some(server.to_string()),
                    certificate_authority: Some(self.ca.display().to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: format!("kube-failover-{}", self.name),
                auth_info: Some(user),
                ..Default::default()
            }],
            contexts: vec![NamedContext {
                name: name.clone(),
                context: Some(Context {
                    cluster: name.clone(),
                    user: Some(format!("kube-failover-{}", self.name)),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            current_context: Some(name.clone()),
            ..Default::default()
        }
    }

    fn kubeconfig_text(&self, user: AuthInfo) -> Result<String> {
        serde_saphyr::to_string(&self.kubeconfig_struct(user, &self.kubeconfig_server)).map_err(
            |e| TestbedError::Manifest {
                path: self.kubeconfig.clone(),
                message: format!("cannot serialize kubeconfig: {e}"),
            },
        )
    }

    fn kube_err(&self, action: String, e: kube::Error) -> TestbedError {
        TestbedError::kube(&self.cluster, action, e)
    }
}

/// The RoleBinding that gives `account` the daemon's Role `role`.
fn binding_name(account: &str, role: &str) -> String {
    format!("{account}-{role}")
}

/// Writes a temporary file next to `path` and renames it over `path`: a reader sees the
/// old content or the new, never a half-written file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| TestbedError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TestbedError::io("renaming into", path, e))
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| TestbedError::io("making executable", path, e))
}
