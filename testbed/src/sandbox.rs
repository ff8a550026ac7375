//! The sandbox: two clusters with the env0-like agent, the daemon running against them
//! with the restricted identity, and an outage of the primary's API server on demand, so
//! a newcomer can watch a failover and a fence happen.

use crate::cluster::{Cluster, ClusterPair};
use crate::error::{Result, TestbedError};
use crate::process::{self, Proc};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the sandbox runs and when it breaks things.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The `kube-failover` binary to run.
    pub daemon: PathBuf,
    /// The daemon's admin address (`/metrics`, `/status`).
    pub admin_addr: SocketAddr,
    /// Stop the primary's API server this long after the daemon started.
    pub outage_after: Option<Duration>,
    /// How long an automatic outage lasts before the API server comes back.
    pub outage_for: Duration,
    /// Quit by itself after this long (for scripted runs).
    pub exit_after: Option<Duration>,
    /// Read Enter presses from stdin to start and end outages.
    pub interactive: bool,
    /// Run `kube-failover guard` beside a stand-in agent process for each side.
    pub guard: bool,
}

impl SandboxOptions {
    /// Defaults: admin on 127.0.0.1:9464, outages on Enter only, 60 s automatic outages.
    pub fn new(daemon: PathBuf) -> SandboxOptions {
        SandboxOptions {
            daemon,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            outage_after: None,
            outage_for: Duration::from_secs(60),
            exit_after: None,
            interactive: true,
            guard: false,
        }
    }
}

/// Group name in the generated config, as in the end-to-end tests.
pub const GROUP: &str = "env0";

/// What the sandbox saw, for a scripted run to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxReport {
    /// Outages of the primary's API server that were started.
    pub outages: u32,
    /// From the start of the first outage to the standby's trigger Deployment having a
    /// Ready replica.
    pub promoted_after: Option<Duration>,
    /// From the start of the first outage to the primary's agent Deployments being back
    /// at 0 replicas (only seen once its API server is back).
    pub fenced_after: Option<Duration>,
}

/// The daemon's configuration for a cluster pair: 1 s probes, 3 failures to go down,
/// both agent Deployments by label, restricted kubeconfigs.
pub fn daemon_config(pair: &ClusterPair, admin: SocketAddr) -> String {
    let cluster = |c: &Cluster| {
        format!(
            "kubeconfig = {}\ncontext = {}\nnamespace = {}\n",
            toml_str(&c.daemon_kubeconfig().display().to_string()),
            toml_str(c.context()),
            toml_str(c.namespace()),
        )
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "# Written by kube-failover-sandbox for its two local clusters.\n\
         [daemon]\n\
         probe_interval = \"1s\"\n\
         probe_timeout = \"800ms\"\n\
         listen = {listen}\n\
         mode = \"auto\"\n\
         identity = \"sandbox\"\n\
         \n\
         [[groups]]\n\
         name = {group}\n\
         \n\
         [groups.primary]\n\
         {primary}\n\
         [groups.standby]\n\
         {standby}\n\
         [[groups.workloads]]\n\
         selector = \"env0=agent-trigger\"\n\
         \n\
         [[groups.workloads]]\n\
         selector = \"env0=agent-proxy\"\n\
         \n\
         [groups.policy]\n\
         failure_threshold = 3\n\
         # Short, so the first outage can start soon after the sandbox is up.\n\
         startup_grace = \"5s\"\n",
        listen = toml_str(&admin.to_string()),
        group = toml_str(GROUP),
        primary = cluster(&pair.primary),
        standby = cluster(&pair.standby),
    );
    s
}

/// A TOML basic string.
fn toml_str(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("[sandbox] {msg}");
}

fn sandbox_err(message: impl Into<String>) -> TestbedError {
    TestbedError::State {
        cluster: "sandbox".into(),
        message: message.into(),
    }
}

/// Runs the sandbox until Ctrl-C (or `exit_after`), then tears everything down.
pub async fn run_sandbox(opts: SandboxOptions) -> Result<SandboxReport> {
    // Fail before minutes of work if the daemon could not listen.
    std::net::TcpListener::bind(opts.admin_addr).map_err(|source| TestbedError::Port {
        what: format!(
            "{} for the daemon's admin server (pass --admin-addr to pick another)",
            opts.admin_addr
        ),
        source,
    })?;
    if !opts.daemon.is_file() {
        return Err(sandbox_err(format!(
            "daemon binary {} does not exist",
            opts.daemon.display()
        )));
    }

    say("starting two clusters (primary: agent at 1 replica, standby: at 0)...");
    let started = Instant::now();
    let pair = tokio::select! {
        pair = ClusterPair::start() => pair?,
        // Dropping the half-started pair stops whatever already runs.
        _ = tokio::signal::ctrl_c() => {
            say("Ctrl-C: stopped before the clusters were up");
            return Ok(SandboxReport::default());
        }
    };
    say(format!("clusters ready in {:.1?}", started.elapsed()));

    let dir = tempfile::Builder::new()
        .prefix(&format!("{}sandbox-", process::DIR_PREFIX))
        .tempdir()
        .map_err(|e| TestbedError::io("creating", std::env::temp_dir(), e))?;
    process::claim_dir(dir.path())?;
    let config = dir.path().join("kube-failover.toml");
    std::fs::write(&config, daemon_config(&pair, opts.admin_addr))
        .map_err(|e| TestbedError::io("writing", &config, e))?;
    let log = dir.path().join("kube-failover.log");
    let mut daemon = Proc::spawn(
        "sandbox",
        "kube-failover",
        &opts.daemon,
        &[
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &log,
        dir.path(),
    )?;
    let guards = if opts.guard {
        start_guards(&pair, &opts, dir.path()).await?
    } else {
        Vec::new()
    };
    print_guide(&pair, &opts, &config, &log, daemon.pid());
    for (side, _, agent_log) in &guards {
        eprintln!(
            "  {side}'s agent (guarded): tail -f {}",
            agent_log.display()
        );
    }

    let result = event_loop(&pair, &opts, &mut daemon, &log).await;
    if let Ok(report) = &result
        && report.outages > 0
    {
        let after = |d: Option<Duration>| match d {
            Some(d) => format!("{d:.1?} after the first outage began"),
            None => "not seen".into(),
        };
        say(format!(
            "{} outage(s); standby promoted: {}; primary fenced: {}",
            report.outages,
            after(report.promoted_after),
            after(report.fenced_after)
        ));
    }

    say("stopping the daemon and both clusters...");
    for (_, guard, _) in guards {
        let _ = guard.terminate(Duration::from_secs(5)).await;
    }
    let _ = daemon.terminate(Duration::from_secs(10)).await;
    drop(pair);
    drop(dir);
    say("clean.");
    result
}

/// A guard per side, each around a stand-in agent that logs a line a second, reading
/// the standby with the daemon's identity granted the guard's Role: (side, process, the
/// agent's log).
async fn start_guards(
    pair: &ClusterPair,
    opts: &SandboxOptions,
    dir: &Path,
) -> Result<Vec<(&'static str, Proc, PathBuf)>> {
    let role = crate::objects::target_rbac_file("guard-role.yaml");
    pair.standby
        .grant_daemon_role(&role, "kube-failover-guard")
        .await?;
    let mut guards = Vec::new();
    // Their admin ports follow the daemon's.
    let base = opts.admin_addr.port();
    for (side, port) in [
        ("primary", base.wrapping_add(1)),
        ("standby", base.wrapping_add(2)),
    ] {
        let config = dir.join(format!("guard-{side}.toml"));
        let text = format!(
            "group = {group}\nside = {side_q}\nidentity = {id}\nlisten = {listen}\n\n[standby]\nkubeconfig = {kubeconfig}\ncontext = {context}\nnamespace = {namespace}\n",
            group = toml_str(GROUP),
            side_q = toml_str(side),
            id = toml_str(&format!("sandbox-{side}")),
            listen = toml_str(&format!("127.0.0.1:{port}")),
            kubeconfig = toml_str(&pair.standby.daemon_kubeconfig().display().to_string()),
            context = toml_str(pair.standby.context()),
            namespace = toml_str(pair.standby.namespace()),
        );
        std::fs::write(&config, text).map_err(|e| TestbedError::io("writing", &config, e))?;
        let log = dir.join(format!("agent-{side}.log"));
        let script =
            format!("while :; do echo \"$(date +%T) {side} agent: working\"; sleep 1; done");
        let guard = Proc::spawn(
            "sandbox",
            "kube-failover-guard",
            &opts.daemon,
            &[
                "guard".into(),
                "--config".into(),
                config.display().to_string(),
                "--".into(),
                "/bin/sh".into(),
                "-c".into(),
                script,
            ],
            &log,
            dir,
        )?;
        guards.push((side, guard, log));
    }
    Ok(guards)
}

fn print_guide(pair: &ClusterPair, opts: &SandboxOptions, config: &Path, log: &Path, pid: u32) {
    let kubectl = |c: &Cluster| {
        format!(
            "kubectl --kubeconfig {} -n {} get deploy,pods -w",
            c.admin_kubeconfig().display(),
            c.namespace()
        )
    };
    let outage = match opts.outage_after {
        Some(after) => format!(
            "The primary's API server stops {} after start, for {}.",
            humantime::format_duration(after),
            humantime::format_duration(opts.outage_for)
        ),
        None => "No automatic outage (--outage-after 30s schedules one).".into(),
    };
    let keys = if opts.interactive {
        "Press Enter to stop the primary's API server, Enter again to bring it back; Ctrl-C quits."
    } else {
        "Ctrl-C quits."
    };
    eprintln!(
        "\n\
         kube-failover is running (pid {pid}) against two local clusters.\n\
         \n\
         \x20 daemon log:  tail -f {log}\n\
         \x20 config:      {config}\n\
         \x20 status:      {daemon} status --addr {addr}\n\
         \x20 metrics:     curl -s http://{addr}/metrics | grep '^kube_failover_'\n\
         \x20 primary:     {pk}\n\
         \x20 standby:     {sk}\n\
         \x20 kubeconfigs: admin {pa}, daemon {pd} (context {pc})\n\
         \x20              admin {sa}, daemon {sd} (context {sc})\n\
         \n\
         {outage}\n\
         {keys}\n",
        log = log.display(),
        config = config.display(),
        daemon = opts.daemon.display(),
        addr = opts.admin_addr,
        pk = kubectl(&pair.primary),
        sk = kubectl(&pair.standby),
        pa = pair.primary.admin_kubeconfig().display(),
        pd = pair.primary.daemon_kubeconfig().display(),
        pc = pair.primary.context(),
        sa = pair.standby.admin_kubeconfig().display(),
        sd = pair.standby.daemon_kubeconfig().display(),
        sc = pair.standby.context(),
    );
}

enum Tick {
    Quit(&'static str),
    Toggle(&'static str),
    Poll,
}

/// Ready and desired replicas of the trigger and proxy Deployments, or `None` when the
/// cluster cannot say.
type Replicas = Option<[(i32, i32); 2]>;

async fn event_loop(
    pair: &ClusterPair,
    opts: &SandboxOptions,
    daemon: &mut Proc,
    log: &Path,
) -> Result<SandboxReport> {
    let start = tokio::time::Instant::now();
    let mut enter = opts.interactive.then(stdin_lines);
    let mut outage_at = opts.outage_after.map(|d| start + d);
    let mut restore_at: Option<tokio::time::Instant> = None;
    let quit_at = opts.exit_after.map(|d| start + d);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut last_line = String::new();
    let mut outage_started: Option<Instant> = None;
    let mut report = SandboxReport::default();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| sandbox_err(format!("cannot watch SIGTERM: {e}")))?;
    let far = start + Duration::from_secs(365 * 24 * 3600);

    loop {
        let tick = tokio::select! {
            _ = tokio::signal::ctrl_c() => Tick::Quit("Ctrl-C"),
            _ = sigterm.recv() => Tick::Quit("SIGTERM"),
            _ = tokio::time::sleep_until(quit_at.unwrap_or(far)) => Tick::Quit("--exit-after elapsed"),
            line = recv(&mut enter), if enter.is_some() => match line {
                Some(()) => Tick::Toggle("Enter"),
                // stdin closed: keep running on timers and Ctrl-C alone.
                None => { enter = None; Tick::Poll }
            },
            _ = tokio::time::sleep_until(outage_at.unwrap_or(far)) => {
                outage_at = None;
                restore_at = Some(tokio::time::Instant::now() + opts.outage_for);
                Tick::Toggle("--outage-after")
            }
            _ = tokio::time::sleep_until(restore_at.unwrap_or(far)) => {
                restore_at = None;
                Tick::Toggle("--outage-for elapsed")
            }
            _ = poll.tick() => Tick::Poll,
        };
        match tick {
            Tick::Quit(why) => {
                say(format!("{why}: quitting"));
                return Ok(report);
            }
            Tick::Toggle(why) => {
                if pair.primary.apiserver_running() {
                    say(format!("{why}: stopping the primary's API server"));
                    pair.primary.stop_apiserver().await?;
                    report.outages += 1;
                    outage_started.get_or_insert_with(Instant::now);
                    say("primary API server is down; watch the standby get promoted");
                } else {
                    say(format!("{why}: starting the primary's API server again"));
                    pair.primary.start_apiserver().await?;
                    restore_at = None;
                    say("primary API server is back; watch its agent get fenced to 0");
                }
            }
            Tick::Poll => {}
        }
        if let Err(e) = daemon.check_running() {
            say(format!(
                "the daemon exited; its log is {}:\n{}",
                log.display(),
                process::log_tail(log, 30)
            ));
            return Err(e);
        }
        let primary = replicas(&pair.primary).await;
        let standby = replicas(&pair.standby).await;
        if let Some(t) = outage_started {
            if report.promoted_after.is_none() && standby.is_some_and(|s| s[0].0 >= 1) {
                report.promoted_after = Some(t.elapsed());
            }
            if report.fenced_after.is_none() && primary.is_some_and(|p| p.iter().all(|r| r.1 == 0))
            {
                report.fenced_after = Some(t.elapsed());
            }
        }
        let line = format!("primary: {} | standby: {}", show(primary), show(standby));
        if line != last_line {
            let since = match outage_started {
                Some(t) => format!(" ({:.1?} after the outage began)", t.elapsed()),
                None => String::new(),
            };
            say(format!("[{:>6.1?}] {line}{since}", start.elapsed()));
            last_line = line;
        }
    }
}

async fn replicas(cluster: &Cluster) -> Replicas {
    if !cluster.apiserver_running() {
        return None;
    }
    let mut out = [(0, 0); 2];
    for (slot, name) in out.iter_mut().zip(cluster.deployment_names()) {
        let got = tokio::time::timeout(Duration::from_secs(2), cluster.deployment(&name)).await;
        let Ok(Ok(d)) = got else {
            return None;
        };
        let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        *slot = (ready, want);
    }
    Some(out)
}

/// `trigger 1/1 proxy 1/1` (ready/desired).
fn show(replicas: Replicas) -> String {
    match replicas {
        Some([(tr, tw), (pr, pw)]) => format!("trigger {tr}/{tw} proxy {pr}/{pw}"),
        None => "API unavailable".into(),
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Enter presses. A plain thread, since a blocking read of stdin cannot be cancelled and
/// would hold up a tokio runtime's shutdown; the thread simply ends with the process.
fn stdin_lines() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
            if tx.blocking_send(()).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_str("tab\there"), r#""tab\u0009here""#);
    }
}
