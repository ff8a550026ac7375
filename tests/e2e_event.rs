//! Detection starts at the event: on real API servers, a stopped primary API server (its
//! watches end) and a primary Pod turning unready are seen by a tick taken at once, not
//! at the group's next turn; the ticks that follow keep the interval. Read from the
//! daemon's trace (`daemon.trace_file`), which records every tick's observation, its
//! time and what made it.

use crate::support;

use kube_failover::model::{ProbeReason, SignalId};
use kube_failover::trace::TraceLine;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Starts the daemon with a trace file; returns it and the trace's path.
async fn daemon_with_trace(
    pair: &kube_failover_testbed::ClusterPair,
    opts: &DaemonOpts,
) -> (Daemon, PathBuf) {
    let dir = pair.primary.dir().to_path_buf();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let trace = dir.join(format!("trace-{}.jsonl", admin.port()));
    let toml = config_toml(pair, opts, admin).replacen(
        "shutdown_timeout = \"5s\"\n",
        &format!(
            "shutdown_timeout = \"5s\"\ntrace_file = \"{}\"\n",
            trace.display()
        ),
        1,
    );
    assert!(toml.contains("trace_file"), "{toml}");
    let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
    std::fs::write(&config, toml).expect("write the config");
    let d = Daemon::start_with_config(&config, admin, &dir).await;
    (d, trace)
}

/// The group's trace lines observed at or after `since` (unix seconds).
fn lines_since(trace: &Path, since: f64) -> Vec<TraceLine> {
    kube_failover::trace::read(trace)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.group == GROUP && l.observation.wall_unix >= since)
        .collect()
}

/// Waits until a line at or after `since` satisfies `pred`; returns the lines from the
/// first such one on.
async fn wait_line(
    d: &Daemon,
    trace: &Path,
    since: f64,
    what: &str,
    pred: impl Fn(&TraceLine) -> bool,
) -> Vec<TraceLine> {
    let found = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { lines_since(trace, since).iter().any(&pred) },
    )
    .await;
    assert!(
        found.is_some(),
        "{what}: not in the trace\n{}",
        d.log_text()
    );
    let lines = lines_since(trace, since);
    let first = lines.iter().position(&pred).expect("just found");
    lines[first..].to_vec()
}

fn workload(line: &TraceLine, selector: &str) -> ProbeReason {
    line.observation
        .primary
        .outcome(&SignalId::Workload(selector.to_string()))
        .map(|o| o.reason)
        .expect("the workload's outcome")
}

fn event_ticks(cause: &str) -> String {
    format!(r#"kube_failover_event_ticks_total{{cause="{cause}",group="{GROUP}"}}"#)
}

/// The primary's API server stops: its watches end, the daemon ticks then (or at its own
/// turn when that comes first) and sees `/readyz` fail within one interval, keeps one
/// interval between the ticks that follow, and promotes two intervals after the first
/// failure (1 s × 3), not before.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_api_server_is_seen_at_the_event_and_the_run_keeps_the_interval() {
    let pair = pair().await;
    let opts = DaemonOpts::default();
    let (d, trace) = daemon_with_trace(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // Past the startup grace, with healthy ticks in the trace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(d.metric(&event_ticks("watch_broken")).await, Some(0.0));

    let stopped = now_unix();
    let took = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(20)).await;
    measured("primary stopped -> standby scaled", took.scaled);
    d.wait_state("promoted", Duration::from_secs(15)).await;

    let failing = |l: &TraceLine| !l.observation.primary.api.passed();
    let lines = wait_line(&d, &trace, stopped, "a failed /readyz", failing).await;
    let first = &lines[0];
    let seen_after = first.observation.wall_unix - stopped;
    measured(
        "primary stopped -> first failed observation",
        Duration::from_secs_f64(seen_after),
    );
    // Usually the lost watch makes the tick at once. The group's own turn may come
    // first: an API server that stops refuses new connections (the `/readyz`) before it
    // has ended every watch stream of a connection it still holds (over HTTP/2 the
    // streams end when it closes the connection). Either way the stop is seen within
    // one interval, and an event tick follows only a quiet tick.
    match first.trigger.as_deref() {
        Some("watch_broken") => {
            assert_eq!(d.metric(&event_ticks("watch_broken")).await, Some(1.0));
        }
        None => {
            assert_eq!(d.metric(&event_ticks("watch_broken")).await, Some(0.0));
        }
        other => panic!("the first failure came from {other:?}: {first:#?}"),
    }
    assert!(seen_after < opts.interval.as_secs_f64(), "{seen_after}s");

    // The ticks that follow are on the schedule anchored at the event: one interval
    // apart, never sooner (generous upper bound), each failing.
    let next: Vec<&TraceLine> = lines[1..].iter().take(2).collect();
    assert_eq!(next.len(), 2, "{lines:#?}");
    let mut previous = first.offset_seconds;
    for l in &next {
        let gap = l.offset_seconds - previous;
        assert!((0.95..1.5).contains(&gap), "ticks {gap}s apart: {lines:#?}");
        assert_eq!(l.trigger, None, "{l:#?}");
        assert!(failing(l), "{l:#?}");
        previous = l.offset_seconds;
    }
    // Promoted two intervals after the event at the earliest: blips stay tolerated.
    let promoted = d
        .metric(r#"kube_failover_last_promotion_timestamp_seconds{group="env0"}"#)
        .await
        .expect("promotion time");
    let after = promoted - first.observation.wall_unix;
    assert!(
        (1.9..3.5).contains(&after),
        "promoted {after}s after the first failure"
    );
    assert_eq!(d.metric(STARTED).await, Some(1.0));
}

/// A primary Pod turning unready is seen by a tick taken at once; so is a Deployment
/// scaled to 0. Neither lasts long enough (failure threshold 10) to promote.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_turning_unready_and_a_deployment_scaled_down_are_seen_at_once() {
    let pair = pair().await;
    let opts = DaemonOpts {
        failure_threshold: 10,
        ..DaemonOpts::default()
    };
    let (d, trace) = daemon_with_trace(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let trigger = pair.primary.trigger_deployment();
    let at = now_unix();
    pair.primary
        .set_pods_ready(&trigger, false)
        .await
        .expect("make the trigger's Pods unready");
    let unready = |l: &TraceLine| workload(l, "env0=agent-trigger") == ProbeReason::Unready;
    let lines = wait_line(&d, &trace, at, "the unready trigger", unready).await;
    let first = &lines[0];
    let seen_after = first.observation.wall_unix - at;
    measured(
        "Pod unready -> first failed observation",
        Duration::from_secs_f64(seen_after),
    );
    assert_eq!(
        first.trigger.as_deref(),
        Some("pod_readiness"),
        "{first:#?}"
    );
    assert!(seen_after < opts.interval.as_secs_f64(), "{seen_after}s");
    assert_eq!(d.metric(&event_ticks("pod_readiness")).await, Some(1.0));

    pair.primary
        .set_pods_ready(&trigger, true)
        .await
        .expect("make them Ready again");
    d.wait_state("primary_active", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let proxy = pair.primary.proxy_deployment();
    let at = now_unix();
    pair.primary
        .scale(&proxy, 0)
        .await
        .expect("scale the proxy to 0");
    let scaled = |l: &TraceLine| workload(l, "env0=agent-proxy") == ProbeReason::ScaledToZero;
    let lines = wait_line(&d, &trace, at, "the proxy scaled to 0", scaled).await;
    let first = &lines[0];
    let seen_after = first.observation.wall_unix - at;
    measured(
        "Deployment scaled to 0 -> first failed observation",
        Duration::from_secs_f64(seen_after),
    );
    assert_eq!(
        first.trigger.as_deref(),
        Some("deployment_readiness"),
        "{first:#?}"
    );
    assert!(seen_after < opts.interval.as_secs_f64(), "{seen_after}s");

    pair.primary.scale(&proxy, 1).await.expect("scale it back");
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    assert_eq!(d.metric(&event_ticks("watch_broken")).await, Some(0.0));
}
