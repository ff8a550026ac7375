//! Runs a kubeconfig's exec credential plugin the way the daemon can afford: as a child
//! process of the async runtime (`tokio::process`), bounded, killed when abandoned, never
//! on a runtime worker thread. kube's own exec support runs the plugin with a blocking
//! `std::process::Command::output()` while a client is built, so a hanging plugin would
//! stall the thread that builds it; here kube only ever sees the token the plugin printed.
//!
//! Nothing a plugin prints or writes to stderr ever appears in an error: a message names
//! the command and what went wrong, never the output.

use k8s_openapi::jiff::Timestamp;
use kube::config::{ExecAuthCluster, ExecConfig};
use serde::Deserialize;
use std::process::Stdio;
use std::time::Duration;

/// What a plugin run produced: a bearer token or a client certificate, and how long it
/// may be used.
#[derive(Clone)]
pub(crate) struct ExecCredential {
    /// A bearer token.
    pub token: Option<String>,
    /// PEM client certificate and key.
    pub certificate: Option<(String, String)>,
    /// `status.expirationTimestamp`; `None` means valid until the server rejects it.
    pub expires: Option<Timestamp>,
}

impl std::fmt::Debug for ExecCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecCredential")
            .field("token", &self.token.as_ref().map(|_| "<withheld>"))
            .field(
                "certificate",
                &self.certificate.as_ref().map(|_| "<withheld>"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// An exec plugin as a kubeconfig user entry describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecPlugin {
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    api_version: String,
    /// `spec.cluster` of `KUBERNETES_EXEC_INFO`, when `provideClusterInfo` is set.
    cluster: Option<serde_json::Value>,
}

const DEFAULT_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// Why an exec plugin cannot be run as configured: found while the client is built.
#[derive(Debug, thiserror::Error)]
pub enum ExecConfigError {
    /// The user entry names no command.
    #[error("the user's exec credential plugin names no command")]
    NoCommand,
    /// `provideClusterInfo` is set, but the context's cluster has nothing to provide.
    #[error(
        "exec credential plugin asks for cluster information (provideClusterInfo) but the \
         context's cluster has none"
    )]
    NoClusterInfo,
    /// The cluster information cannot be written as JSON (serde's message withheld: it
    /// may quote the value).
    #[error("cannot serialize the cluster information for the exec plugin")]
    ClusterInfo,
}

/// Why a run of an exec plugin gave no credential. Never carries what the plugin
/// printed: a message names the command and what went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The plugin could not be started.
    #[error("cannot start exec credential plugin {command}")]
    Start {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its output could not be read.
    #[error("exec credential plugin {command}: reading its output failed")]
    Read {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It did not answer in time and was killed.
    #[error("exec credential plugin {command} did not answer within {timeout:?} (killed)")]
    Timeout {
        /// The command.
        command: String,
        /// The bound.
        timeout: Duration,
    },
    /// It exited with a failure; its stderr may explain, but it may also echo secrets.
    #[error("exec credential plugin {command} failed ({status}); its output is not logged")]
    Failed {
        /// The command.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// What it printed is not a usable `ExecCredential`.
    #[error("exec credential plugin {command}")]
    Output {
        /// The command.
        command: String,
        /// What is wrong with the output.
        source: OutputError,
    },
    /// It printed a credential whose expiry has passed.
    #[error("exec credential plugin {command} printed a credential that has already expired")]
    Expired {
        /// The command.
        command: String,
    },
    /// Its credential cannot be made into a client (a certificate that does not load).
    #[error("exec credential plugin {command}: its credential cannot be used: {detail}")]
    Unusable {
        /// The command.
        command: String,
        /// kube's error as [`crate::kube::call::describe`] says it (never the credential).
        detail: String,
    },
}

/// What is wrong with a plugin's output; parser messages are reduced to a position, as
/// they can quote the offending value, and that may be the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    /// Not JSON, or not an `ExecCredential`.
    #[error(
        "printed no valid ExecCredential JSON (error at line {line} column {column}; output \
         withheld)"
    )]
    Json {
        /// 1-based line of the parser error.
        line: usize,
        /// 1-based column of the parser error.
        column: usize,
    },
    /// No `status`.
    #[error("printed an ExecCredential without a status")]
    NoStatus,
    /// `status.expirationTimestamp` is not an RFC 3339 time.
    #[error("printed a malformed status.expirationTimestamp")]
    Expiry,
    /// A certificate without its key, or a key without its certificate.
    #[error("printed only one of clientCertificateData and clientKeyData")]
    HalfCertificate,
    /// Nothing to authenticate with.
    #[error("printed an ExecCredential with neither a token nor a certificate")]
    Empty,
}

impl ExecPlugin {
    /// The plugin of a user entry; an error (secret-free) when it names no command or its
    /// cluster information cannot be serialized.
    pub fn from_config(exec: &ExecConfig) -> Result<ExecPlugin, ExecConfigError> {
        let command = exec
            .command
            .clone()
            .filter(|c| !c.trim().is_empty())
            .ok_or(ExecConfigError::NoCommand)?;
        let env = exec
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.get("name")?.clone(), e.get("value")?.clone())))
            .collect();
        let cluster = match (exec.provide_cluster_info, &exec.cluster) {
            (true, Some(cluster)) => Some(cluster_info(cluster)?),
            (true, None) => return Err(ExecConfigError::NoClusterInfo),
            (false, _) => None,
        };
        Ok(ExecPlugin {
            command,
            args: exec.args.clone().unwrap_or_default(),
            env,
            api_version: exec
                .api_version
                .clone()
                .unwrap_or_else(|| DEFAULT_API_VERSION.to_string()),
            cluster,
        })
    }

    /// The command, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Runs the plugin once. The child gets no stdin and is killed when the returned
    /// future is dropped (an abandoned run leaves no process behind), or after `timeout`.
    pub async fn run(&self, timeout: Duration) -> Result<ExecCredential, ExecError> {
        let mut spec = serde_json::json!({ "interactive": false });
        if let Some(cluster) = &self.cluster {
            spec["cluster"] = cluster.clone();
        }
        let info = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": spec,
        });
        let mut cmd = tokio::process::Command::new(&self.command);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", info.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let command = || self.command.clone();
        let child = cmd.spawn().map_err(|source| ExecError::Start {
            command: command(),
            source,
        })?;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(ExecError::Read {
                    command: command(),
                    source,
                });
            }
            Err(_) => {
                return Err(ExecError::Timeout {
                    command: command(),
                    timeout,
                });
            }
        };
        if !output.status.success() {
            return Err(ExecError::Failed {
                command: command(),
                status: output.status,
            });
        }
        parse(&output.stdout).map_err(|source| ExecError::Output {
            command: command(),
            source,
        })
    }
}

fn cluster_info(cluster: &ExecAuthCluster) -> Result<serde_json::Value, ExecConfigError> {
    serde_json::to_value(cluster).map_err(|_| ExecConfigError::ClusterInfo)
}

#[derive(Deserialize)]
struct Output {
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    expiration_timestamp: Option<String>,
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
}

/// Parses an `ExecCredential` as printed by a plugin (see [`OutputError`]).
pub(crate) fn parse(stdout: &[u8]) -> Result<ExecCredential, OutputError> {
    let out: Output = serde_json::from_slice(stdout).map_err(|e| OutputError::Json {
        line: e.line(),
        column: e.column(),
    })?;
    let status = out.status.ok_or(OutputError::NoStatus)?;
    let expires = status
        .expiration_timestamp
        .map(|ts| ts.parse::<Timestamp>())
        .transpose()
        .map_err(|_| OutputError::Expiry)?;
    let token = status.token.filter(|t| !t.is_empty());
    let certificate = match (status.client_certificate_data, status.client_key_data) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(OutputError::HalfCertificate),
    };
    if token.is_none() && certificate.is_none() {
        return Err(OutputError::Empty);
    }
    Ok(ExecCredential {
        token,
        certificate,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    const TOKEN: &str = "exec-s3cr3t";

    fn plugin(script: &str) -> (tempfile::TempDir, ExecPlugin) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.sh");
        let script = script.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = ExecConfig {
            command: Some(path.display().to_string()),
            env: Some(vec![HashMap::from([
                ("name".to_string(), "PLUGIN_TOKEN".to_string()),
                ("value".to_string(), TOKEN.to_string()),
            ])]),
            ..Default::default()
        };
        let plugin = ExecPlugin::from_config(&config).unwrap();
        (dir, plugin)
    }

    #[test]
    fn parses_a_token_with_its_expiry() {
        let cred = parse(
            br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",
                "status":{"token":"abc","expirationTimestamp":"2030-01-02T03:04:05Z"}}"#,
        )
        .unwrap();
        assert_eq!(cred.token.as_deref(), Some("abc"));
        assert_eq!(
            cred.expires,
            Some("2030-01-02T03:04:05Z".parse::<Timestamp>().unwrap())
        );
        assert!(!format!("{cred:?}").contains("abc"));
    }

    #[test]
    fn parse_errors_never_quote_the_output() {
        for bad in [
            format!(r#"{{"status":{{"token":{TOKEN}}}}}"#),
            format!(r#"{{"status":{{"token":["{TOKEN}"]}}}}"#),
            format!(r#"{{"status":{{"token":"{TOKEN}","clientKeyData":"k"}}}}"#),
            format!(r#"{{"status":{{"token":"{TOKEN}","expirationTimestamp":"{TOKEN}"}}}}"#),
            r#"{"status":{}}"#.to_string(),
            r#"{"kind":"ExecCredential"}"#.to_string(),
        ] {
            let err = parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(!err.contains(TOKEN), "{err}");
        }
    }

    #[tokio::test]
    async fn runs_the_plugin_with_its_env_and_exec_info() {
        let (_dir, plugin) = plugin(
            r#"case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) exit 3 ;; esac
printf '{"kind":"ExecCredential","status":{"token":"%s"}}' "$PLUGIN_TOKEN""#,
        );
        let cred = plugin.run(Duration::from_secs(10)).await.unwrap();
        assert_eq!(cred.token.as_deref(), Some(TOKEN));
        assert_eq!(cred.expires, None);
    }

    #[tokio::test]
    async fn a_failing_plugin_is_reported_without_its_output() {
        let (_dir, plugin) = plugin(r#"echo "$PLUGIN_TOKEN"; echo "$PLUGIN_TOKEN" >&2; exit 7"#);
        let err = plugin.run(Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, ExecError::Failed { .. }), "{err}");
        let err = crate::error_chain::chain(&err).to_string();
        assert!(err.contains("plugin.sh failed"), "{err}");
        assert!(err.contains('7'), "{err}");
        assert!(!err.contains(TOKEN), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_plugin_is_cut_off_and_killed() {
        let (dir, plugin) = plugin("echo $$ > @DIR@/pid\nexec sleep 60");

        let start = Instant::now();
        let err = plugin.run(Duration::from_millis(500)).await.unwrap_err();
        let err = crate::error_chain::chain(&err).to_string();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(err.contains("did not answer within 500ms"), "{err}");

        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
        let proc_dir = format!("/proc/{}", pid.trim());
        let gone = (0..50).any(|_| {
            // A killed child that was reaped, or is at least dead (zombie until reaped).
            let alive = std::fs::read_to_string(format!("{proc_dir}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(100));
            }
            !alive
        });
        assert!(gone, "the plugin process {} still runs", pid.trim());
    }

    #[test]
    fn a_plugin_without_a_command_is_rejected() {
        let err = ExecPlugin::from_config(&ExecConfig::default()).unwrap_err();
        assert!(matches!(err, ExecConfigError::NoCommand), "{err}");
        assert!(err.to_string().contains("names no command"), "{err}");
    }
}
