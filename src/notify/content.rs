//! What a notice says: built from the failover record, the group's two sides and what
//! this instance saw, by pure functions (no clock read here: the caller passes `now`).

use super::{ActionItem, Notice, NoticeEvent, Reason, SCHEMA_VERSION, StaleLock, StateCheck};
use crate::model::{FailoverRecord, RecordPhase, Side};
use serde::{Deserialize, Serialize};

/// One side of the group, as people know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideInfo {
    /// `primary` or `standby`.
    pub side: Side,
    /// The cluster's name in the kubeconfig context (`in-cluster` for the daemon's own
    /// service account).
    pub cluster: String,
    /// The kubeconfig context, when one is used.
    pub context: Option<String>,
    /// The workload's namespace.
    pub namespace: String,
}

impl SideInfo {
    /// `cluster X, namespace Y`.
    fn describe(&self) -> String {
        format!("cluster {}, namespace {}", self.cluster, self.namespace)
    }

    /// `kubectl --context C -n NS`.
    fn kubectl(&self) -> String {
        match &self.context {
            Some(context) => format!("kubectl --context {context} -n {}", self.namespace),
            None => format!("kubectl -n {}", self.namespace),
        }
    }
}

/// Everything a notice is made of.
#[derive(Debug, Clone)]
pub struct NoticeContext<'a> {
    /// What happened.
    pub event: NoticeEvent,
    /// The group.
    pub group: &'a str,
    /// The record as read or written when the event was seen.
    pub record: &'a FailoverRecord,
    /// The primary side.
    pub primary: &'a SideInfo,
    /// The standby side.
    pub standby: &'a SideInfo,
    /// This instance's `daemon.identity`.
    pub identity: &'a str,
    /// Now, as Unix seconds and RFC 3339.
    pub now_unix: f64,
    /// Now, RFC 3339.
    pub now: &'a str,
    /// The primary's failing signals when this instance saw the promotion start.
    pub start_signals: &'a [Reason],
    /// The standby's state checks, when the daemon has them.
    pub state_checks: Option<Vec<StateCheck>>,
    /// Age of the mirrored state at the promotion, seconds, when known.
    pub mirror_age_seconds: Option<f64>,
    /// The stale lock Leases found (promotion only): `Err` says why they could not be
    /// listed, `None` that they were not looked for.
    pub stale_locks: Option<Result<Vec<StaleLock>, String>>,
}

/// Unix seconds of an RFC 3339 time.
pub(crate) fn unix_of(at: &str) -> Option<f64> {
    at.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond() as f64 / 1000.0)
}

/// RFC 3339 of Unix seconds.
fn rfc3339_of(unix: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .ok()
        .map(|t| t.to_string())
}

/// When the event's step started and finished, as (RFC 3339, Unix seconds) each.
type Span = (Option<(String, f64)>, Option<(String, f64)>);

fn span(ctx: &NoticeContext<'_>) -> Span {
    let r = ctx.record;
    let at = |s: &str| unix_of(s).map(|u| (s.to_string(), u));
    let now = || Some((ctx.now.to_string(), ctx.now_unix));
    let promoted = r.promoted_at.as_deref().and_then(at).or_else(|| {
        r.promoted_at_unix
            .and_then(|u| rfc3339_of(u).map(|s| (s, u as f64)))
    });
    match ctx.event {
        NoticeEvent::Promotion => (
            promoted,
            r.completed_at.as_deref().and_then(at).or_else(now),
        ),
        NoticeEvent::Failed => {
            let failed = r
                .history
                .iter()
                .rev()
                .find(|t| t.phase == RecordPhase::Failed && t.epoch == r.epoch)
                .and_then(|t| at(&t.at));
            (promoted, failed.or_else(now))
        }
        NoticeEvent::Failback => {
            // As `kube-failover failback` stamped them; for a record moved back by
            // hand, its history's first failback step and the failback time.
            let started = r.failback_started_at.as_deref().and_then(at).or_else(|| {
                r.history
                    .iter()
                    .find(|t| t.epoch == r.epoch && t.what.contains("failback:"))
                    .and_then(|t| at(&t.at))
            });
            let done = r
                .failback_completed_at
                .as_deref()
                .and_then(at)
                .or_else(|| r.failback_at.as_deref().and_then(at))
                .or_else(|| {
                    r.failback_at_unix
                        .and_then(|u| rfc3339_of(u).map(|s| (s, u as f64)))
                })
                .or_else(now);
            (started, done)
        }
    }
}

/// What a reason code means, for people. Codes without a text of their own get a
/// pointer to the README's list.
pub fn reason_text(code: &str) -> &'static str {
    match code {
        "primary_down_quorum" => {
            "enough of the primary's signals showed down evidence for policy.failure_threshold \
             ticks in a row to reach policy.quorum"
        }
        "operator_promotion" => "an operator ran `kube-failover promote`",
        "promotion_timeout" => {
            "the standby was not Ready within policy.promotion_timeout; scaling it is retried \
             with backoff"
        }
        "failback_seen" => "the failover record is back at phase primary after a promotion",
        "standby_ready" => "the standby's Deployments are Ready",
        "refused" => "the host answered but nothing listens: the server is down",
        "timeout" => "no answer in time while the standby answered",
        "connect" => "the connection failed (reset, unroutable, DNS)",
        "http_status" => "the HTTP check answered with another status than expected",
        "unready" => "the workload's Pods are not Ready",
        "no_pods" => "the workload has no Pods",
        "crash_loop" => "the workload's Pods are crash-looping",
        "unschedulable" => "the workload's Pods cannot be scheduled",
        "scaled_to_zero" => "the workload is scaled to 0",
        _ => "see the README's list of reason codes",
    }
}

fn record_reason(ctx: &NoticeContext<'_>) -> Reason {
    let code = match ctx.event {
        NoticeEvent::Failback => "failback_seen".to_string(),
        _ if ctx.record.reason.is_empty() => "unknown".to_string(),
        _ => ctx.record.reason.clone(),
    };
    Reason {
        text: reason_text(&code).to_string(),
        code,
        signal: None,
    }
}

fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(s.max(0.0) as u64)).to_string()
    }
}

fn summary(ctx: &NoticeContext<'_>, duration: Option<f64>) -> String {
    let (g, epoch) = (ctx.group, ctx.record.epoch);
    let took = duration
        .map(|d| format!(" in {}", seconds(d)))
        .unwrap_or_default();
    match ctx.event {
        NoticeEvent::Promotion => format!(
            "group {g}: the standby ({}) is active; promotion epoch {epoch} completed{took}",
            ctx.standby.describe()
        ),
        NoticeEvent::Failed => format!(
            "group {g}: promotion epoch {epoch} to the standby ({}) did not complete{took} \
             ({}); retrying",
            ctx.standby.describe(),
            record_reason(ctx).code
        ),
        NoticeEvent::Failback => format!(
            "group {g}: failed back to the primary ({}) after promotion epoch {epoch}{took}",
            ctx.primary.describe()
        ),
    }
}

fn item(id: &str, text: String) -> ActionItem {
    ActionItem {
        id: id.to_string(),
        text,
    }
}

fn actions(ctx: &NoticeContext<'_>) -> Vec<ActionItem> {
    let (old, new) = match ctx.event {
        NoticeEvent::Failback => (ctx.standby, ctx.primary),
        _ => (ctx.primary, ctx.standby),
    };
    let mut out = Vec::new();
    if ctx.event == NoticeEvent::Failed {
        out.push(item(
            "check_standby",
            format!(
                "The standby's Deployments did not become Ready within \
                 policy.promotion_timeout; the daemon keeps scaling them with backoff. Look at \
                 them: `{} get deployments,pods` (image pulls, scheduling, quotas).",
                ctx.standby.kubectl()
            ),
        ));
    } else {
        out.push(item(
            "redeploy_waiting_runs",
            format!(
                "Redeploy the env0 deployments that were waiting for approval: their working \
                 directory stayed in the {} ({}) and did not move with the {}.",
                old.side,
                old.describe(),
                if ctx.event == NoticeEvent::Failback {
                    "failback"
                } else {
                    "failover"
                }
            ),
        ));
    }
    out.push(item(
        "check_in_flight_runs",
        format!(
            "Check the env0 deployments that were running in the {} ({}) when it stopped: \
             they did not finish there. Look at their status in env0, their state and locks, \
             and run them again.",
            old.side,
            old.describe()
        ),
    ));
    match &ctx.stale_locks {
        Some(Ok(locks)) if !locks.is_empty() => {
            let kept: Vec<&StaleLock> = locks.iter().filter(|l| !l.deleted).collect();
            let deleted: Vec<&str> = locks
                .iter()
                .filter(|l| l.deleted)
                .map(|l| l.name.as_str())
                .collect();
            if !kept.is_empty() {
                let names: Vec<&str> = kept.iter().map(|l| l.name.as_str()).collect();
                let ids: Vec<String> = kept
                    .iter()
                    .map(|l| format!("{} holds {}", l.name, l.lock_id))
                    .collect();
                out.push(item(
                    "clear_stale_locks",
                    format!(
                        "Clear the stale Terraform locks, taken before the promotion, once no \
                         run holds them: `{} delete lease {}` (or `terraform force-unlock \
                         <lock ID>` in the workspace; {}).",
                        new.kubectl(),
                        names.join(" "),
                        ids.join(", ")
                    ),
                ));
            }
            if !deleted.is_empty() {
                let (what, were) = if deleted.len() == 1 {
                    ("lock", "was")
                } else {
                    ("locks", "were")
                };
                out.push(item(
                    "clear_stale_locks",
                    format!(
                        "The stale Terraform {what} {} {were} deleted \
                         (groups.state.clear_stale_locks): make sure no run of the old \
                         primary still writes that state.",
                        deleted.join(", ")
                    ),
                ));
            }
        }
        Some(Err(why)) => out.push(item(
            "clear_stale_locks",
            format!(
                "Look for stale Terraform locks by hand: `{} get leases | grep lock-tfstate-`; \
                 delete one only when no run holds it (the daemon could not list them: {why}).",
                new.kubectl()
            ),
        )),
        Some(Ok(_)) => {}
        None if ctx.event == NoticeEvent::Failback => out.push(item(
            "clear_stale_locks",
            format!(
                "Look for Terraform locks left by runs on the standby: `{} get leases | grep \
                 lock-tfstate-`; delete one only when no run holds it.",
                new.kubectl()
            ),
        )),
        None => {}
    }
    if ctx.event != NoticeEvent::Failed {
        let mut text = format!(
            "Check that the Terraform state the {}'s runs use is current before running \
             deployments (remote backend reachable, replicated state volume or mirror in \
             sync).",
            new.side
        );
        if let Some(age) = ctx.mirror_age_seconds {
            text.push_str(&format!(
                " The mirrored state was {} old when the promotion started: changes made in \
                 the old primary since then are not in it.",
                seconds(age)
            ));
        }
        let failing: Vec<String> = ctx
            .state_checks
            .iter()
            .flatten()
            .filter(|c| !c.passed)
            .map(|c| format!("{} ({})", c.name, c.reason))
            .collect();
        if !failing.is_empty() {
            text.push_str(&format!(" Failing state checks: {}.", failing.join(", ")));
        }
        out.push(item("check_state_freshness", text));
    }
    if ctx.event == NoticeEvent::Promotion {
        out.push(item(
            "plan_failback",
            format!(
                "When the primary is repaired, fail back on purpose: `kube-failover failback \
                 --group {}` (never by editing or deleting the failover record).",
                ctx.group
            ),
        ));
    }
    out
}

/// The notice of `ctx.event`.
pub fn build(ctx: NoticeContext<'_>) -> Notice {
    let (started, finished) = span(&ctx);
    let duration = match (&started, &finished) {
        (Some((_, a)), Some((_, b))) => Some(((b - a) * 10.0).round() / 10.0).filter(|d| *d >= 0.0),
        _ => None,
    };
    let (from, to) = match ctx.event {
        NoticeEvent::Failback => (ctx.standby.clone(), ctx.primary.clone()),
        _ => (ctx.primary.clone(), ctx.standby.clone()),
    };
    let mut reasons = vec![record_reason(&ctx)];
    if ctx.event != NoticeEvent::Failback {
        reasons.extend(ctx.start_signals.iter().cloned());
    }
    let (stale_locks, stale_locks_error) = match &ctx.stale_locks {
        Some(Ok(locks)) => (Some(locks.clone()), None),
        Some(Err(why)) => (None, Some(why.clone())),
        None => (None, None),
    };
    Notice {
        version: SCHEMA_VERSION,
        id: format!("{}/{}/{}", ctx.group, ctx.record.epoch, ctx.event),
        event: ctx.event,
        group: ctx.group.to_string(),
        epoch: ctx.record.epoch,
        summary: summary(&ctx, duration),
        sent_by: ctx.identity.to_string(),
        created_at: ctx.now.to_string(),
        from,
        to,
        reasons,
        started_at: started.map(|(s, _)| s),
        finished_at: finished.map(|(s, _)| s),
        duration_seconds: duration,
        recorded_by: ctx.record.holder.clone(),
        actions: actions(&ctx),
        state_checks: ctx.state_checks,
        mirror_age_seconds: ctx.mirror_age_seconds,
        stale_locks,
        stale_locks_error,
        env0: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Transition;
    use crate::notify::StateCheckGate;

    pub(in crate::notify) fn sides() -> (SideInfo, SideInfo) {
        (
            SideInfo {
                side: Side::Primary,
                cluster: "prod-a".into(),
                context: Some("prod-a".into()),
                namespace: "env0-agent".into(),
            },
            SideInfo {
                side: Side::Standby,
                cluster: "prod-b".into(),
                context: Some("prod-b-admin".into()),
                namespace: "env0-agent".into(),
            },
        )
    }

    pub(in crate::notify) fn promoted_record() -> FailoverRecord {
        FailoverRecord {
            phase: Some(RecordPhase::Promoted),
            epoch: 3,
            reason: "primary_down_quorum".into(),
            promoted_at: Some("2025-01-02T03:04:05Z".into()),
            promoted_at_unix: Some(1_735_787_045),
            completed_at: Some("2025-01-02T03:04:17Z".into()),
            holder: "watcher-1".into(),
            resource_version: Some("7".into()),
            ..FailoverRecord::default()
        }
    }

    pub(in crate::notify) fn lock(name: &str, deleted: bool) -> StaleLock {
        StaleLock {
            name: name.into(),
            namespace: "env0-agent".into(),
            lock_id: "5f1c-lock-id".into(),
            operation: Some("OperationTypeApply".into()),
            who: Some("runner@agent-7".into()),
            locked_at: Some("2025-01-02T02:00:00Z".into()),
            deleted,
        }
    }

    pub(crate) fn promotion_notice() -> Notice {
        let (p, s) = sides();
        let record = promoted_record();
        build(NoticeContext {
            event: NoticeEvent::Promotion,
            group: "env0",
            record: &record,
            primary: &p,
            standby: &s,
            identity: "watcher-1",
            now_unix: 1_735_787_050.0,
            now: "2025-01-02T03:04:10Z",
            start_signals: &[Reason {
                code: "refused".into(),
                signal: Some("api".into()),
                text: "connection refused".into(),
            }],
            state_checks: None,
            mirror_age_seconds: None,
            stale_locks: Some(Ok(vec![lock("lock-tfstate-default-state", false)])),
        })
    }

    fn ids(n: &Notice) -> Vec<&str> {
        n.actions.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn a_promotion_says_who_where_why_how_long_and_what_to_do() {
        let n = promotion_notice();
        assert_eq!(n.id, "env0/3/promotion");
        assert_eq!(n.version, SCHEMA_VERSION);
        assert_eq!((n.from.side, n.to.side), (Side::Primary, Side::Standby));
        assert_eq!(n.to.cluster, "prod-b");
        assert_eq!(n.duration_seconds, Some(12.0));
        assert_eq!(n.started_at.as_deref(), Some("2025-01-02T03:04:05Z"));
        assert_eq!(n.finished_at.as_deref(), Some("2025-01-02T03:04:17Z"));
        assert_eq!(n.reasons[0].code, "primary_down_quorum");
        assert!(n.reasons[0].text.contains("quorum"));
        assert_eq!(n.reasons[1].signal.as_deref(), Some("api"));
        assert_eq!(n.recorded_by, "watcher-1");
        assert_eq!(
            ids(&n),
            [
                "redeploy_waiting_runs",
                "check_in_flight_runs",
                "clear_stale_locks",
                "check_state_freshness",
                "plan_failback"
            ]
        );
        assert!(
            n.actions[0].text.contains("cluster prod-a"),
            "{:?}",
            n.actions
        );
        let clear = &n.actions[2].text;
        assert!(
            clear.contains(
                "`kubectl --context prod-b-admin -n env0-agent delete lease lock-tfstate-default-state`"
            ),
            "{clear}"
        );
        assert!(clear.contains("5f1c-lock-id"), "{clear}");
        assert_eq!(n.stale_locks.as_ref().map(Vec::len), Some(1));
        assert_eq!(n.stale_locks_error, None);
        assert!(n.summary.contains("completed in 12.0 s"), "{}", n.summary);
        // Absent inputs are absent, not invented.
        assert_eq!(n.state_checks, None);
        assert_eq!(n.mirror_age_seconds, None);
    }

    #[test]
    fn optional_state_inputs_appear_when_given() {
        let (p, s) = sides();
        let record = promoted_record();
        let n = build(NoticeContext {
            event: NoticeEvent::Promotion,
            group: "env0",
            record: &record,
            primary: &p,
            standby: &s,
            identity: "w",
            now_unix: 0.0,
            now: "2025-01-02T03:04:10Z",
            start_signals: &[],
            state_checks: Some(vec![StateCheck {
                name: "volume".into(),
                gate: StateCheckGate::Warn,
                passed: false,
                reason: "unbound".into(),
                detail: "PVC env0-state-volume-claim is Pending".into(),
            }]),
            mirror_age_seconds: Some(42.0),
            stale_locks: Some(Ok(vec![lock("lock-tfstate-a", true)])),
        });
        let fresh = n
            .actions
            .iter()
            .find(|a| a.id == "check_state_freshness")
            .unwrap();
        assert!(fresh.text.contains("42.0 s old"), "{}", fresh.text);
        assert!(fresh.text.contains("volume (unbound)"), "{}", fresh.text);
        let clear: Vec<_> = n
            .actions
            .iter()
            .filter(|a| a.id == "clear_stale_locks")
            .collect();
        assert_eq!(clear.len(), 1);
        assert!(clear[0].text.contains("lock lock-tfstate-a was deleted"));
        assert_eq!(n.mirror_age_seconds, Some(42.0));
        assert_eq!(n.state_checks.unwrap()[0].gate, StateCheckGate::Warn);
    }

    #[test]
    fn failed_and_failback_notices_have_their_own_times_sides_and_actions() {
        let (p, s) = sides();
        let mut record = promoted_record();
        record.phase = Some(RecordPhase::Failed);
        record.reason = "promotion_timeout".into();
        record.completed_at = None;
        record.history = vec![Transition {
            at: "2025-01-02T03:06:05Z".into(),
            phase: RecordPhase::Failed,
            epoch: 3,
            by: "watcher-1".into(),
            what: String::new(),
            reason: "promotion_timeout".into(),
        }];
        let ctx = |event, record| NoticeContext {
            event,
            group: "env0",
            record,
            primary: &p,
            standby: &s,
            identity: "w",
            now_unix: 1_735_787_200.0,
            now: "2025-01-02T03:06:40Z",
            start_signals: &[],
            state_checks: None,
            mirror_age_seconds: None,
            stale_locks: None,
        };
        let failed = build(ctx(NoticeEvent::Failed, &record));
        assert_eq!(failed.id, "env0/3/failed");
        assert_eq!(failed.duration_seconds, Some(120.0));
        assert_eq!(failed.reasons[0].code, "promotion_timeout");
        assert_eq!(
            ids(&failed),
            ["check_standby", "check_in_flight_runs"],
            "{:?}",
            failed.actions
        );
        assert!(
            failed.summary.contains("did not complete in 2m"),
            "{}",
            failed.summary
        );

        let mut back = promoted_record();
        back.phase = Some(RecordPhase::Primary);
        back.holder = "alice".into();
        back.failback_at = Some("2025-01-02T05:00:30Z".into());
        back.failback_at_unix = Some(1_735_794_030);
        back.history = vec![Transition {
            at: "2025-01-02T05:00:00Z".into(),
            phase: RecordPhase::Promoted,
            epoch: 3,
            by: "alice".into(),
            what: "fenced failback:standby_down".into(),
            reason: String::new(),
        }];
        let n = build(ctx(NoticeEvent::Failback, &back));
        assert_eq!(n.id, "env0/3/failback");
        assert_eq!((n.from.side, n.to.side), (Side::Standby, Side::Primary));
        assert_eq!(n.duration_seconds, Some(30.0));
        assert_eq!(n.recorded_by, "alice");
        assert_eq!(n.reasons.len(), 1);
        assert_eq!(n.reasons[0].code, "failback_seen");
        assert_eq!(
            ids(&n),
            [
                "redeploy_waiting_runs",
                "check_in_flight_runs",
                "clear_stale_locks",
                "check_state_freshness"
            ]
        );
        assert!(n.actions[0].text.contains("standby (cluster prod-b"));
        assert!(n.actions[2].text.contains("kubectl --context prod-a"));

        // Stamped by `kube-failover failback`: from its first step to the primary Ready,
        // which came well after the record said `primary` (failback_at).
        let mut stamped = back.clone();
        stamped.failback_started_at = Some("2025-01-02T05:00:29.800Z".into());
        stamped.failback_completed_at = Some("2025-01-02T05:00:36.200Z".into());
        let n = build(ctx(NoticeEvent::Failback, &stamped));
        assert_eq!(n.started_at.as_deref(), Some("2025-01-02T05:00:29.800Z"));
        assert_eq!(n.finished_at.as_deref(), Some("2025-01-02T05:00:36.200Z"));
        assert_eq!(n.duration_seconds, Some(6.4));
        assert!(n.summary.contains("6.4"), "{}", n.summary);
    }

    #[test]
    fn a_lock_listing_that_failed_is_said_and_no_times_means_no_duration() {
        let (p, s) = sides();
        let record = FailoverRecord {
            phase: Some(RecordPhase::Promoted),
            epoch: 1,
            ..FailoverRecord::default()
        };
        let n = build(NoticeContext {
            event: NoticeEvent::Promotion,
            group: "env0",
            record: &record,
            primary: &p,
            standby: &s,
            identity: "w",
            now_unix: 100.0,
            now: "1970-01-01T00:01:40Z",
            start_signals: &[],
            state_checks: None,
            mirror_age_seconds: None,
            stale_locks: Some(Err("forbidden".into())),
        });
        assert_eq!(n.duration_seconds, None);
        assert_eq!(n.started_at, None);
        assert_eq!(n.reasons[0].code, "unknown");
        assert_eq!(n.stale_locks, None);
        assert_eq!(n.stale_locks_error.as_deref(), Some("forbidden"));
        let clear = n
            .actions
            .iter()
            .find(|a| a.id == "clear_stale_locks")
            .unwrap();
        assert!(clear.text.contains("could not list them: forbidden"));
    }
}
