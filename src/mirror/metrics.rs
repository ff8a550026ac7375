//! The state mirror's metrics, per group. Every series exists from the group's start
//! (at 0), so the alerts see zeros, not absences.

use crate::metric_registry::{GaugeFamily, IntCounterFamily, IntGaugeFamily};
use prometheus::Opts;

/// Write operations, the `op` label of `kube_failover_mirror_writes_total`.
pub const OPS: [&str; 3] = ["create", "replace", "delete"];

/// The mirror's metrics.
#[derive(Clone)]
pub struct MirrorMetrics {
    active: IntGaugeFamily,
    secrets: IntGaugeFamily,
    bytes: IntGaugeFamily,
    conflicts: IntGaugeFamily,
    last_sync: GaugeFamily,
    max_lag: GaugeFamily,
    writes: IntCounterFamily,
    errors: IntCounterFamily,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("kube_failover")
}

impl MirrorMetrics {
    /// Creates and registers them in `registry`.
    pub fn new(
        registry: &crate::metric_registry::MetricRegistry,
    ) -> Result<Self, prometheus::Error> {
        let m = MirrorMetrics {
            active: IntGaugeFamily::new(
                opts(
                    "mirror_active",
                    "1 while the state mirror copies (the record says the primary is \
                     active), 0 once it stopped (promotion, pause, record unknown).",
                ),
                &["group"],
            )?,
            secrets: IntGaugeFamily::new(
                opts(
                    "mirror_secrets",
                    "State Secrets whose standby copy matched the primary at the last pass.",
                ),
                &["group"],
            )?,
            bytes: IntGaugeFamily::new(
                opts(
                    "mirror_bytes",
                    "Bytes of data of the Secrets counted in kube_failover_mirror_secrets.",
                ),
                &["group"],
            )?,
            conflicts: IntGaugeFamily::new(
                opts(
                    "mirror_conflicts",
                    "Standby Secrets left alone: changed since the mirror's copy, not \
                     copied by it, or a part the primary no longer has.",
                ),
                &["group"],
            )?,
            last_sync: GaugeFamily::new(
                opts(
                    "mirror_last_sync_timestamp_seconds",
                    "Unix time of the primary's state the standby was last found in sync \
                     with (0: never).",
                ),
                &["group"],
            )?,
            max_lag: GaugeFamily::new(
                opts(
                    "mirror_max_lag_seconds",
                    "groups.state.mirror.max_lag: the lag above which \
                     KubeFailoverMirrorLagging fires.",
                ),
                &["group"],
            )?,
            writes: IntCounterFamily::new(
                opts(
                    "mirror_writes_total",
                    "Writes of the state mirror to the standby, by operation and result.",
                ),
                &["group", "op", "result"],
            )?,
            errors: IntCounterFamily::new(
                opts(
                    "mirror_errors_total",
                    "Failed passes and writes of the state mirror, by bounded reason.",
                ),
                &["group", "reason"],
            )?,
        };
        registry.register(m.active.clone())?;
        registry.register(m.secrets.clone())?;
        registry.register(m.bytes.clone())?;
        registry.register(m.conflicts.clone())?;
        registry.register(m.last_sync.clone())?;
        registry.register(m.max_lag.clone())?;
        registry.register(m.writes.clone())?;
        registry.register(m.errors.clone())?;
        Ok(m)
    }

    /// The series of a group with a mirror, at 0.
    pub fn init_group(&self, group: &str, max_lag_seconds: f64) {
        self.active.with_label_values(&[group]).set(0);
        self.secrets.with_label_values(&[group]).set(0);
        self.bytes.with_label_values(&[group]).set(0);
        self.conflicts.with_label_values(&[group]).set(0);
        self.last_sync.with_label_values(&[group]).set(0.0);
        self.max_lag
            .with_label_values(&[group])
            .set(max_lag_seconds);
        for op in OPS {
            self.writes.with_label_values(&[group, op, "error"]);
        }
        self.errors.with_label_values(&[group, "error"]);
    }

    pub(super) fn set_active(&self, group: &str, active: bool) {
        self.active
            .with_label_values(&[group])
            .set(i64::from(active));
    }

    pub(super) fn set_pass(&self, group: &str, secrets: u64, bytes: u64, conflicts: usize) {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.secrets.with_label_values(&[group]).set(i(secrets));
        self.bytes.with_label_values(&[group]).set(i(bytes));
        self.conflicts
            .with_label_values(&[group])
            .set(i(conflicts as u64));
    }

    pub(super) fn synced(&self, group: &str, wall_unix: f64) {
        self.last_sync.with_label_values(&[group]).set(wall_unix);
    }

    pub(super) fn write(&self, group: &str, op: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.writes.with_label_values(&[group, op, result]).inc();
    }

    pub(super) fn error(&self, group: &str, reason: &'static str) {
        self.errors.with_label_values(&[group, reason]).inc();
    }
}
