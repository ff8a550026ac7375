//! The guard beside the agent, on real API servers: the agent is a process on this host
//! (kwok Pods run no containers) that appends a timestamp line every 100 ms, so the test
//! reads when it ran (`support::guard`). The guard reads the record from the standby
//! directly.

use crate::support;

use kube_failover_testbed::{ClusterPair, FaultProxy, ProxyMode};
use std::time::Duration;
use support::guard::*;
use support::*;

/// A daemon started with `opts` for a pair where the guards' Role is granted, leading
/// and saying `primary_active`.
async fn ready_daemon(pair: &ClusterPair, opts: &DaemonOpts) -> Daemon {
    grant_guard_role(pair).await;
    let d = Daemon::start(pair, opts).await;
    wait_ready(&d).await;
    d
}

async fn wait_ready(d: &Daemon) {
    d.wait_leading(Duration::from_secs(20)).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
}

/// A promotion after a fault, as seen from the test: when the record appeared, when
/// the standby was scaled up and the agent's last line.
struct Promotion {
    /// From the fault to the `phase` field in the record.
    recorded: Duration,
    recorded_at: f64,
    /// At or after this the standby was scaled up ([`scaled_up_after`]).
    scaled_after: f64,
    last: f64,
}

impl Promotion {
    async fn wait(pair: &ClusterPair, d: &Daemon, guard: &Guard) -> Promotion {
        let recorded = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { record_field(pair, "phase").await.is_some() },
        )
        .await
        .unwrap_or_else(|| panic!("promotion recorded\n{}", d.log_text()));
        let recorded_at = unix_now();
        let scaled_after = scaled_up_after(pair, Duration::from_secs(60)).await;
        let last = guard.lines().last().copied().expect("the agent ran");
        Promotion {
            recorded,
            recorded_at,
            scaled_after,
            last,
        }
    }
}

/// What a stop-mode guard of these tests may take after its isolation ttl (its
/// `stop_within`: interval + 4 × timeout + stop_grace), and the daemon's whole wait:
/// ttl + that + max(1 s, 10 % of ttl).
fn isolation_bound(ttl: Duration) -> Duration {
    let within = GUARD_INTERVAL + Duration::from_millis(400) * 4 + Duration::from_secs(2);
    ttl + within + (ttl / 10).max(Duration::from_secs(1))
}

/// The primary's API server dies: the daemon promotes, and the guard, reading the
/// record from the standby, stops the primary's agent within an interval of the
/// `promoting` record, long before that API server returns. Then the primary is back
/// and fenced, an operator fails back, and the guard starts the agent again.
#[tokio::test(flavor = "multi_thread")]
async fn the_guard_stops_the_old_agent_while_the_primary_api_is_dead_and_restarts_it_on_failback() {
    let pair = pair().await;
    let d = ready_daemon(&pair, &guarded_daemon(1, 1)).await;
    // No guard runs yet: the daemon says the primary's one is missing.
    let missing = format!(r#"kube_failover_guards_missing{{group="{GROUP}",side="primary"}}"#);
    d.wait_metric(&missing, Duration::from_secs(10), |v| v == 1.0)
        .await;
    let dir = pair.primary.dir().to_path_buf();
    let primary = Guard::start(&pair, "primary", &dir);
    let standby = Guard::start(&pair, "standby", &dir);
    wait_running(&primary, true, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !standby.running(Duration::from_secs(2)),
        "the record says primary"
    );
    assert!(standby.lines().is_empty());
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            heartbeat(&pair, "primary")
                .await
                .is_some_and(|(s, _)| s == "running")
        },
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "the primary guard's heartbeat says running\n{}",
            primary.log_text()
        )
    });
    // The daemon sees it: nothing missing, one running beside the primary.
    d.wait_metric(&missing, Duration::from_secs(10), |v| v == 0.0)
        .await;
    let running =
        format!(r#"kube_failover_guards{{group="{GROUP}",side="primary",state="running"}}"#);
    d.wait_metric(&running, Duration::from_secs(10), |v| v == 1.0)
        .await;

    pair.primary.kill_apiserver().await.expect("kill primary");
    let promoting = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { record_field(&pair, "phase").await.is_some() },
    )
    .await
    .expect("promotion recorded");
    let recorded_at = unix_now();
    pair.standby
        .wait_deployment_ready(&pair.standby.trigger_deployment(), Duration::from_secs(30))
        .await
        .expect("standby Ready");
    let standby_ready_at = unix_now();
    wait_running(&primary, false, Duration::from_secs(10)).await;
    let last = primary.lines().last().copied().expect("the agent ran");
    let stopped_after_record = last - recorded_at;
    let dual_active = (last - standby_ready_at).max(0.0);
    eprintln!(
        "measured: primary API killed -> promoting recorded {:.2}s; primary agent's last line {:.2}s after the record; dual-active (standby Ready and the old agent running) {:.2}s",
        promoting.as_secs_f64(),
        stopped_after_record,
        dual_active
    );
    // The guard reads every 500 ms; the agent exits on SIGTERM at once.
    assert!(
        stopped_after_record < 2.0,
        "{stopped_after_record:.2}s\n{}",
        primary.log_text()
    );
    assert!(dual_active < 1.0, "{dual_active:.2}s");
    // Fenced without the primary's API: the heartbeat says so at the promotion's epoch.
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            heartbeat(&pair, "primary").await
                == Some(("stopped".to_string(), Some("1".to_string())))
        },
    )
    .await
    .expect("heartbeat: stopped at epoch 1");
    // The daemon records the fence from the guard's heartbeat, the primary's API still
    // dead: fenced_by = guard, in the record, /status and an Event.
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { record_field(&pair, "fenced_by").await.as_deref() == Some("guard") },
    )
    .await
    .unwrap_or_else(|| panic!("fenced by the guard\n{}", d.log_text()));
    eprintln!(
        "measured: fenced_by = guard recorded {:.2}s after the promoting record, the primary's API server still down",
        unix_now() - recorded_at
    );
    assert!(record_field(&pair, "fenced_at").await.is_some());
    // /status shows the record as read by the tick after the write.
    let fenced_in_status = |s: &kube_failover::status::StatusReport| {
        s.groups[0]
            .record
            .as_ref()
            .and_then(|r| r.fenced_by.as_deref())
            == Some("guard")
    };
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async { d.status().await.is_some_and(|s| fenced_in_status(&s)) },
    )
    .await
    .expect("/status: fenced by guard");
    let status = d.status().await.expect("status");
    let g = &status.groups[0];
    let guards = g.guards.as_ref().expect("guards in /status");
    assert!(
        guards
            .heartbeats
            .iter()
            .any(|b| b.identity == "primary-agent-0" && b.state == "stopped" && b.fresh),
        "{guards:?}"
    );
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverFencedByGuard").await,
        1,
        "the guard-fence Event"
    );
    // The standby's agent runs now; the primary's stays stopped.
    wait_running(&standby, true, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!primary.running(Duration::from_secs(2)));
    let m = primary.metrics().await;
    let stops = m.lines().find(|l| {
        l.starts_with("kube_failover_guard_agent_changes_total{")
            && l.contains(r#"action="stop""#)
            && l.contains(r#"reason="other_side_active""#)
    });
    assert!(stops.is_some_and(|l| l.ends_with(" 1")), "{m}");

    // The primary returns and is fenced; an operator fails back.
    pair.primary.start_apiserver().await.expect("start primary");
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(operator(&d.config, &["failback", "--wait"]).await, Some(0));
    wait_running(&primary, true, Duration::from_secs(10)).await;
    wait_running(&standby, false, Duration::from_secs(10)).await;
    assert_eq!(
        heartbeat(&pair, "primary").await.map(|(s, _)| s),
        Some("running".to_string())
    );
}

/// The standby's API server is down while the primary is healthy: nobody can promote,
/// and the guard, unable to read the record, never stops the primary's agent.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_standby_never_stops_the_primary_agent() {
    let pair = pair().await;
    grant_guard_role(&pair).await;
    let dir = pair.primary.dir().to_path_buf();
    let primary = Guard::start(&pair, "primary", &dir);
    wait_running(&primary, true, Duration::from_secs(15)).await;
    pair.standby.stop_apiserver().await.expect("stop standby");
    let down = std::time::Instant::now();
    // A stop would show in the guard's own accounting (the running gauge at 0, a stop
    // counted) whatever the load on the machine; the longest pause between the agent's
    // lines is reported, not asserted (a starved host delays a 100 ms `sleep` too).
    // A /metrics answer lost to a starved host proves nothing either way; most must come.
    let mut gaps = 0.0f64;
    let (mut samples, mut read) = (0, 0);
    while down.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples += 1;
        let m = primary.metrics().await;
        if let Some(running) = guard_series(&m, "kube_failover_guard_agent_running", &[]) {
            read += 1;
            assert_eq!(
                running,
                1.0,
                "the agent was stopped\n{}",
                primary.log_text()
            );
        }
        if let Some(last) = primary.lines().last() {
            gaps = gaps.max(unix_now() - last);
        }
    }
    // When the guard's /metrics did not answer, the agent's own lines are the proof: a
    // stopped agent writes none, so no pause may come near the 20 s outage.
    assert!(
        read * 2 >= samples || gaps < 5.0,
        "the guard's /metrics answered {read} of {samples} times and the agent paused {gaps:.2}s"
    );
    let m = primary.metrics().await;
    assert!(
        m.is_empty() || failed_reads_counted(&m),
        "the fault was in force: failed reads counted\n{m}"
    );
    let stops = stops_counted(&m);
    assert!(
        stops.is_empty(),
        "stops counted: {stops:?}\n{}",
        primary.log_text()
    );
    measured(
        "standby API down 20 s: longest pause between the agent's lines",
        Duration::from_secs_f64(gaps),
    );
    pair.standby.start_apiserver().await.expect("start standby");
    wait_running(&primary, true, Duration::from_secs(10)).await;
}

/// The guard's counted stops of its agent (non-zero `agent_changes_total` with
/// `action="stop"`), in its exposition `m`.
fn stops_counted(m: &str) -> Vec<&str> {
    m.lines()
        .filter(|l| {
            l.starts_with("kube_failover_guard_agent_changes_total")
                && l.contains(r#"action="stop""#)
                && !l.ends_with(" 0")
        })
        .collect()
}

/// The guard counted record reads that failed, in its exposition `m`.
fn failed_reads_counted(m: &str) -> bool {
    m.lines().any(|l| {
        l.starts_with("kube_failover_guard_record_reads_total")
            && !l.contains(r#"result="ok""#)
            && !l.ends_with(" 0")
    })
}

/// When the standby was scaled up, from below: the start of the last poll that still
/// saw it at 0 replicas (polled every 50 ms for at most `timeout`).
async fn scaled_up_after(pair: &ClusterPair, timeout: Duration) -> f64 {
    let mut before = unix_now();
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let asked = unix_now();
        if replicas(&pair.standby).await > 0 {
            return before;
        }
        before = asked;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the standby was not scaled up within {timeout:?}");
}

/// `on_isolation = "stop"`, the primary completely isolated: the daemon's path to the
/// primary's API and the guard's path to the standby's are cut by fault proxies (the
/// guard never talks to the primary's API). The guard still reaches the daemon, which
/// then says the primary is failing, down or being promoted: no vouch. The guard stops
/// its agent once `isolation_ttl` has passed; the daemon records the promotion but holds
/// the standby's scale-up until the guard's isolation bound has passed since the record
/// (it cannot hear from the guard). Dual-active: 0 s.
#[tokio::test(flavor = "multi_thread")]
async fn stop_mode_an_isolated_primary_stops_its_agent_before_the_standby_is_scaled_up() {
    let pair = pair().await;
    grant_guard_role(&pair).await;
    let (d, daemon_to_primary) =
        Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Primary, &guarded_daemon(1, 0)).await;
    wait_ready(&d).await;
    let guard_to_standby = FaultProxy::start(pair.standby.api_addr())
        .await
        .expect("proxy");
    let ttl = Duration::from_secs(4);
    let guard = Guard::start_with(
        &pair,
        "primary",
        pair.primary.dir(),
        &GuardOpts {
            kubeconfig: Some(
                pair.standby
                    .daemon_kubeconfig_via(guard_to_standby.addr())
                    .expect("kubeconfig"),
            ),
            toml: stop_mode(ttl, d.admin),
            ..GuardOpts::default()
        },
    );
    wait_running(&guard, true, Duration::from_secs(15)).await;
    wait_stop_mode_seen(&d).await;

    daemon_to_primary.set_mode(ProxyMode::Blackhole);
    guard_to_standby.set_mode(ProxyMode::Blackhole);
    let cut = unix_now();
    let Promotion {
        recorded,
        recorded_at,
        scaled_after,
        last,
    } = Promotion::wait(&pair, &d, &guard).await;
    let delay = scaled_after - recorded_at;
    let bound = isolation_bound(ttl).as_secs_f64();
    eprintln!(
        "measured: isolated primary: cut -> promoting recorded {:.2}s; agent's last line {:.2}s after the cut; standby scaled up {:.2}s after the record (isolation bound {bound:.1}s); dual-active {:.2}s",
        recorded.as_secs_f64(),
        last - cut,
        delay,
        (last - scaled_after).max(0.0)
    );
    assert!(
        last < scaled_after,
        "the agent wrote at {last:.2}, after the standby's scale-up (at or after {scaled_after:.2})\n{}\n{}",
        guard.log_text(),
        d.log_text()
    );
    // The scale-up waited for the bound (the record was seen after its write, and the
    // scale-up before the poll that saw it: 1 s covers both), and not much longer.
    assert!(
        delay >= bound - 1.0,
        "{delay:.2}s < {bound:.1}s\n{}",
        d.log_text()
    );
    assert!(delay <= bound + 10.0, "{delay:.2}s\n{}", d.log_text());
    let stops = guard
        .metric(
            "kube_failover_guard_agent_changes_total",
            &[r#"action="stop""#, r#"reason="isolated""#],
        )
        .await;
    assert_eq!(stops, Some(1.0), "{}", guard.metrics().await);
    assert!(
        d.log_text().contains("waiting_for_guard_stop"),
        "the hold is logged\n{}",
        d.log_text()
    );
}

/// `on_isolation = "stop"`: connected, the guard reads the `promoting` record, stops its
/// agent and says so in its heartbeat; the daemon scales the standby up at once then,
/// long before the isolation bound. What stop mode adds to a promotion is about one
/// guard interval plus the heartbeat's trip to the daemon.
#[tokio::test(flavor = "multi_thread")]
async fn stop_mode_a_connected_guard_adds_about_one_guard_interval_to_the_promotion() {
    let pair = pair().await;
    let d = ready_daemon(&pair, &guarded_daemon(1, 0)).await;
    let ttl = Duration::from_secs(20);
    let guard = Guard::start_with(
        &pair,
        "primary",
        pair.primary.dir(),
        &GuardOpts {
            toml: stop_mode(ttl, d.admin),
            ..GuardOpts::default()
        },
    );
    wait_running(&guard, true, Duration::from_secs(15)).await;
    wait_stop_mode_seen(&d).await;

    pair.primary.kill_apiserver().await.expect("kill primary");
    let Promotion {
        recorded_at,
        scaled_after,
        last,
        ..
    } = Promotion::wait(&pair, &d, &guard).await;
    let delay = scaled_after - recorded_at;
    eprintln!(
        "measured: connected stop-mode guard: agent's last line {:.2}s after the promoting record was seen; standby scaled up {:.2}s after it (guard interval {:.1}s, daemon interval 1s, isolation bound {:.1}s); dual-active {:.2}s",
        last - recorded_at,
        delay,
        GUARD_INTERVAL.as_secs_f64(),
        isolation_bound(ttl).as_secs_f64(),
        (last - scaled_after).max(0.0)
    );
    assert!(last < scaled_after, "dual-active\n{}", guard.log_text());
    // Released by the heartbeat, not by the bound (26 s).
    assert!(
        delay < isolation_bound(ttl).as_secs_f64() / 2.0,
        "{delay:.2}s\n{}",
        d.log_text()
    );
    let stops = guard
        .metric(
            "kube_failover_guard_agent_changes_total",
            &[r#"action="stop""#, r#"reason="other_side_active""#],
        )
        .await;
    assert_eq!(stops, Some(1.0), "{}", guard.metrics().await);
}

/// How long [`stop_mode_a_standby_down_with_the_daemon_vouching_never_stops_the_agent`]
/// keeps the standby's API server down: `KUBE_FAILOVER_STANDBY_DOWN_SECS`, default 60.
fn standby_down_for() -> Duration {
    let secs = std::env::var("KUBE_FAILOVER_STANDBY_DOWN_SECS").map_or(60, |v| {
        v.trim().parse().unwrap_or_else(|e| {
            panic!("KUBE_FAILOVER_STANDBY_DOWN_SECS={v:?}: {e} (whole seconds)")
        })
    });
    Duration::from_secs(secs)
}

/// What one guard showed while the standby was down, sampled every 500 ms.
#[derive(Debug, Default)]
struct Seen {
    samples: u32,
    /// Samples whose `/metrics` answered.
    answered: u32,
    /// Samples whose `/metrics` held the agent's running gauge.
    read: u32,
    /// `kube_failover_guard_agent_running` values seen.
    running: std::collections::BTreeSet<u8>,
    /// `kube_failover_guard_isolated` values seen (stop mode only).
    isolated: std::collections::BTreeSet<u8>,
    /// The longest pause between the agent's lines, seconds.
    gap: f64,
}

impl Seen {
    async fn sample(&mut self, g: &Guard) {
        self.samples += 1;
        let m = g.metrics().await;
        if !m.is_empty() {
            self.answered += 1;
        }
        let series = |name: &str| guard_series(&m, name, &[]);
        if let Some(v) = series("kube_failover_guard_agent_running") {
            self.read += 1;
            self.running.insert(v as u8);
        }
        if let Some(v) = series("kube_failover_guard_isolated") {
            self.isolated.insert(v as u8);
        }
        if let Some(last) = g.lines().last() {
            self.gap = self.gap.max(unix_now() - last);
        }
    }
}

/// The standby's API server down while the primary is healthy (a maintenance): nobody
/// can promote. A guard in stop mode, cut off from the record, asks the daemon, which
/// says `primary_active` and vouches: its agent never stops; one in keep mode never
/// stops either. 60 s by default (from the first vouch on, every turn is the same: the
/// record unreadable, the daemon asked and vouching every half ttl); the issue's
/// 5 minutes with `KUBE_FAILOVER_STANDBY_DOWN_SECS=300` (BENCHMARKS.md, "The guard"): on
/// 2 shared cores, the agents' longest pauses 0.14 s (stop) and 0.13 s (keep), the
/// running gauge 1 and the stop-mode guard not isolated in all 462 samples of each, the
/// first vouch 0.82 s after the stop and 108 in all, no stop counted.
#[tokio::test(flavor = "multi_thread")]
async fn stop_mode_a_standby_down_with_the_daemon_vouching_never_stops_the_agent() {
    let down_for = standby_down_for();
    let pair = pair().await;
    let d = ready_daemon(&pair, &guarded_daemon(2, 0)).await;
    let dir = pair.primary.dir().to_path_buf();
    let ttl = Duration::from_secs(5);
    let stop = Guard::start_with(
        &pair,
        "primary",
        &dir,
        &GuardOpts {
            toml: stop_mode(ttl, d.admin),
            ..GuardOpts::default()
        },
    );
    let keep = Guard::start_with(
        &pair,
        "primary",
        &dir,
        &GuardOpts {
            identity: Some("primary-agent-1".into()),
            ..GuardOpts::default()
        },
    );
    wait_running(&stop, true, Duration::from_secs(15)).await;
    wait_running(&keep, true, Duration::from_secs(15)).await;
    // The daemon knows the guard is in stop mode (its heartbeat says so).
    wait_stop_mode_seen(&d).await;

    pair.standby.stop_apiserver().await.expect("stop standby");
    let down = std::time::Instant::now();
    // The fault is in force: the standby does not answer, and the stop-mode guard,
    // unable to read the record, asks the daemon, which vouches.
    let readyz = http::Request::get("/readyz").body(Vec::new()).unwrap();
    assert!(
        pair.standby.client().request_text(readyz).await.is_err(),
        "the standby's API server still answers"
    );
    let vouch = [r#"result="vouch""#];
    wait_for(
        ttl + Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            stop.metric("kube_failover_guard_daemon_answers_total", &vouch)
                .await
                .is_some_and(|v| v >= 1.0)
        },
    )
    .await
    .unwrap_or_else(|| panic!("the stop-mode guard is vouched for\n{}", stop.log_text()));
    let first_vouch = down.elapsed();

    // A stop would show in the guard's own accounting (the running gauge at 0, a stop
    // counted) whatever the load; the pauses between the agent's lines are reported.
    let (mut seen_stop, mut seen_keep) = (Seen::default(), Seen::default());
    while down.elapsed() < down_for {
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen_stop.sample(&stop).await;
        seen_keep.sample(&keep).await;
        for (mode, seen, g) in [("stop", &seen_stop, &stop), ("keep", &seen_keep, &keep)] {
            assert!(
                !seen.running.contains(&0),
                "{mode}: the agent was stopped\n{}",
                g.log_text()
            );
        }
        assert!(
            !seen_stop.isolated.contains(&1),
            "stop: the guard said isolated\n{}",
            stop.log_text()
        );
    }
    let vouches = stop
        .metric("kube_failover_guard_daemon_answers_total", &vouch)
        .await
        .unwrap_or(0.0);
    // Vouches went on through the outage. The guard asks from half the ttl after its last
    // read or vouch (about every 3 s here); at least one per ttl on average, even on a
    // starved host.
    assert!(
        vouches >= down_for.as_secs_f64() / ttl.as_secs_f64(),
        "vouches {vouches}\n{}",
        stop.log_text()
    );
    for (mode, seen, g) in [("stop", &seen_stop, &stop), ("keep", &seen_keep, &keep)] {
        // A /metrics answer lost to a starved host proves nothing either way; when most
        // did not come, the agent's own lines are the proof (a stopped agent writes none).
        assert!(
            seen.read * 2 >= seen.samples || seen.gap < 5.0,
            "{mode}: /metrics answered {} of {} times and the agent paused {:.2}s",
            seen.read,
            seen.samples,
            seen.gap
        );
        let m = g.metrics().await;
        let stops = stops_counted(&m);
        assert!(stops.is_empty(), "{mode}: stops counted: {stops:?}");
        assert!(
            failed_reads_counted(&m),
            "{mode}: failed reads counted\n{m}"
        );
        eprintln!(
            "measured: standby API down {}s, {mode} mode: agent's longest pause {:.2}s; agent_running seen {:?}, isolated seen {:?} ({} of {} samples answered, {} with the running gauge)",
            down_for.as_secs(),
            seen.gap,
            seen.running,
            seen.isolated,
            seen.answered,
            seen.samples,
            seen.read
        );
    }
    eprintln!(
        "measured: standby API down {}s: first vouch {:.2}s after the stop, {vouches} vouches, no stop in either mode",
        down_for.as_secs(),
        first_vouch.as_secs_f64()
    );
    pair.standby.start_apiserver().await.expect("start standby");
}

/// The guard SIGKILLed (a crash, an OOM kill): its agent, in a process group of its
/// own, keeps running; in a container or a systemd unit, the supervisor ends and starts
/// both again (README, "The guard killed outright"), here nobody does. The daemon
/// reports the guard missing once its heartbeat is older than its Lease duration, and
/// never promotes on that.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_guard_is_reported_missing_and_its_agent_keeps_running() {
    let pair = pair().await;
    let d = ready_daemon(&pair, &guarded_daemon(1, 0)).await;
    let dir = pair.primary.dir().to_path_buf();
    let mut primary = Guard::start(&pair, "primary", &dir);
    wait_running(&primary, true, Duration::from_secs(15)).await;
    let missing = format!(r#"kube_failover_guards_missing{{group="{GROUP}",side="primary"}}"#);
    d.wait_metric(&missing, Duration::from_secs(15), |v| v == 0.0)
        .await;
    let agent = primary
        .agent_pid()
        .unwrap_or_else(|| panic!("the agent's pid in the log\n{}", primary.log_text()));
    primary.kill().await;
    let killed = std::time::Instant::now();
    d.wait_metric(&missing, Duration::from_secs(20), |v| v == 1.0)
        .await;
    let reported = killed.elapsed();
    // The guard's heartbeat Lease lasts 3 s (heartbeat_every 1 s × 3), then it is stale.
    assert!(
        reported >= Duration::from_secs(1),
        "reported missing {reported:?} after the kill: before its heartbeat went stale?"
    );
    assert!(
        primary.running(Duration::from_secs(1)),
        "the agent keeps running after its guard was killed"
    );
    d.wait_state("primary_active", Duration::from_secs(1)).await;
    assert_eq!(record_field(&pair, "phase").await, None, "no promotion");
    measured("guard SIGKILLed -> reported missing", reported);
    // The orphaned agent is this test's to end.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    );
}
