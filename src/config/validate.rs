//! Validation: every check that can be made before touching a cluster (bounds, names,
//! selectors, one record per group), then the kubeconfig checks; every problem is
//! reported at once, each naming its key path.

use super::load::group_label;
use super::names::check_url;
use super::quote::MAX_MESSAGE_CHARS;
use super::{
    ClusterConfig, Config, ConfigError, GroupConfig, Problem, check_label_selector, is_dns_label,
    is_dns_subdomain, printable,
};
use kube_failover_core::text::shown;
use std::path::PathBuf;
use std::time::Duration;

// Upper bounds of the configured durations. Above them a value is a slip of the unit
// (`5h` for `5s`) rather than a choice, and they keep every deadline computed from a
// duration (`now + freeze_for`) far from the end of the clock.

/// Upper bound of `daemon.probe_interval`, `daemon.probe_timeout` and HTTP check timeouts.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Lower bound of `daemon.trace_max_bytes`: room for a few ticks' lines.
pub const MIN_TRACE_BYTES: u64 = 64 * 1024;
/// Upper bound of `daemon.trace_max_bytes` (1 GiB).
pub const MAX_TRACE_BYTES: u64 = 1024 * 1024 * 1024;
/// Upper bound of `daemon.shutdown_timeout`.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Upper bound of `daemon.watch_timeout` (a revoked grant shows when a watch is resumed,
/// so it should not wait for hours).
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Upper bound of `daemon.leader.lease_duration` and `policy.observers.ttl`.
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(3600);
/// Upper bound of `policy.cooldown`.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Upper bound of `policy.startup_grace`.
pub const MAX_STARTUP_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound of `policy.promotion_timeout`.
pub const MAX_PROMOTION_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound of `policy.freeze_for`.
pub const MAX_FREEZE_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Upper bound of `daemon.identity`, in characters: the length Kubernetes allows for an
/// Event's `reportingInstance`.
pub const MAX_IDENTITY_CHARS: usize = 128;

impl Config {
    /// Checks everything that can be checked before touching a cluster, including that
    /// each kubeconfig is readable and has the configured context. Every problem is
    /// reported, each naming its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.offline_problems();
        problems.extend(self.kubeconfig_problems(&problems));
        into_result(problems)
    }

    /// [`Config::validate`] without reading kubeconfig files: for checking a
    /// configuration away from the host it will run on.
    pub fn validate_offline(&self) -> Result<(), ConfigError> {
        into_result(self.offline_problems())
    }

    fn group_labels(&self) -> Vec<String> {
        let names: Vec<Option<String>> = self.groups.iter().map(|g| Some(g.name.clone())).collect();
        (0..self.groups.len())
            .map(|i| group_label(i, &names))
            .collect()
    }

    fn offline_problems(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        let d = &self.daemon;
        if d.probe_interval.is_zero() {
            p.add("daemon.probe_interval", "must be greater than 0");
        }
        p.at_most(
            "daemon.probe_interval",
            d.probe_interval,
            MAX_PROBE_INTERVAL,
        );
        if d.probe_timeout.is_zero() {
            p.add("daemon.probe_timeout", "must be greater than 0");
        } else if d.probe_timeout > MAX_PROBE_INTERVAL {
            p.at_most("daemon.probe_timeout", d.probe_timeout, MAX_PROBE_INTERVAL);
        } else if d.probe_timeout >= d.probe_interval {
            p.add(
                "daemon.probe_timeout",
                format!(
                    "must be below daemon.probe_interval ({} is not below {})",
                    fmt_duration(d.probe_timeout),
                    fmt_duration(d.probe_interval)
                ),
            );
        }
        if let Some(watch_timeout) = d.watch_timeout {
            if watch_timeout < Duration::from_secs(1) {
                p.add("daemon.watch_timeout", "must be at least 1s");
            }
            p.at_most("daemon.watch_timeout", watch_timeout, MAX_WATCH_TIMEOUT);
        }
        p.at_most(
            "daemon.shutdown_timeout",
            d.shutdown_timeout,
            MAX_SHUTDOWN_TIMEOUT,
        );
        if let Some(identity) = d.identity.as_deref() {
            if identity.trim().is_empty() {
                p.add(
                    "daemon.identity",
                    "must not be empty (leave it out to use the host name)",
                );
            } else if identity.chars().count() > MAX_IDENTITY_CHARS {
                p.add(
                    "daemon.identity",
                    format!(
                        "must be at most {MAX_IDENTITY_CHARS} characters (got {}): it names \
                         this daemon in Kubernetes Events",
                        identity.chars().count()
                    ),
                );
            } else if identity.chars().any(char::is_control) {
                p.add(
                    "daemon.identity",
                    format!(
                        "{} contains control characters: it is written into logs, the \
                         record and Events",
                        shown(identity)
                    ),
                );
            }
        }
        if let Some(path) = d.trace_file.as_deref()
            && (path.as_os_str().is_empty() || path.file_name().is_none())
        {
            p.add(
                "daemon.trace_file",
                "must name a file (leave it out for no trace)",
            );
        }
        if !(MIN_TRACE_BYTES..=MAX_TRACE_BYTES).contains(&d.trace_max_bytes) {
            p.add(
                "daemon.trace_max_bytes",
                format!(
                    "must be between {MIN_TRACE_BYTES} and {MAX_TRACE_BYTES} (got {})",
                    d.trace_max_bytes
                ),
            );
        }
        let (lease, deadline) = (d.lease_duration(), d.renew_deadline());
        if d.leader.lease_duration.is_some() && (lease.is_zero() || lease > MAX_LEASE_DURATION) {
            p.add(
                "daemon.leader.lease_duration",
                format!(
                    "must be greater than 0 and at most {}",
                    fmt_duration(MAX_LEASE_DURATION)
                ),
            );
        } else if deadline >= lease {
            p.add(
                "daemon.leader.renew_deadline",
                format!(
                    "must be below daemon.leader.lease_duration ({} is not below {}): the \
                     leader must stop writing before anyone may take its Lease over",
                    fmt_duration(deadline),
                    fmt_duration(lease)
                ),
            );
        } else if deadline <= d.probe_interval {
            p.add(
                "daemon.leader.renew_deadline",
                format!(
                    "must be above daemon.probe_interval ({} is not above {}): the leader \
                     acts at its ticks, within its term",
                    fmt_duration(deadline),
                    fmt_duration(d.probe_interval)
                ),
            );
        }
        self.notify.problems(&mut p);
        if let Some(env0) = &self.env0 {
            env0.problems(&mut p);
        }
        if self.groups.is_empty() {
            p.add("groups", "at least one [[groups]] entry is required");
        }

        let labels = self.group_labels();
        for (i, group) in self.groups.iter().enumerate() {
            let g = &labels[i];
            if !is_dns_label(&group.name) {
                p.add(
                    format!("{g}.name"),
                    format!(
                        "{} is not a DNS label (lower-case letters, digits and '-', starting and \
                         ending with a letter or digit, at most 63 characters): it names the \
                         ConfigMap kube-failover-<name> and metric labels",
                        shown(&group.name)
                    ),
                );
            }
            if let Some(j) = self.groups[..i].iter().position(|o| o.name == group.name) {
                p.add(
                    format!("{g}.name"),
                    format!(
                        "duplicate group name {} (also groups[{j}])",
                        shown(&group.name)
                    ),
                );
            }
            self.group_problems(group, g, &mut p);
        }

        self.coordination_problems(&labels, &mut p);

        // Two groups sharing a record would overwrite each other's failover state.
        for (i, group) in self.groups.iter().enumerate() {
            if let Some(j) = self.groups[..i].iter().position(|o| {
                same_cluster(&o.standby, &group.standby) && o.record_name() == group.record_name()
            }) {
                p.add(
                    format!("{}.record_name", labels[i]),
                    format!(
                        "record {} in the same standby namespace as {} (each group needs its own)",
                        shown(&group.record_name()),
                        labels[j]
                    ),
                );
            }
        }
        p.0
    }

    /// `coordination.namespace`: a namespace name when set; required when the groups'
    /// standby namespaces differ, so that an instance keeps one observer Lease per
    /// standby cluster, not one per namespace.
    fn coordination_problems(&self, labels: &[String], p: &mut Problems) {
        const KEY: &str = "coordination.namespace";
        match self.coordination.namespace.as_deref() {
            Some(ns) if !is_dns_label(ns) => p.add(
                KEY,
                format!(
                    "{} is not a valid namespace name (a DNS label): it is the namespace of \
                     each standby cluster where the instances keep their Leases",
                    shown(ns)
                ),
            ),
            Some(_) => {}
            None => {
                let Some(first) = self.groups.first() else {
                    return;
                };
                if let Some(i) = self
                    .groups
                    .iter()
                    .position(|g| g.standby.namespace != first.standby.namespace)
                {
                    p.add(
                        KEY,
                        format!(
                            "is required when the groups' standby namespaces differ ({} in {}, \
                             {} in {}): name one namespace, present on every standby cluster, \
                             where the instances keep their Leases (one observer Lease per \
                             instance and cluster, one leader Lease per group)",
                            labels[0],
                            shown(&first.standby.namespace),
                            labels[i],
                            shown(&self.groups[i].standby.namespace)
                        ),
                    );
                }
            }
        }
    }

    fn group_problems(&self, group: &GroupConfig, g: &str, p: &mut Problems) {
        for (role, cluster) in [("primary", &group.primary), ("standby", &group.standby)] {
            if !is_dns_label(&cluster.namespace) {
                p.add(
                    format!("{g}.{role}.namespace"),
                    format!(
                        "{} is not a valid namespace name (a DNS label)",
                        shown(&cluster.namespace)
                    ),
                );
            }
            if cluster
                .kubeconfig
                .as_ref()
                .is_some_and(|k| k.as_os_str().is_empty())
            {
                p.add(
                    format!("{g}.{role}.kubeconfig"),
                    "must not be empty (leave it out, with context, for in-cluster credentials)",
                );
            }
            if cluster.context.as_deref().is_some_and(str::is_empty) {
                p.add(format!("{g}.{role}.context"), "must not be empty");
            }
        }
        for (side, n) in [
            ("primary", group.guards.primary),
            ("standby", group.guards.standby),
        ] {
            if n > super::GuardsConfig::MAX {
                p.add(
                    format!("{g}.guards.{side}"),
                    format!(
                        "is {n}: one guard runs beside each agent Pod; at most {}",
                        super::GuardsConfig::MAX
                    ),
                );
            }
        }
        if same_cluster(&group.primary, &group.standby) {
            p.add(
                format!("{g}.standby"),
                format!(
                    "is the same cluster and namespace as {g}.primary ({}): a group needs two places",
                    describe_cluster(&group.primary)
                ),
            );
        }
        if let Some(mirror) = &group.state.mirror {
            for (key, message) in mirror.problems() {
                p.add(format!("{g}.state.mirror.{key}"), message);
            }
        }
        if let Some(record) = &group.record_name
            && !is_dns_subdomain(record)
        {
            p.add(
                format!("{g}.record_name"),
                format!(
                    "{} is not a valid ConfigMap name (a DNS subdomain)",
                    shown(record)
                ),
            );
        }

        if group.workloads.is_empty() {
            p.add(
                format!("{g}.workloads"),
                "at least one workload is required",
            );
        }
        for (i, w) in group.workloads.iter().enumerate() {
            let key = format!("{g}.workloads[{i}]");
            match (&w.name, &w.selector) {
                (Some(_), Some(_)) => {
                    p.add(&key, "set exactly one of `name` and `selector`, not both")
                }
                (None, None) => p.add(&key, "set exactly one of `name` and `selector`"),
                (Some(name), None) if !is_dns_subdomain(name) => p.add(
                    format!("{key}.name"),
                    format!(
                        "{} is not a valid Deployment name (a DNS subdomain)",
                        shown(name)
                    ),
                ),
                (None, Some(selector)) => {
                    if let Err(why) = check_label_selector(selector) {
                        p.add(
                            format!("{key}.selector"),
                            format!("{} is not a label selector: {why}", shown(selector)),
                        );
                    }
                }
                _ => {}
            }
            if w.replicas < 1 {
                p.add(
                    format!("{key}.replicas"),
                    format!("must be at least 1 (got {})", w.replicas),
                );
            }
            if let Some(j) = group.workloads[..i]
                .iter()
                .position(|o| o.signal_name() == w.signal_name())
            {
                p.add(&key, format!("selects the same as {g}.workloads[{j}]"));
            }
        }

        let interval = self.daemon.probe_interval;
        for (i, check) in group.http_checks.iter().enumerate() {
            let key = format!("{g}.http_checks[{i}]");
            if check.name.trim().is_empty() {
                p.add(format!("{key}.name"), "must not be empty");
            } else if let Some(j) = group.http_checks[..i]
                .iter()
                .position(|o| o.name == check.name)
            {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "duplicate check name {} (also {g}.http_checks[{j}])",
                        shown(&check.name)
                    ),
                );
            }
            if let Err(why) = check_url(&check.url) {
                p.add(
                    format!("{key}.url"),
                    format!("{}: {why}", shown(&check.url)),
                );
            }
            if !(100..=599).contains(&check.expected_status) {
                p.add(
                    format!("{key}.expected_status"),
                    format!(
                        "must be an HTTP status in 100..=599 (got {})",
                        check.expected_status
                    ),
                );
            }
            if let Some(timeout) = check.timeout {
                if timeout.is_zero() {
                    p.add(format!("{key}.timeout"), "must be greater than 0");
                } else if timeout > MAX_PROBE_INTERVAL {
                    p.at_most(format!("{key}.timeout"), timeout, MAX_PROBE_INTERVAL);
                } else if timeout >= interval {
                    p.add(
                        format!("{key}.timeout"),
                        format!(
                            "must be below daemon.probe_interval ({} is not below {})",
                            fmt_duration(timeout),
                            fmt_duration(interval)
                        ),
                    );
                }
            }
        }

        group.state.problems(g, interval, p);

        let policy = &group.policy;
        let pk = format!("{g}.policy");
        if policy.failure_threshold < 1 {
            p.add(
                format!("{pk}.failure_threshold"),
                "must be at least 1 (got 0)",
            );
        }
        if policy.success_threshold < 1 {
            p.add(
                format!("{pk}.success_threshold"),
                "must be at least 1 (got 0)",
            );
        }
        // The API signal, one per workload, one per HTTP check.
        let signals = 1 + group.workloads.len() + group.http_checks.len();
        if policy.quorum < 1 {
            p.add(format!("{pk}.quorum"), "must be at least 1 (got 0)");
        } else if policy.quorum as usize > signals {
            p.add(
                format!("{pk}.quorum"),
                format!(
                    "{} is more than the {signals} primary signal(s) (the API, {} workload(s), {} HTTP check(s)): the primary could never be down",
                    policy.quorum,
                    group.workloads.len(),
                    group.http_checks.len()
                ),
            );
        }
        for (name, value, max) in [
            ("cooldown", policy.cooldown, MAX_COOLDOWN),
            (
                "promotion_timeout",
                policy.promotion_timeout,
                MAX_PROMOTION_TIMEOUT,
            ),
            ("freeze_for", policy.freeze_for, MAX_FREEZE_FOR),
        ] {
            if value.is_zero() {
                p.add(format!("{pk}.{name}"), "must be greater than 0");
            }
            p.at_most(format!("{pk}.{name}"), value, max);
        }
        p.at_most(
            format!("{pk}.startup_grace"),
            policy.startup_grace,
            MAX_STARTUP_GRACE,
        );
        let observers = &policy.observers;
        let ok = format!("{pk}.observers");
        if observers.quorum < 1 {
            p.add(format!("{ok}.quorum"), "must be at least 1 (got 0)");
        }
        match observers.expected {
            Some(0) => p.add(format!("{ok}.expected"), "must be at least 1 (got 0)"),
            Some(expected) if observers.quorum > expected => p.add(
                format!("{ok}.quorum"),
                format!(
                    "{} is more than {ok}.expected ({expected}): the instances could never \
                     agree",
                    observers.quorum
                ),
            ),
            _ => {}
        }
        if let Some(ttl) = observers.ttl {
            if ttl <= self.daemon.probe_interval {
                p.add(
                    format!("{ok}.ttl"),
                    format!(
                        "must be above daemon.probe_interval ({} is not above {}): the \
                         others read a verdict at their ticks",
                        fmt_duration(ttl),
                        fmt_duration(self.daemon.probe_interval)
                    ),
                );
            }
            p.at_most(format!("{ok}.ttl"), ttl, MAX_LEASE_DURATION);
        }
    }

    /// Reads each kubeconfig and checks its context; `known` are the offline problems,
    /// so a same-cluster finding is not reported twice.
    fn kubeconfig_problems(&self, known: &[Problem]) -> Vec<Problem> {
        use crate::error_chain::chain;
        use crate::kube::kubeconfig::{KubeconfigProblem, resolve};

        let mut p = Problems::default();
        for (group, g) in self.groups.iter().zip(self.group_labels()) {
            let mut servers = Vec::new();
            for (role, cluster) in [("primary", &group.primary), ("standby", &group.standby)] {
                match resolve(cluster.kubeconfig.as_deref(), cluster.context.as_deref()) {
                    Ok(resolved) => servers.push(resolved.and_then(|r| r.server)),
                    Err(problem) => {
                        let field = match problem {
                            KubeconfigProblem::Read { .. }
                            | KubeconfigProblem::Parse { .. }
                            | KubeconfigProblem::Load { .. } => "kubeconfig",
                            KubeconfigProblem::ContextNotFound { .. }
                            | KubeconfigProblem::NoCurrentContext { .. }
                            | KubeconfigProblem::ClusterNotFound { .. } => "context",
                        };
                        p.add(format!("{g}.{role}.{field}"), chain(&problem).to_string());
                    }
                }
            }
            let standby_key = format!("{g}.standby");
            if let [Some(Some(primary)), Some(Some(standby))] = [servers.first(), servers.get(1)]
                && primary == standby
                && group.primary.namespace == group.standby.namespace
                && !known.iter().any(|k| k.key == standby_key)
            {
                p.add(
                    standby_key,
                    format!(
                        "its kubeconfig points at the same API server ({standby}) and namespace \
                         ({}) as {g}.primary: a group needs two places",
                        group.standby.namespace
                    ),
                );
            }
        }
        p.0
    }
}

fn into_result(problems: Vec<Problem>) -> Result<(), ConfigError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            file: None,
            problems,
        })
    }
}

/// The problems found so far, each naming its key.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    /// Adds a problem when `value` is above `max`.
    pub(super) fn at_most(&mut self, key: impl Into<String>, value: Duration, max: Duration) {
        if value > max {
            self.add(
                key,
                format!(
                    "must be at most {} (got {})",
                    fmt_duration(max),
                    fmt_duration(value)
                ),
            );
        }
    }

    /// Adds a problem; the message is bounded (it may quote the user's text).
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: printable(&message.into(), MAX_MESSAGE_CHARS),
        });
    }
}

pub(super) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Same kubeconfig file (by canonical path when it exists) and context, or both
/// in-cluster, and the same namespace.
fn same_cluster(a: &ClusterConfig, b: &ClusterConfig) -> bool {
    let canonical = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
    };
    a.namespace == b.namespace
        && a.context == b.context
        && canonical(&a.kubeconfig) == canonical(&b.kubeconfig)
}

fn describe_cluster(c: &ClusterConfig) -> String {
    match (&c.kubeconfig, &c.context) {
        (None, None) => format!("in-cluster, namespace {}", c.namespace),
        (k, ctx) => format!(
            "kubeconfig {}, context {}, namespace {}",
            k.as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_else(|| "default".to_string()),
            ctx.as_deref().unwrap_or("(current)"),
            c.namespace
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyConfig;
    use crate::config::tests::{Fixture, KUBECONFIG, only_problem, problems};
    use std::path::Path;

    // --- validation ---------------------------------------------------------------

    #[test]
    fn at_least_one_group() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups.clear();
        only_problem(&cfg, "groups");
    }

    #[test]
    fn duplicate_group_names() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let mut second = cfg.groups[0].clone();
        second.record_name = Some("other-record".into());
        cfg.groups.push(second);
        let msg = only_problem(&cfg, "groups[1].name");
        assert!(msg.contains("duplicate group name \"env0\""), "{msg}");
    }

    #[test]
    fn coordination_namespace_is_a_namespace_and_required_across_namespaces() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let mut second = cfg.groups[0].clone();
        second.name = "env1".into();
        second.standby.namespace = "env1-agent".into();
        cfg.groups.push(second);
        let msg = only_problem(&cfg, "coordination.namespace");
        assert!(
            msg.contains("is required when the groups' standby namespaces differ"),
            "{msg}"
        );
        assert!(msg.contains("groups[env1] in \"env1-agent\""), "{msg}");
        cfg.coordination.namespace = Some("kube-failover".into());
        cfg.validate().expect("one coordination namespace for both");
        assert_eq!(cfg.coordination_namespace(&cfg.groups[1]), "kube-failover");
        cfg.coordination.namespace = Some("Kube_Failover".into());
        let msg = only_problem(&cfg, "coordination.namespace");
        assert!(msg.contains("not a valid namespace name"), "{msg}");
        // One standby namespace: it is the default.
        let cfg = f.good();
        assert_eq!(
            cfg.coordination_namespace(&cfg.groups[0]),
            cfg.groups[0].standby.namespace
        );
    }

    #[test]
    fn group_name_must_be_a_dns_label() {
        let f = Fixture::new();
        for bad in ["Env0", "env_0", "-env0", "", &"a".repeat(64)] {
            let mut cfg = f.good();
            cfg.groups[0].name = bad.to_string();
            let msg = only_problem(&cfg, "groups[0].name");
            assert!(msg.contains("not a DNS label"), "{msg}");
        }
    }

    #[test]
    fn thresholds_must_be_at_least_one() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].policy.failure_threshold = 0;
        only_problem(&cfg, "groups[env0].policy.failure_threshold");
        let mut cfg = f.good();
        cfg.groups[0].policy.success_threshold = 0;
        only_problem(&cfg, "groups[env0].policy.success_threshold");
    }

    #[test]
    fn quorum_between_one_and_the_number_of_signals() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].policy.quorum = 0;
        only_problem(&cfg, "groups[env0].policy.quorum");
        // API + 2 workloads + 1 HTTP check = 4 signals.
        let mut cfg = f.good();
        cfg.groups[0].policy.quorum = 4;
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.groups[0].policy.quorum = 5;
        let msg = only_problem(&cfg, "groups[env0].policy.quorum");
        assert!(msg.contains("more than the 4 primary signal(s)"), "{msg}");
    }

    #[test]
    fn observer_quorum_and_leader_timing_are_checked_naming_the_key() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let obs = &mut cfg.groups[0].policy.observers;
        obs.quorum = 2;
        obs.expected = Some(3);
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.groups[0].policy.observers.quorum = 4;
        let msg = only_problem(&cfg, "groups[env0].policy.observers.quorum");
        assert!(
            msg.contains("more than groups[env0].policy.observers.expected (3)"),
            "{msg}"
        );
        cfg.groups[0].policy.observers.quorum = 0;
        only_problem(&cfg, "groups[env0].policy.observers.quorum");
        cfg.groups[0].policy.observers.quorum = 1;
        cfg.groups[0].policy.observers.expected = Some(0);
        only_problem(&cfg, "groups[env0].policy.observers.expected");
        cfg.groups[0].policy.observers.expected = None;
        cfg.groups[0].policy.observers.ttl = Some(cfg.daemon.probe_interval);
        only_problem(&cfg, "groups[env0].policy.observers.ttl");
        cfg.groups[0].policy.observers.ttl = None;

        // Defaults: 3 intervals (at least 3s), deadline two thirds of it.
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.daemon.leader.lease_duration = Some(Duration::from_secs(30));
        cfg.daemon.leader.renew_deadline = Some(Duration::from_secs(30));
        let msg = only_problem(&cfg, "daemon.leader.renew_deadline");
        assert!(
            msg.starts_with("must be below daemon.leader.lease_duration"),
            "{msg}"
        );
        cfg.daemon.leader.renew_deadline = Some(cfg.daemon.probe_interval);
        let msg = only_problem(&cfg, "daemon.leader.renew_deadline");
        assert!(
            msg.starts_with("must be above daemon.probe_interval"),
            "{msg}"
        );
        cfg.daemon.leader.renew_deadline = None;
        cfg.daemon.leader.lease_duration = Some(Duration::ZERO);
        only_problem(&cfg, "daemon.leader.lease_duration");
    }

    #[test]
    fn trace_file_and_its_size_bound_are_checked_naming_the_key() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.trace_file = Some("trace.jsonl".into());
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.daemon.trace_file = Some("".into());
        only_problem(&cfg, "daemon.trace_file");
        cfg.daemon.trace_file = Some("traces/..".into());
        only_problem(&cfg, "daemon.trace_file");
        cfg.daemon.trace_file = None;
        cfg.daemon.trace_max_bytes = 1000;
        let msg = only_problem(&cfg, "daemon.trace_max_bytes");
        assert!(msg.contains("(got 1000)"), "{msg}");
        cfg.daemon.trace_max_bytes = MAX_TRACE_BYTES + 1;
        only_problem(&cfg, "daemon.trace_max_bytes");
    }

    #[test]
    fn watch_timeout_unset_or_between_one_second_and_an_hour() {
        let f = Fixture::new();
        let mut cfg = f.good();
        assert_eq!(cfg.daemon.watch_timeout, None);
        cfg.daemon.watch_timeout = Some(Duration::from_millis(500));
        let msg = only_problem(&cfg, "daemon.watch_timeout");
        assert!(msg.contains("at least 1s"), "{msg}");
        cfg.daemon.watch_timeout = Some(Duration::from_secs(3601));
        only_problem(&cfg, "daemon.watch_timeout");
        cfg.daemon.watch_timeout = Some(Duration::from_secs(3600));
        assert!(problems(&cfg).is_empty());
    }

    #[test]
    fn probe_interval_positive_and_timeout_below_it() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.probe_timeout = Duration::from_secs(2);
        let msg = only_problem(&cfg, "daemon.probe_timeout");
        assert!(msg.contains("2s is not below 2s"), "{msg}");
        let mut cfg = f.good();
        cfg.daemon.probe_timeout = Duration::ZERO;
        only_problem(&cfg, "daemon.probe_timeout");
        let mut cfg = f.good();
        cfg.daemon.probe_interval = Duration::ZERO;
        let all = problems(&cfg);
        assert!(
            all.iter()
                .any(|p| p.starts_with("daemon.probe_interval: must be greater than 0")),
            "{all:?}"
        );
    }

    #[test]
    fn identity_is_short_and_printable() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.identity = Some("w".repeat(MAX_IDENTITY_CHARS));
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.daemon.identity = Some("w".repeat(MAX_IDENTITY_CHARS + 1));
        let msg = only_problem(&cfg, "daemon.identity");
        assert!(
            msg.starts_with("must be at most 128 characters (got 129)"),
            "{msg}"
        );
        cfg.daemon.identity = Some("watcher\n1".into());
        let msg = only_problem(&cfg, "daemon.identity");
        assert!(
            msg.starts_with("\"watcher\\n1\" contains control characters"),
            "{msg}"
        );
        cfg.daemon.identity = Some(" ".into());
        only_problem(&cfg, "daemon.identity");
    }

    #[test]
    fn durations_have_upper_bounds_naming_the_key() {
        let f = Fixture::new();
        let over = |max: Duration| max + Duration::from_secs(1);
        type Set = fn(&mut Config, Duration);
        let cases: [(&str, Set, Duration); 8] = [
            (
                "daemon.probe_interval",
                |c, d| c.daemon.probe_interval = d,
                MAX_PROBE_INTERVAL,
            ),
            (
                "daemon.probe_timeout",
                |c, d| c.daemon.probe_timeout = d,
                MAX_PROBE_INTERVAL,
            ),
            (
                "daemon.shutdown_timeout",
                |c, d| c.daemon.shutdown_timeout = d,
                MAX_SHUTDOWN_TIMEOUT,
            ),
            (
                "groups[env0].policy.cooldown",
                |c, d| c.groups[0].policy.cooldown = d,
                MAX_COOLDOWN,
            ),
            (
                "groups[env0].policy.startup_grace",
                |c, d| c.groups[0].policy.startup_grace = d,
                MAX_STARTUP_GRACE,
            ),
            (
                "groups[env0].policy.promotion_timeout",
                |c, d| c.groups[0].policy.promotion_timeout = d,
                MAX_PROMOTION_TIMEOUT,
            ),
            (
                "groups[env0].policy.freeze_for",
                |c, d| c.groups[0].policy.freeze_for = d,
                MAX_FREEZE_FOR,
            ),
            (
                "groups[env0].http_checks[0].timeout",
                |c, d| c.groups[0].http_checks[0].timeout = Some(d),
                MAX_PROBE_INTERVAL,
            ),
        ];
        for (key, set, max) in cases {
            let mut cfg = f.good();
            // The largest value a duration can hold is refused, not overflowed.
            for value in [over(max), Duration::MAX] {
                set(&mut cfg, value);
                let problems = problems(&cfg);
                let expected = format!(
                    "{key}: must be at most {} (got {})",
                    fmt_duration(max),
                    fmt_duration(value)
                );
                assert!(problems.contains(&expected), "{expected} in {problems:?}");
            }
            // The bound itself is allowed (the probe timeout must also stay below the
            // interval, so raise the interval with it).
            let mut cfg = f.good();
            cfg.daemon.probe_interval = MAX_PROBE_INTERVAL;
            set(&mut cfg, max);
            if key != "daemon.probe_interval" && max == MAX_PROBE_INTERVAL {
                set(&mut cfg, max - Duration::from_secs(1));
            }
            assert_eq!(problems(&cfg), Vec::<String>::new(), "{key}");
        }
    }

    #[test]
    fn cooldown_promotion_timeout_and_freeze_must_be_positive() {
        let f = Fixture::new();
        for (field, set) in [
            (
                "cooldown",
                (|p: &mut PolicyConfig| p.cooldown = Duration::ZERO) as fn(&mut PolicyConfig),
            ),
            ("promotion_timeout", |p| {
                p.promotion_timeout = Duration::ZERO
            }),
            ("freeze_for", |p| p.freeze_for = Duration::ZERO),
        ] {
            let mut cfg = f.good();
            set(&mut cfg.groups[0].policy);
            only_problem(&cfg, &format!("groups[env0].policy.{field}"));
        }
    }

    #[test]
    fn workloads_need_exactly_one_of_name_and_selector() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].workloads[0].name = Some("env0-agent-trigger-deployment".into());
        let msg = only_problem(&cfg, "groups[env0].workloads[0]");
        assert!(msg.contains("not both"), "{msg}");
        let mut cfg = f.good();
        cfg.groups[0].workloads[0].selector = None;
        only_problem(&cfg, "groups[env0].workloads[0]");
        let mut cfg = f.good();
        cfg.groups[0].workloads[0].selector = None;
        cfg.groups[0].workloads[0].name = Some("Not_A_Name".into());
        only_problem(&cfg, "groups[env0].workloads[0].name");
    }

    #[test]
    fn at_least_one_workload_and_no_duplicates() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].workloads.clear();
        cfg.groups[0].policy.quorum = 1;
        only_problem(&cfg, "groups[env0].workloads");
        let mut cfg = f.good();
        cfg.groups[0].workloads[1].selector = cfg.groups[0].workloads[0].selector.clone();
        only_problem(&cfg, "groups[env0].workloads[1]");
    }

    #[test]
    fn selector_garbage_is_rejected() {
        let f = Fixture::new();
        for bad in [
            "",
            "env0=agent trigger",
            "env0 is agent",
            "=x",
            "env0 in (a",
            "env0 in ()",
            "a=b,,c=d",
            "env0=-x",
            "-k=v",
        ] {
            let mut cfg = f.good();
            cfg.groups[0].workloads[0].selector = Some(bad.to_string());
            let msg = only_problem(&cfg, "groups[env0].workloads[0].selector");
            assert!(msg.contains("is not a label selector"), "{bad}: {msg}");
        }
    }

    #[test]
    fn replicas_must_be_at_least_one() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].workloads[1].replicas = 0;
        only_problem(&cfg, "groups[env0].workloads[1].replicas");
    }

    #[test]
    fn guards_are_bounded_naming_the_side() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].guards.primary = 2;
        assert!(cfg.validate_offline().is_ok());
        cfg.groups[0].guards.standby = 101;
        only_problem(&cfg, "groups[env0].guards.standby");
    }

    #[test]
    fn http_check_url_must_be_absolute_http() {
        let f = Fixture::new();
        for bad in ["/healthz", "ftp://example/x", "http://", "not a url"] {
            let mut cfg = f.good();
            cfg.groups[0].http_checks[0].url = bad.to_string();
            only_problem(&cfg, "groups[env0].http_checks[0].url");
        }
    }

    #[test]
    fn http_check_status_names_and_timeout() {
        let f = Fixture::new();
        for status in [0, 99, 600] {
            let mut cfg = f.good();
            cfg.groups[0].http_checks[0].expected_status = status;
            only_problem(&cfg, "groups[env0].http_checks[0].expected_status");
        }
        let mut cfg = f.good();
        let dup = cfg.groups[0].http_checks[0].clone();
        cfg.groups[0].http_checks.push(dup);
        let msg = only_problem(&cfg, "groups[env0].http_checks[1].name");
        assert!(msg.contains("duplicate"), "{msg}");
        let mut cfg = f.good();
        cfg.groups[0].http_checks[0].timeout = Some(Duration::from_secs(2));
        only_problem(&cfg, "groups[env0].http_checks[0].timeout");
    }

    #[test]
    fn same_cluster_and_namespace_on_both_sides() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("primary".into());
        let msg = only_problem(&cfg, "groups[env0].standby");
        assert!(msg.contains("same cluster and namespace"), "{msg}");
        // Both in-cluster in one namespace.
        let mut cfg = f.good();
        let group = &mut cfg.groups[0];
        for c in [&mut group.primary, &mut group.standby] {
            c.kubeconfig = None;
            c.context = None;
        }
        let all = cfg.validate_offline().unwrap_err();
        assert_eq!(all.problems().len(), 1, "{all}");
        assert_eq!(all.problems()[0].key, "groups[env0].standby");
        // Same cluster, other namespace: allowed.
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("primary".into());
        cfg.groups[0].standby.namespace = "env0-agent-standby".into();
        assert_eq!(problems(&cfg), Vec::<String>::new());
    }

    #[test]
    fn another_context_for_the_same_server_is_the_same_cluster() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("standby-alias".into());
        let msg = only_problem(&cfg, "groups[env0].standby");
        assert!(msg.contains("https://127.0.0.1:6443"), "{msg}");
    }

    #[test]
    fn namespace_must_be_a_dns_label() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].primary.namespace = "Env0_Agent".into();
        only_problem(&cfg, "groups[env0].primary.namespace");
    }

    #[test]
    fn unreadable_kubeconfig_names_the_file() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let absent = f.dir.path().join("absent.kubeconfig");
        cfg.groups[0].standby.kubeconfig = Some(absent.clone());
        let msg = only_problem(&cfg, "groups[env0].standby.kubeconfig");
        assert!(msg.contains(&absent.display().to_string()), "{msg}");
        // Offline validation does not read it.
        assert!(cfg.validate_offline().is_ok());
    }

    #[test]
    fn missing_context_names_the_context_and_the_file() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("dr".into());
        let msg = only_problem(&cfg, "groups[env0].standby.context");
        assert!(msg.contains("\"dr\""), "{msg}");
        assert!(msg.contains(&f.kubeconfig.display().to_string()), "{msg}");
    }

    #[test]
    fn without_context_the_current_context_must_exist() {
        let f = Fixture::new();
        let no_current = f.dir.path().join("no-current.kubeconfig");
        std::fs::write(
            &no_current,
            KUBECONFIG.replace("current-context: primary\n", ""),
        )
        .unwrap();
        let mut cfg = f.good();
        cfg.groups[0].standby.kubeconfig = Some(no_current);
        cfg.groups[0].standby.context = None;
        let msg = only_problem(&cfg, "groups[env0].standby.context");
        assert!(msg.contains("current-context"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.probe_timeout = Duration::from_secs(9);
        cfg.groups[0].policy.failure_threshold = 0;
        cfg.groups[0].workloads[0].replicas = 0;
        cfg.groups[0].standby.context = Some("dr".into());
        let err = cfg
            .validate()
            .unwrap_err()
            .with_file(Path::new("config.toml"));
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "daemon.probe_timeout",
                "groups[env0].workloads[0].replicas",
                "groups[env0].policy.failure_threshold",
                "groups[env0].standby.context",
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "config.toml: invalid configuration (4 problems):\n  daemon.probe_timeout: "
            ),
            "{text}"
        );
    }
}
