//! Starting a control plane: a directory with certificates, ports and kubeconfigs, then
//! etcd, kube-apiserver, kube-controller-manager and kwok as processes of their own, the
//! agent's objects, and waiting until each part answers; a start that lost a port race is
//! tried again.

use super::kubeconfig::{Kubeconfigs, client_from};
use super::spec::validate_name;
use super::{Cluster, ClusterSpec};
use crate::binaries::Binaries;
use crate::error::{Result, TestbedError};
use crate::objects::NODE_NAME;
use crate::pki::Pki;
use crate::process::{self, Proc};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The audit policy of a cluster started with [`ClusterSpec::audit`], in its directory.
const AUDIT_POLICY: &str = "audit-policy.yaml";
/// Every request at level `Metadata` (who, what, which object, the user agent; no
/// bodies), once, when its answer is complete.
const AUDIT_POLICY_YAML: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

pub(super) const START_TIMEOUT: Duration = Duration::from_secs(90);
const START_ATTEMPTS: usize = 3;
/// Set to keep cluster directories (logs, kubeconfigs, certificates) after the test.
pub const KEEP_ENV: &str = "KUBE_FAILOVER_TESTBED_KEEP";

#[derive(Debug, Clone, Copy)]
pub(super) struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    pub(super) apiserver: u16,
}

#[derive(Debug, Default)]
pub(super) struct Procs {
    pub(super) etcd: Option<Proc>,
    pub(super) apiserver: Option<Proc>,
    pub(super) controller_manager: Option<Proc>,
    pub(super) kwok: Option<Proc>,
    /// The `--shutdown-delay-duration` the running API server was started with.
    pub(super) apiserver_shutdown_delay: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Component {
    Etcd,
    Apiserver,
}

impl Component {
    pub(super) fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::Apiserver => "kube-apiserver",
        }
    }
}

impl Cluster {
    /// Starts a cluster named `name` with the defaults of [`ClusterSpec::new`].
    pub async fn start(name: &str) -> Result<Cluster> {
        Cluster::start_with(ClusterSpec::new(name)).await
    }

    /// Starts a cluster as `spec` says; builds the binaries first if needed.
    pub async fn start_with(spec: ClusterSpec) -> Result<Cluster> {
        validate_name(&spec.name)?;
        let bins = tokio::task::spawn_blocking(Binaries::locate)
            .await
            .map_err(|e| TestbedError::Build {
                message: format!("build task failed: {e}"),
                source: None,
            })??;
        process::sweep_orphans();
        // kube builds rustls configs from the process default provider: install ring (the
        // workspace's one provider) explicitly rather than rely on rustls picking it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut attempt = 1;
        loop {
            match Cluster::try_start(&spec, &bins).await {
                Err(e) if attempt < START_ATTEMPTS && is_port_clash(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_start(spec: &ClusterSpec, bins: &Binaries) -> Result<Cluster> {
        let cluster = Cluster::prepare(spec, bins).await?;
        cluster.spawn(Component::Etcd)?;
        cluster.spawn(Component::Apiserver)?;
        cluster.wait_apiserver_ready(START_TIMEOUT).await?;
        cluster.spawn_controllers()?;
        cluster.create_objects().await?;
        if spec.wait_ready {
            cluster.wait_node_ready(START_TIMEOUT).await?;
            for name in cluster.deployment_names() {
                cluster.wait_deployment_ready(&name, START_TIMEOUT).await?;
            }
        }
        Ok(cluster)
    }

    /// Directory, certificates, ports, kubeconfigs and the admin client; nothing runs yet.
    async fn prepare(spec: &ClusterSpec, bins: &Binaries) -> Result<Cluster> {
        let temp = tempfile::Builder::new()
            .prefix(&format!("{}{}-", process::DIR_PREFIX, spec.name))
            .tempdir()
            .map_err(|e| TestbedError::io("creating", std::env::temp_dir(), e))?;
        let dir = temp.keep();
        process::claim_dir(&dir)?;
        let keep_dir = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        if keep_dir {
            process::mark_kept(&dir);
        }
        match Cluster::prepare_in(spec, bins, dir.clone(), keep_dir).await {
            Ok(cluster) => Ok(cluster),
            Err(e) => {
                // No Cluster exists yet whose Drop would clean up.
                if !keep_dir {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e)
            }
        }
    }

    async fn prepare_in(
        spec: &ClusterSpec,
        bins: &Binaries,
        dir: PathBuf,
        keep_dir: bool,
    ) -> Result<Cluster> {
        let pki = Pki::generate(&spec.name, &dir)?;
        let kwok_config = dir.join("kwok.yaml");
        std::fs::write(&kwok_config, "")
            .map_err(|e| TestbedError::io("writing", &kwok_config, e))?;
        if spec.audit {
            let policy = dir.join(AUDIT_POLICY);
            std::fs::write(&policy, AUDIT_POLICY_YAML)
                .map_err(|e| TestbedError::io("writing", &policy, e))?;
        }
        let ports = Ports {
            etcd_client: process::free_port("for etcd clients")?,
            etcd_peer: process::free_port("for etcd peers")?,
            apiserver: process::free_port("for kube-apiserver")?,
        };
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        let kubeconfigs = Kubeconfigs::write(spec, &dir, &server, &pki)?;
        let client = client_from(&spec.name, kubeconfigs.admin()).await?;
        Ok(Cluster {
            spec: spec.clone(),
            bins: bins.clone(),
            dir,
            keep_dir,
            pki,
            ports,
            procs: Mutex::new(Procs::default()),
            next_shutdown_delay: Mutex::new(spec.shutdown_delay),
            kubeconfigs,
            client,
        })
    }

    pub(super) fn spawn(&self, component: Component) -> Result<()> {
        let delay = self.next_shutdown_delay();
        let mut guard = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let procs = &mut *guard;
        let (slot, program, args) = match component {
            Component::Etcd => (&mut procs.etcd, &self.bins.etcd, self.etcd_args()),
            Component::Apiserver => (
                &mut procs.apiserver,
                &self.bins.kube_apiserver,
                self.apiserver_args(delay),
            ),
        };
        if let Some(running) = slot.as_mut()
            && running.check_running().is_ok()
        {
            return Err(self.state_err(format!("{} is already running", component.name())));
        }
        *slot = Some(self.spawn_proc(component.name(), program, &args)?);
        if component == Component::Apiserver {
            procs.apiserver_shutdown_delay = delay.map(whole_seconds);
        }
        Ok(())
    }

    fn spawn_controllers(&self) -> Result<()> {
        let kcm = self.spawn_proc(
            "kube-controller-manager",
            &self.bins.kube_controller_manager,
            &self.controller_manager_args(),
        )?;
        let kwok = self.spawn_proc("kwok", &self.bins.kwok, &self.kwok_args())?;
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.controller_manager = Some(kcm);
        procs.kwok = Some(kwok);
        Ok(())
    }

    /// Starts `program` as `name` of this cluster, logging to `<name>.log` in its directory.
    fn spawn_proc(&self, name: &'static str, program: &Path, args: &[String]) -> Result<Proc> {
        let log = self.dir.join(format!("{name}.log"));
        Proc::spawn(&self.spec.name, name, program, args, &log, &self.dir)
    }

    pub(super) async fn restart_controllers(&self) -> Result<()> {
        let (kcm, kwok) = {
            let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
            (procs.controller_manager.take(), procs.kwok.take())
        };
        for proc in [kcm, kwok].into_iter().flatten() {
            proc.kill().await?;
        }
        self.spawn_controllers()
    }

    /// An error if any process the cluster should be running has exited.
    pub(super) fn check_processes(&self) -> Result<()> {
        let mut guard = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let procs = &mut *guard;
        for proc in [
            &mut procs.etcd,
            &mut procs.apiserver,
            &mut procs.controller_manager,
            &mut procs.kwok,
        ]
        .into_iter()
        .flatten()
        {
            proc.check_running()?;
        }
        Ok(())
    }

    fn etcd_args(&self) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        vec![
            format!("--name={}", self.spec.name),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}={peer}", self.spec.name),
            // Test data need not survive a power cut; fsync would dominate write latency.
            "--unsafe-no-fsync=true".into(),
            "--quota-backend-bytes=268435456".into(),
            "--log-level=warn".into(),
        ]
    }

    /// kube-apiserver's arguments, with `--shutdown-delay-duration` when `shutdown_delay`
    /// is set.
    fn apiserver_args(&self, shutdown_delay: Option<Duration>) -> Vec<String> {
        let p = &self.pki;
        let shutdown_delay = shutdown_delay_arg(shutdown_delay);
        let args = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.apiserver),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", p.serving.cert.display()),
            format!("--tls-private-key-file={}", p.serving.key.display()),
            format!("--client-ca-file={}", p.client_ca.display()),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            format!("--service-account-issuer={}", self.server_url()),
            format!(
                "--service-account-key-file={}",
                p.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                p.service_account_key.display()
            ),
            "--authorization-mode=RBAC".into(),
            // No token controller runs, so Pods would be rejected for lack of a
            // `default` ServiceAccount.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // Lean: no request queuing machinery, no profiling endpoints.
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            // The default reconciler keeps trying to publish 127.0.0.1 as the endpoint of
            // the `kubernetes` Service, which validation rejects as loopback.
            "--endpoint-reconciler-type=none".into(),
            // On SIGTERM the listener closes at once, but the process would wait up to the
            // 60 s request timeout for the controllers' watches; ending them right away
            // lets a graceful stop finish in about a second.
            "--shutdown-watch-termination-grace-period=1s".into(),
        ];
        let audit = if self.spec.audit {
            vec![
                format!(
                    "--audit-policy-file={}",
                    self.dir.join(AUDIT_POLICY).display()
                ),
                format!("--audit-log-path={}", self.audit_log_path().display()),
                // Written as each request ends, so a test reads it at once.
                "--audit-log-mode=blocking".into(),
                "--audit-log-format=json".into(),
            ]
        } else {
            Vec::new()
        };
        args.into_iter()
            .chain(shutdown_delay)
            .chain(audit)
            .collect()
    }

    fn controller_manager_args(&self) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", self.admin_kubeconfig().display()),
            "--leader-elect=false".into(),
            // Deployments need the deployment and replicaset controllers; the namespace
            // controller makes a deleted namespace actually go away. Leaving out the node
            // lifecycle controller keeps it from evicting kwok's Pods.
            "--controllers=deployment,replicaset,namespace".into(),
            "--secure-port=0".into(),
            "--profiling=false".into(),
        ]
    }

    fn kwok_args(&self) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", self.admin_kubeconfig().display()),
            // An explicit, empty config keeps a ~/.kwok/kwok.yaml of the machine out.
            format!("--config={}", self.dir.join("kwok.yaml").display()),
            "--manage-all-nodes=true".into(),
            "--node-ip=127.0.0.1".into(),
        ]
    }

    pub(super) async fn wait_apiserver_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            {
                let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
                match procs.apiserver.as_mut() {
                    Some(p) => p.check_running()?,
                    None => return Err(self.state_err("kube-apiserver is not running".into())),
                }
                if let Some(etcd) = procs.etcd.as_mut() {
                    etcd.check_running()?;
                }
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            match tokio::time::timeout(Duration::from_secs(5), self.client.request_text(req)).await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "request timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tail = self.log_tail(Component::Apiserver);
        Err(self.timeout(
            "kube-apiserver /readyz".into(),
            timeout,
            format!("last answer: {last}\nkube-apiserver log:\n{tail}"),
        ))
    }

    pub(super) async fn wait_etcd_healthy(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            {
                let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
                match procs.etcd.as_mut() {
                    Some(p) => p.check_running()?,
                    None => return Err(self.state_err("etcd is not running".into())),
                }
            }
            if etcd_healthy(self.ports.etcd_client).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tail = self.log_tail(Component::Etcd);
        Err(self.timeout("etcd /health".into(), timeout, format!("etcd log:\n{tail}")))
    }

    async fn wait_node_ready(&self, timeout: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(node) = nodes.get(NODE_NAME).await {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready {
                    return Ok(());
                }
            }
            self.check_processes()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.timeout(
            format!("node {NODE_NAME} Ready"),
            timeout,
            format!(
                "kwok log:\n{}",
                process::log_tail(&self.dir.join("kwok.log"), 20)
            ),
        ))
    }

    pub(super) fn log_tail(&self, component: Component) -> String {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let proc = match component {
            Component::Etcd => &procs.etcd,
            Component::Apiserver => &procs.apiserver,
        };
        match proc {
            Some(p) => p.log_tail(30),
            None => process::log_tail(&self.dir.join(format!("{}.log", component.name())), 30),
        }
    }
}

/// A delay in whole seconds, rounded up: what `--shutdown-delay-duration` is given.
pub(super) fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// `--shutdown-delay-duration=<s>s` for a delay (whole seconds, rounded up); none for
/// `None`.
fn shutdown_delay_arg(delay: Option<Duration>) -> Option<String> {
    delay.map(|d| format!("--shutdown-delay-duration={}s", whole_seconds(d).as_secs()))
}

fn is_port_clash(e: &TestbedError) -> bool {
    match e {
        TestbedError::Exited { log_tail, .. } => log_tail.contains("address already in use"),
        TestbedError::Timeout { detail, .. } => detail.contains("address already in use"),
        _ => false,
    }
}

async fn etcd_healthy(port: u16) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        std::io::Result::Ok(body.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_delay_is_given_in_whole_seconds_rounded_up() {
        assert_eq!(shutdown_delay_arg(None), None);
        assert_eq!(
            shutdown_delay_arg(Some(Duration::from_secs(5))).as_deref(),
            Some("--shutdown-delay-duration=5s")
        );
        assert_eq!(
            shutdown_delay_arg(Some(Duration::from_millis(2_100))).as_deref(),
            Some("--shutdown-delay-duration=3s")
        );
        assert_eq!(
            whole_seconds(Duration::from_millis(7_999)),
            Duration::from_secs(8)
        );
    }
}
