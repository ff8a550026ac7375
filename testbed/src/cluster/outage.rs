//! Control-plane outages: the API server or etcd stopped (SIGTERM), killed (SIGKILL) and
//! started again on the same port and data.

use super::Cluster;
use super::start::{Component, START_TIMEOUT};
use crate::error::Result;
use crate::process::Proc;
use std::time::Duration;

const STOP_GRACE: Duration = Duration::from_secs(20);

impl Cluster {
    /// SIGTERM to the API server; returns once it has exited (SIGKILL after 20 s plus
    /// the shutdown delay it was started with, during which it still serves while
    /// `/readyz` fails: [`Cluster::shutdown_delay_in_force`]).
    pub async fn stop_apiserver(&self) -> Result<()> {
        let grace = STOP_GRACE + self.shutdown_delay_in_force().unwrap_or_default();
        self.take(Component::Apiserver)?.terminate(grace).await?;
        Ok(())
    }

    /// Sets kube-apiserver's `--shutdown-delay-duration` for the API server's next start
    /// ([`Cluster::start_apiserver`]), in place of [`ClusterSpec::shutdown_delay`](super::ClusterSpec::shutdown_delay): after
    /// SIGTERM it keeps serving requests this long (whole seconds, rounded up) while
    /// `/readyz` fails; `None`: it stops serving at once. The running API server keeps
    /// the delay it was started with.
    pub fn set_shutdown_delay(&self, delay: Option<Duration>) {
        *self
            .next_shutdown_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// The shutdown delay the running API server was started with (whole seconds); `None`
    /// when it has none or is not running.
    pub fn shutdown_delay_in_force(&self) -> Option<Duration> {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.apiserver.as_ref().and(procs.apiserver_shutdown_delay)
    }

    pub(super) fn next_shutdown_delay(&self) -> Option<Duration> {
        *self
            .next_shutdown_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// SIGKILL to the API server; returns once it is gone.
    pub async fn kill_apiserver(&self) -> Result<()> {
        self.take(Component::Apiserver)?.kill().await?;
        Ok(())
    }

    /// Starts the API server again (same port, certificates and etcd), waits for
    /// `/readyz`, then restarts kube-controller-manager and kwok.
    ///
    /// The restart is there because their informers back off exponentially (up to about
    /// 30 s) while the API server is away, so after a long outage a scale-down would take
    /// that long to reach the Pods. Fresh controllers make the cluster converge within
    /// about a second, the same after every outage, which is what tests need to measure
    /// the daemon rather than client-go's backoff.
    pub async fn start_apiserver(&self) -> Result<()> {
        self.spawn(Component::Apiserver)?;
        self.wait_apiserver_ready(START_TIMEOUT).await?;
        self.restart_controllers().await
    }

    /// SIGTERM to etcd; returns once it has exited.
    pub async fn stop_etcd(&self) -> Result<()> {
        self.take(Component::Etcd)?.terminate(STOP_GRACE).await?;
        Ok(())
    }

    /// SIGKILL to etcd; returns once it is gone.
    pub async fn kill_etcd(&self) -> Result<()> {
        self.take(Component::Etcd)?.kill().await?;
        Ok(())
    }

    /// Starts etcd again on the same data and port and waits until it is healthy; if the
    /// API server runs, also until `/readyz` passes again, and then restarts the
    /// controllers as [`Cluster::start_apiserver`] does.
    pub async fn start_etcd(&self) -> Result<()> {
        self.spawn(Component::Etcd)?;
        self.wait_etcd_healthy(START_TIMEOUT).await?;
        if self.apiserver_running() {
            self.wait_apiserver_ready(START_TIMEOUT).await?;
            self.restart_controllers().await?;
        }
        Ok(())
    }

    fn take(&self, component: Component) -> Result<Proc> {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match component {
            Component::Etcd => &mut procs.etcd,
            Component::Apiserver => &mut procs.apiserver,
        };
        slot.take()
            .ok_or_else(|| self.state_err(format!("{} is not running", component.name())))
    }
}
