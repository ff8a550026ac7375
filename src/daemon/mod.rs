//! The daemon: sets up the metrics, the admin server and one runner per group (each
//! on its own task, so a slow cluster never delays another group's tick), keeps systemd
//! informed, and shuts down by draining (see `shutdown`).

mod group_status;
mod runner;
mod shutdown;
mod wake;

use crate::admin::{self, AdminError, AdminState};
use crate::config::Config;
use crate::kube::client::{self, ClusterError};
use crate::kube::cluster;
use crate::metrics::Metrics;
use crate::model::Side;
use crate::probe;
use crate::status::StatusReport;
use crate::systemd;
use runner::GroupRunner;
use shutdown::Signals;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot set up metrics")]
    /// The metrics registry could not be set up.
    Metrics(#[source] prometheus::Error),
    #[error(transparent)]
    /// The admin server could not start.
    Admin(#[from] AdminError),
    #[error("group {group}")]
    /// A group's client could not be built.
    Cluster {
        /// The group.
        group: String,
        #[source]
        /// Why.
        source: ClusterError,
    },
    #[error("cannot build the HTTP client for checks")]
    /// The HTTP client for checks could not be built.
    HttpClient(#[source] reqwest::Error),
    #[error("cannot install the {0} signal handler")]
    /// A signal handler could not be installed.
    Signal(&'static str, #[source] std::io::Error),
    #[error("aborted by a second signal while in-flight actions were still running")]
    /// A second signal arrived while in-flight work was finishing.
    Aborted,
    /// Another live process uses this instance's identity.
    #[error(transparent)]
    IdentityClash(#[from] crate::coord::IdentityClash),
    /// `daemon.trace_file` could not be opened.
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let listener = admin::bind(config.daemon.listen).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    run_with_listener(config, listener, stop_tx, stop_rx).await
}

fn identity(config: &Config) -> String {
    config.daemon.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "kube-failover".to_string())
    })
}

async fn run_with_listener(
    config: Config,
    listener: tokio::net::TcpListener,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let identity = identity(&config);
    let metrics = Metrics::new().map_err(DaemonError::Metrics)?;
    let daemon = &config.daemon;
    let admin = Arc::new(AdminState::new(
        metrics.clone(),
        daemon.probe_interval,
        config.groups.len(),
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: daemon.mode.as_str().to_string(),
            identity: identity.clone(),
            ready: false,
            last_tick_unix: None,
            groups: Vec::new(),
        },
    ));
    // Every request names the daemon and this instance (src/user_agent.rs).
    let user_agent = crate::user_agent::daemon(&identity);
    let http = probe::http::client(daemon.probe_timeout, user_agent.clone())
        .map_err(DaemonError::HttpClient)?;
    // Webhook notices: one delivery task per webhook, fed by every group (src/notice).
    let notifier =
        crate::notify::Notifier::new(&config.notify, http.clone(), metrics.notices.clone());

    // Credentials are waited for less than the shortest call bound, so a missing one is
    // reported as `unauthorized`, never as a `timeout`.
    // With HTTP/2, a connection silent for an interval is PINGed and closed when the PING
    // is not answered within the probe timeout: a dead watch connection is noticed as
    // fast as a dead API server (src/kube/client/connect.rs).
    let client_options = client::ClientOptions::for_call_timeout(daemon.probe_timeout)
        .with_user_agent(user_agent)
        .with_http2(daemon.http2.then_some(client::Http2 {
            ping_interval: daemon.probe_interval,
            ping_timeout: daemon.probe_timeout,
        }));
    // Opened before the engines start: a line's offset is from here.
    let trace = match &daemon.trace_file {
        Some(path) => Some(crate::trace::TraceSink::open(
            path,
            daemon.trace_max_bytes,
            std::time::Instant::now(),
        )?),
        None => None,
    };
    // One client, one /readyz per interval and one set of watch caches per distinct
    // cluster, shared by every group on it (src/kube/cluster.rs).
    let mut clusters = cluster::Clusters::new(
        client_options,
        daemon.probe_interval,
        daemon.probe_timeout,
        daemon.watch_timeout,
        daemon.watch_scope,
    );
    // What the groups' coordination shares in this process (src/coord).
    let coordination = crate::coord::Coordination::new(&config);
    let mut runners = Vec::new();
    for group in &config.groups {
        let mut handle = async |target, side| {
            clusters
                .get(target, side)
                .await
                .map_err(|source| DaemonError::Cluster {
                    group: group.name.clone(),
                    source,
                })
        };
        let primary = handle(&group.primary, Side::Primary).await?;
        let standby = handle(&group.standby, Side::Standby).await?;
        let mut runner = GroupRunner::new(
            group.clone(),
            &config,
            primary,
            standby,
            http.clone(),
            identity.clone(),
            metrics.clone(),
            admin.clone(),
            &coordination,
        );
        runner.trace = trace.clone();
        runner.notices.connect(notifier.clone());
        runners.push(runner);
    }
    info!(
        clusters = clusters.len(),
        groups = config.groups.len(),
        "clients built"
    );

    // Several instances (src/coord): refuse an identity another live process uses.
    for runner in &runners {
        runner
            .coord
            .check_identity(daemon.probe_interval / 2)
            .await?;
    }

    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(listener, admin.clone(), admin_stop_rx));
    info!(
        listen = %daemon.listen,
        mode = daemon.mode.as_str(),
        groups = config.groups.len(),
        identity = %identity,
        interval = %humantime::format_duration(daemon.probe_interval),
        "kube-failover started"
    );

    notifier.start();
    let mut tasks = JoinSet::new();
    for runner in runners {
        // Boxed: a runner is several kB; taken by value, it would sit inside its task's
        // future (with a copy beside it) for the life of the process, once per group.
        tasks.spawn(Box::new(runner).run(stop_rx.clone()));
    }
    let supervisor = tokio::spawn(supervise(
        admin.clone(),
        daemon.probe_interval,
        stop_rx.clone(),
    ));

    let mut signals = Signals::install().map_err(|(name, e)| DaemonError::Signal(name, e))?;
    signals.first(stop_rx.clone()).await;
    admin.begin_shutdown();
    systemd::stopping();
    let _ = stop_tx.send(true);

    let mut result = signals.drain(tasks, daemon.shutdown_timeout).await;
    if result.is_ok() && notifier.is_enabled() {
        // Notices of the last ticks: one more attempt each, within the same bound.
        let mut flush = JoinSet::new();
        flush.spawn(notifier.clone().flush());
        result = signals.drain(flush, daemon.shutdown_timeout).await;
    }
    notifier.abandon();
    supervisor.abort();
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    info!("kube-failover stopped");
    result
}

/// systemd: READY=1 once every group has ticked, WATCHDOG=1 while ticks keep coming.
async fn supervise(admin: Arc<AdminState>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let period = systemd::watchdog_interval()
        .map(|w| (w / 3).min(interval))
        .unwrap_or(interval)
        .max(Duration::from_millis(100));
    let mut notified_ready = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !notified_ready && admin.is_ready() {
            systemd::ready();
            notified_ready = true;
        }
        if admin.is_healthy() {
            systemd::watchdog();
        }
    }
}
