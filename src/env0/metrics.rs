//! The env0 metrics, registered with the daemon's other metrics.

use crate::metric_registry::{IntCounterFamily, IntGaugeFamily};
use prometheus::Opts;

/// Calls to env0, lookups, stranded deployments and redeploys.
#[derive(Clone)]
pub struct Env0Metrics {
    requests: IntCounterFamily,
    lookups: IntCounterFamily,
    stranded: IntGaugeFamily,
    redeploys: IntCounterFamily,
}

/// The results of a lookup.
pub const LOOKUP_RESULTS: [&str; 2] = ["ok", "failed"];
/// The results of a redeploy.
pub const REDEPLOY_RESULTS: [&str; 4] = ["done", "failed", "claimed", "skipped"];

impl Env0Metrics {
    /// Creates and registers them.
    pub fn new(
        registry: &crate::metric_registry::MetricRegistry,
    ) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("kube_failover");
        let requests = IntCounterFamily::new(
            opts(
                "env0_requests_total",
                "Calls to env0's API by call (list_organizations, projects_assignments, \
                 list_environments, redeploy) and result (ok or a reason code).",
            ),
            &["call", "result"],
        )?;
        let lookups = IntCounterFamily::new(
            opts(
                "env0_lookups_total",
                "Lookups of the env0 deployments a promotion stranded, by group and result \
                 (ok, failed; a failed one is retried with backoff).",
            ),
            &["group", "result"],
        )?;
        let stranded = IntGaugeFamily::new(
            opts(
                "env0_stranded_deployments",
                "env0 deployments the latest promotion stranded (waiting for approval, in \
                 progress or queued before it), as last looked up, by group and status.",
            ),
            &["group", "status"],
        )?;
        let redeploys = IntCounterFamily::new(
            opts(
                "env0_redeploys_total",
                "Redeploys of stranded env0 environments by group and result (done, failed, \
                 claimed: asked before, skipped: no longer allowed).",
            ),
            &["group", "result"],
        )?;
        for m in [&requests, &lookups, &redeploys] {
            registry.register(m.clone())?;
        }
        registry.register(stranded.clone())?;
        Ok(Env0Metrics {
            requests,
            lookups,
            stranded,
            redeploys,
        })
    }

    /// Every series of `group` at 0 from the start.
    pub fn init_group(&self, group: &str) {
        for call in super::client::CALLS {
            for result in super::client::RESULTS {
                self.requests.with_label_values(&[call, result]);
            }
        }
        for result in LOOKUP_RESULTS {
            self.lookups.with_label_values(&[group, result]);
        }
        for result in REDEPLOY_RESULTS {
            self.redeploys.with_label_values(&[group, result]);
        }
        for status in super::model::STRANDING {
            self.stranded.with_label_values(&[group, status]);
        }
    }

    /// Counts one call.
    pub fn request(&self, call: &str, result: &str) {
        self.requests.with_label_values(&[call, result]).inc();
    }

    /// Counts one lookup.
    pub fn lookup(&self, group: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.lookups.with_label_values(&[group, result]).inc();
    }

    /// Sets the stranded deployments of `group` by status.
    pub fn set_stranded(&self, group: &str, stranded: &[super::Stranded]) {
        for status in super::model::STRANDING {
            let n = stranded.iter().filter(|s| s.status == status).count();
            self.stranded
                .with_label_values(&[group, status])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts one redeploy.
    pub fn redeploy(&self, group: &str, result: &str) {
        self.redeploys.with_label_values(&[group, result]).inc();
    }
}
