//! `/status` for one group: built from the decision and the observation of a tick.

use crate::engine::Decision;
use crate::model::{FailoverRecord, GuardForm, GuardsObservation, Observation, Side};
use crate::status::{
    DecisionStatus, GroupStatus, GuardHeartbeatStatus, GuardSideStatus, GuardsStatus, Named,
    RecordStatus, SignalStatus, StandbyStatus, StateCheckStatus,
};

/// The `/status` entry of a group after a tick at `wall` (Unix seconds): its state
/// (entered at `since_unix`), the signals as decided on, the standby, the record and
/// the last action error.
pub(super) fn group_status(
    name: &str,
    since_unix: f64,
    last_action_error: Option<String>,
    d: &Decision,
    obs: &Observation,
    wall: f64,
) -> GroupStatus {
    let signals = d
        .signals
        .iter()
        .map(|s| {
            let outcome = obs.primary.outcome(&s.id);
            SignalStatus {
                name: s.id.clone().into(),
                up: s.up,
                consecutive_failures: s.consecutive_failures,
                consecutive_successes: s.consecutive_successes,
                consecutive_unknown: s.consecutive_unknown,
                last_reason: s.last_reason.map(Named::from),
                last_latency_seconds: outcome.map(|o| o.latency.as_secs_f64()),
                last_detail: outcome.map(|o| o.detail.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let record = obs.standby.record.as_ref().ok().map(record_status);
    let active_cluster = match obs.standby.record.as_ref().map(|r| r.effective_phase()) {
        Ok(p) if p.standby_active() => Named::Known(Side::Standby),
        Ok(_) => Named::Known(Side::Primary),
        Err(_) => Named::Other("unknown".to_string()),
    };
    let detail = [
        &obs.standby.api.detail,
        &obs.standby.workloads.detail,
        &obs.standby
            .record
            .as_ref()
            .err()
            .map(|o| o.detail.clone())
            .unwrap_or_default(),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .map(|s| s.as_str())
    .collect::<Vec<_>>()
    .join("; ");
    GroupStatus {
        name: name.to_string(),
        state: d.state.into(),
        since_unix,
        primary_down: d.primary_down,
        standby_fit: d.standby_fit,
        active_cluster,
        signals,
        standby: StandbyStatus {
            api_reason: obs.standby.api.reason.into(),
            workloads_reason: obs.standby.workloads.reason.into(),
            detail,
        },
        record,
        last_decision: DecisionStatus {
            at_unix: wall,
            reasons: d.reasons.iter().copied().map(Named::from).collect(),
            actions: d.actions.iter().map(|a| a.kind().to_string()).collect(),
            would_promote: d.would_promote(),
            warnings: d.warnings.iter().copied().map(Named::from).collect(),
        },
        unexpected_standby_replicas: d.unexpected_standby_replicas,
        dual_active: d.dual_active,
        no_active_side: d.no_active_side,
        last_action_error,
        coordination: None,
        state_checks: obs
            .standby
            .state_checks
            .iter()
            .map(|c| StateCheckStatus {
                name: c.name.clone(),
                kind: c.kind.into(),
                gate: c.gate.into(),
                ok: c.passed(),
                result: c.result.into(),
                reason: c.reason_code().map(Named::from),
                detail: c.detail.clone(),
                last_checked_unix: c.checked_at_unix,
            })
            .collect(),
        drift: None,
        mirror: None,
        guards: obs
            .standby
            .guards
            .as_ref()
            .map(|g| guards_status(g, &obs.standby.record)),
        env0: None,
    }
}

/// The guards' status; counted against the side the record says is active (the
/// primary while the record cannot be read).
fn guards_status(
    g: &GuardsObservation,
    record: &Result<FailoverRecord, crate::model::ProbeOutcome>,
) -> GuardsStatus {
    let active = match record {
        Ok(r) if r.effective_phase().standby_active() => Side::Standby,
        _ => Side::Primary,
    };
    GuardsStatus {
        expected_primary: g.expected_primary,
        expected_standby: g.expected_standby,
        error: g.beats.as_ref().err().map(|o| o.detail.clone()),
        sides: [Side::Primary, Side::Standby]
            .into_iter()
            .map(|side| GuardSideStatus {
                side: Named::Known(side),
                tally: g.tally(side, active),
            })
            .collect(),
        heartbeats: g
            .beats
            .iter()
            .flatten()
            .map(|b| GuardHeartbeatStatus {
                identity: b.identity.clone(),
                side: Named::Known(b.side),
                state: match (b.running, b.form) {
                    (true, _) => "running",
                    (false, GuardForm::Wrapper) => "stopped",
                    (false, GuardForm::Sidecar) => "refusing",
                }
                .to_string(),
                form: b.form.as_str().to_string(),
                reason: b.reason.clone(),
                standby_epoch: b.standby_epoch,
                age_seconds: if b.age_seconds.is_finite() {
                    b.age_seconds
                } else {
                    -1.0
                },
                fresh: b.fresh(),
                isolation_bound_seconds: b.isolation_bound().map(|d| d.as_secs_f64()),
            })
            .collect(),
    }
}

fn record_status(r: &FailoverRecord) -> RecordStatus {
    RecordStatus {
        phase: r.effective_phase().into(),
        epoch: r.epoch,
        reason: r.reason.clone(),
        promoted_at: r.promoted_at.clone(),
        completed_at: r.completed_at.clone(),
        fenced_at: r.fenced_at.clone(),
        fenced_by: r.fenced_by.map(|b| b.as_str().to_string()),
        holder: r.holder.clone(),
        primary_deployments: r
            .primary_deployments
            .iter()
            .map(|d| d.name.clone())
            .collect(),
        failback_at: r.failback_at.clone(),
        restored_at: r.restored_at.clone(),
        mirror_age_seconds: r.mirror_age_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{GroupState, ReasonCode, SignalSnapshot};
    use crate::model::{
        PrimaryObservation, ProbeOutcome, ProbeReason, RecordPhase, SignalId, StandbyObservation,
        Verdict,
    };
    use std::time::Duration;

    fn decision() -> Decision {
        Decision {
            state: GroupState::Promoted,
            reasons: vec![ReasonCode::StandbyReady],
            actions: vec![],
            primary_down: true,
            standby_fit: true,
            unexpected_standby_replicas: 0,
            dual_active: false,
            no_active_side: false,
            signals: vec![SignalSnapshot {
                id: SignalId::Api,
                up: false,
                consecutive_failures: 4,
                consecutive_successes: 0,
                consecutive_unknown: 0,
                last_reason: Some(ProbeReason::Refused),
            }],
            state_changed: false,
            verdict: Verdict::Down,
            warnings: vec![],
            acts: false,
        }
    }

    fn observation(record: Result<FailoverRecord, ProbeOutcome>) -> Observation {
        let ok = ProbeOutcome::ok(Duration::ZERO);
        Observation {
            wall_unix: 0.0,
            primary: PrimaryObservation {
                api: ProbeOutcome::fail(
                    ProbeReason::Refused,
                    Duration::from_millis(2),
                    "connection refused",
                ),
                workloads: vec![],
                http: vec![],
                deployments: None,
                absent: vec![],
                watches_starting: false,
            },
            observers: vec![],
            standby: StandbyObservation {
                api: ok.clone(),
                workloads: ok,
                deployments: None,
                record,
                state_checks: Vec::new(),
                guards: None,
            },
        }
    }

    #[test]
    fn status_joins_the_decision_and_the_observation() {
        let record = FailoverRecord {
            phase: Some(RecordPhase::Promoted),
            epoch: 2,
            ..FailoverRecord::default()
        };
        let status = group_status(
            "env0",
            10.0,
            Some("scale_standby_up: boom".into()),
            &decision(),
            &observation(Ok(record)),
            12.0,
        );
        assert_eq!(status.name, "env0");
        assert_eq!(status.since_unix, 10.0);
        assert_eq!(status.active_cluster, Named::Known(Side::Standby));
        assert_eq!(status.record.as_ref().map(|r| r.epoch), Some(2));
        let signal = &status.signals[0];
        assert_eq!(signal.name, Named::Known(SignalId::Api));
        assert_eq!(signal.consecutive_failures, 4);
        assert_eq!(signal.last_detail, "connection refused");
        assert_eq!(signal.last_latency_seconds, Some(0.002));
        assert_eq!(status.last_decision.at_unix, 12.0);
        assert_eq!(
            status.last_action_error.as_deref(),
            Some("scale_standby_up: boom")
        );
    }

    #[test]
    fn an_unreadable_record_leaves_the_active_side_unknown() {
        let unreadable = ProbeOutcome::fail(ProbeReason::Forbidden, Duration::ZERO, "forbidden");
        let status = group_status(
            "env0",
            0.0,
            None,
            &decision(),
            &observation(Err(unreadable)),
            0.0,
        );
        assert_eq!(status.active_cluster, Named::Other("unknown".into()));
        assert_eq!(status.record, None);
        assert_eq!(status.standby.detail, "forbidden");
    }
}
