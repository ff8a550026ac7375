//! One Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver,
//! kube-controller-manager, kwok) with the env0-agent-like workload, its kubeconfigs,
//! and the faults a test can inject into it.

use crate::binaries::Binaries;
use crate::error::{Result, TestbedError};
use crate::objects::{self, AGENT_COMPONENTS, NODE_NAME};
use crate::pki::{CertFiles, DAEMON_USER, Pki};
use crate::process::{self, Proc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{
    AuthInfo, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use kube::{Client, Config};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Namespace of the agent unless a [`ClusterSpec`] says otherwise.
pub const DEFAULT_NAMESPACE: &str = "env0-agent";
/// Helm release name of the agent unless a [`ClusterSpec`] says otherwise.
pub const DEFAULT_RELEASE: &str = "env0";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;
/// Set to keep cluster directories (logs, kubeconfigs, certificates) after the test.
pub const KEEP_ENV: &str = "KUBE_FAILOVER_TESTBED_KEEP";

/// What to start: names and the agent's initial replica count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name: also the kubeconfig cluster and context name. Lower-case letters,
    /// digits and `-`.
    pub name: String,
    pub namespace: String,
    pub release: String,
    /// Replicas of each agent Deployment at start (1 on a primary, 0 on a standby).
    pub replicas: i32,
    /// Whether `start` waits for the Node to be Ready and the Deployments to have exactly
    /// `replicas` Ready Pods.
    pub wait_ready: bool,
    /// kube-apiserver's `--shutdown-delay-duration`: after SIGTERM it keeps serving
    /// requests this long while `/readyz` fails. `None`: it stops serving at once.
    pub shutdown_delay: Option<Duration>,
}

impl ClusterSpec {
    /// Defaults: namespace `env0-agent`, release `env0`, 1 replica, wait until Ready.
    pub fn new(name: &str) -> ClusterSpec {
        ClusterSpec {
            name: name.to_string(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            release: DEFAULT_RELEASE.to_string(),
            replicas: 1,
            wait_ready: true,
            shutdown_delay: None,
        }
    }

    pub fn replicas(mut self, replicas: i32) -> ClusterSpec {
        self.replicas = replicas;
        self
    }

    pub fn namespace(mut self, namespace: &str) -> ClusterSpec {
        self.namespace = namespace.to_string();
        self
    }

    pub fn release(mut self, release: &str) -> ClusterSpec {
        self.release = release.to_string();
        self
    }

    pub fn wait_ready(mut self, wait: bool) -> ClusterSpec {
        self.wait_ready = wait;
        self
    }

    /// See [`ClusterSpec::shutdown_delay`] (whole seconds; rounded up).
    pub fn shutdown_delay(mut self, delay: Duration) -> ClusterSpec {
        self.shutdown_delay = Some(delay);
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

#[derive(Debug, Default)]
struct Procs {
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    controller_manager: Option<Proc>,
    kwok: Option<Proc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Etcd,
    Apiserver,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::Apiserver => "kube-apiserver",
        }
    }
}

/// A running single-node control plane. Dropping it kills every process it started and
/// removes its directory.
pub struct Cluster {
    spec: ClusterSpec,
    bins: Binaries,
    dir: PathBuf,
    keep_dir: bool,
    pki: Pki,
    ports: Ports,
    procs: Mutex<Procs>,
    admin_kubeconfig: PathBuf,
    daemon_kubeconfig: PathBuf,
    untrusted_kubeconfig: PathBuf,
    client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.spec.name)
            .field("server", &self.server_url())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
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
        // kube builds rustls configs from the process default provider, and both ring and
        // aws-lc-rs are compiled into this workspace, so rustls cannot pick one itself.
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
        let ports = Ports {
            etcd_client: process::free_port("for etcd clients")?,
            etcd_peer: process::free_port("for etcd peers")?,
            apiserver: process::free_port("for kube-apiserver")?,
        };
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        let daemon_kubeconfig = dir.join(format!("{DAEMON_USER}.kubeconfig"));
        let untrusted_kubeconfig = dir.join("untrusted.kubeconfig");
        write_kubeconfig(
            spec,
            &admin_kubeconfig,
            &server,
            &pki.server_ca,
            "admin",
            &pki.admin,
        )?;
        write_kubeconfig(
            spec,
            &daemon_kubeconfig,
            &server,
            &pki.server_ca,
            DAEMON_USER,
            &pki.daemon,
        )?;
        write_kubeconfig(
            spec,
            &untrusted_kubeconfig,
            &server,
            &pki.server_ca,
            DAEMON_USER,
            &pki.untrusted,
        )?;
        let client = client_from(&spec.name, &admin_kubeconfig).await?;
        Ok(Cluster {
            spec: spec.clone(),
            bins: bins.clone(),
            dir,
            keep_dir,
            pki,
            ports,
            procs: Mutex::new(Procs::default()),
            admin_kubeconfig,
            daemon_kubeconfig,
            untrusted_kubeconfig,
            client,
        })
    }

    // ---- what a test reads -------------------------------------------------------------

    /// The cluster's name, which is also the context name in each of its kubeconfigs.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Same as [`Cluster::name`]: the only context in each kubeconfig.
    pub fn context(&self) -> &str {
        &self.spec.name
    }

    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    pub fn release(&self) -> &str {
        &self.spec.release
    }

    /// The API server's address.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.apiserver))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.api_addr())
    }

    /// The cluster's directory: certificates, kubeconfigs, `*.log` of each component.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client with `system:masters` rights, for a test to set up and inspect things.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Kubeconfig of the admin user (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Kubeconfig of the restricted user `kube-failover`, bound in the agent namespace to
    /// the Role(s) of `deploy/kubernetes/target-rbac/role.yaml` and to nothing else.
    pub fn daemon_kubeconfig(&self) -> &Path {
        &self.daemon_kubeconfig
    }

    /// The daemon's kubeconfig, but with the server at `addr` (a [`crate::FaultProxy`]).
    /// Certificates stay valid: the proxy listens on 127.0.0.1 too.
    pub fn daemon_kubeconfig_via(&self, addr: SocketAddr) -> Result<PathBuf> {
        let path = self
            .dir
            .join(format!("{DAEMON_USER}-via-{}.kubeconfig", addr.port()));
        write_kubeconfig(
            &self.spec,
            &path,
            &format!("https://{addr}"),
            &self.pki.server_ca,
            DAEMON_USER,
            &self.pki.daemon,
        )?;
        Ok(path)
    }

    /// A kubeconfig for user `kube-failover` whose client certificate comes from a CA this
    /// cluster does not trust: every request gets 401.
    pub fn untrusted_kubeconfig(&self) -> &Path {
        &self.untrusted_kubeconfig
    }

    /// The CA file that verifies the API server's serving certificate.
    pub(crate) fn server_ca(&self) -> &Path {
        &self.pki.server_ca
    }

    /// A client built from any kubeconfig of this cluster (its one context).
    pub async fn client_from(&self, kubeconfig: &Path) -> Result<Client> {
        client_from(&self.spec.name, kubeconfig).await
    }

    pub(crate) fn pki(&self) -> &Pki {
        &self.pki
    }

    /// A client as the restricted daemon user.
    pub async fn daemon_client(&self) -> Result<Client> {
        self.client_from(&self.daemon_kubeconfig).await
    }

    /// `<release>-agent-trigger-deployment`.
    pub fn trigger_deployment(&self) -> String {
        objects::deployment_name(&self.spec.release, AGENT_COMPONENTS[0])
    }

    /// `<release>-agent-proxy-deployment`.
    pub fn proxy_deployment(&self) -> String {
        objects::deployment_name(&self.spec.release, AGENT_COMPONENTS[1])
    }

    /// Both agent Deployments, trigger first.
    pub fn deployment_names(&self) -> [String; 2] {
        [self.trigger_deployment(), self.proxy_deployment()]
    }

    /// PIDs of the processes running now.
    pub fn pids(&self) -> Vec<u32> {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        [
            &procs.etcd,
            &procs.apiserver,
            &procs.controller_manager,
            &procs.kwok,
        ]
        .into_iter()
        .flatten()
        .map(Proc::pid)
        .collect()
    }

    /// Resident memory of all running processes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        self.pids().into_iter().map(rss_of).sum()
    }

    /// Whether the API server process is running (it may still be starting).
    pub fn apiserver_running(&self) -> bool {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs
            .apiserver
            .as_mut()
            .is_some_and(|p| p.check_running().is_ok())
    }

    // ---- workload helpers --------------------------------------------------------------

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.spec.namespace)
    }

    /// The Deployment `name` in the agent namespace.
    pub async fn deployment(&self, name: &str) -> Result<Deployment> {
        self.deployments()
            .get(name)
            .await
            .map_err(|e| self.kube_err(format!("getting deployment {name}"), e))
    }

    /// `spec.replicas` of Deployment `name`.
    pub async fn replicas(&self, name: &str) -> Result<i32> {
        Ok(self
            .deployment(name)
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1))
    }

    /// Scales Deployment `name` as the admin, behind the daemon's back.
    pub async fn scale(&self, name: &str, replicas: i32) -> Result<()> {
        self.deployments()
            .patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .map_err(|e| self.kube_err(format!("scaling deployment {name} to {replicas}"), e))?;
        Ok(())
    }

    /// Waits until Deployment `name` has settled: its controller has seen the latest spec
    /// and exactly `spec.replicas` Pods exist, all updated, Ready and available. Returns
    /// how long that took.
    pub async fn wait_deployment_ready(&self, name: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let last = match self.deployments().get_opt(name).await {
                Ok(Some(d)) if deployment_settled(&d) => return Ok(start.elapsed()),
                Ok(Some(d)) => format!("status: {:?}", d.status),
                Ok(None) => "not found".to_string(),
                Err(e) => format!("error: {e}"),
            };
            if start.elapsed() > timeout {
                return Err(self.timeout(format!("deployment {name} ready"), timeout, last));
            }
            self.check_processes()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the Ready and ContainersReady conditions (and each container's `ready`) of
    /// every current Pod of Deployment `name`, through the status subresource as a
    /// kubelet would. kwok leaves them alone afterwards: its Pod stages match only Pods
    /// that have not started yet. Pods created later start Ready. Returns how many Pods
    /// were changed.
    pub async fn set_pods_ready(&self, name: &str, ready: bool) -> Result<usize> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.spec.namespace);
        let selector = self.selector_of(name).await?;
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.kube_err(format!("listing pods of {name}"), e))?;
        let status = if ready { "True" } else { "False" };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut changed = 0;
        for pod in list.items {
            let Some(pod_name) = pod.metadata.name else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let containers: Vec<_> = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| {
                    cs.iter()
                        .map(|c| json!({ "name": c.name, "ready": ready }))
                        .collect()
                })
                .unwrap_or_default();
            let reason = if ready {
                "TestbedReady"
            } else {
                "TestbedUnready"
            };
            let conditions = ["Ready", "ContainersReady"].map(|t| {
                json!({ "type": t, "status": status, "reason": reason, "lastTransitionTime": now })
            });
            let patch = json!({ "status": {
                "conditions": conditions,
                "containerStatuses": containers,
            }});
            pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(|e| self.kube_err(format!("patching status of pod {pod_name}"), e))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// The live Pods (not being deleted) of Deployment `name`, with their Ready condition.
    pub async fn pod_readiness(&self, name: &str) -> Result<Vec<(String, bool)>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.spec.namespace);
        let selector = self.selector_of(name).await?;
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.kube_err(format!("listing pods of {name}"), e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (p.metadata.name.unwrap_or_default(), ready)
            })
            .collect())
    }

    async fn selector_of(&self, name: &str) -> Result<String> {
        let d = self.deployment(name).await?;
        let labels = d
            .spec
            .and_then(|s| s.selector.match_labels)
            .unwrap_or_default();
        if labels.is_empty() {
            return Err(self.state_err(format!("deployment {name} has no matchLabels selector")));
        }
        Ok(labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","))
    }

    /// Deletes the agent namespace and waits until it is gone (the namespace controller
    /// runs, so its contents go too). Returns how long that took.
    pub async fn delete_namespace(&self) -> Result<Duration> {
        let start = Instant::now();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = &self.spec.namespace;
        namespaces
            .delete(ns, &DeleteParams::default())
            .await
            .map_err(|e| self.kube_err(format!("deleting namespace {ns}"), e))?;
        loop {
            match namespaces.get_opt(ns).await {
                Ok(None) => return Ok(start.elapsed()),
                Ok(Some(_)) | Err(_) if start.elapsed() > START_TIMEOUT => {
                    return Err(self.timeout(
                        format!("namespace {ns} gone"),
                        START_TIMEOUT,
                        String::new(),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    // ---- process faults ----------------------------------------------------------------

    /// SIGTERM to the API server; returns once it has exited (SIGKILL after 20 s plus
    /// the spec's `shutdown_delay`, during which it still serves while `/readyz` fails).
    pub async fn stop_apiserver(&self) -> Result<()> {
        let grace = STOP_GRACE + self.spec.shutdown_delay.unwrap_or_default();
        self.take(Component::Apiserver)?.terminate(grace).await?;
        Ok(())
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

    // ---- internals ---------------------------------------------------------------------

    fn take(&self, component: Component) -> Result<Proc> {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match component {
            Component::Etcd => &mut procs.etcd,
            Component::Apiserver => &mut procs.apiserver,
        };
        slot.take()
            .ok_or_else(|| self.state_err(format!("{} is not running", component.name())))
    }

    fn spawn(&self, component: Component) -> Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, program, args) = match component {
            Component::Etcd => (&mut procs.etcd, &self.bins.etcd, self.etcd_args()),
            Component::Apiserver => (
                &mut procs.apiserver,
                &self.bins.kube_apiserver,
                self.apiserver_args(),
            ),
        };
        if let Some(running) = slot.as_mut()
            && running.check_running().is_ok()
        {
            return Err(self.state_err(format!("{} is already running", component.name())));
        }
        let log = self.dir.join(format!("{}.log", component.name()));
        *slot = Some(Proc::spawn(
            &self.spec.name,
            component.name(),
            program,
            &args,
            &log,
            &self.dir,
        )?);
        Ok(())
    }

    fn spawn_controllers(&self) -> Result<()> {
        let kcm = Proc::spawn(
            &self.spec.name,
            "kube-controller-manager",
            &self.bins.kube_controller_manager,
            &self.controller_manager_args(),
            &self.dir.join("kube-controller-manager.log"),
            &self.dir,
        )?;
        let kwok = Proc::spawn(
            &self.spec.name,
            "kwok",
            &self.bins.kwok,
            &self.kwok_args(),
            &self.dir.join("kwok.log"),
            &self.dir,
        )?;
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs.controller_manager = Some(kcm);
        procs.kwok = Some(kwok);
        Ok(())
    }

    async fn restart_controllers(&self) -> Result<()> {
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
    fn check_processes(&self) -> Result<()> {
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

    fn apiserver_args(&self) -> Vec<String> {
        let p = &self.pki;
        let shutdown_delay = self.spec.shutdown_delay.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            format!("--shutdown-delay-duration={secs}s")
        });
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
        args.into_iter().chain(shutdown_delay).collect()
    }

    fn controller_manager_args(&self) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", self.admin_kubeconfig.display()),
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
            format!("--kubeconfig={}", self.admin_kubeconfig.display()),
            // An explicit, empty config keeps a ~/.kwok/kwok.yaml of the machine out.
            format!("--config={}", self.dir.join("kwok.yaml").display()),
            "--manage-all-nodes=true".into(),
            "--node-ip=127.0.0.1".into(),
        ]
    }

    async fn create_objects(&self) -> Result<()> {
        let ns = &self.spec.namespace;
        let pp = PostParams::default();
        Api::<Namespace>::all(self.client.clone())
            .create(&pp, &objects::namespace(ns))
            .await
            .map_err(|e| self.kube_err(format!("creating namespace {ns}"), e))?;
        let roles: Api<Role> = Api::namespaced(self.client.clone(), ns);
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), ns);
        for mut role in objects::daemon_roles()? {
            role.metadata.namespace = Some(ns.clone());
            let name = role.metadata.name.clone().unwrap_or_default();
            roles
                .create(&pp, &role)
                .await
                .map_err(|e| self.kube_err(format!("creating role {name}"), e))?;
            bindings
                .create(&pp, &objects::daemon_binding(&name))
                .await
                .map_err(|e| self.kube_err(format!("creating rolebinding {name}"), e))?;
        }
        Api::<Node>::all(self.client.clone())
            .create(&pp, &objects::node())
            .await
            .map_err(|e| self.kube_err(format!("creating node {NODE_NAME}"), e))?;
        for component in AGENT_COMPONENTS {
            let d = objects::agent_deployment(&self.spec.release, component, self.spec.replicas);
            self.deployments()
                .create(&pp, &d)
                .await
                .map_err(|e| self.kube_err(format!("creating deployment for {component}"), e))?;
        }
        Ok(())
    }

    async fn wait_apiserver_ready(&self, timeout: Duration) -> Result<()> {
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

    async fn wait_etcd_healthy(&self, timeout: Duration) -> Result<()> {
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

    fn log_tail(&self, component: Component) -> String {
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

    fn kube_err(&self, action: String, e: kube::Error) -> TestbedError {
        TestbedError::kube(&self.spec.name, action, e)
    }

    fn state_err(&self, message: String) -> TestbedError {
        TestbedError::State {
            cluster: self.spec.name.clone(),
            message,
        }
    }

    fn timeout(&self, what: String, after: Duration, detail: String) -> TestbedError {
        TestbedError::Timeout {
            cluster: self.spec.name.clone(),
            what,
            after,
            detail: if detail.is_empty() {
                detail
            } else {
                format!("\n{detail}")
            },
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let procs = std::mem::take(self.procs.get_mut().unwrap_or_else(|p| p.into_inner()));
        let panicking = std::thread::panicking();
        if panicking {
            // The test failed: show what the control plane said, since the directory goes.
            for name in ["kube-apiserver", "kube-controller-manager", "kwok", "etcd"] {
                let tail = process::log_tail(&self.dir.join(format!("{name}.log")), 15);
                eprintln!(
                    "--- cluster {}: last lines of {name}.log ---\n{tail}",
                    self.spec.name
                );
            }
        }
        // Clients first, store last, as a real shutdown would.
        drop(procs.kwok);
        drop(procs.controller_manager);
        drop(procs.apiserver);
        drop(procs.etcd);
        if self.keep_dir {
            eprintln!("cluster {}: kept {}", self.spec.name, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A primary (agent at 1 replica) and a standby (agent at 0), started side by side.
#[derive(Debug)]
pub struct ClusterPair {
    pub primary: Cluster,
    pub standby: Cluster,
}

impl ClusterPair {
    /// Starts clusters `primary` and `standby` concurrently.
    pub async fn start() -> Result<ClusterPair> {
        ClusterPair::start_with(
            ClusterSpec::new("primary").replicas(1),
            ClusterSpec::new("standby").replicas(0),
        )
        .await
    }

    pub async fn start_with(primary: ClusterSpec, standby: ClusterSpec) -> Result<ClusterPair> {
        let (primary, standby) =
            tokio::try_join!(Cluster::start_with(primary), Cluster::start_with(standby))?;
        Ok(ClusterPair { primary, standby })
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(TestbedError::State {
            cluster: name.to_string(),
            message: "a cluster name takes 1-40 lower-case letters, digits and '-'".into(),
        })
    }
}

fn is_port_clash(e: &TestbedError) -> bool {
    match e {
        TestbedError::Exited { log_tail, .. } => log_tail.contains("address already in use"),
        TestbedError::Timeout { detail, .. } => detail.contains("address already in use"),
        _ => false,
    }
}

fn deployment_settled(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    st.observed_generation.unwrap_or(-1) >= d.metadata.generation.unwrap_or(0)
        && st.replicas.unwrap_or(0) == want
        && st.updated_replicas.unwrap_or(0) == want
        && st.ready_replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
}

fn write_kubeconfig(
    spec: &ClusterSpec,
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    cert: &CertFiles,
) -> Result<()> {
    let name = &spec.name;
    let config = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.clone(),
            cluster: Some(kube::config::Cluster {
                server: Some(server.to_string()),
                certificate_authority: Some(ca.display().to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.to_string(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(cert.cert.display().to_string()),
                client_key: Some(cert.key.display().to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: name.clone(),
            context: Some(Context {
                cluster: name.clone(),
                user: Some(user.to_string()),
                namespace: Some(spec.namespace.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(name.clone()),
        ..Default::default()
    };
    let text = serde_saphyr::to_string(&config).map_err(|e| TestbedError::Manifest {
        path: path.to_path_buf(),
        message: format!("cannot serialize kubeconfig: {e}"),
    })?;
    std::fs::write(path, text).map_err(|e| TestbedError::io("writing", path, e))
}

async fn client_from(cluster: &str, kubeconfig: &Path) -> Result<Client> {
    let kc_err = |source| TestbedError::Kubeconfig {
        cluster: cluster.to_string(),
        path: kubeconfig.to_path_buf(),
        source,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(kc_err)?;
    let options = KubeConfigOptions {
        context: Some(cluster.to_string()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(kc_err)?;
    Client::try_from(config).map_err(|e| TestbedError::kube(cluster, "building a client", e))
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

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}

    /// Tests share clusters across tasks of multi-threaded runtimes.
    #[test]
    fn clusters_and_their_futures_can_cross_threads() {
        send_sync::<Cluster>();
        send_sync::<ClusterPair>();
        send_sync::<crate::FaultProxy>();
        send_sync::<crate::HttpFaultProxy>();
        // Checked at compile time; never run.
        #[allow(dead_code, clippy::let_underscore_future)]
        fn futures(c: &Cluster) {
            send(&Cluster::start("x"));
            send(&ClusterPair::start());
            send(&c.stop_apiserver());
            send(&c.kill_apiserver());
            send(&c.start_apiserver());
            send(&c.stop_etcd());
            send(&c.start_etcd());
            send(&c.set_pods_ready("x", false));
            send(&c.wait_deployment_ready("x", Duration::ZERO));
            send(&c.delete_namespace());
            send(&c.scale("x", 1));
            send(&crate::HttpFaultProxy::start(c));
            send(&c.rename_deployment("x", "y"));
            send(&c.set_deployment_label("x", "k", None));
            send(&c.delete_daemon_role_bindings());
            send(&c.restore_daemon_role_bindings());
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("primary").is_ok());
        assert!(validate_name("e2e-1").is_ok());
        for bad in ["", "Primary", "-a", "a_b", "a b", &"x".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
