//! The coordination metrics, registered with the daemon's other metrics. A leader that
//! cannot renew shows as `kube_failover_leader` 0 (and a warning in the log).

use crate::model::Verdict;
use prometheus::{IntGaugeVec, Opts, Registry};

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("kube_failover")
}

/// Leader, observers and identity clashes, per group.
#[derive(Clone)]
pub struct CoordMetrics {
    leader: IntGaugeVec,
    observers: IntGaugeVec,
    expected: IntGaugeVec,
    identity_clash: IntGaugeVec,
}

impl CoordMetrics {
    /// Creates and registers them.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = CoordMetrics {
            leader: IntGaugeVec::new(
                opts(
                    "leader",
                    "1 while this instance leads the group (holds its leader Lease within the renew deadline), else 0.",
                ),
                &["group"],
            )?,
            observers: IntGaugeVec::new(
                opts(
                    "observers",
                    "Fresh observers of the group (this instance included) by their verdict on the primary.",
                ),
                &["group", "verdict"],
            )?,
            expected: IntGaugeVec::new(
                opts(
                    "observers_expected",
                    "policy.observers.expected of the group (0 when not set).",
                ),
                &["group"],
            )?,
            identity_clash: IntGaugeVec::new(
                opts(
                    "identity_clash",
                    "1 while another process publishes under this instance's daemon.identity.",
                ),
                &["group"],
            )?,
        };
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.observers.clone()))?;
        registry.register(Box::new(m.expected.clone()))?;
        registry.register(Box::new(m.identity_clash.clone()))?;
        Ok(m)
    }

    /// Every series of a group at 0 from the start.
    pub fn init_group(&self, group: &str, expected: Option<u32>) {
        self.leader.with_label_values(&[group]).set(0);
        for v in Verdict::ALL {
            self.observers
                .with_label_values(&[group, v.as_str()])
                .set(0);
        }
        self.expected
            .with_label_values(&[group])
            .set(i64::from(expected.unwrap_or(0)));
        self.identity_clash.with_label_values(&[group]).set(0);
    }

    /// Whether this instance leads the group now.
    pub fn set_leader(&self, group: &str, leading: bool) {
        self.leader
            .with_label_values(&[group])
            .set(i64::from(leading));
    }

    /// The fresh observers' verdicts.
    pub fn set_observers(&self, group: &str, verdicts: &[Verdict]) {
        for v in Verdict::ALL {
            let n = verdicts.iter().filter(|x| **x == v).count();
            self.observers
                .with_label_values(&[group, v.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Another process publishes under this identity (or stopped).
    pub fn identity_clash(&self, group: &str, clash: bool) {
        self.identity_clash
            .with_label_values(&[group])
            .set(i64::from(clash));
    }
}
