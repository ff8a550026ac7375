//! The guard's configuration file (`guard.example.toml` documents every key): which
//! group and side it guards, how it reaches the standby cluster, and its timings. A
//! problem names the file and the key.

use crate::config::{ClusterConfig, is_dns_label, is_dns_subdomain, printable};
pub use crate::model::GuardForm;
use crate::model::Side;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest guard configuration file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// The longest `isolation_ttl` accepted.
pub const MAX_ISOLATION_TTL: Duration = Duration::from_secs(3600);
/// The most daemon instances a guard asks.
const MAX_DAEMONS: usize = 16;

/// What a primary's guard does when it cannot read the record for `isolation_ttl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnIsolation {
    /// Nothing: an unreadable record never stops the agent.
    #[default]
    Keep,
    /// Ask the daemons; unless enough of them vouch for the primary, stop the agent.
    Stop,
}

/// The guard's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// The failover group's name (as in the daemon's `[[groups]] name`).
    pub group: String,
    /// Which side's agent this guard runs beside.
    pub side: Side,
    /// `wrapper` (default): the agent's command follows `--` and runs as the guard's
    /// child. `sidecar`: no command; the guard serves its verdict at `GET /agent` on
    /// `listen` for the agent container's liveness probe (`kube-failover guard check`).
    #[serde(default)]
    pub form: GuardForm,
    /// Names this guard in its heartbeat Lease; default `$POD_NAME`, else the host name.
    #[serde(default)]
    pub identity: Option<String>,
    /// How often the record is read.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Bound on each read of the record and each heartbeat write.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long the agent has to exit after SIGTERM before it is killed.
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// How often the heartbeat Lease is renewed when nothing changes (a change is
    /// written at once).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_every: Duration,
    /// `/healthz` and `/metrics`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The record's ConfigMap; default `kube-failover-<group>`.
    #[serde(default)]
    pub record_name: Option<String>,
    /// `keep` (default) or `stop`: what a primary's guard does once it could not read
    /// the record for `isolation_ttl`.
    #[serde(default)]
    pub on_isolation: OnIsolation,
    /// With `stop`: how long the record may stay unreadable before the daemons are asked.
    #[serde(default = "default_isolation_ttl", with = "humantime_serde")]
    pub isolation_ttl: Duration,
    /// With `stop`: the daemon instances' admin URLs (`http://host:port`), asked for
    /// `GET <url>/status?group=<group>`.
    #[serde(default)]
    pub daemons: Vec<String>,
    /// With `stop`: how many of `daemons` must vouch for the primary to keep the agent;
    /// default a majority of them.
    #[serde(default)]
    pub daemons_needed: Option<u32>,
    /// `[standby]`: the standby cluster, where the record and the heartbeat live. Reached
    /// directly, never through the primary's API.
    pub standby: ClusterConfig,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_millis(800)
}
fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_isolation_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9095))
}

/// Why the guard's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GuardConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the guard configuration", .file.display())]
    Read {
        /// The file, as given.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is too large, not TOML, or a key is unknown or of the wrong type.
    #[error("{}: {message}", .file.display())]
    Parse {
        /// The file, as given.
        file: PathBuf,
        /// What is wrong, with the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("{}: {key}: {message}", .file.display())]
    Value {
        /// The file, as given.
        file: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl GuardConfig {
    /// Reads and checks `path`. Touches no cluster; the kubeconfig is checked when the
    /// client is built.
    pub fn load(path: &Path) -> Result<GuardConfig, GuardConfigError> {
        let read = |source| GuardConfigError::Read {
            file: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_FILE_BYTES {
            return Err(GuardConfigError::Parse {
                file: path.to_path_buf(),
                message: format!(
                    "{size} bytes, more than the {MAX_FILE_BYTES} a guard configuration may have"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let config: GuardConfig = toml::from_str(&text).map_err(|e| GuardConfigError::Parse {
            file: path.to_path_buf(),
            message: printable(&e.to_string(), 600),
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), GuardConfigError> {
        let bad = |key: &'static str, message: String| GuardConfigError::Value {
            file: path.to_path_buf(),
            key,
            message,
        };
        if !is_dns_label(&self.group) {
            return Err(bad(
                "group",
                format!(
                    "{:?} is not a DNS label (the daemon's group names are)",
                    printable(&self.group, 80)
                ),
            ));
        }
        if let Some(id) = &self.identity
            && !is_dns_subdomain(id)
        {
            return Err(bad(
                "identity",
                format!("{:?} is not a DNS subdomain", printable(id, 80)),
            ));
        }
        if let Some(name) = &self.record_name
            && !is_dns_subdomain(name)
        {
            return Err(bad(
                "record_name",
                format!("{:?} is not a DNS subdomain", printable(name, 80)),
            ));
        }
        if !is_dns_label(&self.standby.namespace) {
            return Err(bad(
                "standby.namespace",
                format!(
                    "{:?} is not a namespace name",
                    printable(&self.standby.namespace, 80)
                ),
            ));
        }
        let range = |key, d: Duration, min: Duration, max: Duration| {
            if d < min || d > max {
                Err(bad(
                    key,
                    format!("{} is outside {} to {}", hs(d), hs(min), hs(max)),
                ))
            } else {
                Ok(())
            }
        };
        let ms = Duration::from_millis;
        range("interval", self.interval, ms(100), Duration::from_secs(60))?;
        range("timeout", self.timeout, ms(50), self.interval)?;
        range(
            "stop_grace",
            self.stop_grace,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        range(
            "heartbeat_every",
            self.heartbeat_every,
            self.interval,
            Duration::from_secs(300),
        )?;
        for (i, url) in self.daemons.iter().enumerate() {
            check_daemon_url(url).map_err(|why| {
                bad(
                    "daemons",
                    format!("entry {} ({:?}): {why}", i + 1, printable(url, 80)),
                )
            })?;
            if self.daemons[..i].contains(url) {
                return Err(bad(
                    "daemons",
                    format!(
                        "{:?} is listed twice: each daemon instance counts once",
                        printable(url, 80)
                    ),
                ));
            }
        }
        if self.daemons.len() > MAX_DAEMONS {
            return Err(bad(
                "daemons",
                format!(
                    "{} entries, more than the {MAX_DAEMONS} a guard asks",
                    self.daemons.len()
                ),
            ));
        }
        if self.on_isolation == OnIsolation::Keep {
            return Ok(());
        }
        if self.form == GuardForm::Sidecar {
            return Err(bad(
                "on_isolation",
                "\"stop\" needs form = \"wrapper\": a sidecar's refusal makes kubelet \
                 kill the agent's container and restart it, so the daemon could not count \
                 on the agent staying stopped while the guard is cut off"
                    .into(),
            ));
        }
        if self.side != Side::Primary {
            return Err(bad(
                "on_isolation",
                "\"stop\" is for a primary's guard (side = \"primary\"): a standby's \
                 agent runs only on a record that names the standby"
                    .into(),
            ));
        }
        if self.daemons.is_empty() {
            return Err(bad(
                "daemons",
                "required with on_isolation = \"stop\": the daemon instances' admin URLs \
                 (http://host:port), asked whether the primary is active"
                    .into(),
            ));
        }
        let least = self.interval + self.timeout;
        if self.isolation_ttl <= least || self.isolation_ttl > MAX_ISOLATION_TTL {
            return Err(bad(
                "isolation_ttl",
                format!(
                    "{} must exceed interval + timeout ({}) and be at most {}",
                    hs(self.isolation_ttl),
                    hs(least),
                    hs(MAX_ISOLATION_TTL)
                ),
            ));
        }
        if let Some(n) = self.daemons_needed
            && (n == 0 || n as usize > self.daemons.len())
        {
            return Err(bad(
                "daemons_needed",
                format!(
                    "{n} is outside 1 to {} (the number of daemons)",
                    self.daemons.len()
                ),
            ));
        }
        Ok(())
    }

    /// How many daemons must vouch: `daemons_needed`, else a majority of `daemons`.
    pub fn daemons_needed(&self) -> u32 {
        self.daemons_needed
            .unwrap_or_else(|| u32::try_from(self.daemons.len() / 2 + 1).unwrap_or(u32::MAX))
    }

    /// What the guard may take, once `isolation_ttl` has passed, until its agent is gone:
    /// the turn in progress and the next one's start (one interval and a timeout), that
    /// turn's read of the record and the daemons' answers (a timeout each), a heartbeat
    /// write (a timeout), then `stop_grace`.
    pub fn stop_within(&self) -> Duration {
        self.interval + self.timeout * 4 + self.stop_grace
    }

    /// The record's ConfigMap name.
    pub fn record_name(&self) -> String {
        self.record_name
            .clone()
            .unwrap_or_else(|| format!("kube-failover-{}", self.group))
    }

    /// This guard's identity: the configured one, else `$POD_NAME`, else the host name.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| {
                std::env::var("POD_NAME")
                    .ok()
                    .filter(|s| is_dns_subdomain(s))
            })
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| is_dns_subdomain(s))
            })
            .unwrap_or_else(|| "guard".to_string())
    }

    /// The heartbeat Lease's name: `kube-failover-guard-<group>-<side>-<identity>`; with
    /// an identity too long for that, a stable hash of it in its place.
    pub fn heartbeat_name(&self) -> String {
        let prefix = format!("kube-failover-guard-{}-{}", self.group, self.side.as_str());
        let identity = self.identity();
        let name = format!("{prefix}-{identity}");
        if name.len() <= 253 {
            return name;
        }
        let hash = kube_failover_core::text::stable_hash(&identity);
        format!("{prefix}-{hash:016x}")
    }
}

/// A daemon's admin URL: `http` or `https`, a host, no user or password (it would show
/// in logs), no query or fragment (`/status?group=` is appended to its path).
fn check_daemon_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?}: use http or https", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "a user or password in the URL is not allowed (the admin port needs none)".into(),
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("no query or fragment: give the admin server's base URL".into());
    }
    Ok(())
}

fn hs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<GuardConfig, String> {
        // A directory per call: tests that load the same text run in parallel.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("guard.toml");
        std::fs::write(&file, text).unwrap();
        GuardConfig::load(&file).map_err(|e| {
            crate::error_chain::chain(&e)
                .to_string()
                .replace(&file.display().to_string(), "FILE")
        })
    }

    const GOOD: &str = r#"
group = "env0"
side = "primary"
[standby]
kubeconfig = "/etc/kube-failover/standby.kubeconfig"
namespace = "env0-agent"
"#;

    #[test]
    fn defaults_fill_in() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.side, Side::Primary);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.record_name(), "kube-failover-env0");
        assert_eq!(c.listen.port(), 9095);
    }

    #[test]
    fn problems_name_the_file_and_the_key() {
        let unknown = load(&format!("{GOOD}\n[extra]\nx = 1\n")).unwrap_err();
        assert!(unknown.starts_with("FILE: "), "{unknown}");
        assert!(unknown.contains("extra"), "{unknown}");
        let side = load(&GOOD.replace("\"primary\"", "\"both\"")).unwrap_err();
        assert!(side.contains("side") || side.contains("both"), "{side}");
        assert!(
            side.contains("primary") && side.contains("standby"),
            "{side}"
        );
        let dur = load(&format!("interval = \"soon\"\n{GOOD}")).unwrap_err();
        assert!(dur.contains("interval"), "{dur}");
        let timeout = load(&format!("timeout = \"5s\"\n{GOOD}")).unwrap_err();
        assert_eq!(timeout, "FILE: timeout: 5s is outside 50ms to 1s");
        let group = load(&GOOD.replace("\"env0\"", "\"Env 0\"")).unwrap_err();
        assert!(group.starts_with("FILE: group: "), "{group}");
        let missing = load("group = \"env0\"\nside = \"primary\"\n").unwrap_err();
        assert!(missing.contains("standby"), "{missing}");
        let absent = GuardConfig::load(Path::new("/nonexistent/guard.toml")).unwrap_err();
        assert!(
            absent
                .to_string()
                .starts_with("/nonexistent/guard.toml: cannot read"),
            "{absent}"
        );
    }

    #[test]
    fn on_isolation_stop_needs_daemons_a_ttl_above_a_turn_and_a_primary_side() {
        let keep = load(GOOD).unwrap();
        assert_eq!(keep.on_isolation, OnIsolation::Keep);
        assert_eq!(keep.isolation_ttl, Duration::from_secs(10));
        let stop = |extra: &str| load(&format!("on_isolation = \"stop\"\n{extra}\n{GOOD}"));
        let three = r#"daemons = ["http://10.0.0.1:9090", "http://10.0.0.2:9090/", "https://kf.example:9090"]"#;
        let c = stop(three).unwrap();
        assert_eq!(c.daemons_needed(), 2, "a majority of three");
        // interval 1s + 4 x 800ms + stop_grace 10s.
        assert_eq!(c.stop_within(), Duration::from_millis(14_200));
        let c = stop(&format!("{three}\ndaemons_needed = 3")).unwrap();
        assert_eq!(c.daemons_needed(), 3);
        assert_eq!(
            stop("").unwrap_err(),
            "FILE: daemons: required with on_isolation = \"stop\": the daemon instances' admin URLs (http://host:port), asked whether the primary is active"
        );
        assert_eq!(
            stop(&format!("{three}\ndaemons_needed = 4")).unwrap_err(),
            "FILE: daemons_needed: 4 is outside 1 to 3 (the number of daemons)"
        );
        assert_eq!(
            stop(&format!("{three}\nisolation_ttl = \"1800ms\"")).unwrap_err(),
            "FILE: isolation_ttl: 1s 800ms must exceed interval + timeout (1s 800ms) and be at most 1h"
        );
        let twice = stop(r#"daemons = ["http://a:1", "http://a:1"]"#).unwrap_err();
        assert!(
            twice.starts_with("FILE: daemons: ") && twice.contains("twice"),
            "{twice}"
        );
        for url in [
            "ftp://a:1",
            "http://user:secret@a:1",
            "http://a:1/?x=1",
            "a:1",
        ] {
            let e = stop(&format!("daemons = [{url:?}]")).unwrap_err();
            assert!(e.starts_with("FILE: daemons: entry 1 "), "{url}: {e}");
            assert!(!e.contains("secret") || e.contains("user:secret"), "{e}");
        }
        let standby = load(&format!(
            "on_isolation = \"stop\"\n{three}\n{}",
            GOOD.replace("\"primary\"", "\"standby\"")
        ))
        .unwrap_err();
        assert!(standby.starts_with("FILE: on_isolation: "), "{standby}");
        let typo = stop("on_isolation_ttl = \"5s\"").unwrap_err();
        assert!(typo.contains("on_isolation_ttl"), "{typo}");
        let sidecar = stop(&format!("{three}\nform = \"sidecar\"")).unwrap_err();
        assert!(
            sidecar.starts_with("FILE: on_isolation: \"stop\" needs form = \"wrapper\""),
            "{sidecar}"
        );
    }

    #[test]
    fn form_is_wrapper_unless_it_says_sidecar() {
        assert_eq!(load(GOOD).unwrap().form, GuardForm::Wrapper);
        let c = load(&format!("form = \"sidecar\"\n{GOOD}")).unwrap();
        assert_eq!(c.form, GuardForm::Sidecar);
        let bad = load(&format!("form = \"side-car\"\n{GOOD}")).unwrap_err();
        assert!(
            bad.starts_with("FILE: ") && bad.contains("form") && bad.contains("sidecar"),
            "{bad}"
        );
    }

    #[test]
    fn the_example_file_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("guard.example.toml");
        let c = GuardConfig::load(&file).unwrap();
        assert_eq!((c.group.as_str(), c.side), ("env0", Side::Primary));
        assert_eq!(c.standby.namespace, "env0-agent");
        assert_eq!(c.heartbeat_every, Duration::from_secs(5));
    }

    #[test]
    fn heartbeat_names_stay_valid() {
        let mut c = load(GOOD).unwrap();
        c.identity = Some("agent-7f9c".into());
        assert_eq!(
            c.heartbeat_name(),
            "kube-failover-guard-env0-primary-agent-7f9c"
        );
        c.identity = Some(vec!["a".repeat(60); 4].join("."));
        assert!(is_dns_subdomain(c.identity.as_deref().unwrap()));
        let long = c.heartbeat_name();
        assert!(long.len() <= 253 && is_dns_subdomain(&long), "{long}");
    }
}
