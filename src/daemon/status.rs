//! `/status` for one group: built from the decision and the observation of a tick.

use crate::engine::Decision;
use crate::model::{FailoverRecord, Observation, Side};
use crate::status::{
    DecisionStatus, GroupStatus, Named, RecordStatus, SignalStatus, StandbyStatus,
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
        },
        unexpected_standby_replicas: d.unexpected_standby_replicas,
        dual_active: d.dual_active,
        no_active_side: d.no_active_side,
        last_action_error,
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
        holder: r.holder.clone(),
        primary_deployments: r
            .primary_deployments
            .iter()
            .map(|d| d.name.clone())
            .collect(),
        failback_at: r.failback_at.clone(),
        restored_at: r.restored_at.clone(),
    }
}
