//! Every metric the daemon exports, defined once. Label values are bounded: group and
//! signal names come from the config, reasons and states from closed enums.

use crate::engine::{Decision, GroupState};
use crate::metric_registry::{
    CounterFamily, GaugeFamily, IntCounterFamily, IntGaugeFamily, MetricRegistry,
};
use crate::model::{
    Action, DeploymentView, GuardsObservation, ProbeOutcome, ProbeReason, SignalId,
};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Buckets for probe and tick latencies: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for the time a promotion takes: 1 s to 10 min.
const PROMOTION_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The daemon's metrics and the registry that serves them.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricRegistry,
    /// Metrics read from the daemon's state when gathered (the leader gauge): encoded at
    /// every `/metrics` request, never served from a cached copy.
    live: Registry,
    probe_success: IntGaugeFamily,
    probe_duration: HistogramVec,
    probe_failures: IntCounterFamily,
    signal_up: IntGaugeFamily,
    primary_up: IntGaugeFamily,
    standby_fit: IntGaugeFamily,
    group_state: IntGaugeFamily,
    active_cluster: IntGaugeFamily,
    workload_replicas: IntGaugeFamily,
    unexpected_standby_replicas: IntGaugeFamily,
    promotions: IntCounterFamily,
    promotion_duration: HistogramVec,
    last_promotion: GaugeFamily,
    fence_actions: IntCounterFamily,
    standby_corrections: IntCounterFamily,
    actions: IntCounterFamily,
    would_promote: IntGaugeFamily,
    dual_active: IntGaugeFamily,
    dual_active_seconds: CounterFamily,
    no_active_side: IntGaugeFamily,
    guards: IntGaugeFamily,
    guards_missing: IntGaugeFamily,
    guards_stopped_while_active: IntGaugeFamily,
    record_restores: IntCounterFamily,
    last_tick: Gauge,
    tick_duration: Histogram,
    event_ticks: IntCounterFamily,
    /// Leader, observers and identity clashes (src/coord).
    pub coord: crate::coord::CoordMetrics,
    /// Standby state checks and drift (src/state).
    pub state: crate::state::StateMetrics,
    /// The Terraform state mirror (src/mirror).
    pub mirror: crate::mirror::MirrorMetrics,
    /// Notices to webhooks (src/notice).
    pub notices: crate::notify::NoticeMetrics,
    /// env0 lookups and redeploys (src/env0).
    pub env0: crate::env0::Env0Metrics,
}

pub use crate::model::Side;

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("kube_failover")
}

fn hist(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace("kube_failover")
        .buckets(buckets.to_vec())
}

impl Metrics {
    /// Creates and registers every metric, plus the process collector and build info.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = MetricRegistry::default();
        let live = Registry::new();
        let build_info = IntGaugeVec::new(
            opts("build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(build_info)?;
        #[cfg(target_os = "linux")]
        registry.register(prometheus::process_collector::ProcessCollector::for_self())?;

        let m = Metrics {
            probe_success: IntGaugeFamily::new(
                opts("probe_success", "1 if the last probe passed, else 0."),
                &["group", "cluster", "signal"],
            )?,
            probe_duration: HistogramVec::new(
                hist(
                    "probe_duration_seconds",
                    "Time each probe took, failures included, by cluster and kind of signal \
                     (api, workload, http, record); not per group, to keep /metrics small.",
                    LATENCY_BUCKETS,
                ),
                &["cluster", "signal"],
            )?,
            probe_failures: IntCounterFamily::new(
                opts("probe_failures_total", "Failed probes by bounded reason."),
                &["group", "cluster", "signal", "reason"],
            )?,
            signal_up: IntGaugeFamily::new(
                opts(
                    "signal_up",
                    "1 if the primary's signal is up after hysteresis, else 0.",
                ),
                &["group", "signal"],
            )?,
            primary_up: IntGaugeFamily::new(
                opts(
                    "primary_up",
                    "0 when the primary is down by quorum, else 1.",
                ),
                &["group"],
            )?,
            standby_fit: IntGaugeFamily::new(
                opts(
                    "standby_fit",
                    "1 if the standby could take over now, else 0.",
                ),
                &["group"],
            )?,
            group_state: IntGaugeFamily::new(
                opts(
                    "group_state",
                    "1 for the group's current state, 0 for the others.",
                ),
                &["group", "state"],
            )?,
            active_cluster: IntGaugeFamily::new(
                opts(
                    "active_cluster",
                    "1 for the side the failover record says is active.",
                ),
                &["group", "cluster"],
            )?,
            workload_replicas: IntGaugeFamily::new(
                opts(
                    "workload_replicas",
                    "Sum of desired replicas of the selected Deployments on each side.",
                ),
                &["group", "cluster"],
            )?,
            unexpected_standby_replicas: IntGaugeFamily::new(
                opts(
                    "unexpected_standby_replicas",
                    "Desired replicas found in the standby while the primary is active.",
                ),
                &["group"],
            )?,
            promotions: IntCounterFamily::new(
                opts(
                    "promotions_total",
                    "Promotions by result (started, succeeded, failed).",
                ),
                &["group", "result"],
            )?,
            promotion_duration: HistogramVec::new(
                hist(
                    "promotion_duration_seconds",
                    "From the promotion's record write to the standby being Ready.",
                    PROMOTION_BUCKETS,
                ),
                &["group"],
            )?,
            last_promotion: GaugeFamily::new(
                opts(
                    "last_promotion_timestamp_seconds",
                    "Unix time the last promotion started.",
                ),
                &["group"],
            )?,
            fence_actions: IntCounterFamily::new(
                opts(
                    "fence_actions_total",
                    "Attempts to scale the old primary to 0, by result.",
                ),
                &["group", "result"],
            )?,
            standby_corrections: IntCounterFamily::new(
                opts(
                    "standby_corrections_total",
                    "Attempts to scale unexpected standby replicas back to 0, by result.",
                ),
                &["group", "result"],
            )?,
            actions: IntCounterFamily::new(
                opts(
                    "actions_total",
                    "Every write to a cluster, by action and result.",
                ),
                &["group", "action", "result"],
            )?,
            would_promote: IntGaugeFamily::new(
                opts(
                    "would_promote",
                    "Observe mode: 1 while a promotion would start, else 0.",
                ),
                &["group"],
            )?,
            dual_active: IntGaugeFamily::new(
                opts(
                    "dual_active",
                    "1 while both sides want replicas (two agents may run at once), else 0.",
                ),
                &["group"],
            )?,
            dual_active_seconds: CounterFamily::new(
                opts(
                    "dual_active_seconds_total",
                    "Time during which both sides wanted replicas.",
                ),
                &["group"],
            )?,
            no_active_side: IntGaugeFamily::new(
                opts(
                    "no_active_side",
                    "1 while neither side runs the workload for longer than promotion_timeout.",
                ),
                &["group"],
            )?,
            guards: IntGaugeFamily::new(
                opts(
                    "guards",
                    "Guards beside each side's agents by their heartbeat: running, stopped \
                     (both fresh; a sidecar guard's refusing counts as stopped) or stale.",
                ),
                &["group", "side", "state"],
            )?,
            guards_missing: IntGaugeFamily::new(
                opts(
                    "guards_missing",
                    "Expected guards ([groups.guards]) of the side the record says is active \
                     without a fresh heartbeat.",
                ),
                &["group", "side"],
            )?,
            guards_stopped_while_active: IntGaugeFamily::new(
                opts(
                    "guards_stopped_while_active",
                    "Guards saying they keep their agent stopped beside the side the record \
                     says is active.",
                ),
                &["group", "side"],
            )?,
            record_restores: IntCounterFamily::new(
                opts(
                    "record_restores_total",
                    "Failover records written back after they were found missing or their epoch had gone back.",
                ),
                &["group"],
            )?,
            last_tick: Gauge::with_opts(opts(
                "last_tick_timestamp_seconds",
                "Unix time the last tick of any group finished.",
            ))?,
            tick_duration: Histogram::with_opts(hist(
                "tick_duration_seconds",
                "Time one group's tick took (probes, decision and actions), all groups together.",
                LATENCY_BUCKETS,
            ))?,
            event_ticks: IntCounterFamily::new(
                opts(
                    "event_ticks_total",
                    "Ticks taken at once on an event on the primary (a watch lost, a workload \
                     failing in the caches) rather than on schedule, by cause.",
                ),
                &["group", "cause"],
            )?,
            coord: crate::coord::CoordMetrics::new(&registry, &live)?,
            state: crate::state::StateMetrics::new(&registry)?,
            mirror: crate::mirror::MirrorMetrics::new(&registry)?,
            notices: crate::notify::NoticeMetrics::new(&registry)?,
            env0: crate::env0::Env0Metrics::new(&registry)?,
            registry,
            live,
        };
        let r = &m.registry;
        r.register(m.probe_success.clone())?;
        r.register(m.probe_duration.clone())?;
        r.register(m.probe_failures.clone())?;
        r.register(m.signal_up.clone())?;
        r.register(m.primary_up.clone())?;
        r.register(m.standby_fit.clone())?;
        r.register(m.group_state.clone())?;
        r.register(m.active_cluster.clone())?;
        r.register(m.workload_replicas.clone())?;
        r.register(m.unexpected_standby_replicas.clone())?;
        r.register(m.promotions.clone())?;
        r.register(m.promotion_duration.clone())?;
        r.register(m.last_promotion.clone())?;
        r.register(m.fence_actions.clone())?;
        r.register(m.standby_corrections.clone())?;
        r.register(m.actions.clone())?;
        r.register(m.would_promote.clone())?;
        r.register(m.dual_active.clone())?;
        r.register(m.dual_active_seconds.clone())?;
        r.register(m.no_active_side.clone())?;
        r.register(m.guards.clone())?;
        r.register(m.guards_missing.clone())?;
        r.register(m.guards_stopped_while_active.clone())?;
        r.register(m.record_restores.clone())?;
        r.register(m.last_tick.clone())?;
        r.register(m.tick_duration.clone())?;
        r.register(m.event_ticks.clone())?;
        Ok(m)
    }

    /// Makes every per-group series exist from the start (at 0), so that alerts and
    /// `rate()` see a value before the first event.
    pub fn init_group(&self, group: &str, signals: &[SignalId]) {
        for state in GroupState::ALL {
            self.group_state.with_label_values(&[group, state.as_str()]);
        }
        for side in [Side::Primary, Side::Standby] {
            self.active_cluster
                .with_label_values(&[group, side.as_str()]);
        }
        for result in ["started", "succeeded", "failed"] {
            self.promotions.with_label_values(&[group, result]);
        }
        for result in ["success", "error"] {
            self.fence_actions.with_label_values(&[group, result]);
            self.standby_corrections.with_label_values(&[group, result]);
        }
        for s in signals {
            self.signal_up
                .with_label_values(&[group, &s.to_string()])
                .set(1);
        }
        // Failures of the API signal by each reason of down evidence exist from the
        // start; other reasons and signals appear at their first failure (pre-setting
        // every reason of every signal made /metrics grow by ~50 series per group).
        for reason in ProbeReason::ALL
            .iter()
            .filter(|r| r.evidence() == crate::model::Evidence::Down)
            .filter(|r| {
                matches!(
                    r,
                    ProbeReason::Timeout
                        | ProbeReason::Refused
                        | ProbeReason::Connect
                        | ProbeReason::HttpStatus
                )
            })
        {
            self.probe_failures.with_label_values(&[
                group,
                Side::Primary.as_str(),
                "api",
                reason.as_str(),
            ]);
        }
        // Failed actions exist from the start (an alert's increase() sees the first);
        // successes appear when they happen. Event actions never fail.
        for action in Action::KINDS {
            if !Action::EVENT_KINDS.contains(&action) {
                self.actions.with_label_values(&[group, action, "error"]);
            }
        }
        self.last_promotion.with_label_values(&[group]);
        self.would_promote.with_label_values(&[group]).set(0);
        self.dual_active.with_label_values(&[group]).set(0);
        self.dual_active_seconds.with_label_values(&[group]);
        self.no_active_side.with_label_values(&[group]).set(0);
        self.record_restores.with_label_values(&[group]);
        self.unexpected_standby_replicas
            .with_label_values(&[group])
            .set(0);
    }

    /// The event-tick counters of `group`, one per cause, at 0.
    pub fn init_event_ticks(&self, group: &str, causes: &[&str]) {
        for cause in causes {
            self.event_ticks.with_label_values(&[group, cause]);
        }
    }

    /// A tick taken at once for an event (`cause`: a bounded label value).
    pub fn event_tick(&self, group: &str, cause: &str) {
        self.event_ticks.with_label_values(&[group, cause]).inc();
    }

    /// One probe's result.
    pub fn observe_probe(&self, group: &str, side: Side, signal: &str, outcome: &ProbeOutcome) {
        let labels = [group, side.as_str(), signal];
        self.probe_success
            .with_label_values(&labels)
            .set(i64::from(outcome.passed()));
        self.probe_duration
            .with_label_values(&[side.as_str(), signal_kind(signal)])
            .observe(outcome.latency.as_secs_f64());
        if !outcome.passed() {
            self.probe_failures
                .with_label_values(&[group, side.as_str(), signal, outcome.reason.as_str()])
                .inc();
        }
    }

    /// The state and verdicts of one decision.
    pub fn observe_decision(&self, group: &str, gauges: &DecisionGauges) {
        for state in GroupState::ALL {
            self.group_state
                .with_label_values(&[group, state.as_str()])
                .set(i64::from(state == gauges.state));
        }
        for (id, up) in &gauges.signals {
            self.signal_up
                .with_label_values(&[group, &id.to_string()])
                .set(i64::from(*up));
        }
        self.primary_up
            .with_label_values(&[group])
            .set(i64::from(!gauges.primary_down));
        self.standby_fit
            .with_label_values(&[group])
            .set(i64::from(gauges.standby_fit));
        self.unexpected_standby_replicas
            .with_label_values(&[group])
            .set(i64::from(gauges.unexpected_standby_replicas));
        self.would_promote
            .with_label_values(&[group])
            .set(i64::from(gauges.would_promote));
        self.dual_active
            .with_label_values(&[group])
            .set(i64::from(gauges.dual_active));
        self.no_active_side
            .with_label_values(&[group])
            .set(i64::from(gauges.no_active_side));
    }

    /// Adds the time since the previous tick to the dual-active total while both sides
    /// want replicas.
    pub fn dual_active_for(&self, group: &str, seconds: f64) {
        self.dual_active_seconds
            .with_label_values(&[group])
            .inc_by(seconds.max(0.0));
    }

    /// The guard series of a group that expects guards, at 0 until its first tick.
    pub fn init_guards(&self, group: &str) {
        for side in [Side::Primary, Side::Standby] {
            for state in ["running", "stopped", "stale"] {
                self.guards
                    .with_label_values(&[group, side.as_str(), state]);
            }
            self.guards_missing
                .with_label_values(&[group, side.as_str()]);
            self.guards_stopped_while_active
                .with_label_values(&[group, side.as_str()]);
        }
    }

    /// The guards' heartbeats of a tick, with `active` the side the record says is
    /// active; unreadable heartbeats leave the last values.
    pub fn observe_guards(&self, group: &str, guards: &GuardsObservation, active: Side) {
        if guards.beats.is_err() {
            return;
        }
        for side in [Side::Primary, Side::Standby] {
            let t = guards.tally(side, active);
            for (state, n) in [
                ("running", t.running),
                ("stopped", t.stopped),
                ("stale", t.stale),
            ] {
                self.guards
                    .with_label_values(&[group, side.as_str(), state])
                    .set(i64::from(n));
            }
            self.guards_missing
                .with_label_values(&[group, side.as_str()])
                .set(i64::from(t.missing));
            self.guards_stopped_while_active
                .with_label_values(&[group, side.as_str()])
                .set(i64::from(t.stopped_while_active));
        }
    }

    /// A lost failover record was written back.
    pub fn record_restored(&self, group: &str) {
        self.record_restores.with_label_values(&[group]).inc();
    }

    /// Which side the record says is active.
    pub fn set_active(&self, group: &str, active: Side) {
        for side in [Side::Primary, Side::Standby] {
            self.active_cluster
                .with_label_values(&[group, side.as_str()])
                .set(i64::from(side == active));
        }
    }

    /// Desired replicas on one side, when known.
    pub fn set_replicas(&self, group: &str, side: Side, views: Option<&[DeploymentView]>) {
        if let Some(views) = views {
            // Summed as i64: the gauge's own type, and no i32 overflow however many
            // Deployments ask for i32::MAX replicas.
            let sum: i64 = views.iter().map(|d| i64::from(d.desired.max(0))).sum();
            self.workload_replicas
                .with_label_values(&[group, side.as_str()])
                .set(sum);
        }
    }

    /// One action carried out (or failed): `action` and `result` are bounded labels.
    pub fn observe_action(&self, group: &str, action: &str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.actions
            .with_label_values(&[group, action, result])
            .inc();
        match action {
            "fence_primary" => self.fence_actions.with_label_values(&[group, result]).inc(),
            "scale_standby_down" => self
                .standby_corrections
                .with_label_values(&[group, result])
                .inc(),
            _ => {}
        }
    }

    /// A promotion started (its record was written).
    pub fn promotion_started(&self, group: &str, wall_unix: f64) {
        self.promotions.with_label_values(&[group, "started"]).inc();
        self.last_promotion
            .with_label_values(&[group])
            .set(wall_unix);
    }

    /// A promotion reached `promoted` after `seconds`, or was recorded as `failed`.
    pub fn promotion_finished(&self, group: &str, succeeded: bool, seconds: Option<f64>) {
        let result = if succeeded { "succeeded" } else { "failed" };
        self.promotions.with_label_values(&[group, result]).inc();
        if let (true, Some(s)) = (succeeded, seconds) {
            self.promotion_duration
                .with_label_values(&[group])
                .observe(s.max(0.0));
        }
    }

    /// A group's tick finished.
    pub fn tick_done(&self, group: &str, seconds: f64, wall_unix: f64) {
        let _ = group;
        self.tick_duration.observe(seconds);
        self.last_tick.set(wall_unix);
    }

    /// The text exposition format: [`Self::encode_stored`] then [`Self::encode_live`]
    /// (tests; the admin server serves the two parts itself).
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = self.encode_stored();
        buf.extend(self.encode_live());
        buf
    }

    /// The metrics the daemon sets as it works (everything but the live ones), which
    /// the admin server may serve from a copy encoded a moment ago.
    pub fn encode_stored(&self) -> Vec<u8> {
        self.registry.encode()
    }

    /// The metrics read from the daemon's state at this instant (`kube_failover_leader`):
    /// a few lines, encoded for every request.
    pub fn encode_live(&self) -> Vec<u8> {
        encode(&self.live)
    }
}

fn encode(registry: &Registry) -> Vec<u8> {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metrics; an error would mean a bug
    // in registration, which `Metrics::new` already rules out.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    buf
}

/// The kind of a signal name, the label of the probe latency histogram.
fn signal_kind(signal: &str) -> &'static str {
    match signal.split_once(':').map_or(signal, |(kind, _)| kind) {
        "api" => "api",
        "workload" | "workloads" => "workload",
        "http" => "http",
        "record" => "record",
        _ => "other",
    }
}

/// What a decision sets in the per-group gauges ([`Metrics::observe_decision`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionGauges {
    /// `kube_failover_group_state`.
    pub state: GroupState,
    /// `kube_failover_signal_up`, per signal.
    pub signals: Vec<(SignalId, bool)>,
    /// `kube_failover_primary_up` (its negation).
    pub primary_down: bool,
    /// `kube_failover_standby_fit`.
    pub standby_fit: bool,
    /// `kube_failover_unexpected_standby_replicas`.
    pub unexpected_standby_replicas: i32,
    /// `kube_failover_would_promote`.
    pub would_promote: bool,
    /// `kube_failover_dual_active`.
    pub dual_active: bool,
    /// `kube_failover_no_active_side`.
    pub no_active_side: bool,
}

impl DecisionGauges {
    /// The gauges of `decision`; `would_promote` as the caller counts it.
    pub fn of(decision: &Decision, would_promote: bool) -> Self {
        DecisionGauges {
            state: decision.state,
            signals: decision
                .signals
                .iter()
                .map(|s| (s.id.clone(), s.up))
                .collect(),
            primary_down: decision.primary_down,
            standby_fit: decision.standby_fit,
            unexpected_standby_replicas: decision.unexpected_standby_replicas,
            would_promote,
            dual_active: decision.dual_active,
            no_active_side: decision.no_active_side,
        }
    }
}

/// One group's decision gauges as last set: a tick whose decision sets the same values
/// (most ticks: a healthy pair stays `primary_active`) sets nothing, where setting them
/// costs a label lookup per series (a dozen or more per tick and group).
#[derive(Debug, Default)]
pub struct PublishedDecision {
    last: Option<DecisionGauges>,
}

impl PublishedDecision {
    /// Sets `gauges` for `group` unless they are the ones last set; true when it did.
    pub fn publish(&mut self, metrics: &Metrics, group: &str, gauges: DecisionGauges) -> bool {
        if self.last.as_ref() == Some(&gauges) {
            return false;
        }
        metrics.observe_decision(group, &gauges);
        self.last = Some(gauges);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReasonCode;
    use std::time::Duration;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.encode()).unwrap()
    }

    #[test]
    fn probe_failures_are_counted_by_reason() {
        let m = Metrics::new().unwrap();
        m.init_group("env0", &[SignalId::Api]);
        let fail = ProbeOutcome::fail(ProbeReason::Timeout, Duration::from_millis(300), "");
        m.observe_probe("env0", Side::Primary, "api", &fail);
        m.observe_probe("env0", Side::Primary, "api", &fail);
        let t = text(&m);
        assert!(t.contains(
            "kube_failover_probe_failures_total{cluster=\"primary\",group=\"env0\",reason=\"timeout\",signal=\"api\"} 2"
        ), "{t}");
        assert!(t.contains(
            "kube_failover_probe_success{cluster=\"primary\",group=\"env0\",signal=\"api\"} 0"
        ));
        assert!(t.contains("kube_failover_build_info{version="));
    }

    #[test]
    fn guards_are_counted_by_side_and_state_and_unreadable_ones_keep_the_last_values() {
        use crate::model::{GuardBeat, GuardsObservation};
        let m = Metrics::new().unwrap();
        let beat = |side, running, age| GuardBeat {
            identity: "g".into(),
            side,
            running,
            standby_epoch: None,
            reason: String::new(),
            age_seconds: age,
            ttl_seconds: 15.0,
            isolation_ttl_seconds: None,
            stop_within_seconds: 0.0,
            form: Default::default(),
        };
        let mut g = GuardsObservation {
            expected_primary: 2,
            expected_standby: 1,
            beats: Ok(vec![
                beat(Side::Primary, true, 1.0),
                beat(Side::Primary, false, 99.0),
                beat(Side::Standby, false, 1.0),
            ]),
        };
        m.observe_guards("env0", &g, Side::Primary);
        let t = text(&m);
        for line in [
            r#"kube_failover_guards{group="env0",side="primary",state="running"} 1"#,
            r#"kube_failover_guards{group="env0",side="primary",state="stale"} 1"#,
            r#"kube_failover_guards{group="env0",side="standby",state="stopped"} 1"#,
            r#"kube_failover_guards_missing{group="env0",side="primary"} 1"#,
            r#"kube_failover_guards_missing{group="env0",side="standby"} 0"#,
            r#"kube_failover_guards_stopped_while_active{group="env0",side="standby"} 0"#,
        ] {
            assert!(t.contains(line), "{line}\n{t}");
        }
        g.beats = Err(ProbeOutcome::fail(
            ProbeReason::Forbidden,
            Duration::ZERO,
            "",
        ));
        m.observe_guards("env0", &g, Side::Primary);
        assert!(
            text(&m).contains(r#"kube_failover_guards_missing{group="env0",side="primary"} 1"#)
        );
    }

    #[test]
    fn replica_sum_does_not_overflow() {
        let m = Metrics::new().unwrap();
        let view = |name: &str| DeploymentView {
            name: name.into(),
            uid: None,
            desired: i32::MAX,
            available: 0,
            ready_pods: 0,
            epoch: None,
        };
        m.set_replicas("g", Side::Standby, Some(&[view("a"), view("b")]));
        let t = text(&m);
        let expected = format!(
            "kube_failover_workload_replicas{{cluster=\"standby\",group=\"g\"}} {}",
            2 * i64::from(i32::MAX)
        );
        assert!(t.contains(&expected), "{t}");
    }

    #[test]
    fn every_action_kind_that_can_fail_is_pre_registered() {
        let m = Metrics::new().unwrap();
        m.init_group("g", &[]);
        let t = text(&m);
        for kind in Action::KINDS {
            let error = format!("action=\"{kind}\",group=\"g\",result=\"error\"}} 0");
            assert_eq!(
                t.contains(&error),
                !Action::EVENT_KINDS.contains(&kind),
                "{kind}: an error series from the start unless it only writes Events"
            );
        }
        let all = [
            Action::RecordPromoting {
                epoch: 1,
                reason: ReasonCode::PrimaryDownQuorum,
                primary_deployments: vec![],
            },
            Action::ScaleStandbyUp { epoch: 1 },
            Action::RecordPromoted { epoch: 1 },
            Action::RecordFailed {
                epoch: 1,
                reason: ReasonCode::PromotionTimeout,
            },
            Action::FencePrimary {
                epoch: 1,
                names: vec![],
            },
            Action::RecordFenced {
                epoch: 1,
                by: crate::model::FencedBy::Guard,
            },
            Action::ScaleStandbyDown { epoch: 0 },
            Action::RestoreRecord {
                record: Box::default(),
            },
            Action::RecordFailback { epoch: 1 },
            Action::Announce {
                reason: ReasonCode::DualActive,
            },
            Action::WarnStateChecks { epoch: 1 },
            Action::ClearStaleLocks { epoch: 1 },
            Action::AnnouncePromoted { epoch: 1 },
        ];
        assert_eq!(all.map(|a| a.kind()), Action::KINDS);
    }

    /// /metrics stays under 1 MB at 200 groups, every per-group series set as a
    /// running daemon sets them (three signals, a tick, probes on both sides, the
    /// default drift checks).
    /// One family at a time gives the text `Registry::gather` gives, byte for byte:
    /// families by name, series by label values, empty families left out.
    #[test]
    fn metrics_encoded_one_family_at_a_time_are_those_of_a_whole_gather() {
        let m = Metrics::new().unwrap();
        for g in ["b-group", "a-group", "c-group"] {
            m.init_group(g, &[SignalId::Api, SignalId::Http("health".into())]);
            m.observe_action(g, "scale_standby_up", true);
        }
        // The process's own figures move between two encodings: their names and order
        // are compared, not their values.
        let steady = |text: Vec<u8>| {
            String::from_utf8(text)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("process_"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let whole = steady(m.registry.gathered());
        let text = steady(m.encode_stored());
        assert!(text.len() > 10_000, "{} bytes", text.len());
        assert_eq!(text, whole);
    }

    #[test]
    fn metrics_at_200_groups_stay_under_a_megabyte() {
        let m = Metrics::new().unwrap();
        let signals = [
            SignalId::Api,
            SignalId::Workload("env0=agent-trigger".into()),
            SignalId::Workload("agent-proxy-production".into()),
        ];
        let ok = ProbeOutcome::ok(Duration::from_millis(3));
        for i in 0..200 {
            let g = format!("tenant-group-{i:03}");
            m.init_group(&g, &signals);
            m.init_event_ticks(
                &g,
                &["watch_broken", "pod_readiness", "deployment_readiness"],
            );
            for s in &signals {
                m.observe_probe(&g, Side::Primary, &s.to_string(), &ok);
            }
            for s in ["api", "workloads", "record"] {
                m.observe_probe(&g, Side::Standby, s, &ok);
            }
            m.set_active(&g, Side::Primary);
            m.tick_done(&g, 0.002, 1.0);
            // Drift is on by default: its two checks, both sides alike.
            let drift_check = |name: &str, gate| kube_failover_core::checks::StateCheck {
                name: name.into(),
                kind: kube_failover_core::checks::CheckKind::Drift,
                gate,
                result: kube_failover_core::checks::CheckResult::Ok,
                detail: String::new(),
                checked_at_unix: Some(1.0),
            };
            let drift = crate::status::DriftStatus {
                gate: "warn".into(),
                primary_seen_unix: Some(1.0),
                standby_seen_unix: Some(1.0),
                deployments: vec!["agent-trigger".into(), "agent-proxy".into()],
                items: vec![],
                not_compared: vec![],
            };
            m.state.observe(
                &g,
                &[
                    drift_check("drift:image", kube_failover_core::checks::Gate::Warn),
                    drift_check("drift:settings", kube_failover_core::checks::Gate::Warn),
                ],
                &[],
                Some(&drift),
            );
        }
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            text.contains(
                "kube_failover_event_ticks_total{cause=\"watch_broken\",group=\"tenant-group-007\"} 0"
            ),
            "event-tick series exist from the start"
        );
        let size = text.len();
        eprintln!("/metrics at 200 groups: {size} bytes");
        assert!(size < 1_000_000, "{size} bytes");
    }

    #[test]
    fn a_decision_that_sets_the_same_gauges_sets_nothing_and_a_change_sets_them() {
        let m = Metrics::new().unwrap();
        m.init_group("g", &[]);
        let state_line = |m: &Metrics| {
            text(m)
                .lines()
                .filter(|l| l.starts_with("kube_failover_group_state{") && l.ends_with(" 1"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let gauges = |state| DecisionGauges {
            state,
            signals: vec![],
            primary_down: false,
            standby_fit: true,
            unexpected_standby_replicas: 0,
            would_promote: false,
            dual_active: false,
            no_active_side: false,
        };
        let mut published = PublishedDecision::default();
        assert!(published.publish(&m, "g", gauges(GroupState::PrimaryActive)));
        assert_eq!(
            state_line(&m),
            ["kube_failover_group_state{group=\"g\",state=\"primary_active\"} 1"]
        );
        // Set behind its back: an unchanged decision does not set it again...
        m.group_state
            .with_label_values(&["g", "primary_active"])
            .set(7);
        assert!(!published.publish(&m, "g", gauges(GroupState::PrimaryActive)));
        assert!(text(&m).contains("state=\"primary_active\"} 7"));
        // ...a changed one sets every gauge.
        assert!(published.publish(&m, "g", gauges(GroupState::PrimarySuspect)));
        assert_eq!(
            state_line(&m),
            ["kube_failover_group_state{group=\"g\",state=\"primary_suspect\"} 1"]
        );
        assert!(text(&m).contains("state=\"primary_active\"} 0"));
    }

    #[test]
    fn group_state_is_one_hot() {
        let m = Metrics::new().unwrap();
        m.init_group("g", &[]);
        let d = Decision {
            state: GroupState::Blocked,
            reasons: vec![],
            actions: vec![],
            primary_down: true,
            standby_fit: false,
            unexpected_standby_replicas: 0,
            dual_active: true,
            no_active_side: false,
            signals: vec![],
            state_changed: true,
            verdict: crate::model::Verdict::Down,
            warnings: vec![],
            acts: true,
        };
        m.observe_decision("g", &DecisionGauges::of(&d, false));
        m.dual_active_for("g", 2.5);
        let t = text(&m);
        let ones: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("kube_failover_group_state{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(
            ones,
            vec!["kube_failover_group_state{group=\"g\",state=\"blocked\"} 1"]
        );
        assert!(t.contains("kube_failover_primary_up{group=\"g\"} 0"));
        assert!(t.contains("kube_failover_standby_fit{group=\"g\"} 0"));
        assert!(t.contains("kube_failover_dual_active{group=\"g\"} 1"));
        assert!(t.contains("kube_failover_dual_active_seconds_total{group=\"g\"} 2.5"));
        assert!(t.contains("kube_failover_no_active_side{group=\"g\"} 0"));
    }

    #[test]
    fn fence_and_correction_results_feed_their_own_counters() {
        let m = Metrics::new().unwrap();
        m.init_group("g", &[]);
        m.observe_action("g", "fence_primary", false);
        m.observe_action("g", "scale_standby_down", true);
        let t = text(&m);
        assert!(t.contains("kube_failover_fence_actions_total{group=\"g\",result=\"error\"} 1"));
        assert!(
            t.contains("kube_failover_standby_corrections_total{group=\"g\",result=\"success\"} 1")
        );
        assert!(t.contains(
            "kube_failover_actions_total{action=\"fence_primary\",group=\"g\",result=\"error\"} 1"
        ));
    }
}
