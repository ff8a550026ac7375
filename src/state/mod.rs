//! Standby state checks, evaluated every tick: is the Terraform state there for the
//! standby (a remote backend reachable from the daemon's host, the state volume bound in
//! the standby namespace, a replication timestamp fresh), and would the standby run the
//! same agent (drift against the primary's Deployments)? The results go into the
//! standby's observation as [`StateCheck`]s, where the engine turns a failing `block`
//! check into an unfit standby and a failing `warn` check into a warning.
//!
//! Cost: a backend target is asked at most once per interval (shared by every group);
//! the volume, the freshness objects and the Deployments, Pods and ConfigMaps drift
//! compares are read from the clusters' watch caches (drift reads them again only when a
//! cache's version moved); Secrets drift hashes are read by name at most once a minute.

mod backend;
mod drift;
mod facts;
mod freshness;
mod metrics;
mod secrets;
mod volume;

pub use backend::BackendProber;
pub use metrics::StateMetrics;

use crate::config::{FreshnessConfig, GroupConfig, StateConfig, WorkloadConfig, printable};
use crate::kube::cluster::ClusterHandle;
use crate::kube::watch_cache::WatchStore;
use crate::model::{Observation, ProbeOutcome, ProbeReason};
use crate::status::DriftStatus;
use drift::{Drift, SideStores};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::DynamicObject;
use kube_failover_core::checks::{CheckResult, StateCheck};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest message of the Event that lists failing checks (Kubernetes cuts at 1 KiB).
const MAX_EVENT_CHARS: usize = 900;

/// The reason of an Event saying a promotion started while state checks failed.
pub const STATE_EVENT_REASON: &str = "KubeFailoverStateCheckFailing";

/// One freshness check and the watch of its object.
struct Freshness {
    config: FreshnessConfig,
    namespace: String,
    store: Arc<WatchStore<DynamicObject>>,
}

/// Drift and the caches of both sides.
struct DriftSides {
    drift: Drift,
    primary: SideStores,
    standby: SideStores,
    /// The Secrets each side's Deployments read, as last found.
    secret_names: Mutex<Option<Arc<SecretNames>>>,
}

/// The Secrets drift hashes on each side.
struct SecretNames {
    /// The versions of the two sides' Deployment caches they were found in.
    found_in: (u64, u64),
    primary: BTreeSet<String>,
    standby: BTreeSet<String>,
}

impl DriftSides {
    /// The Secrets each side's selected Deployments (and their twins') read; found again
    /// only when either side's Deployments changed.
    fn secret_names(&self, workloads: &[WorkloadConfig]) -> Arc<SecretNames> {
        let versions = (
            self.primary.deployments.version(),
            self.standby.deployments.version(),
        );
        let mut memo = self.secret_names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(names) = memo.as_ref()
            && names.found_in == versions
        {
            return names.clone();
        }
        let standby_names = self.standby.selected(workloads).unwrap_or_default();
        let primary_names = self.primary.selected(workloads).unwrap_or_default();
        let names = Arc::new(SecretNames {
            found_in: versions,
            primary: self.primary.secret_names(workloads, &standby_names),
            standby: self.standby.secret_names(workloads, &primary_names),
        });
        *memo = Some(names.clone());
        names
    }
}

/// The state checks of one group.
pub struct StateChecks {
    state: StateConfig,
    workloads: Vec<WorkloadConfig>,
    interval: Duration,
    timeout: Duration,
    primary: Arc<ClusterHandle>,
    standby: Arc<ClusterHandle>,
    primary_ns: String,
    standby_ns: String,
    pvcs: Option<Arc<WatchStore<PersistentVolumeClaim>>>,
    freshness: Vec<Freshness>,
    drift: Option<DriftSides>,
    ages: Vec<(String, Option<f64>)>,
}

/// A failing read of a cache as a check result: refused credentials or permissions are
/// `forbidden`, anything else `unanswerable`.
fn unanswered(reason: ProbeReason, what: &str, detail: &str) -> (CheckResult, String) {
    let result = match reason {
        ProbeReason::Forbidden | ProbeReason::Unauthorized => CheckResult::Forbidden,
        _ => CheckResult::Unanswerable,
    };
    (result, format!("{what}: {detail}"))
}

/// Why a cluster's caches cannot be trusted this tick, from its `/readyz` (as the
/// probes judge it): the API server could not be reached.
fn untrusted(api: &ProbeOutcome) -> Option<String> {
    matches!(
        api.reason,
        ProbeReason::Timeout | ProbeReason::Refused | ProbeReason::Connect | ProbeReason::Tls
    )
    .then(|| format!("the standby's API cannot be reached ({})", api.reason))
}

impl StateChecks {
    /// The checks of `group`; starts the watches they read (the state volume's
    /// namespace, each freshness object, and with drift the primary's ConfigMaps).
    pub fn new(
        group: &GroupConfig,
        interval: Duration,
        timeout: Duration,
        primary: &Arc<ClusterHandle>,
        standby: &Arc<ClusterHandle>,
    ) -> Self {
        let standby_ns = group.standby.namespace.clone();
        let primary_ns = group.primary.namespace.clone();
        let pvcs = group
            .state
            .volume
            .as_ref()
            .map(|_| standby.pvcs(&standby_ns));
        let freshness = group
            .state
            .freshness
            .iter()
            .map(|f| {
                let namespace = f.namespace.clone().unwrap_or_else(|| standby_ns.clone());
                let store = standby.object(&namespace, &freshness::api_resource(f), &f.object);
                Freshness {
                    config: f.clone(),
                    namespace,
                    store,
                }
            })
            .collect();
        let drift = group.drift.gate.image_gate().map(|gate| DriftSides {
            drift: Drift::new(gate),
            primary: SideStores {
                deployments: primary.deployments(&primary_ns),
                pods: primary.pods(&primary_ns),
                configmaps: primary.configmaps(&primary_ns),
            },
            standby: SideStores {
                deployments: standby.deployments(&standby_ns),
                pods: standby.pods(&standby_ns),
                configmaps: standby.configmaps(&standby_ns),
            },
            secret_names: Mutex::new(None),
        });
        StateChecks {
            state: group.state.clone(),
            workloads: group.workloads.clone(),
            interval,
            timeout,
            primary: primary.clone(),
            standby: standby.clone(),
            primary_ns,
            standby_ns,
            pvcs,
            freshness,
            drift,
            ages: Vec::new(),
        }
    }

    /// What takes time in a tick, concurrently with the probes: each backend's answer
    /// (the checks come back in config order), the Secret hashes drift compares when they
    /// are due, and at start-up the first list of the watches the checks read.
    pub async fn gather(&self, http: &reqwest::Client) -> Vec<StateCheck> {
        let prober = BackendProber::global();
        let backends = futures::future::join_all(
            self.state
                .backends
                .iter()
                .map(|b| prober.check(http, b, self.interval, self.timeout)),
        );
        let secrets = async {
            let Some(d) = &self.drift else { return };
            let names = d.secret_names(&self.workloads);
            tokio::join!(
                d.drift.primary_secrets.refresh(
                    self.primary.client(),
                    &self.primary_ns,
                    &names.primary,
                    self.timeout
                ),
                d.drift.standby_secrets.refresh(
                    self.standby.client(),
                    &self.standby_ns,
                    &names.standby,
                    self.timeout
                ),
            );
        };
        let started = async {
            let pvcs = async {
                if let Some(s) = &self.pvcs {
                    s.wait_started(self.timeout).await;
                }
            };
            let objects = futures::future::join_all(
                self.freshness
                    .iter()
                    .map(|f| f.store.wait_started(self.timeout)),
            );
            tokio::join!(pvcs, objects);
        };
        let (backends, _, _) = tokio::join!(backends, secrets, started);
        backends
    }

    /// Completes the tick's state checks in `obs` (after the backends [`Self::gather`]
    /// put there): the volume, each freshness object, and drift, judged at `wall_unix`.
    pub fn evaluate(&mut self, obs: &mut Observation, wall_unix: f64) {
        let untrusted = untrusted(&obs.standby.api);
        let untrusted = untrusted.as_deref();
        let checks = &mut obs.standby.state_checks;
        if let (Some(volume), Some(store)) = (&self.state.volume, &self.pvcs) {
            checks.push(volume::check(
                store,
                volume,
                &self.standby_ns,
                untrusted,
                wall_unix,
            ));
        }
        self.ages.clear();
        for f in &self.freshness {
            let (check, age) =
                freshness::check(&f.store, &f.config, &f.namespace, untrusted, wall_unix);
            self.ages.push((check.name.clone(), age));
            checks.push(check);
        }
        if let Some(d) = &mut self.drift {
            let primary_healthy = obs.primary.signals().all(|(_, o)| o.passed());
            checks.extend(d.drift.evaluate(
                &self.workloads,
                &d.primary,
                &d.standby,
                primary_healthy,
                untrusted,
                wall_unix,
            ));
        }
    }

    /// The last drift comparison (`None` when `[groups.drift] gate = "off"`).
    pub fn drift_status(&self) -> Option<DriftStatus> {
        self.drift.as_ref().map(|d| d.drift.status())
    }

    /// Publishes one tick's checks of `group`, with `drift` as [`Self::drift_status`]
    /// gave it this tick.
    pub fn report(
        &self,
        metrics: &StateMetrics,
        group: &str,
        obs: &Observation,
        drift: Option<&DriftStatus>,
    ) {
        metrics.observe(group, &obs.standby.state_checks, &self.ages, drift);
    }
}

/// The message of the Event recorded when a promotion of `group` starts while state
/// checks fail (they can only be `warn` ones then), listing each; `None` when none fails.
pub fn promotion_notice(group: &str, checks: &[StateCheck]) -> Option<String> {
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| {
            format!(
                "{} ({}, gate {}): {}",
                c.name,
                c.result.as_str(),
                c.gate.as_str(),
                c.detail
            )
        })
        .collect();
    if failing.is_empty() {
        return None;
    }
    Some(printable(
        &format!(
            "group {group}: promotion started while state checks fail: {}",
            failing.join("; ")
        ),
        MAX_EVENT_CHARS,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_failover_core::checks::{CheckKind, Gate};

    #[test]
    fn the_promotion_notice_lists_every_failing_check_bounded() {
        let check = |name: &str, result| StateCheck {
            name: name.into(),
            kind: CheckKind::Volume,
            gate: Gate::Warn,
            result,
            detail: "PersistentVolumeClaim ns/c is Pending, not Bound".into(),
            checked_at_unix: None,
        };
        assert_eq!(
            promotion_notice("env0", &[check("volume", CheckResult::Ok)]),
            None
        );
        let text = promotion_notice(
            "env0",
            &[
                check("volume", CheckResult::Unbound),
                check("backend:s3", CheckResult::Ok),
            ],
        )
        .unwrap();
        assert_eq!(
            text,
            "group env0: promotion started while state checks fail: volume (unbound, gate \
             warn): PersistentVolumeClaim ns/c is Pending, not Bound"
        );
        let many: Vec<StateCheck> = (0..50)
            .map(|i| check(&format!("c{i}"), CheckResult::Unbound))
            .collect();
        let long = promotion_notice("env0", &many).unwrap();
        assert!(long.chars().count() < 1000, "{}", long.len());
    }
}
