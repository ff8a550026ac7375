//! The state checks' metrics, registered with the daemon's other metrics. Labels are
//! bounded: check names come from the config, results from a closed enum, drift fields
//! from a closed list and drift Deployments from the groups' selections.

use crate::metric_registry::{GaugeFamily, IntCounterFamily, IntGaugeFamily};
use crate::status::DriftStatus;
use kube_failover_core::checks::{CheckKind, StateCheck};
use prometheus::Opts;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("kube_failover")
}

/// `(deployment, field)` of a drift series.
type DriftSeries = BTreeSet<(String, String)>;

/// Per group and check: pass, failures by result, when checked, the freshness age; per
/// group, Deployment and field: drift.
#[derive(Clone)]
pub struct StateMetrics {
    check_ok: IntGaugeFamily,
    check_failures: IntCounterFamily,
    check_timestamp: GaugeFamily,
    freshness_age: GaugeFamily,
    drift: IntGaugeFamily,
    drift_primary_seen: GaugeFamily,
    /// The drift series set so far per group, to put them back to 0 when cleared.
    drift_series: Arc<Mutex<HashMap<String, DriftSeries>>>,
}

impl StateMetrics {
    /// Creates and registers them.
    pub fn new(
        registry: &crate::metric_registry::MetricRegistry,
    ) -> Result<Self, prometheus::Error> {
        let m = StateMetrics {
            check_ok: IntGaugeFamily::new(
                opts(
                    "state_check_ok",
                    "1 if the state check passed at the last tick, else 0 (failed or could not be answered).",
                ),
                &["group", "check", "gate"],
            )?,
            check_failures: IntCounterFamily::new(
                opts(
                    "state_check_failures_total",
                    "Ticks in which a state check failed, by result (unreachable, http_status, missing, unbound, stale, drift, forbidden, not_installed, unanswerable).",
                ),
                &["group", "check", "result"],
            )?,
            check_timestamp: GaugeFamily::new(
                opts(
                    "state_check_timestamp_seconds",
                    "Unix time of the answer a state check last judged.",
                ),
                &["group", "check"],
            )?,
            freshness_age: GaugeFamily::new(
                opts(
                    "state_freshness_age_seconds",
                    "Age of the timestamp a freshness check reads (the daemon's clock minus the timestamp).",
                ),
                &["group", "check"],
            )?,
            drift: IntGaugeFamily::new(
                opts(
                    "drift",
                    "1 while a field of a standby Deployment differs from its primary twin (image, image_id, env, env_from, volumes, configmap_data, secret_data, resources, containers, deployment), else 0.",
                ),
                &["group", "deployment", "field"],
            )?,
            drift_primary_seen: GaugeFamily::new(
                opts(
                    "drift_primary_seen_timestamp_seconds",
                    "Unix time the primary's Deployments were last read while it was healthy: drift compares the standby with that reading.",
                ),
                &["group"],
            )?,
            drift_series: Arc::default(),
        };
        registry.register(m.check_ok.clone())?;
        registry.register(m.check_failures.clone())?;
        registry.register(m.check_timestamp.clone())?;
        registry.register(m.freshness_age.clone())?;
        registry.register(m.drift.clone())?;
        registry.register(m.drift_primary_seen.clone())?;
        Ok(m)
    }

    /// One tick's state checks of `group`, the ages of its freshness checks and its
    /// drift.
    pub fn observe(
        &self,
        group: &str,
        checks: &[StateCheck],
        ages: &[(String, Option<f64>)],
        drift: Option<&DriftStatus>,
    ) {
        for c in checks {
            self.check_ok
                .with_label_values(&[group, &c.name, c.gate.as_str()])
                .set(i64::from(c.passed()));
            if !c.passed() {
                self.check_failures
                    .with_label_values(&[group, &c.name, c.result.as_str()])
                    .inc();
            }
            // Drift checks have their own time: when the primary was last read healthy.
            if let Some(at) = c.checked_at_unix.filter(|_| c.kind != CheckKind::Drift) {
                self.check_timestamp
                    .with_label_values(&[group, &c.name])
                    .set(at);
            }
        }
        for (check, age) in ages {
            if let Some(age) = age {
                self.freshness_age
                    .with_label_values(&[group, check])
                    .set(*age);
            }
        }
        let Some(drift) = drift else { return };
        if let Some(at) = drift.primary_seen_unix {
            self.drift_primary_seen.with_label_values(&[group]).set(at);
        }
        let now: DriftSeries = drift
            .items
            .iter()
            .map(|i| (i.deployment.clone(), i.field.clone()))
            .collect();
        let mut series = self.drift_series.lock().unwrap_or_else(|e| e.into_inner());
        let seen = series.entry(group.to_string()).or_default();
        // A field's series appears when it first differs and stays (at 0) once the two
        // sides agree again: no series per Deployment while nothing drifts, which keeps
        // /metrics small with many groups.
        seen.extend(now.iter().cloned());
        for (deployment, field) in seen.iter() {
            self.drift
                .with_label_values(&[group, deployment, field])
                .set(i64::from(
                    now.contains(&(deployment.clone(), field.clone())),
                ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DriftItem;
    use kube_failover_core::checks::{CheckKind, CheckResult, Gate};

    fn text(r: &crate::metric_registry::MetricRegistry) -> String {
        String::from_utf8(r.encode()).unwrap()
    }

    #[test]
    fn checks_and_drift_become_bounded_series_that_clear_to_zero() {
        let r = crate::metric_registry::MetricRegistry::default();
        let m = StateMetrics::new(&r).unwrap();
        let check = |result| StateCheck {
            name: "volume".into(),
            kind: CheckKind::Volume,
            gate: Gate::Block,
            result,
            detail: String::new(),
            checked_at_unix: Some(12.5),
        };
        let item = |field: &str| DriftItem {
            deployment: "trigger".into(),
            container: Some("agent".into()),
            field: field.into(),
            key: None,
            primary: "a".into(),
            standby: "b".into(),
        };
        let mut drift = DriftStatus {
            gate: "warn".into(),
            primary_seen_unix: Some(10.0),
            standby_seen_unix: Some(12.0),
            deployments: vec!["trigger".into(), "proxy".into()],
            items: vec![item("image")],
            not_compared: vec![],
        };
        let drift_check = StateCheck {
            name: "drift:image".into(),
            kind: CheckKind::Drift,
            ..check(CheckResult::Drift)
        };
        m.observe(
            "env0",
            &[check(CheckResult::Unbound), drift_check],
            &[("freshness:volsync".into(), Some(42.0))],
            Some(&drift),
        );
        let t = text(&r);
        for line in [
            "kube_failover_state_check_ok{check=\"volume\",gate=\"block\",group=\"env0\"} 0",
            "kube_failover_state_check_failures_total{check=\"volume\",group=\"env0\",result=\"unbound\"} 1",
            "kube_failover_state_check_timestamp_seconds{check=\"volume\",group=\"env0\"} 12.5",
            "kube_failover_state_freshness_age_seconds{check=\"freshness:volsync\",group=\"env0\"} 42",
            "kube_failover_drift{deployment=\"trigger\",field=\"image\",group=\"env0\"} 1",
            "kube_failover_drift_primary_seen_timestamp_seconds{group=\"env0\"} 10",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
        assert!(
            !t.contains("kube_failover_state_check_timestamp_seconds{check=\"drift:image\""),
            "drift has its own time (drift_primary_seen):\n{t}"
        );
        assert!(
            !t.contains("deployment=\"proxy\""),
            "no series for a Deployment that never drifted:\n{t}"
        );
        drift.items = vec![item("env")];
        m.observe("env0", &[check(CheckResult::Ok)], &[], Some(&drift));
        let t = text(&r);
        for line in [
            "kube_failover_state_check_ok{check=\"volume\",gate=\"block\",group=\"env0\"} 1",
            "kube_failover_drift{deployment=\"trigger\",field=\"image\",group=\"env0\"} 0",
            "kube_failover_drift{deployment=\"trigger\",field=\"env\",group=\"env0\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
        }
    }
}
