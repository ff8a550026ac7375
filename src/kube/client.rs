//! One `kube::Client` per cluster, built like kubectl builds its own: a kubeconfig file
//! and context when given, in-cluster credentials only when neither was given. A
//! kubeconfig holds credentials, so no error here ever carries its contents.
//!
//! The client follows its credentials on disk: when the kubeconfig, the token file it
//! names or its certificate files change, the next call uses a client rebuilt from them,
//! and a 401 makes the files be compared again before the next call ([`reload`]). An exec
//! credential plugin is run by this crate, bounded, off the runtime's worker threads,
//! never by kube ([`exec`]).

mod connect;
mod exec;
mod reload;

pub use connect::{Http2, Pool};
pub use exec::ExecConfigError;
pub use reload::{EXEC_PLUGIN_TIMEOUT, RECHECK_INTERVAL};

use crate::config::ClusterConfig;
pub use crate::kube::kubeconfig::{KubeconfigProblem, KubeconfigSource, ResolvedKubeconfig};
use crate::model::Side;
use exec::ExecPlugin;
use kube::config::{InClusterError, KubeConfigOptions, KubeconfigError};

use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Bound on establishing a TCP+TLS connection to an API server. A blackholed server
/// must fail a call in seconds, not after the kernel's SYN retries (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on waiting for response bytes from an API server, for the clients of short
/// request/response calls (probes, scale patches, record writes): an idle connection
/// this long means the server is gone.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The same bound for the clients that hold watches ([`ClientOptions::for_watches`]). An
/// idle watch hears from the API server at least once a minute (a bookmark), so a watch
/// connection silent this long is dead. A dead connection is noticed sooner when the
/// cluster's `/readyz` fails as well (see [`crate::kube::watch_cache`]), and over HTTP/2 by
/// its unanswered PING ([`Http2`]).
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(80);

/// Bound on sending a request to an API server.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a client for one cluster could not be built.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The kubeconfig or its context is unusable.
    #[error("{side} cluster")]
    Kubeconfig {
        /// Which cluster of the group.
        side: Side,
        #[source]
        /// What is wrong with it.
        source: KubeconfigProblem,
    },
    /// The kubeconfig parsed and the context exists, but kube could not turn it into a
    /// client configuration (missing server URL, unreadable certificate file, …).
    #[error("{side} cluster: kubeconfig {file}, context {context:?}")]
    Config {
        /// Which cluster of the group.
        side: Side,
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        /// The context concerned.
        context: String,
        #[source]
        /// Why kube could not load it.
        source: KubeconfigError,
    },
    /// Neither `kubeconfig` nor `context` was given and the in-cluster service account
    /// is not available.
    #[error(
        "{side} cluster: no kubeconfig or context configured and in-cluster credentials are unavailable"
    )]
    InCluster {
        /// Which cluster of the group.
        side: Side,
        #[source]
        /// Why the in-cluster credentials are unusable.
        source: InClusterError,
    },
    /// The user entry's exec credential plugin cannot be run as configured.
    #[error("{side} cluster: kubeconfig {file}, context {context:?}")]
    ExecPlugin {
        /// Which cluster of the group.
        side: Side,
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        /// The context concerned.
        context: String,
        /// What is wrong.
        source: ExecConfigError,
    },
    /// The client could not be constructed (TLS setup).
    #[error("{side} cluster: cannot build a Kubernetes client")]
    Client {
        /// Which cluster of the group.
        side: Side,
        #[source]
        /// Why kube could not build the client.
        source: kube::Error,
    },
}

/// Reads and checks the kubeconfig of `cluster` (with `kube::kubeconfig::resolve`, which
/// the configuration check uses too). `Ok(None)` means in-cluster credentials. Touches no
/// cluster.
pub fn resolve_kubeconfig(
    cluster: &ClusterConfig,
) -> Result<Option<ResolvedKubeconfig>, KubeconfigProblem> {
    crate::kube::kubeconfig::resolve(cluster.kubeconfig.as_deref(), cluster.context.as_deref())
}

/// Options of the clients built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// The `User-Agent` of every request (see [`crate::user_agent`]).
    pub user_agent: http::HeaderValue,
    /// The longest a call waits for credentials (an exec plugin's answer, a re-read of
    /// the kubeconfig) before it fails as `unauthorized`. Below the callers' own timeouts,
    /// so that a missing credential is reported as such and never as a `timeout`.
    pub credential_wait: Duration,
    /// How often, at most, the files a client was built from are compared with disk
    /// (they are compared before the next call after any 401 as well).
    pub recheck_interval: Duration,
    /// Bound on one run of an exec credential plugin; a run still going after this is
    /// killed and the next call starts another.
    pub exec_timeout: Duration,
    /// Bound on waiting for response bytes ([`READ_TIMEOUT`], or [`WATCH_READ_TIMEOUT`]
    /// for a client that holds watches).
    pub read_timeout: Duration,
    /// HTTP/2 offered to the API server (HTTP/1.1 stays offered) and the PINGs of its
    /// connections; `None`: HTTP/1.1 only, as kube's own client speaks.
    pub http2: Option<Http2>,
}

impl ClientOptions {
    /// Options for clients whose calls are bounded by `timeout` (the probe timeout, the
    /// shortest bound the daemon puts on a Kubernetes call): credentials are waited for
    /// three quarters of it.
    pub fn for_call_timeout(timeout: Duration) -> ClientOptions {
        ClientOptions {
            user_agent: crate::user_agent::anonymous(),
            credential_wait: timeout * 3 / 4,
            recheck_interval: RECHECK_INTERVAL,
            exec_timeout: EXEC_PLUGIN_TIMEOUT,
            read_timeout: READ_TIMEOUT,
            http2: None,
        }
    }

    /// The same options for a client that holds long watches: its connections may stay
    /// silent up to [`WATCH_READ_TIMEOUT`].
    pub fn for_watches(self) -> ClientOptions {
        ClientOptions {
            read_timeout: WATCH_READ_TIMEOUT,
            ..self
        }
    }

    /// The same, offering HTTP/2 with the keep-alive `http2` says (`None`: HTTP/1.1 only).
    pub fn with_http2(self, http2: Option<Http2>) -> ClientOptions {
        ClientOptions { http2, ..self }
    }

    /// The same, every request carrying `user_agent`.
    pub fn with_user_agent(self, user_agent: http::HeaderValue) -> ClientOptions {
        ClientOptions { user_agent, ..self }
    }
}

impl Default for ClientOptions {
    /// For the default probe timeout (3 s).
    fn default() -> Self {
        ClientOptions::for_call_timeout(Duration::from_secs(3))
    }
}

/// Builds the client for one side of a group, with [`ClientOptions::default`]. See
/// [`client_for_with`].
pub async fn client_for(cluster: &ClusterConfig, side: Side) -> Result<kube::Client, ClusterError> {
    client_for_with(cluster, side, ClientOptions::default()).await
}

/// Builds the client for one side of a group. `side` labels errors and logs. The kubeconfig is read and checked as in [`resolve_kubeconfig`];
/// with neither `kubeconfig` nor `context` configured, in-cluster credentials are used.
/// The client's default namespace is the cluster's `namespace`, and every connection has
/// the timeouts above. Building the client neither contacts the cluster nor runs an exec
/// plugin (the first call does). The client reloads its credentials as the module
/// documentation says; clones share that.
pub async fn client_for_with(
    cluster: &ClusterConfig,
    side: Side,
    options: ClientOptions,
) -> Result<kube::Client, ClusterError> {
    crate::tls::install_provider();
    let loaded = load(cluster, side, options.read_timeout).await?;
    reload::Reloader::start(cluster, side, options, loaded).await
}

/// kube's configuration for one cluster as the files say now, and what it depends on.
struct Loaded {
    /// With the exec plugin taken out: [`exec`] runs it.
    config: kube::Config,
    exec: Option<ExecPlugin>,
    /// Files whose content the client depends on.
    watched: Vec<PathBuf>,
    /// Where the credentials come from, for logs.
    source: String,
}

/// Reads the kubeconfig (or in-cluster credentials) of `cluster` into kube's
/// configuration with the daemon's connection settings.
async fn load(
    cluster: &ClusterConfig,
    side: Side,
    read_timeout: Duration,
) -> Result<Loaded, ClusterError> {
    let (mut config, mut watched, source, context) = match resolve_kubeconfig(cluster)
        .map_err(|source| ClusterError::Kubeconfig { side, source })?
    {
        Some(resolved) => {
            let mut watched = kubeconfig_files(&resolved.source);
            watched.extend(certificate_authority(&resolved));
            let options = KubeConfigOptions {
                context: Some(resolved.context.clone()),
                cluster: None,
                user: None,
            };
            let config = kube::Config::from_custom_kubeconfig(resolved.kubeconfig, &options)
                .await
                .map_err(|source| ClusterError::Config {
                    side,
                    file: resolved.source.clone(),
                    context: resolved.context.clone(),
                    source,
                })?;
            let source = resolved.source.to_string();
            (
                config,
                watched,
                source,
                Some((resolved.source, resolved.context)),
            )
        }
        None => (
            kube::Config::incluster().map_err(|source| ClusterError::InCluster { side, source })?,
            Vec::new(),
            "in-cluster service account".to_string(),
            None,
        ),
    };
    let auth = &mut config.auth_info;
    watched.extend(
        [&auth.token_file, &auth.client_certificate, &auth.client_key]
            .into_iter()
            .flatten()
            .map(PathBuf::from),
    );
    let exec = match auth.exec.take() {
        None => None,
        Some(exec) => Some(ExecPlugin::from_config(&exec).map_err(|source| {
            let (file, context) = context.unwrap_or((KubeconfigSource::Default, String::new()));
            ClusterError::ExecPlugin {
                side,
                file,
                context,
                source,
            }
        })?),
    };
    config.default_namespace = cluster.namespace.clone();
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(read_timeout);
    // Count the read timeout from when the request was sent, not from when a pooled
    // connection went idle (kube's documented caveat of `read_timeout`).
    config.reset_reader_on_write = true;
    config.write_timeout = Some(WRITE_TIMEOUT);
    // kube would silently retry 429/503/504 with backoff. A 503 from the primary is
    // evidence the probes must see, within their own timeout; the daemon's hysteresis
    // and the actuator's backoff are the retry policy.
    config.default_retry = false;
    Ok(Loaded {
        config,
        exec,
        watched,
        source,
    })
}

/// The files a kubeconfig was read from: the configured one, or those kubectl would read.
fn kubeconfig_files(source: &KubeconfigSource) -> Vec<PathBuf> {
    match source {
        KubeconfigSource::File(path) => vec![path.clone()],
        KubeconfigSource::Default => match std::env::var_os("KUBECONFIG") {
            Some(list) if !list.is_empty() => std::env::split_paths(&list).collect(),
            _ => std::env::home_dir()
                .map(|home| vec![home.join(".kube").join("config")])
                .unwrap_or_default(),
        },
    }
}

/// The certificate-authority file of the context's cluster, if it names one.
fn certificate_authority(resolved: &ResolvedKubeconfig) -> Option<PathBuf> {
    let cluster = resolved
        .kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == resolved.context)?
        .context
        .as_ref()?
        .cluster
        .clone();
    resolved
        .kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster)?
        .cluster
        .as_ref()?
        .certificate_authority
        .as_ref()
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::chain;
    use std::io::Write;

    const TOKEN: &str = "s3cr3t-token-value";

    fn kubeconfig_yaml(current: Option<&str>) -> String {
        let current = current
            .map(|c| format!("current-context: {c}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1
kind: Config
{current}clusters:
- name: one
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
- name: two
  cluster:
    server: https://127.0.0.1:7443
    insecure-skip-tls-verify: true
contexts:
- name: ctx-one
  context:
    cluster: one
    user: admin
- name: ctx-two
  context:
    cluster: two
    user: admin
- name: ctx-dangling
  context:
    cluster: missing
    user: admin
users:
- name: admin
  user:
    token: {TOKEN}
"
        )
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write temp kubeconfig");
        path
    }

    fn cluster(kubeconfig: Option<PathBuf>, context: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            kubeconfig,
            context: context.map(str::to_string),
            namespace: "env0-agent".to_string(),
        }
    }

    #[tokio::test]
    async fn builds_a_client_for_the_named_context_with_the_configured_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "kc", &kubeconfig_yaml(Some("ctx-one")));
        let client = client_for(&cluster(Some(path), Some("ctx-two")), Side::Standby)
            .await
            .expect("client");
        assert_eq!(client.default_namespace(), "env0-agent");
    }

    #[test]
    fn resolves_the_named_context_and_its_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "kc", &kubeconfig_yaml(Some("ctx-one")));
        let resolved = resolve_kubeconfig(&cluster(Some(path.clone()), Some("ctx-two")))
            .unwrap()
            .unwrap();
        assert_eq!(resolved.context, "ctx-two");
        assert_eq!(resolved.server.as_deref(), Some("https://127.0.0.1:7443"));
        assert_eq!(resolved.source, KubeconfigSource::File(path));
    }

    #[test]
    fn without_a_context_the_current_context_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "kc", &kubeconfig_yaml(Some("ctx-one")));
        let resolved = resolve_kubeconfig(&cluster(Some(path), None))
            .unwrap()
            .unwrap();
        assert_eq!(resolved.context, "ctx-one");
        assert_eq!(resolved.server.as_deref(), Some("https://127.0.0.1:6443"));
    }

    #[test]
    fn nothing_configured_means_in_cluster() {
        assert!(resolve_kubeconfig(&cluster(None, None)).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_wrong_context_fails_naming_the_context_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "primary.kubeconfig",
            &kubeconfig_yaml(Some("ctx-one")),
        );
        let Err(err) = client_for(&cluster(Some(path.clone()), Some("prod")), Side::Primary).await
        else {
            panic!("a missing context must fail");
        };
        let msg = chain(&err).to_string();
        assert!(matches!(
            err,
            ClusterError::Kubeconfig {
                source: KubeconfigProblem::ContextNotFound { .. },
                ..
            }
        ));
        assert!(msg.starts_with("primary cluster: "), "{msg}");
        assert!(msg.contains("\"prod\""), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("ctx-one, ctx-two"), "{msg}");
    }

    #[test]
    fn missing_current_context_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "kc", &kubeconfig_yaml(None));
        let err = resolve_kubeconfig(&cluster(Some(path.clone()), None)).unwrap_err();
        assert!(
            matches!(err, KubeconfigProblem::NoCurrentContext { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("current-context is not set"),
            "{err}"
        );

        let path = write(&dir, "kc2", &kubeconfig_yaml(Some("gone")));
        let err = resolve_kubeconfig(&cluster(Some(path), None)).unwrap_err();
        assert!(err.to_string().contains("\"gone\" is not defined"), "{err}");
    }

    #[test]
    fn a_context_whose_cluster_is_missing_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "kc", &kubeconfig_yaml(Some("ctx-one")));
        let err = resolve_kubeconfig(&cluster(Some(path), Some("ctx-dangling"))).unwrap_err();
        assert!(
            matches!(err, KubeconfigProblem::ClusterNotFound { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"missing\""), "{err}");
    }

    #[test]
    fn an_unreadable_kubeconfig_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.kubeconfig");
        let err = resolve_kubeconfig(&cluster(Some(path.clone()), None)).unwrap_err();
        assert!(matches!(err, KubeconfigProblem::Read { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_parse_error_never_quotes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A token where a list belongs: parsers like to quote the offending value.
        let text = format!("apiVersion: v1\nkind: Config\nusers: {TOKEN}\n");
        let path = write(&dir, "kc", &text);
        let err = resolve_kubeconfig(&cluster(Some(path.clone()), None)).unwrap_err();
        assert!(matches!(err, KubeconfigProblem::Parse { .. }), "{err}");
        let shown = chain(&err).to_string();
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains(&path.display().to_string()), "{shown}");
    }

    #[tokio::test]
    async fn errors_never_carry_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "kc", &kubeconfig_yaml(Some("ctx-one")));
        for context in ["nope", "ctx-dangling"] {
            let Err(err) =
                client_for(&cluster(Some(path.clone()), Some(context)), Side::Primary).await
            else {
                panic!("context {context} must fail");
            };
            assert!(
                !format!("{} {err:?}", chain(&err)).contains(TOKEN),
                "{err:?}"
            );
        }
    }
}
