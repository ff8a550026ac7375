//! `kube-failover guard`: runs beside the agent, as its parent process, and keeps it
//! running only where the failover record says its side is active. It reads the record
//! from the standby cluster directly (never through the primary's API), so a promotion
//! stops the old primary's agent even while the primary's API server is dead, which
//! the daemon's fence (a scale through that API) cannot do until it returns.
//!
//! Each interval: read the record, judge (`decide`, pure), stop or start the agent,
//! write the heartbeat Lease when something changed or `heartbeat_every` passed. A
//! record that cannot be read never stops or starts anything. The agent exiting by
//! itself ends the guard with the agent's exit code, so its supervisor restarts both
//! as it would restart the agent alone.
//!
//! With `form = "sidecar"` the guard starts nothing: it runs in a container of its own
//! beside the agent's and serves its verdict at `GET /agent` (200 while the agent may
//! run, 503 with the reason once it must stop), which the agent container's liveness
//! probe asks through `kube-failover guard check`. A refusal makes kubelet kill the
//! agent's container, and kubelet restarts it (with back-off), so the agent runs again
//! briefly after each restart: its heartbeat says `refusing`, never `stopped`, and the
//! daemon never counts it as a fence.

pub mod agent;
pub mod check;
pub mod config;
pub mod decide;
pub mod heartbeat;
pub mod install;
pub mod isolation;
mod serve;
pub mod verdict;

use crate::kube::client::{ClientOptions, client_for_with};
use crate::model::Side;
use crate::record::now_stamp;
use agent::{Agent, Stopped};
use config::{GuardConfig, GuardForm, OnIsolation};
use decide::{GuardReason, Judge, Reading, Want};
use heartbeat::{Beat, Heartbeat};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use std::ffi::OsString;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use verdict::Verdict;

/// Why the guard stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// No agent command was given after `--`.
    #[error(
        "no agent command: give it after `--`, e.g. `kube-failover guard --config guard.toml -- /agent/run`"
    )]
    NoCommand,
    /// `form = "sidecar"` with an agent command: a sidecar starts nothing.
    #[error(
        "form = \"sidecar\" runs no agent: drop the command after `--`, or set form = \"wrapper\""
    )]
    CommandInSidecar,
    /// The standby client could not be built (kubeconfig, context, credentials files).
    #[error("the standby cluster's client")]
    Client(#[source] crate::kube::client::ClusterError),
    /// The admin port could not be bound.
    #[error("cannot listen on {addr} (listen)")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client that asks the daemons (`on_isolation = "stop"`) could not be built.
    #[error("the HTTP client for daemons (on_isolation = \"stop\")")]
    Daemons(#[source] reqwest::Error),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot listen for SIGTERM and SIGINT")]
    Signals(#[source] std::io::Error),
    /// The agent could not be started.
    #[error("cannot start the agent {program}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the guard ended without an error.
#[derive(Debug)]
pub enum Ended {
    /// SIGTERM or SIGINT: the agent was stopped first.
    Signalled,
    /// The agent exited by itself with this status.
    AgentExited(ExitStatus),
}

/// The guard's metrics (prefix `kube_failover_guard_`).
#[derive(Clone)]
pub struct GuardMetrics {
    registry: Registry,
    running: IntGauge,
    standby_epoch: IntGauge,
    reads: IntCounterVec,
    changes: IntCounterVec,
    heartbeats: IntCounterVec,
    last_read: IntGauge,
    isolated: IntGauge,
    vouches: IntGauge,
    answers: IntCounterVec,
    verdicts: IntCounterVec,
}

impl GuardMetrics {
    fn new(group: &str, side: Side, form: GuardForm) -> Self {
        // Every metric carries group and side as its own labels (sorted with the others
        // when written), not as the registry's common labels, which are appended in a
        // hash map's order that changes from one process to the next.
        let registry = Registry::new();
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("group", group)
                .const_label("side", side.as_str())
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(opts(name, help))
                .unwrap_or_else(|_| unreachable!("valid metric"));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels)
                .unwrap_or_else(|_| unreachable!("valid metric"));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        // A sidecar runs no agent: it says whether its verdict lets the agent run, and
        // counts the probes that asked (none: the agent's probe is not set up).
        let verdicts = IntCounterVec::new(
            opts(
                "kube_failover_guard_verdict_requests_total",
                "Requests for the sidecar guard's verdict (GET /agent) by answer (allowed, refused)",
            ),
            &["answer"],
        )
        .unwrap_or_else(|_| unreachable!("valid metric"));
        let running = match form {
            GuardForm::Wrapper => gauge(
                "kube_failover_guard_agent_running",
                "1 while the guard's agent process runs",
            ),
            GuardForm::Sidecar => {
                let _ = registry.register(Box::new(verdicts.clone()));
                for answer in ["allowed", "refused"] {
                    verdicts.with_label_values(&[answer]);
                }
                gauge(
                    "kube_failover_guard_agent_allowed",
                    "1 while the sidecar guard's verdict (GET /agent) lets the agent run",
                )
            }
        };
        GuardMetrics {
            running,
            verdicts,
            standby_epoch: gauge(
                "kube_failover_guard_standby_epoch",
                "The highest record epoch the guard saw with the standby active (0: none)",
            ),
            last_read: gauge(
                "kube_failover_guard_last_record_read_timestamp_seconds",
                "Unix time of the last successful read of the failover record",
            ),
            reads: counter(
                "kube_failover_guard_record_reads_total",
                "Reads of the failover record by result (ok, missing, or the probe reason)",
                &["result"],
            ),
            changes: counter(
                "kube_failover_guard_agent_changes_total",
                "Agent starts and stops by the guard, by action and reason",
                &["action", "reason"],
            ),
            heartbeats: counter(
                "kube_failover_guard_heartbeat_writes_total",
                "Heartbeat Lease writes by result (ok, or the probe reason)",
                &["result"],
            ),
            isolated: gauge(
                "kube_failover_guard_isolated",
                "1 while neither the record nor a quorum of daemons answered for isolation_ttl (on_isolation = stop)",
            ),
            vouches: gauge(
                "kube_failover_guard_daemon_vouches",
                "Daemons that said primary_active when last asked (on_isolation = stop)",
            ),
            answers: counter(
                "kube_failover_guard_daemon_answers_total",
                "Daemon answers while isolated, by result (vouch, not_active, not_ready, unknown_group, stale, unreachable, bad_answer)",
                &["result"],
            ),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// What the guard keeps running or stopped: its child process, or (a sidecar) the
/// verdict the agent's liveness probe asks for.
enum Subject {
    Child(Box<Agent>),
    Verdict(Arc<Verdict>),
}

impl Subject {
    fn running(&self) -> bool {
        match self {
            Subject::Child(a) => a.running(),
            Subject::Verdict(v) => v.allowed(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::Child(a) => a.program(),
            Subject::Verdict(_) => "the sidecar's verdict (GET /agent)".to_string(),
        }
    }

    /// The agent's own exit; never for a sidecar.
    async fn wait(&mut self) -> ExitStatus {
        match self {
            Subject::Child(a) => a.wait().await,
            Subject::Verdict(_) => std::future::pending().await,
        }
    }
}

/// What `/healthz` reads: when the loop last finished a turn.
#[derive(Default)]
pub struct Progress {
    started: Option<Instant>,
    last_turn_ms: AtomicU64,
}

impl Progress {
    fn mark(&self) {
        if let Some(s) = self.started {
            let ms = u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_turn_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// How long ago the loop last finished a turn.
    pub fn age(&self) -> Duration {
        let Some(s) = self.started else {
            return Duration::ZERO;
        };
        let last = Duration::from_millis(self.last_turn_ms.load(Ordering::Relaxed));
        s.elapsed().saturating_sub(last)
    }
}

/// Runs the guard until SIGTERM/SIGINT or the agent's own exit.
pub async fn run(config: GuardConfig, command: Vec<OsString>) -> Result<Ended, GuardError> {
    let mut agent = match config.form {
        GuardForm::Wrapper => {
            Subject::Child(Box::new(Agent::new(command).ok_or(GuardError::NoCommand)?))
        }
        GuardForm::Sidecar if !command.is_empty() => return Err(GuardError::CommandInSidecar),
        GuardForm::Sidecar => Subject::Verdict(Arc::new(Verdict::default())),
    };
    let verdict = match &agent {
        Subject::Verdict(v) => Some(v.clone()),
        Subject::Child(_) => None,
    };
    crate::tls::install_provider();
    let options = ClientOptions::for_call_timeout(config.timeout);
    let client = client_for_with(&config.standby, Side::Standby, options)
        .await
        .map_err(GuardError::Client)?;
    let side = config.side;
    let identity = config.identity();
    let metrics = GuardMetrics::new(&config.group, side, config.form);
    let progress = Arc::new(Progress {
        started: Some(Instant::now()),
        last_turn_ms: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GuardError::Listen {
            addr: config.listen,
            source,
        })?;
    tokio::spawn(serve::serve(
        listener,
        serve::Admin {
            metrics: metrics.clone(),
            progress: progress.clone(),
            stall: config.interval * 3 + config.timeout,
            verdict,
        },
    ));
    let heartbeat = Heartbeat::new(
        client.clone(),
        &config.standby.namespace,
        config.heartbeat_name(),
        identity.clone(),
        (&config.group, side),
        (config.heartbeat_every * 3, config.timeout),
    )
    .with_form(config.form);
    let stop_on_isolation = config.on_isolation == OnIsolation::Stop;
    let heartbeat = if stop_on_isolation {
        heartbeat.with_isolation(config.isolation_ttl, config.stop_within())
    } else {
        heartbeat
    };
    let asker = if stop_on_isolation {
        for a in isolation::Answer::ALL {
            metrics.answers.with_label_values(&[a.as_str()]);
        }
        Some(
            isolation::Asker::new(
                &config.daemons,
                &config.group,
                config.timeout,
                config.isolation_ttl,
            )
            .map_err(GuardError::Daemons)?,
        )
    } else {
        None
    };
    let needed = config.daemons_needed();
    let remembered = heartbeat.remembered_epoch().await.unwrap_or(None);
    let mut judge = Judge::remembering(remembered);
    info!(
        group = %config.group,
        side = side.as_str(),
        identity = %identity,
        form = config.form.as_str(),
        agent = %agent.describe(),
        heartbeat = %heartbeat.name(),
        remembered_standby_epoch = remembered,
        on_isolation = if stop_on_isolation { "stop" } else { "keep" },
        "guard starting"
    );
    let record_name = config.record_name();
    let namespace = config.standby.namespace.clone();
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(GuardError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(GuardError::Signals)?;
    let mut since = now_stamp().at;
    let mut last_reason = GuardReason::RecordUnreadable;
    let mut last_write: Option<Instant> = None;
    let mut unconfirmed_reads = 0u32;
    // When the last successful read of the record started (the guard's start before
    // the first): what it returned was written before then.
    let mut last_read_at = Instant::now();
    let mut isolated_as: Option<GuardReason> = None;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            status = agent.wait() => {
                metrics.running.set(0);
                error!(code = status.code(), "the agent exited by itself; the guard exits with it");
                return Ok(Ended::AgentExited(status));
            }
            _ = async { tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} } } => {
                if let Subject::Child(child) = &mut agent {
                    let how = child.stop(config.stop_grace).await;
                    metrics.running.set(0);
                    info!(stop = ?how, "guard stopping: SIGTERM or SIGINT");
                } else {
                    info!("guard stopping: SIGTERM or SIGINT");
                }
                return Ok(Ended::Signalled);
            }
        }
        let read_started = Instant::now();
        let reading = read(&client, &namespace, &record_name, config.timeout).await;
        let result = match &reading {
            Reading::Found(_) => "ok",
            Reading::Missing => "missing",
            Reading::Unreadable(reason) => reason.as_str(),
        };
        metrics.reads.with_label_values(&[result]).inc();
        if !matches!(reading, Reading::Unreadable(_)) {
            metrics.last_read.set(now_stamp().unix);
        }
        let (mut want, mut reason) = judge.judge(side, &reading);
        unconfirmed_reads = match reading {
            Reading::Unreadable(_) => unconfirmed_reads.saturating_add(1),
            _ => {
                last_read_at = read_started;
                0
            }
        };
        // on_isolation = "stop": from half the isolation_ttl without a read of the
        // record, the daemons are asked every turn; a quorum of vouches counts as a
        // read (the guard's isolation clock starts again), and nothing for the whole
        // isolation_ttl stops the agent.
        let mut isolated = false;
        if let (Reading::Unreadable(_), Some(asker)) = (&reading, &asker)
            && read_started.saturating_duration_since(last_read_at) >= config.isolation_ttl / 2
        {
            let ask_started = Instant::now();
            let answers = asker.ask().await;
            for a in &answers {
                metrics.answers.with_label_values(&[a.as_str()]).inc();
            }
            let vouches = answers
                .iter()
                .filter(|a| **a == isolation::Answer::Vouch)
                .count();
            let vouches = u32::try_from(vouches).unwrap_or(u32::MAX);
            metrics.vouches.set(i64::from(vouches));
            let vouched = vouches >= needed.max(1);
            if vouched {
                last_read_at = ask_started;
            }
            let unconfirmed_for = ask_started.saturating_duration_since(last_read_at);
            if let Some(decided) =
                decide::on_isolation(vouched, unconfirmed_for, config.isolation_ttl)
            {
                (want, reason) = decided;
                isolated = reason == GuardReason::Isolated;
                if isolated_as != Some(reason) {
                    let answers: Vec<&str> = answers.iter().map(|a| a.as_str()).collect();
                    warn!(
                        reason = reason.as_str(),
                        vouches,
                        needed,
                        ?answers,
                        "the record cannot be read: asked the daemons"
                    );
                }
                isolated_as = Some(reason);
            }
        } else if !matches!(reading, Reading::Unreadable(_)) && isolated_as.take().is_some() {
            info!("the record is readable again: it decides");
        }
        metrics.isolated.set(i64::from(isolated));
        // A primary's agent that has never run yet is started when the record stays
        // unreadable for three reads: an unreachable standby must not keep a healthy
        // primary without its agent (the agent would run there without a guard). With
        // on_isolation = "stop", the daemons' vouches decide that instead, once
        // isolation_ttl has passed.
        if want == Want::Keep
            && !stop_on_isolation
            && side == Side::Primary
            && !agent.running()
            && last_write.is_none()
            && unconfirmed_reads >= 3
            && judge.standby_epoch().is_none()
        {
            (want, reason) = (Want::Run, GuardReason::RecordUnreadable);
        }
        let why_run = match reason {
            GuardReason::Vouched => "enough daemons vouch for the primary",
            GuardReason::RecordUnreadable => "the record stays unreadable and the agent never ran",
            _ => "the record says this side is active",
        };
        let why_stop = if reason == GuardReason::Isolated {
            "the record cannot be read and too few daemons vouch for the primary"
        } else {
            "the record says the other side is active"
        };
        let changed = match (want, &mut agent) {
            (Want::Stop, Subject::Child(child)) if child.running() => {
                warn!(
                    reason = reason.as_str(),
                    epoch = judge.standby_epoch(),
                    "stopping the agent: {why_stop}"
                );
                let how = child.stop(config.stop_grace).await;
                metrics
                    .changes
                    .with_label_values(&["stop", reason.as_str()])
                    .inc();
                info!(stop = ?how, killed = how == Stopped::Killed, "agent stopped");
                true
            }
            (Want::Run, Subject::Child(child)) if !child.running() => {
                let pid = child.start().map_err(|source| GuardError::Start {
                    program: child.program(),
                    source,
                })?;
                metrics
                    .changes
                    .with_label_values(&["start", reason.as_str()])
                    .inc();
                info!(pid, reason = reason.as_str(), "agent started: {why_run}");
                true
            }
            (Want::Stop, Subject::Verdict(v)) => {
                let was_allowed = v.allowed();
                v.refuse(reason, judge.standby_epoch());
                if was_allowed {
                    metrics
                        .changes
                        .with_label_values(&["refuse", reason.as_str()])
                        .inc();
                    warn!(
                        reason = reason.as_str(),
                        epoch = judge.standby_epoch(),
                        "refusing the agent (GET /agent answers 503: its liveness probe fails and \
                         kubelet kills its container): {why_stop}"
                    );
                }
                was_allowed
            }
            (Want::Run, Subject::Verdict(v)) => {
                let was_allowed = v.allowed();
                v.allow(reason);
                if !was_allowed {
                    metrics
                        .changes
                        .with_label_values(&["allow", reason.as_str()])
                        .inc();
                    info!(
                        reason = reason.as_str(),
                        "allowing the agent (GET /agent answers 200): {why_run}"
                    );
                }
                !was_allowed
            }
            _ => false,
        };
        metrics.running.set(i64::from(agent.running()));
        metrics
            .standby_epoch
            .set(i64::try_from(judge.standby_epoch().unwrap_or(0)).unwrap_or(i64::MAX));
        if changed {
            since = now_stamp().at;
        }
        // "Keep" proves nothing new: the heartbeat goes on naming the last real reason.
        if want != Want::Keep {
            last_reason = reason;
        }
        let due = last_write.is_none_or(|t| t.elapsed() >= config.heartbeat_every);
        if changed || due {
            let beat = Beat {
                running: agent.running(),
                reason: last_reason,
                standby_epoch: judge.standby_epoch(),
                since: since.clone(),
            };
            match heartbeat.write(&beat).await {
                Ok(()) => {
                    metrics.heartbeats.with_label_values(&["ok"]).inc();
                    last_write = Some(Instant::now());
                }
                Err(e) => {
                    metrics
                        .heartbeats
                        .with_label_values(&[e.reason().as_str()])
                        .inc();
                    warn!(error = %e, "heartbeat not written");
                }
            }
        }
        progress.mark();
    }
}

async fn read(client: &kube::Client, namespace: &str, name: &str, timeout: Duration) -> Reading {
    match tokio::time::timeout(timeout, crate::record::read(client, namespace, name)).await {
        Ok(Ok(Some(record))) => Reading::Found(Box::new(record)),
        Ok(Ok(None)) => Reading::Missing,
        Ok(Err(e)) => Reading::Unreadable(e.reason()),
        Err(_) => Reading::Unreadable(crate::model::ProbeReason::Timeout),
    }
}
