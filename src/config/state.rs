//! `[groups.state]` and `[groups.drift]`: what shows that the standby could run the
//! agent against its Terraform state (a remote backend reachable, the state volume
//! bound, a replication timestamp fresh) and that it would run the same agent (its
//! Deployments like the primary's). Each check has a gate, `block` or `warn` (default
//! `warn`). The checks themselves are in `crate::state`; this file holds their keys,
//! defaults and validation.

use super::mirror::MirrorConfig;
use super::names::check_url;
use super::validate::{Problems, fmt_duration};
use super::{MAX_PROBE_INTERVAL, is_dns_label, is_dns_subdomain};
pub use kube_failover_core::checks::Gate;
use kube_failover_core::text::{choose, shown};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default of `[groups.state.volume] claim`: the env0 agent chart's state volume.
pub const DEFAULT_STATE_CLAIM: &str = "env0-state-volume-claim";

/// Upper bound of `[[groups.state.freshness]] max_age`.
pub const MAX_FRESHNESS_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Longest check name: it is part of a metric label (`backend:<name>`).
pub const MAX_CHECK_NAME_CHARS: usize = 63;

/// `[groups.state]`: the checks of the group's Terraform state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `[[groups.state.backends]]`: remote state backends reachable from the daemon's
    /// host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendConfig>,
    /// `[groups.state.volume]`: the state PersistentVolumeClaim in the standby
    /// namespace.
    pub volume: Option<VolumeConfig>,
    /// `[[groups.state.freshness]]`: objects in the standby whose timestamp must be
    /// recent (VolSync, Velero, a job of one's own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freshness: Vec<FreshnessConfig>,
    /// `[groups.state.mirror]`: copies the Terraform `kubernetes` backend's state
    /// Secrets from the primary namespace to the standby namespace.
    pub mirror: Option<MirrorConfig>,
    /// After a promotion, delete the Terraform lock Leases (`lock-tfstate-*`) of the
    /// standby namespace that were locked before the promotion started. Off: they are
    /// only named in the promotion's Event and notice.
    pub clear_stale_locks: bool,
}

/// `[[groups.state.backends]]`: a remote state backend, `url` (HTTP(S), any answer
/// in `expected_status`) or `tcp` (`host:port`, a connection is accepted). Exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique in the group; the check is `backend:<name>`.
    pub name: String,
    /// An absolute http(s) URL, asked with GET; redirects are not followed.
    pub url: Option<String>,
    /// `host:port` to connect to.
    pub tcp: Option<String>,
    /// The statuses that count as reachable; default: any status below 500 (an answer,
    /// even 403, proves the backend is reachable from here).
    pub expected_status: Option<Vec<u16>>,
    /// `block` or `warn`.
    #[serde(default)]
    pub gate: Gate,
    /// Defaults to the daemon's probe timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

impl BackendConfig {
    /// The check's name: `backend:<name>`.
    pub fn check_name(&self) -> String {
        format!("backend:{}", self.name)
    }

    /// True when `status` counts as reachable.
    pub fn expects(&self, status: u16) -> bool {
        match &self.expected_status {
            Some(set) => set.contains(&status),
            None => status < 500,
        }
    }
}

/// `[groups.state.volume]`: the state PersistentVolumeClaim must exist in the standby
/// namespace and be `Bound`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// The claim's name (default `env0-state-volume-claim`).
    #[serde(default = "default_claim")]
    pub claim: String,
    /// `block` or `warn`.
    #[serde(default)]
    pub gate: Gate,
}

fn default_claim() -> String {
    DEFAULT_STATE_CLAIM.to_string()
}

/// The check name of `[groups.state.volume]`.
pub const VOLUME_CHECK: &str = "volume";

/// `[[groups.state.freshness]]`: an object in the standby cluster whose timestamp (at a
/// JSON pointer, RFC 3339) must be younger than `max_age`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessConfig {
    /// Unique in the group; the check is `freshness:<name>`.
    pub name: String,
    /// The object's apiVersion, e.g. `volsync.backube/v1alpha1` (`v1` for core kinds).
    pub api_version: String,
    /// Its kind, e.g. `ReplicationDestination`.
    pub kind: String,
    /// Its name.
    pub object: String,
    /// Its namespace; default the standby namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A JSON pointer (RFC 6901) to an RFC 3339 timestamp, e.g. `/status/lastSyncTime`
    /// (`~1` stands for `/` in annotation keys).
    pub pointer: String,
    /// The timestamp must be younger than this.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// `block` or `warn`.
    #[serde(default)]
    pub gate: Gate,
}

impl FreshnessConfig {
    /// The check's name: `freshness:<name>`.
    pub fn check_name(&self) -> String {
        format!("freshness:{}", self.name)
    }

    /// `(group, version)` of `api_version`; the core group is `""`.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version.as_str()),
        }
    }
}

/// `[groups.drift]`: the standby's Deployments against their primary twins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// `off` (no comparison), `warn` (reported) or `block` (a different image refuses
    /// a promotion; other drift is reported).
    pub gate: DriftGate,
}

/// `[groups.drift] gate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum DriftGate {
    /// Nothing is compared.
    Off,
    /// Drift is reported; a promotion goes ahead.
    #[default]
    Warn,
    /// Drift in images (a different agent version) makes the standby unfit.
    Block,
}

impl DriftGate {
    /// Every value, in the order the documentation lists them.
    pub const ALL: [DriftGate; 3] = [DriftGate::Off, DriftGate::Warn, DriftGate::Block];

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftGate::Off => "off",
            DriftGate::Warn => "warn",
            DriftGate::Block => "block",
        }
    }

    /// The gate of the image check; `None` when drift is not compared.
    pub fn image_gate(self) -> Option<Gate> {
        match self {
            DriftGate::Off => None,
            DriftGate::Warn => Some(Gate::Warn),
            DriftGate::Block => Some(Gate::Block),
        }
    }
}

impl TryFrom<String> for DriftGate {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &DriftGate::ALL, |g| g.as_str())
    }
}

/// Checks a check name: non-empty, bounded, and made of characters that read well in
/// a metric label.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.chars().count() > MAX_CHECK_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some(format!(
            "{} must be at most {MAX_CHECK_NAME_CHARS} letters, digits, '-', '_' or '.': it \
             names the check in metric labels",
            shown(name)
        ))
    } else {
        None
    }
}

/// Checks a `host:port` target.
fn tcp_problem(target: &str) -> Option<String> {
    let Some((host, port)) = target.rsplit_once(':') else {
        return Some(format!("{} is not host:port", shown(target)));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("{} has no usable host", shown(target)));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!(
            "{} has no port in 1..=65535 after the last ':'",
            shown(target)
        )),
    }
}

/// Checks an apiVersion: `version` or `group/version`.
fn api_version_problem(api_version: &str) -> Option<String> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (Some(g), v),
        None => (None, api_version),
    };
    let group_ok = group.is_none_or(|g| is_dns_subdomain(g) && g.contains('.'));
    if group_ok && is_dns_label(version) {
        None
    } else {
        Some(format!(
            "{} is not an apiVersion (`group/version`, e.g. volsync.backube/v1alpha1, or \
             `v1` for core kinds)",
            shown(api_version)
        ))
    }
}

/// Checks a timeout of a check: above 0, below the probe interval.
fn timeout_problem(p: &mut Problems, key: String, timeout: Duration, interval: Duration) {
    if timeout.is_zero() {
        p.add(key, "must be greater than 0");
    } else if timeout > MAX_PROBE_INTERVAL {
        p.at_most(key, timeout, MAX_PROBE_INTERVAL);
    } else if timeout >= interval {
        p.add(
            key,
            format!(
                "must be below daemon.probe_interval ({} is not below {})",
                fmt_duration(timeout),
                fmt_duration(interval)
            ),
        );
    }
}

impl StateConfig {
    /// Adds the problems of `[groups.state]` of group `g` (its key label, e.g.
    /// `groups[env0]`) to `p`.
    pub(super) fn problems(&self, g: &str, interval: Duration, p: &mut Problems) {
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("{g}.state.backends[{i}]");
            if let Some(why) = name_problem(&b.name) {
                p.add(format!("{key}.name"), why);
            } else if let Some(j) = self.backends[..i].iter().position(|o| o.name == b.name) {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "duplicate backend name {} (also {g}.state.backends[{j}])",
                        shown(&b.name)
                    ),
                );
            }
            match (&b.url, &b.tcp) {
                (Some(_), Some(_)) => p.add(&key, "set exactly one of `url` and `tcp`, not both"),
                (None, None) => p.add(&key, "set exactly one of `url` and `tcp`"),
                (Some(url), None) => {
                    if let Err(why) = check_url(url) {
                        // The URL may carry a token: name the key, never quote it whole.
                        p.add(format!("{key}.url"), why);
                    }
                }
                (None, Some(tcp)) => {
                    if let Some(why) = tcp_problem(tcp) {
                        p.add(format!("{key}.tcp"), why);
                    }
                }
            }
            if let Some(set) = &b.expected_status {
                if b.tcp.is_some() && b.url.is_none() {
                    p.add(
                        format!("{key}.expected_status"),
                        "applies to `url` only (a TCP backend passes when it accepts a \
                         connection)",
                    );
                } else if set.is_empty() {
                    p.add(
                        format!("{key}.expected_status"),
                        "must list at least one status (leave it out for any status below 500)",
                    );
                } else if let Some(bad) = set.iter().find(|s| !(100..=599).contains(*s)) {
                    p.add(
                        format!("{key}.expected_status"),
                        format!("must hold HTTP statuses in 100..=599 (got {bad})"),
                    );
                }
            }
            if let Some(t) = b.timeout {
                timeout_problem(p, format!("{key}.timeout"), t, interval);
            }
        }

        if let Some(v) = &self.volume
            && !is_dns_subdomain(&v.claim)
        {
            p.add(
                format!("{g}.state.volume.claim"),
                format!(
                    "{} is not a valid PersistentVolumeClaim name (a DNS subdomain)",
                    shown(&v.claim)
                ),
            );
        }

        for (i, f) in self.freshness.iter().enumerate() {
            let key = format!("{g}.state.freshness[{i}]");
            if let Some(why) = name_problem(&f.name) {
                p.add(format!("{key}.name"), why);
            } else if let Some(j) = self.freshness[..i].iter().position(|o| o.name == f.name) {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "duplicate freshness name {} (also {g}.state.freshness[{j}])",
                        shown(&f.name)
                    ),
                );
            }
            if let Some(why) = api_version_problem(&f.api_version) {
                p.add(format!("{key}.api_version"), why);
            }
            let mut kind_chars = f.kind.chars();
            if !kind_chars.next().is_some_and(|c| c.is_ascii_uppercase())
                || !kind_chars.all(|c| c.is_ascii_alphanumeric())
            {
                p.add(
                    format!("{key}.kind"),
                    format!(
                        "{} is not a kind (letters and digits starting with a capital, e.g. \
                         ReplicationDestination)",
                        shown(&f.kind)
                    ),
                );
            }
            if !is_dns_subdomain(&f.object) {
                p.add(
                    format!("{key}.object"),
                    format!(
                        "{} is not a valid object name (a DNS subdomain)",
                        shown(&f.object)
                    ),
                );
            }
            if let Some(ns) = &f.namespace
                && !is_dns_label(ns)
            {
                p.add(
                    format!("{key}.namespace"),
                    format!("{} is not a valid namespace name (a DNS label)", shown(ns)),
                );
            }
            if !f.pointer.starts_with('/') {
                p.add(
                    format!("{key}.pointer"),
                    format!(
                        "{} is not a JSON pointer: it must start with '/', e.g. \
                         /status/lastSyncTime",
                        shown(&f.pointer)
                    ),
                );
            } else if f.pointer.chars().any(char::is_control) {
                p.add(
                    format!("{key}.pointer"),
                    format!("{} contains control characters", shown(&f.pointer)),
                );
            }
            if f.max_age.is_zero() {
                p.add(format!("{key}.max_age"), "must be greater than 0");
            }
            p.at_most(format!("{key}.max_age"), f.max_age, MAX_FRESHNESS_AGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, GOOD, only_problem, problems};
    use super::*;

    const STATE: &str = r#"
[[groups.state.backends]]
name = "s3"
url = "https://s3.eu-west-1.amazonaws.com/my-bucket"
expected_status = [200, 301, 403]
gate = "block"

[[groups.state.backends]]
name = "pg"
tcp = "db.example:5432"
timeout = "500ms"

[groups.state.volume]
gate = "block"

[[groups.state.freshness]]
name = "volsync"
api_version = "volsync.backube/v1alpha1"
kind = "ReplicationDestination"
object = "env0-state"
pointer = "/status/lastSyncTime"
max_age = "15m"
gate = "block"

[groups.drift]
gate = "block"
"#;

    fn with_state(f: &Fixture) -> crate::config::Config {
        f.load(&format!("{}{STATE}", *GOOD))
            .expect("state keys load")
    }

    #[test]
    fn the_documented_keys_load_with_their_defaults() {
        let f = Fixture::new();
        let cfg = with_state(&f);
        assert_eq!(problems(&cfg), Vec::<String>::new());
        let g = &cfg.groups[0];
        assert_eq!(g.state.backends.len(), 2);
        assert_eq!(g.state.backends[0].gate, Gate::Block);
        assert!(g.state.backends[0].expects(403));
        assert!(!g.state.backends[0].expects(200 + 4));
        assert_eq!(g.state.backends[1].gate, Gate::Warn, "default gate");
        assert!(
            g.state.backends[1].expects(404) && !g.state.backends[1].expects(503),
            "default: any status below 500"
        );
        let volume = g.state.volume.as_ref().expect("volume");
        assert_eq!(volume.claim, DEFAULT_STATE_CLAIM);
        assert_eq!(g.state.freshness[0].max_age, Duration::from_secs(900));
        assert_eq!(
            g.state.freshness[0].group_version(),
            ("volsync.backube", "v1alpha1")
        );
        assert_eq!(g.drift.gate, DriftGate::Block);
        // Without the tables: nothing checked, drift reported (warn).
        let plain = f.good();
        assert_eq!(plain.groups[0].state, StateConfig::default());
        assert_eq!(plain.groups[0].drift.gate, DriftGate::Warn);
        // The resolved configuration loads back the same.
        let toml = cfg.resolved().to_toml().unwrap();
        assert_eq!(f.load(&toml).unwrap(), cfg.resolved());
    }

    #[test]
    fn unknown_keys_and_gates_are_refused_naming_the_key() {
        let f = Fixture::new();
        let load = |extra: &str| {
            f.load(&format!("{}{extra}", *GOOD))
                .unwrap_err()
                .to_string()
        };
        let err = load("\n[groups.state.volume]\ngate = \"stop\"\n");
        assert!(err.contains("groups[env0].state.volume.gate"), "{err}");
        assert!(err.contains("\"block\", \"warn\""), "{err}");
        let err = load("\n[groups.state.volume]\nclaim_name = \"a\"\n");
        assert!(err.contains("groups[env0].state.volume"), "{err}");
        assert!(err.contains("claim_name"), "{err}");
        let err = load("\n[groups.drift]\ngate = \"on\"\n");
        assert!(err.contains("groups[env0].drift.gate"), "{err}");
        assert!(err.contains("\"off\", \"warn\", \"block\""), "{err}");
        let err = load("\n[[groups.state.freshness]]\nname = \"v\"\n");
        assert!(err.contains("groups[env0].state.freshness[0]"), "{err}");
    }

    #[test]
    fn backends_need_exactly_one_target_a_unique_name_and_sane_statuses() {
        let f = Fixture::new();
        let base = with_state(&f);
        let key = "groups[env0].state.backends[0]";
        let mut cfg = base.clone();
        cfg.groups[0].state.backends[0].tcp = Some("db:5432".into());
        let msg = only_problem(&cfg, key);
        assert!(msg.contains("not both"), "{msg}");
        let mut cfg = base.clone();
        cfg.groups[0].state.backends[0].url = None;
        only_problem(&cfg, key);
        let mut cfg = base.clone();
        cfg.groups[0].state.backends[1].name = "s3".into();
        let msg = only_problem(&cfg, "groups[env0].state.backends[1].name");
        assert!(msg.contains("duplicate"), "{msg}");
        let mut cfg = base.clone();
        cfg.groups[0].state.backends[0].name = "s3 bucket".into();
        only_problem(&cfg, &format!("{key}.name"));
        let mut cfg = base.clone();
        cfg.groups[0].state.backends[0].url = Some("s3://bucket?token=secret".into());
        let msg = only_problem(&cfg, &format!("{key}.url"));
        assert!(!msg.contains("secret"), "the URL is not quoted: {msg}");
        for bad in ["db", "db:", "db:0", "db:99999", ":5432"] {
            let mut cfg = base.clone();
            cfg.groups[0].state.backends[1].tcp = Some(bad.into());
            only_problem(&cfg, "groups[env0].state.backends[1].tcp");
        }
        for bad in [vec![], vec![200, 600]] {
            let mut cfg = base.clone();
            cfg.groups[0].state.backends[0].expected_status = Some(bad);
            only_problem(&cfg, &format!("{key}.expected_status"));
        }
        let mut cfg = base.clone();
        cfg.groups[0].state.backends[1].expected_status = Some(vec![200]);
        only_problem(&cfg, "groups[env0].state.backends[1].expected_status");
        for bad in [Duration::ZERO, Duration::from_secs(2)] {
            let mut cfg = base.clone();
            cfg.groups[0].state.backends[1].timeout = Some(bad);
            only_problem(&cfg, "groups[env0].state.backends[1].timeout");
        }
    }

    #[test]
    fn volume_and_freshness_keys_are_checked_naming_the_key() {
        let f = Fixture::new();
        let base = with_state(&f);
        let mut cfg = base.clone();
        cfg.groups[0].state.volume.as_mut().unwrap().claim = "State_Volume".into();
        only_problem(&cfg, "groups[env0].state.volume.claim");
        let key = "groups[env0].state.freshness[0]";
        type Set = fn(&mut FreshnessConfig);
        let cases: [(&str, Set); 10] = [
            ("pointer", |f| f.pointer = "status/lastSyncTime".into()),
            ("pointer", |f| f.pointer = "/status\n".into()),
            ("max_age", |f| f.max_age = Duration::ZERO),
            ("max_age", |f| f.max_age = MAX_FRESHNESS_AGE * 2),
            ("api_version", |f| f.api_version = "volsync/v1/x".into()),
            ("api_version", |f| f.api_version = "".into()),
            ("kind", |f| f.kind = "replicationDestination".into()),
            ("object", |f| f.object = "Env0 State".into()),
            ("namespace", |f| f.namespace = Some("a.b".into())),
            ("name", |f| f.name = String::new()),
        ];
        for (field, set) in cases {
            let mut cfg = base.clone();
            set(&mut cfg.groups[0].state.freshness[0]);
            only_problem(&cfg, &format!("{key}.{field}"));
        }
        let mut cfg = base.clone();
        cfg.groups[0].state.freshness[0].api_version = "v1".into();
        cfg.groups[0].state.freshness[0].kind = "ConfigMap".into();
        cfg.groups[0].state.freshness[0].pointer =
            "/metadata/annotations/example.com~1synced-at".into();
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert_eq!(cfg.groups[0].state.freshness[0].group_version(), ("", "v1"));
        let dup = cfg.groups[0].state.freshness[0].clone();
        cfg.groups[0].state.freshness.push(dup);
        let msg = only_problem(&cfg, "groups[env0].state.freshness[1].name");
        assert!(msg.contains("duplicate"), "{msg}");
    }
}
