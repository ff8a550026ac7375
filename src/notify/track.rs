//! Per group: which notice events a tick brought, and sending each once.
//!
//! Every instance follows the failover record (as read each tick, and as written by its
//! own actions); an event is the record moving into it: `promoted` or `failed` at an
//! epoch not seen in that phase before, or back to `primary` (no failback step left)
//! after the standby was active. Only the leader sends, once per (epoch, event); the
//! notice's id lets receivers drop the copy a change of leader may cause. A daemon
//! that starts finds no event in the record it reads first: a restart never repeats a
//! notice.

use super::content::{NoticeContext, SideInfo, build};
use super::{Notifier, Reason, StaleLock, StateCheck, StateCheckGate};
use crate::actuate::{ActionReport, Actuator, FoundLock, PromotionEvent};
use crate::config::{ClusterConfig, GroupConfig, NoticeEvent};
use crate::error_chain::chain;
use crate::model::{Evidence, FailoverRecord, Observation, RecordPhase, Side};
use std::collections::VecDeque;
use std::time::SystemTime;
use tracing::{info, warn};

/// How many (epoch, event) pairs are remembered as sent.
const SENT_MEMORY: usize = 32;

/// What the tracker keeps of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    phase: RecordPhase,
    epoch: u64,
    failback_step: bool,
}

impl Seen {
    fn of(record: &FailoverRecord) -> Self {
        Seen {
            phase: record.effective_phase(),
            epoch: record.epoch,
            failback_step: record.failback_step.is_some(),
        }
    }
}

/// The events between the record seen before (`None`: none yet) and `current`.
pub fn record_events(previous: Option<Seen>, current: &FailoverRecord) -> Vec<NoticeEvent> {
    let Some(prev) = previous else {
        return Vec::new();
    };
    if !current.exists() {
        return Vec::new();
    }
    let cur = Seen::of(current);
    let same_epoch_in = |phase| prev.phase == phase && prev.epoch == cur.epoch;
    match cur.phase {
        RecordPhase::Promoted if !same_epoch_in(RecordPhase::Promoted) => {
            vec![NoticeEvent::Promotion]
        }
        RecordPhase::Failed if !same_epoch_in(RecordPhase::Failed) => vec![NoticeEvent::Failed],
        RecordPhase::Primary
            if cur.epoch > 0
                && !cur.failback_step
                && (prev.phase.standby_active() || prev.failback_step) =>
        {
            vec![NoticeEvent::Failback]
        }
        _ => Vec::new(),
    }
}

/// An event to send, with the record it was seen in.
#[derive(Debug, Clone)]
struct Due {
    event: NoticeEvent,
    record: FailoverRecord,
}

/// The notices of one group.
pub struct GroupNotices {
    group: String,
    identity: String,
    primary: SideInfo,
    standby: SideInfo,
    notifier: Option<Notifier>,
    last: Option<Seen>,
    due: Vec<Due>,
    /// Notices composed with their promotion's Event this tick, to send.
    ready: Vec<super::Notice>,
    /// The stale locks this tick's [`crate::model::Action::ClearStaleLocks`] found.
    swept: Option<(u64, Vec<StaleLock>)>,
    sent: VecDeque<(u64, NoticeEvent)>,
    /// The primary's failing signals in the latest tick that had any.
    failing: Vec<Reason>,
    /// The failing signals when the promotion of an epoch was first seen.
    start: Option<(u64, Vec<Reason>)>,
    /// The optional standby inputs of the latest tick.
    inputs: StandbyInputs,
    /// The group's env0 task (`[env0]`): a promotion's Event and notice go through it.
    env0: Option<std::sync::Arc<dyn super::PromotionHandoff>>,
}

/// What the standby's state checks and the state mirror tell a notice. Each is `None`
/// while the daemon has nothing to say about it; a notice then says `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StandbyInputs {
    /// The standby's state checks as observed in the tick.
    pub state_checks: Option<Vec<StateCheck>>,
    /// Age of the mirrored state when the promotion started, seconds (from the record).
    pub mirror_age_seconds: Option<f64>,
}

/// The standby inputs of a tick: the standby's state checks as observed (`None` when
/// the group has none configured) and the mirror's age when the promotion started, as
/// the record keeps it (`None` without a mirror, or before a promotion).
fn standby_inputs(obs: &Observation, record: Option<&FailoverRecord>) -> StandbyInputs {
    let checks = &obs.standby.state_checks;
    StandbyInputs {
        state_checks: (!checks.is_empty()).then(|| {
            checks
                .iter()
                .map(|c| StateCheck {
                    name: c.name.clone(),
                    gate: match c.gate {
                        kube_failover_core::checks::Gate::Block => StateCheckGate::Block,
                        kube_failover_core::checks::Gate::Warn => StateCheckGate::Warn,
                    },
                    passed: c.passed(),
                    reason: c
                        .reason_code()
                        .map_or_else(|| "ok".to_string(), |r| r.as_str().to_string()),
                    detail: c.detail.clone(),
                })
                .collect()
        }),
        mirror_age_seconds: record
            .and_then(crate::mirror::mirror_age_at_promotion)
            .map(|age| age as f64),
    }
}

fn side_info(side: Side, cluster: &ClusterConfig) -> SideInfo {
    let (name, context) = match crate::kube::client::resolve_kubeconfig(cluster) {
        Ok(Some(resolved)) => {
            let name = resolved
                .kubeconfig
                .contexts
                .iter()
                .find(|c| c.name == resolved.context)
                .and_then(|c| c.context.as_ref())
                .map(|c| c.cluster.clone())
                .unwrap_or_else(|| resolved.context.clone());
            (name, Some(resolved.context))
        }
        Ok(None) => ("in-cluster".to_string(), None),
        Err(_) => (
            cluster
                .context
                .clone()
                .unwrap_or_else(|| "unknown".to_string()),
            cluster.context.clone(),
        ),
    };
    SideInfo {
        side,
        cluster: name,
        context,
        namespace: cluster.namespace.clone(),
    }
}

fn now() -> (f64, String) {
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (unix, humantime::format_rfc3339_seconds(now).to_string())
}

impl GroupNotices {
    /// The notices of `group`, sent as `identity`; nothing is sent until
    /// [`GroupNotices::connect`] (the promotion's Event is composed all the same).
    pub fn new(group: &GroupConfig, identity: &str) -> Self {
        GroupNotices {
            group: group.name.clone(),
            identity: identity.to_string(),
            primary: side_info(Side::Primary, &group.primary),
            standby: side_info(Side::Standby, &group.standby),
            notifier: None,
            last: None,
            due: Vec::new(),
            ready: Vec::new(),
            swept: None,
            sent: VecDeque::new(),
            failing: Vec::new(),
            start: None,
            inputs: StandbyInputs::default(),
            env0: None,
        }
    }

    /// Hands each promotion's Event and notice to `env0`, which names the stranded
    /// deployments in them before they go out.
    pub fn connect_env0(&mut self, env0: std::sync::Arc<dyn super::PromotionHandoff>) {
        self.env0 = Some(env0);
    }

    /// Sends this group's notices through `notifier`.
    pub fn connect(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    fn advance(&mut self, record: &FailoverRecord) {
        if !record.exists() {
            return;
        }
        for event in record_events(self.last, record) {
            self.due.push(Due {
                event,
                record: record.clone(),
            });
        }
        let seen = Seen::of(record);
        let new_promotion = seen.phase.standby_active()
            && self.start.as_ref().is_none_or(|(e, _)| *e != seen.epoch);
        if new_promotion && self.last.is_some() {
            self.start = Some((seen.epoch, self.failing.clone()));
        }
        self.last = Some(seen);
    }

    /// The tick's observation, before its actions.
    pub fn observe(&mut self, obs: &Observation) {
        let failing: Vec<Reason> = obs
            .primary
            .signals()
            .filter(|(_, o)| o.reason.evidence() == Evidence::Down)
            .map(|(id, o)| Reason {
                code: o.reason.as_str().to_string(),
                signal: Some(id.to_string()),
                text: if o.detail.is_empty() {
                    super::reason_text(o.reason.as_str()).to_string()
                } else {
                    o.detail.clone()
                },
            })
            .collect();
        if !failing.is_empty() {
            self.failing = failing;
        }
        let record = obs.standby.record.as_ref().ok();
        self.inputs = standby_inputs(obs, record);
        if let Some(record) = record {
            self.advance(record);
        }
    }

    /// An action of this tick succeeded: a record action's `report.record` is the
    /// record as stored (written by it, or found already so: another writer's);
    /// [`Action::ClearStaleLocks`]' report, the locks it found.
    ///
    /// [`Action::ClearStaleLocks`]: crate::model::Action::ClearStaleLocks
    pub fn written(&mut self, report: &ActionReport) {
        if let Some(record) = &report.record {
            self.advance(record);
        }
        if let Some((epoch, found)) = &report.stale_locks {
            self.swept = Some((*epoch, found.iter().map(stale_lock).collect()));
        }
    }

    /// The `KubeFailoverPromotionComplete` Event of a completed promotion at `epoch`
    /// ([`Action::AnnouncePromoted`]), composed with its notice: the notice is built
    /// now (with the stale locks this tick's [`Action::ClearStaleLocks`] found, or
    /// listed now without it) and goes out with [`GroupNotices::flush`]; with `[env0]`
    /// both go to the env0 task, which names the stranded deployments first. `None`
    /// when no promotion of that epoch was seen to complete (a plain Event then).
    ///
    /// [`Action::AnnouncePromoted`]: crate::model::Action::AnnouncePromoted
    /// [`Action::ClearStaleLocks`]: crate::model::Action::ClearStaleLocks
    pub async fn promotion_event(
        &mut self,
        epoch: u64,
        actuator: &Actuator,
    ) -> Option<PromotionEvent> {
        let at = self
            .due
            .iter()
            .position(|d| d.event == NoticeEvent::Promotion && d.record.epoch == epoch)?;
        let Due { event, record } = self.due.remove(at);
        // Sent before (the record went back and forth): the Event, not the notice again.
        let fresh = self.mark_sent(record.epoch, event);
        let locks = match self.swept.take() {
            Some((e, locks)) if e == epoch => Ok(locks),
            _ => self.list_stale_locks(actuator, &record).await,
        };
        let notice = self.build(event, &record, Some(locks));
        let left = locks_left(&notice);
        let notice = match &self.env0 {
            Some(env0) if fresh => {
                let job = super::PendingPromotion {
                    event_message: promotion_summary(&notice),
                    notice,
                    locks_left: left,
                    promoted_at_unix: record.promoted_at_unix,
                    notifier: self.notifier.clone(),
                };
                match env0.hand_over(job) {
                    Ok(()) => {
                        info!(group = %self.group, epoch, "promotion notice handed to the env0 lookup");
                        return Some(PromotionEvent::HandedToEnv0);
                    }
                    Err(job) => {
                        warn!(group = %self.group, epoch,
                            "env0 task busy: the notice goes without env0's names");
                        job.notice
                    }
                }
            }
            _ => notice,
        };
        let event = PromotionEvent::Write {
            message: promotion_message(&notice),
            locks_left: left,
        };
        if fresh {
            self.ready.push(notice);
        }
        Some(event)
    }

    /// Sends the notices of this tick once, when `leading`: those composed with the
    /// promotion's Event, and the events seen without one (a promotion completed
    /// while this instance did not write, in observe mode; failures; failbacks), whose
    /// stale locks are listed, never deleted.
    pub async fn flush(&mut self, actuator: &Actuator, leading: bool) {
        let due = std::mem::take(&mut self.due);
        let ready = std::mem::take(&mut self.ready);
        if !leading {
            return;
        }
        for notice in ready {
            self.send(&notice);
        }
        for Due { event, record } in due {
            if !self.mark_sent(record.epoch, event) {
                continue;
            }
            let stale_locks = if event == NoticeEvent::Promotion {
                Some(self.list_stale_locks(actuator, &record).await)
            } else {
                None
            };
            let notice = self.build(event, &record, stale_locks);
            self.send(&notice);
        }
    }

    /// Remembers `(epoch, event)` as sent; false when it was already.
    fn mark_sent(&mut self, epoch: u64, event: NoticeEvent) -> bool {
        let key = (epoch, event);
        if self.sent.contains(&key) {
            return false;
        }
        self.sent.push_back(key);
        if self.sent.len() > SENT_MEMORY {
            self.sent.pop_front();
        }
        true
    }

    fn build(
        &self,
        event: NoticeEvent,
        record: &FailoverRecord,
        stale_locks: Option<Result<Vec<StaleLock>, String>>,
    ) -> super::Notice {
        let start_signals = match &self.start {
            Some((epoch, signals)) if *epoch == record.epoch => signals.clone(),
            _ => Vec::new(),
        };
        let (now_unix, now) = now();
        build(NoticeContext {
            event,
            group: &self.group,
            record,
            primary: &self.primary,
            standby: &self.standby,
            identity: &self.identity,
            now_unix,
            now: &now,
            start_signals: &start_signals,
            state_checks: self.inputs.state_checks.clone(),
            mirror_age_seconds: self.inputs.mirror_age_seconds,
            stale_locks,
        })
    }

    fn send(&self, notice: &super::Notice) {
        if let Some(n) = self.notifier.as_ref().filter(|n| n.is_enabled()) {
            n.send(notice);
            info!(group = %self.group, epoch = notice.epoch, event = notice.event.as_str(),
                notice = %notice.id, "notice queued");
        }
    }

    /// The held lock Leases of the standby locked before the promotion of `record`
    /// started, listed (never deleted: that is [`Action::ClearStaleLocks`]).
    ///
    /// [`Action::ClearStaleLocks`]: crate::model::Action::ClearStaleLocks
    async fn list_stale_locks(
        &self,
        actuator: &Actuator,
        record: &FailoverRecord,
    ) -> Result<Vec<StaleLock>, String> {
        match actuator
            .stale_locks(record.epoch, Some(record), false)
            .await
        {
            Ok(found) => Ok(found.iter().map(stale_lock).collect()),
            Err(e) => {
                let error = chain(&e).to_string();
                warn!(group = %self.group, %error, "could not list the standby's Terraform lock Leases");
                Err(error)
            }
        }
    }
}

/// A lock found after a promotion, as a notice names it.
fn stale_lock(found: &FoundLock) -> StaleLock {
    let lock = &found.lock;
    StaleLock {
        name: lock.name.clone(),
        namespace: lock.namespace.clone(),
        lock_id: lock.lock_id.clone(),
        operation: lock.operation.clone(),
        who: lock.who.clone(),
        locked_at: lock.locked_at.clone(),
        deleted: found.deleted,
    }
}

/// Stale locks are left in the standby namespace.
fn locks_left(notice: &super::Notice) -> bool {
    notice
        .stale_locks
        .as_ref()
        .is_some_and(|l| l.iter().any(|l| !l.deleted))
}

/// The promotion Event's message: the summary, the stale locks, what to do.
fn promotion_message(notice: &super::Notice) -> String {
    let mut out = promotion_summary(notice);
    out.push_str(
        ". Redeploy the env0 deployments that waited for approval (their working directory \
         stayed in the old primary) and check the runs that were in flight.",
    );
    out
}

/// The promotion Event's message without what to do about env0's deployments: the
/// summary and the stale locks.
fn promotion_summary(notice: &super::Notice) -> String {
    let mut out = notice.summary.clone();
    match (&notice.stale_locks, &notice.stale_locks_error) {
        (Some(locks), _) if !locks.is_empty() => {
            let names: Vec<String> = locks
                .iter()
                .map(|l| {
                    format!(
                        "{} (lock ID {}{})",
                        l.name,
                        l.lock_id,
                        if l.deleted { ", deleted" } else { "" }
                    )
                })
                .collect();
            out.push_str(&format!(
                ". Stale Terraform locks in namespace {}: {}",
                notice.to.namespace,
                names.join(", ")
            ));
        }
        (_, Some(why)) => out.push_str(&format!(
            ". Terraform lock Leases could not be listed: {why}"
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FailbackStep;

    fn rec(phase: RecordPhase, epoch: u64) -> FailoverRecord {
        FailoverRecord {
            phase: Some(phase),
            epoch,
            resource_version: Some("1".into()),
            ..FailoverRecord::default()
        }
    }

    fn seen(phase: RecordPhase, epoch: u64) -> Option<Seen> {
        Some(Seen::of(&rec(phase, epoch)))
    }

    use NoticeEvent::{Failback, Failed, Promotion};
    use RecordPhase::{Failed as PFailed, Primary, Promoted, Promoting};

    #[test]
    fn events_are_the_record_moving_into_them() {
        assert_eq!(
            record_events(seen(Promoting, 3), &rec(Promoted, 3)),
            [Promotion]
        );
        assert_eq!(
            record_events(seen(Primary, 2), &rec(Promoted, 3)),
            [Promotion]
        );
        assert_eq!(
            record_events(seen(Promoting, 3), &rec(PFailed, 3)),
            [Failed]
        );
        assert_eq!(
            record_events(seen(PFailed, 3), &rec(Promoted, 3)),
            [Promotion]
        );
        assert_eq!(
            record_events(seen(Promoted, 3), &rec(Primary, 3)),
            [Failback]
        );
        // Staying, or nothing seen before (a restart): no event.
        assert!(record_events(seen(Promoted, 3), &rec(Promoted, 3)).is_empty());
        assert!(record_events(seen(PFailed, 3), &rec(PFailed, 3)).is_empty());
        assert!(record_events(seen(Primary, 3), &rec(Primary, 3)).is_empty());
        assert!(record_events(None, &rec(Promoted, 3)).is_empty());
        assert!(record_events(seen(Primary, 0), &rec(Primary, 0)).is_empty());
        // A record that does not exist (lost) is never an event.
        let mut lost = rec(Primary, 0);
        lost.resource_version = None;
        assert!(record_events(seen(Promoted, 3), &lost).is_empty());
    }

    #[test]
    fn a_failback_is_notified_when_its_last_step_is_done() {
        let mut stepping = rec(Promoted, 3);
        stepping.failback_step = Some(FailbackStep::StandbyDown);
        assert!(record_events(seen(Promoted, 3), &stepping).is_empty());
        let mut primary_up = rec(Primary, 3);
        primary_up.failback_step = Some(FailbackStep::PrimaryUp);
        assert!(record_events(Some(Seen::of(&stepping)), &primary_up).is_empty());
        // Seen mid-way (a daemon restarted during the failback) or from the start.
        assert_eq!(
            record_events(Some(Seen::of(&primary_up)), &rec(Primary, 3)),
            [Failback]
        );
    }

    fn group() -> GroupConfig {
        GroupConfig::for_test("env0", "agents-a", "agents-b")
    }

    #[test]
    fn own_writes_and_observations_make_one_due_event_each() {
        let mut n = GroupNotices::new(&group(), "w");
        assert_eq!(n.primary.cluster, "in-cluster");
        assert_eq!(n.standby.namespace, "agents-b");
        n.advance(&rec(Primary, 0));
        n.advance(&rec(Promoting, 1));
        n.advance(&rec(Promoted, 1));
        // The next tick reads what this instance wrote: nothing new.
        n.advance(&rec(Promoted, 1));
        assert_eq!(n.due.len(), 1);
        assert_eq!(n.due[0].event, Promotion);
        assert_eq!(n.start.as_ref().map(|(e, _)| *e), Some(1));
    }
}
