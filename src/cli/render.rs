//! The readable form of a `/status` document: a header line, then per group its state,
//! a table of the primary's signals, the failover record, the state checks and drift,
//! and the last decision.

use kube_failover::model::Side;
use kube_failover::status::{
    DecisionStatus, DriftStatus, GroupStatus, GuardsStatus, Named, RecordStatus, SignalStatus,
    StateCheckStatus, StatusReport,
};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// The readable form of a `/status` document, one block per group. `now` is the Unix
/// time used for "… ago".
pub(crate) fn status(report: &StatusReport, now: f64) -> String {
    let mut out = String::new();
    let last_tick = report
        .last_tick_unix
        .map(|t| ago(t, now))
        .unwrap_or_else(|| "never".to_string());
    let _ = writeln!(
        out,
        "kube-failover {}  mode {}  identity {}  ready {}  last tick {}",
        report.version,
        report.mode,
        report.identity,
        yes_no(report.ready),
        last_tick
    );
    if report.groups.is_empty() {
        let _ = writeln!(out, "\n(no groups reported yet)");
    }
    for g in &report.groups {
        out.push('\n');
        group(&mut out, g, now);
    }
    out
}

/// One group: its summary rows, the signal table, the record, the state checks and
/// drift, and the last decision.
fn group(out: &mut String, g: &GroupStatus, now: f64) {
    let _ = writeln!(out, "group {}", g.name);
    for (label, value) in summary(g, now) {
        let _ = writeln!(out, "  {label:<28} {value}");
    }
    out.push('\n');
    signals(out, &g.signals);
    out.push('\n');
    record(out, g.record.as_ref());
    guards(out, g.guards.as_ref(), now);
    state_checks(out, &g.state_checks);
    drift(out, g.drift.as_ref(), now);
    decision(out, &g.last_decision, now);
}

/// Label and value of each summary row; alarms (dual active, no active side) second.
fn summary(g: &GroupStatus, now: f64) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        (
            "state",
            format!("{} since {}", g.state, when(g.since_unix, now)),
        ),
        ("active cluster", g.active_cluster.to_string()),
        ("primary down", yes_no(g.primary_down).to_string()),
        (
            "standby fit",
            format!(
                "{} (api: {}, workloads: {}){}",
                yes_no(g.standby_fit),
                g.standby.api_reason,
                g.standby.workloads_reason,
                detail(&g.standby.detail)
            ),
        ),
        (
            "unexpected standby replicas",
            g.unexpected_standby_replicas.to_string(),
        ),
        (
            "last action error",
            g.last_action_error
                .clone()
                .unwrap_or_else(|| "none".to_string()),
        ),
    ];
    if g.dual_active {
        rows.insert(1, ("DUAL ACTIVE", "both sides want replicas".to_string()));
    }
    if g.no_active_side {
        rows.insert(
            1,
            (
                "NO ACTIVE SIDE",
                "neither side runs the workload".to_string(),
            ),
        );
    }
    if let Some(c) = &g.coordination {
        if let Some(secs) = c.no_leader_seconds {
            rows.insert(
                1,
                (
                    "NO LEADER",
                    format!(
                        "no instance has led this group for {secs:.0}s: nothing is promoted or \
                         fenced until one does"
                    ),
                ),
            );
        }
        let observers: Vec<String> = c
            .observers
            .iter()
            .map(|o| {
                let age = o
                    .age_seconds
                    .map_or_else(|| "?".to_string(), |a| format!("{a:.0}s"));
                let stale = if o.fresh { "" } else { ", stale" };
                format!("{} {} ({age}{stale})", o.identity, o.verdict)
            })
            .collect();
        rows.push((
            "leader",
            format!(
                "{} (this instance: {})",
                c.leader.as_deref().unwrap_or("none"),
                c.role
            ),
        ));
        rows.push((
            "observers",
            format!("{}; quorum {}", observers.join(", "), c.quorum),
        ));
    }
    if let Some(m) = &g.mirror {
        rows.push(("state mirror", mirror(m, now)));
    }
    if let Some(e) = &g.env0 {
        rows.push(("env0 stranded", env0(e)));
    }
    rows
}

/// env0's stranded deployments in one line: the state of the lookup, each one by
/// name and status, the redeploys, or why env0 could not be asked.
fn env0(e: &kube_failover::status::Env0Status) -> String {
    let mut line = match e.epoch {
        Some(epoch) => format!("{} (epoch {epoch})", e.state),
        None => e.state.clone(),
    };
    if let Some(why) = &e.report.error {
        let _ = write!(line, "; error: {why}");
    } else if e.state == "done" {
        let names: Vec<String> = e
            .report
            .stranded
            .iter()
            .map(|s| format!("{} ({}, {})", s.environment, s.deployment_id, s.status))
            .collect();
        let _ = write!(
            line,
            "; {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        for r in &e.report.redeploys {
            let _ = write!(line, "; {}: redeploy {}", r.environment, r.result);
        }
    }
    line
}

/// The state mirror in one line: running or why not, what is in sync, how old, and the
/// Secrets it leaves alone.
fn mirror(m: &kube_failover::status::MirrorStatus, now: f64) -> String {
    let mut line = match (&m.stopped_reason, m.active) {
        (_, true) if m.writer => "copying".to_string(),
        (_, true) => "comparing (another instance writes)".to_string(),
        (Some(why), false) => format!("stopped ({why})"),
        (None, false) => "stopped".to_string(),
    };
    let _ = write!(
        line,
        "; {} Secrets, {} bytes in sync; last sync {}",
        m.secrets,
        m.bytes,
        m.last_sync_unix
            .map_or("never".to_string(), |t| ago(t, now))
    );
    if m.conflict_count > 0 {
        let names: Vec<String> = m
            .conflicts
            .iter()
            .map(|c| format!("{} ({})", c.name, c.kind))
            .collect();
        let _ = write!(
            line,
            "; {} CONFLICTS: {}",
            m.conflict_count,
            names.join(", ")
        );
    }
    if let Some(e) = &m.last_error {
        let _ = write!(line, "; error: {e}");
    }
    line
}

/// The primary's signals as a table, columns as wide as their widest cell; the last
/// column is not padded.
fn signals(out: &mut String, signals: &[SignalStatus]) {
    const HEADER: [&str; 7] = [
        "SIGNAL", "UP", "FAILS", "PASSES", "LAST", "LATENCY", "DETAIL",
    ];
    if signals.is_empty() {
        let _ = writeln!(out, "  (no signals yet)");
        return;
    }
    let table: Vec<[String; 7]> = signals
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                health(s).to_string(),
                s.consecutive_failures.to_string(),
                s.consecutive_successes.to_string(),
                s.last_reason
                    .as_ref()
                    .map_or_else(|| "-".to_string(), ToString::to_string),
                s.last_latency_seconds
                    .map(|l| format!("{:.0}ms", l * 1000.0))
                    .unwrap_or_else(|| "-".to_string()),
                s.last_detail.clone(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                let _ = write!(l, "  {cell}");
            } else {
                let _ = write!(l, "  {cell:<width$}", width = widths[i]);
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(HEADER));
    for row in &table {
        let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
    }
}

/// The UP column: `unknown` while the signal's answers prove nothing, else `up`/`down`.
fn health(s: &SignalStatus) -> &'static str {
    if s.consecutive_unknown > 0 {
        "unknown"
    } else if s.up {
        "up"
    } else {
        "down"
    }
}

/// Rows as a table under `header`, columns as wide as their widest cell; the last
/// column is not padded.
fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                let _ = write!(l, "  {cell}");
            } else {
                let _ = write!(l, "  {cell:<width$}", width = widths[i]);
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
    }
}

/// The standby's state checks as a table; nothing when none is configured.
fn state_checks(out: &mut String, checks: &[StateCheckStatus]) {
    if checks.is_empty() {
        return;
    }
    out.push('\n');
    let rows: Vec<[String; 4]> = checks
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.gate.to_string(),
                c.result.to_string(),
                c.detail.clone(),
            ]
        })
        .collect();
    table(out, ["STATE CHECK", "GATE", "RESULT", "DETAIL"], &rows);
}

/// Drift: when each side was read, every differing field, what was not compared.
fn drift(out: &mut String, drift: Option<&DriftStatus>, now: f64) {
    let Some(d) = drift else { return };
    let seen = d
        .primary_seen_unix
        .map_or_else(|| "never".to_string(), |t| when(t, now));
    let _ = writeln!(
        out,
        "  drift     gate {}  primary seen healthy {}  differences {}",
        d.gate,
        seen,
        d.items.len()
    );
    for i in &d.items {
        let mut at = i.deployment.clone();
        if let Some(c) = &i.container {
            at = format!("{at}/{c}");
        }
        let key = i.key.as_ref().map(|k| format!(" {k}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "            {}{key} of {at}: primary {} vs standby {}",
            i.field, i.primary, i.standby
        );
    }
    for n in &d.not_compared {
        let _ = writeln!(out, "            {n}");
    }
}

/// The guards beside the agents: per side the counts, then every heartbeat.
fn guards(out: &mut String, guards: Option<&GuardsStatus>, now: f64) {
    let Some(g) = guards else { return };
    let sides: Vec<String> = g
        .sides
        .iter()
        .map(|s| {
            let expected = match s.side {
                Named::Known(Side::Standby) => g.expected_standby,
                _ => g.expected_primary,
            };
            let t = &s.tally;
            let mut text = format!(
                "{} {} expected: {} running, {} stopped, {} stale",
                s.side, expected, t.running, t.stopped, t.stale
            );
            if t.missing > 0 {
                text.push_str(&format!(", MISSING {}", t.missing));
            }
            if t.stopped_while_active > 0 {
                text.push_str(&format!(
                    ", {} STOPPED on the active side",
                    t.stopped_while_active
                ));
            }
            text
        })
        .collect();
    let _ = writeln!(out, "  guards    {}", sides.join("; "));
    if let Some(e) = &g.error {
        let _ = writeln!(out, "            heartbeats unreadable: {e}");
    }
    for b in &g.heartbeats {
        let epoch = b
            .standby_epoch
            .map_or_else(|| "-".to_string(), |e| e.to_string());
        let age = if b.age_seconds < 0.0 {
            "never renewed".to_string()
        } else {
            ago(now - b.age_seconds, now)
        };
        let _ = writeln!(
            out,
            "            {} ({}{}) {} {}  standby epoch {epoch}  written {age}{}{}",
            b.identity,
            b.side,
            if b.form == "sidecar" { ", sidecar" } else { "" },
            b.state,
            b.reason,
            if b.fresh { "" } else { "  STALE" },
            b.isolation_bound_seconds
                .map(|s| format!("  on isolation: stop (waited for up to {s:.0}s)"))
                .unwrap_or_default()
        );
    }
}

/// The failover record: phase, epoch, holder, reason and the times of its steps.
fn record(out: &mut String, record: Option<&RecordStatus>) {
    let Some(r) = record else {
        let _ = writeln!(out, "  record    none (no failover recorded)");
        return;
    };
    let _ = writeln!(
        out,
        "  record    phase {}  epoch {}  holder {}  reason {}",
        r.phase, r.epoch, r.holder, r.reason
    );
    let times = [
        ("promoted", &r.promoted_at),
        ("completed", &r.completed_at),
        ("fenced", &r.fenced_at),
    ];
    let mut times: Vec<String> = times
        .iter()
        .map(|(k, v)| format!("{k} {}", v.as_deref().unwrap_or("-")))
        .collect();
    if let (Some(by), Some(fenced)) = (&r.fenced_by, times.last_mut()) {
        fenced.push_str(&format!(" (by {by})"));
    }
    let _ = writeln!(out, "            {}", times.join("  "));
    if let Some(age) = r.mirror_age_seconds {
        let _ = writeln!(
            out,
            "            state mirror {age}s behind the primary when the promotion started"
        );
    }
}

/// The last decision: when, why, what it did, and whether it would promote.
fn decision(out: &mut String, d: &DecisionStatus, now: f64) {
    fn list<T: ToString>(items: &[T]) -> String {
        if items.is_empty() {
            "none".to_string()
        } else {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
    let _ = writeln!(out, "  decision  {}", when(d.at_unix, now));
    let _ = writeln!(out, "            reasons: {}", list(&d.reasons));
    if !d.warnings.is_empty() {
        let _ = writeln!(out, "            warnings: {}", list(&d.warnings));
    }
    let _ = writeln!(out, "            actions: {}", list(&d.actions));
    let _ = writeln!(
        out,
        "            would promote: {}",
        yes_no(d.would_promote)
    );
}

/// `2026-01-02T03:04:05Z (5m 3s ago)`.
fn when(unix: f64, now: f64) -> String {
    if !unix.is_finite() || unix <= 0.0 {
        return "never".to_string();
    }
    let at = UNIX_EPOCH + Duration::from_secs_f64(unix);
    format!(
        "{} ({})",
        humantime::format_rfc3339_seconds(at),
        ago(unix, now)
    )
}

/// Relative time, whole seconds: `5m 3s ago`, `just now`, `2s in the future` (clock skew).
fn ago(unix: f64, now: f64) -> String {
    let delta = now - unix;
    let secs = Duration::from_secs(delta.abs().round() as u64);
    if secs.is_zero() {
        "just now".to_string()
    } else if delta > 0.0 {
        format!("{} ago", humantime::format_duration(secs))
    } else {
        format!("{} in the future", humantime::format_duration(secs))
    }
}

/// `yes` or `no`.
fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `: detail`, or nothing when there is none.
fn detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_failover::status::{GuardHeartbeatStatus, GuardSideStatus, StandbyStatus};

    const NOW: f64 = 1_767_323_045.0; // 2026-01-02T03:04:05Z

    fn report() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            mode: "observe".into(),
            identity: "watcher-1".into(),
            ready: true,
            last_tick_unix: Some(NOW - 2.0),
            groups: vec![GroupStatus {
                name: "env0".into(),
                state: Named::parse("primary_down"),
                since_unix: NOW - 303.0,
                primary_down: true,
                standby_fit: false,
                active_cluster: Named::parse("primary"),
                signals: vec![
                    SignalStatus {
                        name: Named::parse("api"),
                        up: false,
                        consecutive_failures: 4,
                        consecutive_successes: 0,
                        consecutive_unknown: 0,
                        last_reason: Some(Named::parse("timeout")),
                        last_latency_seconds: Some(1.0),
                        last_detail: "no answer within 1s".into(),
                    },
                    SignalStatus {
                        name: Named::parse("workload:env0=agent-trigger"),
                        up: true,
                        consecutive_failures: 0,
                        consecutive_successes: 12,
                        consecutive_unknown: 0,
                        last_reason: Some(Named::parse("ok")),
                        last_latency_seconds: Some(0.0123),
                        last_detail: String::new(),
                    },
                ],
                standby: StandbyStatus {
                    api_reason: Named::parse("ok"),
                    workloads_reason: Named::parse("not_found"),
                    detail: "no Deployment matches env0=agent-proxy".into(),
                },
                record: Some(RecordStatus {
                    phase: Named::parse("promoting"),
                    epoch: 3,
                    reason: "primary_down_quorum".into(),
                    promoted_at: Some("2026-01-02T03:00:00Z".into()),
                    completed_at: None,
                    fenced_at: Some("2026-01-02T03:00:04Z".into()),
                    fenced_by: Some("guard".into()),
                    holder: "watcher-1".into(),
                    primary_deployments: vec!["agent-trigger".into()],
                    failback_at: None,
                    restored_at: None,
                    mirror_age_seconds: None,
                }),
                last_decision: DecisionStatus {
                    at_unix: NOW - 1.0,
                    reasons: vec![
                        Named::parse("primary_down_quorum"),
                        Named::parse("standby_unfit"),
                    ],
                    actions: vec![],
                    would_promote: true,
                    warnings: vec![Named::parse("standby_state_volume_unbound")],
                },
                unexpected_standby_replicas: 1,
                coordination: None,
                state_checks: vec![
                    StateCheckStatus {
                        name: "backend:s3".into(),
                        kind: Named::parse("backend"),
                        gate: Named::parse("block"),
                        ok: true,
                        result: Named::parse("ok"),
                        reason: None,
                        detail: "backend s3: HTTP 403".into(),
                        last_checked_unix: Some(NOW - 1.0),
                    },
                    StateCheckStatus {
                        name: "volume".into(),
                        kind: Named::parse("volume"),
                        gate: Named::parse("warn"),
                        ok: false,
                        result: Named::parse("unbound"),
                        reason: Some(Named::parse("standby_state_volume_unbound")),
                        detail: "PersistentVolumeClaim env0-agent/c is Pending, not Bound".into(),
                        last_checked_unix: Some(NOW - 1.0),
                    },
                ],
                drift: Some(DriftStatus {
                    gate: "block".into(),
                    primary_seen_unix: Some(NOW - 5.0),
                    standby_seen_unix: Some(NOW - 1.0),
                    deployments: vec!["trigger".into()],
                    items: vec![kube_failover::status::DriftItem {
                        deployment: "trigger".into(),
                        container: Some("agent".into()),
                        field: "image".into(),
                        key: None,
                        primary: "env0/agent:3.1".into(),
                        standby: "env0/agent:3.0".into(),
                    }],
                    not_compared: vec!["secret_data: not compared: the daemon may not read Secrets in the primary (forbidden)".into()],
                }),
                mirror: None,
                guards: Some(GuardsStatus {
                    expected_primary: 2,
                    expected_standby: 1,
                    error: None,
                    sides: vec![
                        GuardSideStatus {
                            side: Named::parse("primary"),
                            tally: Default::default(),
                        },
                        GuardSideStatus {
                            side: Named::parse("standby"),
                            tally: kube_failover::model::GuardTally {
                                running: 0,
                                stopped: 1,
                                stale: 0,
                                missing: 0,
                                stopped_while_active: 1,
                            },
                        },
                    ],
                    heartbeats: vec![GuardHeartbeatStatus {
                        identity: "standby-agent-0".into(),
                        side: Named::parse("standby"),
                        state: "stopped".into(),
                        form: "wrapper".into(),
                        reason: "record_primary".into(),
                        standby_epoch: Some(3),
                        age_seconds: 2.0,
                        fresh: true,
                        isolation_bound_seconds: None,
                    }],
                }),
                env0: None,
                dual_active: false,
                no_active_side: false,
                last_action_error: None,
            }],
        }
    }

    #[test]
    fn table_shows_state_signals_standby_record_and_decision() {
        let text = status(&report(), NOW);
        let expected = [
            "kube-failover 0.1.0  mode observe  identity watcher-1  ready yes  last tick 2s ago",
            "group env0",
            "  state                        primary_down since 2026-01-02T02:59:02Z (5m 3s ago)",
            "  active cluster               primary",
            "  primary down                 yes",
            "  standby fit                  no (api: ok, workloads: not_found): no Deployment matches env0=agent-proxy",
            "  unexpected standby replicas  1",
            "  last action error            none",
            "  SIGNAL                       UP    FAILS  PASSES  LAST     LATENCY  DETAIL",
            "  api                          down  4      0       timeout  1000ms   no answer within 1s",
            "  workload:env0=agent-trigger  up    0      12      ok       12ms",
            "  record    phase promoting  epoch 3  holder watcher-1  reason primary_down_quorum",
            "            promoted 2026-01-02T03:00:00Z  completed -  fenced 2026-01-02T03:00:04Z (by guard)",
            "  guards    primary 2 expected: 0 running, 0 stopped, 0 stale; standby 1 expected: 0 running, 1 stopped, 0 stale, 1 STOPPED on the active side",
            "            standby-agent-0 (standby) stopped record_primary  standby epoch 3  written 2s ago",
            "  decision  2026-01-02T03:04:04Z (1s ago)",
            "            reasons: primary_down_quorum, standby_unfit",
            "            warnings: standby_state_volume_unbound",
            "            actions: none",
            "  STATE CHECK  GATE   RESULT   DETAIL",
            "  backend:s3   block  ok       backend s3: HTTP 403",
            "  volume       warn   unbound  PersistentVolumeClaim env0-agent/c is Pending, not Bound",
            "  drift     gate block  primary seen healthy 2026-01-02T03:04:00Z (5s ago)  differences 1",
            "            image of trigger/agent: primary env0/agent:3.1 vs standby env0/agent:3.0",
            "            secret_data: not compared: the daemon may not read Secrets in the primary (forbidden)",
            "            would promote: yes",
        ];
        for line in expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn table_handles_a_daemon_that_has_not_ticked_yet() {
        let mut r = report();
        r.last_tick_unix = None;
        r.ready = false;
        r.groups[0].record = None;
        r.groups[0].signals.clear();
        let text = status(&r, NOW);
        assert!(text.contains("ready no  last tick never"), "{text}");
        assert!(text.contains("(no signals yet)"), "{text}");
        assert!(text.contains("record    none"), "{text}");
        r.groups.clear();
        assert!(status(&r, NOW).contains("(no groups reported yet)"));
    }

    #[test]
    fn relative_times() {
        assert_eq!(ago(NOW, NOW), "just now");
        assert_eq!(ago(NOW - 3723.0, NOW), "1h 2m 3s ago");
        assert_eq!(ago(NOW + 2.0, NOW), "2s in the future");
        assert_eq!(when(0.0, NOW), "never");
    }

    #[test]
    fn table_shows_the_state_mirror_and_its_conflicts() {
        use kube_failover::status::{MirrorConflictStatus, MirrorStatus};
        let mut r = report();
        r.groups[0].mirror = Some(MirrorStatus {
            enabled: true,
            active: true,
            stopped_reason: None,
            stopped_detail: None,
            writer: true,
            selector: "tfstate=true".into(),
            primary_namespace: "env0-agent".into(),
            standby_namespace: "env0-agent".into(),
            prune: false,
            secrets: 3,
            bytes: 2048,
            conflicts: vec![MirrorConflictStatus {
                name: "tfstate-dev-state".into(),
                kind: "changed_since_copy".into(),
                detail: String::new(),
            }],
            conflict_count: 1,
            pending: vec![],
            kept: vec![],
            last_sync_unix: Some(NOW - 4.0),
            lag_seconds: Some(4.0),
            max_lag_seconds: 300.0,
            last_error: None,
        });
        let text = status(&r, NOW);
        let line = "  state mirror                 copying; 3 Secrets, 2048 bytes in sync; \
                    last sync 4s ago; 1 CONFLICTS: tfstate-dev-state (changed_since_copy)";
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }

    #[test]
    fn table_shows_the_env0_deployments_a_promotion_stranded() {
        use kube_failover::status::{Env0Report, Env0Status, Redeploy, Stranded};
        let mut r = report();
        let s = |env: &str, status: &str| Stranded {
            environment_id: format!("id-{env}"),
            environment: env.into(),
            project_id: "p".into(),
            deployment_id: format!("d-{env}"),
            status: status.into(),
            started_at: None,
            link: String::new(),
        };
        r.groups[0].env0 = Some(Env0Status {
            state: "done".into(),
            epoch: Some(3),
            checked_at: None,
            reason: None,
            report: Env0Report {
                stranded: vec![
                    s("approve-me", "WAITING_FOR_USER"),
                    s("running", "IN_PROGRESS"),
                ],
                redeploys: vec![Redeploy {
                    environment_id: "id-approve-me".into(),
                    environment: "approve-me".into(),
                    deployment_id: "d-approve-me".into(),
                    result: "done".into(),
                    new_deployment_id: None,
                    by: "w".into(),
                    error: None,
                }],
                error: None,
            },
        });
        let text = status(&r, NOW);
        let line = "  env0 stranded                done (epoch 3); approve-me (d-approve-me, \
                    WAITING_FOR_USER), running (d-running, IN_PROGRESS); approve-me: redeploy done";
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }

    #[test]
    fn table_shows_the_leader_and_the_observers() {
        use kube_failover::status::{CoordStatus, ObserverStatus};
        let mut r = report();
        let observer = |identity: &str, verdict: &str, age: f64, fresh: bool| ObserverStatus {
            identity: identity.into(),
            verdict: Named::parse(verdict),
            age_seconds: Some(age),
            fresh,
            this_instance: identity == "watcher-1",
            down_signals: vec![],
            down_since_unix: None,
        };
        r.groups[0].coordination = Some(CoordStatus {
            no_leader_seconds: None,
            leader: Some("watcher-2".into()),
            role: "follower".into(),
            quorum: 2,
            expected: Some(3),
            observers: vec![
                observer("watcher-1", "down", 0.0, true),
                observer("watcher-2", "up", 1.2, true),
                observer("watcher-3", "down", 40.0, false),
            ],
        });
        let text = status(&r, NOW);
        for line in [
            "  leader                       watcher-2 (this instance: follower)",
            "  observers                    watcher-1 down (0s), watcher-2 up (1s), watcher-3 down (40s, stale); quorum 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("NO LEADER"), "{text}");
        // Nobody has led the group for longer than a lease duration: said second, as
        // loud as a group active on neither side.
        let c = r.groups[0].coordination.as_mut().unwrap();
        c.no_leader_seconds = Some(42.4);
        c.leader = None;
        let text = status(&r, NOW);
        let line = "  NO LEADER                    no instance has led this group for 42s: nothing is promoted or fenced until one does";
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}
