//! The failover record's writes: the start of a promotion, the phase updates of its
//! epoch (decided by [`record::transition`]) and the restore of a lost record. Every
//! write is a create or carries the resourceVersion it was read at.

use super::{ActionReport, ActuateError, Actuator, Side};
use crate::kube::call::CallError;
use crate::model::{Action, DeploymentRef, FailoverRecord, Observation, ReasonCode, RecordPhase};
use crate::record::{self, RecordError, Update};
use std::future::Future;
use std::time::Duration;

impl Actuator {
    pub(super) async fn record_promoting(
        &self,
        action: &Action,
        epoch: u64,
        reason: ReasonCode,
        primary_deployments: &[DeploymentRef],
        obs: &Observation,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        let current = match &obs.standby.record {
            Ok(current) => current,
            Err(outcome) => {
                return Err(ActuateError::RecordUnknown {
                    namespace: self.standby_ns().to_string(),
                    name,
                    reason: outcome.reason,
                    detail: if outcome.detail.is_empty() {
                        outcome.reason.as_str().to_string()
                    } else {
                        outcome.detail.clone()
                    },
                });
            }
        };
        let mut report = ActionReport::new(action);
        if current.phase == Some(RecordPhase::Promoting) && current.epoch == epoch {
            // Written before (the daemon restarted, or the answer was lost).
            report.record = Some(current.clone());
            return Ok(report);
        }
        if epoch <= current.epoch {
            return Err(self.stale(
                &name,
                format!(
                    "promotion epoch {epoch} is not above the recorded epoch {}",
                    current.epoch
                ),
            ));
        }
        // The state mirror stops before the record says the standby is active, and its
        // age at this moment goes into the record.
        let mirror_age_seconds = match &self.before_promotion {
            Some(hook) => hook.before_promotion().await,
            None => None,
        };
        let now = record::now_stamp();
        let next = FailoverRecord {
            phase: Some(RecordPhase::Promoting),
            mirror_age_seconds,
            epoch,
            reason: reason.as_str().to_string(),
            promoted_at: Some(now.at),
            promoted_at_unix: Some(now.unix),
            primary_deployments: primary_deployments.to_vec(),
            holder: self.identity.clone(),
            // An operator's pause and the history outlive a promotion.
            paused_by: current.paused_by.clone(),
            paused_until_unix: current.paused_until_unix,
            pause_reason: current.pause_reason.clone(),
            history: current.history.clone(),
            ..FailoverRecord::default()
        };
        self.write_record(&name, &next, current.resource_version.as_deref(), report)
            .await
    }

    /// Reads the record afresh (not from the observation: one decision may carry
    /// several record actions, and each write changes the resourceVersion).
    pub(super) async fn read_record(&self) -> Result<Option<FailoverRecord>, ActuateError> {
        let name = self.group.record_name();
        let ns = self.standby_ns();
        bounded_record(self.call_timeout, ns, &name, "get", async {
            record::read(&self.standby, ns, &name).await
        })
        .await
    }

    pub(super) async fn update_record(
        &self,
        action: &Action,
        epoch: u64,
        update: Update,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        // The epoch check below is the real precondition; the resourceVersion of this
        // read guards the write against anyone moving the record in between.
        let Some(current) = self.read_record().await? else {
            return Err(self.stale(&name, format!("missing, expected epoch {epoch}")));
        };
        if current.epoch != epoch {
            return Err(self.stale(
                &name,
                format!("recorded epoch is {}, not {epoch}", current.epoch),
            ));
        }
        let next = record::transition(&current, update, &record::now_stamp())
            .map_err(|refused| self.stale(&name, refused.to_string()))?;
        let mut report = ActionReport::new(action);
        let Some(mut next) = next else {
            report.record = Some(current);
            return Ok(report);
        };
        next.holder = self.identity.clone();
        self.write_record(&name, &next, current.resource_version.as_deref(), report)
            .await
    }

    /// Writes back a record that disappeared, or one whose epoch went back. A missing
    /// one is created (never replaced), so if someone else restored it first this write
    /// loses and the next tick reads theirs; one that went back is replaced on condition
    /// of the resourceVersion it was read with (the engine keeps its pause).
    pub(super) async fn restore_record(
        &self,
        action: &Action,
        lost: &FailoverRecord,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        let over = lost.resource_version.clone();
        let next = FailoverRecord {
            restored_at: Some(record::now_stamp().at),
            holder: self.identity.clone(),
            resource_version: None,
            ..lost.clone()
        };
        let report = self
            .write_record(&name, &next, over.as_deref(), ActionReport::new(action))
            .await?;
        let what = if over.is_some() {
            "had gone back to an older epoch (written again without knowledge of the last \
             promotion)"
        } else {
            "was missing"
        };
        let message = format!(
            "group {}: the failover record {name} {what}; written back as last seen \
             (phase {}, epoch {}); nothing is scaled until it is back. Fail back with \
             phase: primary, never by deleting or re-creating the record",
            self.group.name,
            next.effective_phase().as_str(),
            next.epoch
        );
        tracing::warn!(
            group = %self.group.name,
            record = %name,
            phase = next.effective_phase().as_str(),
            epoch = next.epoch,
            "failover record {what}: restored from the last copy seen"
        );
        self.record_event("KubeFailoverRecordRestored", message)
            .await;
        Ok(report)
    }

    async fn write_record(
        &self,
        name: &str,
        next: &FailoverRecord,
        expected: Option<&str>,
        mut report: ActionReport,
    ) -> Result<ActionReport, ActuateError> {
        if let Some(err) = self.refused(|| format!("write of the record {name}")) {
            return Err(err);
        }
        let ns = self.standby_ns();
        let stored = bounded_record(self.call_timeout, ns, name, "write", async {
            record::write(&self.standby, ns, name, &self.group.name, next, expected).await
        })
        .await?;
        report.record = Some(stored);
        report.record_written = true;
        Ok(report)
    }
}

/// Runs one record call with a time bound, mapping both failure kinds.
async fn bounded_record<T>(
    timeout: Duration,
    namespace: &str,
    name: &str,
    op: &'static str,
    call: impl Future<Output = Result<T, RecordError>>,
) -> Result<T, ActuateError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ActuateError::Record {
            namespace: namespace.to_string(),
            source,
        }),
        Err(_) => Err(ActuateError::Call {
            side: Side::Standby,
            namespace: namespace.to_string(),
            op,
            object: format!("ConfigMap {name}"),
            source: CallError::Timeout(timeout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;
    use crate::model::{ProbeOutcome, ProbeReason};

    /// A client for a closed loopback port: any call it makes fails, so a test passes
    /// only if the action decided without calling.
    fn dead_client() -> kube::Client {
        crate::tls::install_provider();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn group() -> GroupConfig {
        GroupConfig::for_test("env0", "agents", "agents")
    }

    fn observation(record: Result<FailoverRecord, ProbeOutcome>) -> Observation {
        let ok = ProbeOutcome::ok(Duration::ZERO);
        Observation {
            wall_unix: 0.0,
            primary: crate::model::PrimaryObservation {
                api: ok.clone(),
                workloads: vec![],
                http: vec![],
                deployments: None,
                absent: vec![],
                watches_starting: false,
            },
            standby: crate::model::StandbyObservation {
                api: ok.clone(),
                workloads: ok,
                deployments: None,
                record,
                state_checks: Vec::new(),
                guards: None,
            },
            observers: vec![],
        }
    }

    #[tokio::test]
    async fn promoting_never_writes_blind() {
        let actuator = Actuator::new(&group(), dead_client(), dead_client(), "w".into());
        let action = Action::RecordPromoting {
            epoch: 1,
            reason: ReasonCode::PrimaryDownQuorum,
            primary_deployments: vec![],
        };
        let unreadable = observation(Err(ProbeOutcome::fail(
            ProbeReason::Forbidden,
            Duration::ZERO,
            "",
        )));
        let err = actuator.execute(&action, &unreadable).await.unwrap_err();
        assert!(matches!(err, ActuateError::RecordUnknown { .. }), "{err}");
        assert_eq!(err.reason(), "forbidden");

        // An epoch that does not move forward is refused before any call.
        let current = FailoverRecord {
            phase: Some(RecordPhase::Primary),
            epoch: 1,
            ..FailoverRecord::default()
        };
        let err = actuator
            .execute(&action, &observation(Ok(current)))
            .await
            .unwrap_err();
        assert!(matches!(err, ActuateError::Stale { .. }), "{err}");
        assert_eq!(err.reason(), "conflict");

        // Already recorded: nothing to write.
        let done = FailoverRecord {
            phase: Some(RecordPhase::Promoting),
            epoch: 1,
            resource_version: Some("5".into()),
            ..FailoverRecord::default()
        };
        let report = actuator
            .execute(&action, &observation(Ok(done.clone())))
            .await
            .unwrap();
        assert!(!report.changed());
        assert_eq!(report.record, Some(done));
    }
}
