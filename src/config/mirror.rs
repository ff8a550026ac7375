//! `[groups.state.mirror]`: copying the Terraform `kubernetes` backend's state Secrets
//! from the primary namespace to the standby namespace while the primary is active.
//! What the mirror does with these settings is in `crate::mirror`.

use super::{check_label_selector, is_dns_label};
use kube_failover_core::text::shown;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The label the Terraform `kubernetes` backend puts on every state Secret (and on its
/// lock Lease, which is never copied).
pub const DEFAULT_MIRROR_SELECTOR: &str = "tfstate=true";

/// Lower bound of `sync_interval`: a full resync is a comparison in memory, but each one
/// that finds a difference writes to the standby.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound of `sync_interval` and `max_lag`.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// `[groups.state.mirror]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Off: nothing is watched or copied (the table can stay in the file).
    pub enabled: bool,
    /// Label selector of the Secrets to copy; default the backend's `tfstate=true`.
    pub selector: String,
    /// Namespace of the state Secrets on both sides (the backend's `namespace`, which is
    /// the same on both sides since the same Terraform code runs after a failover);
    /// default: the group's primary namespace on the primary, its standby namespace on
    /// the standby.
    pub namespace: Option<String>,
    /// A full resync this often; changes are also copied as the watch sees them.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Delete standby Secrets of the selector that the primary no longer has (only those
    /// the mirror copied and nobody changed since).
    pub prune: bool,
    /// Alert (`KubeFailoverMirrorLagging`) when the last successful sync is older.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            enabled: true,
            selector: DEFAULT_MIRROR_SELECTOR.to_string(),
            namespace: None,
            sync_interval: Duration::from_secs(30),
            prune: false,
            max_lag: Duration::from_secs(5 * 60),
        }
    }
}

impl MirrorConfig {
    /// Every problem of this table, as `(key below the table, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.selector.trim().is_empty() {
            p.push((
                "selector",
                "must not be empty: it would copy every Secret of the namespace".to_string(),
            ));
        } else if let Err(e) = check_label_selector(&self.selector) {
            p.push(("selector", e));
        }
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            p.push((
                "namespace",
                format!("{} is not a valid namespace name (a DNS label)", shown(ns)),
            ));
        }
        for (key, value) in [
            ("sync_interval", self.sync_interval),
            ("max_lag", self.max_lag),
        ] {
            if value < MIN_SYNC_INTERVAL || value > MAX_SYNC_INTERVAL {
                p.push((
                    key,
                    format!(
                        "must be between {} and {} (got {})",
                        humantime::format_duration(MIN_SYNC_INTERVAL),
                        humantime::format_duration(MAX_SYNC_INTERVAL),
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        if self.max_lag <= self.sync_interval && p.iter().all(|(k, _)| *k != "max_lag") {
            p.push((
                "max_lag",
                format!(
                    "must be above sync_interval ({} is not above {}): a full resync \
                     happens only once per sync_interval",
                    humantime::format_duration(self.max_lag),
                    humantime::format_duration(self.sync_interval)
                ),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, GOOD, load_error, only_problem, problems};
    use super::*;

    #[test]
    fn the_table_loads_with_its_defaults() {
        let f = Fixture::new();
        let cfg = f
            .load(&format!("{}\n[groups.state.mirror]\n", *GOOD))
            .expect("loads");
        let m = cfg.groups[0].state.mirror.as_ref().expect("mirror");
        assert_eq!(*m, MirrorConfig::default());
        assert!(m.enabled && !m.prune);
        assert_eq!(m.selector, "tfstate=true");
        assert_eq!(m.sync_interval, Duration::from_secs(30));
        assert_eq!(m.max_lag, Duration::from_secs(300));
        assert_eq!(problems(&cfg), Vec::<String>::new());

        let cfg = f
            .load(&format!(
                "{}\n[groups.state.mirror]\nselector = \"tfstate=true,team=a\"\nsync_interval = \"10s\"\nprune = true\nmax_lag = \"1m\"\nnamespace = \"terraform\"\n",
                *GOOD
            ))
            .expect("loads");
        let m = cfg.groups[0].state.mirror.as_ref().unwrap();
        assert_eq!(m.namespace.as_deref(), Some("terraform"));
        assert!(m.prune);
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert!(f.good().groups[0].state.mirror.is_none(), "off unless set");
    }

    #[test]
    fn the_commented_example_is_the_defaults() {
        let example = include_str!("../../config.example.toml");
        let start = example
            .find("# [groups.state.mirror]")
            .expect("the example shows the mirror");
        let table: String = example[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = Fixture::new();
        let cfg = f
            .load(&format!("{}\n{table}", *GOOD))
            .expect("the uncommented example loads");
        assert_eq!(cfg.groups[0].state.mirror, Some(MirrorConfig::default()));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let f = Fixture::new();
        let err = load_error(
            &f,
            &format!("{}\n[groups.state.mirror]\nprune_all = true\n", *GOOD),
        );
        assert!(err.contains("groups[env0].state.mirror"), "{err}");
        assert!(err.contains("prune_all"), "{err}");
    }

    #[test]
    fn bad_values_are_named_by_their_key() {
        let f = Fixture::new();
        let with = |edit: fn(&mut MirrorConfig)| {
            let mut cfg = f.good();
            let mut m = MirrorConfig::default();
            edit(&mut m);
            cfg.groups[0].state.mirror = Some(m);
            cfg
        };
        let msg = only_problem(
            &with(|m| m.selector = " ".into()),
            "groups[env0].state.mirror.selector",
        );
        assert!(msg.contains("every Secret"), "{msg}");
        only_problem(
            &with(|m| m.selector = "tfstate in (".into()),
            "groups[env0].state.mirror.selector",
        );
        only_problem(
            &with(|m| m.namespace = Some("Terraform".into())),
            "groups[env0].state.mirror.namespace",
        );
        only_problem(
            &with(|m| m.sync_interval = Duration::from_millis(100)),
            "groups[env0].state.mirror.sync_interval",
        );
        let msg = only_problem(
            &with(|m| m.max_lag = Duration::from_secs(30)),
            "groups[env0].state.mirror.max_lag",
        );
        assert!(msg.contains("above sync_interval"), "{msg}");
        let all = with(|m| {
            m.selector = String::new();
            m.max_lag = Duration::from_secs(48 * 3600);
        });
        assert_eq!(problems(&all).len(), 2, "{:?}", problems(&all));
    }
}
