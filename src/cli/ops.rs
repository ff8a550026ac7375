//! What the operator's commands (`pause`, `resume`, `promote`, `failback`, `fence`,
//! `history`) share: the flags naming the group and the credentials, the clusters'
//! handles built with the operator's own kubeconfig as the daemon builds its own (never
//! the daemon's admin port), the daemon's probes over their caches, the operator's name
//! for the record and Events, and record writes that retry a lost race.

use super::Failure;
use super::check_config::ConfigFile;
use kube_failover::actuate::Actuator;
use kube_failover::config::{ClusterConfig, GroupConfig, WatchScope};
use kube_failover::kube::client::{self, ClientOptions};
use kube_failover::kube::cluster::{ClusterHandle, Clusters};
use kube_failover::model::{FailoverRecord, Observation, Side, StandbyObservation};
use kube_failover::probe::cached::{self, NotEstablished};
use kube_failover::{probe, record};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bound on each Kubernetes call of a command.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting command looks again.
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// How often, at most, a cluster's `/readyz` is asked while a command probes (a waiting
/// command probes about once a second): each look gets an answer at most this old.
const READYZ_INTERVAL: Duration = Duration::from_secs(1);
/// How many times a record write is retried after losing a race.
const WRITE_ATTEMPTS: usize = 5;

/// The flags every operator command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    #[command(flatten)]
    pub(crate) config: ConfigFile,
    /// The group (`groups[].name`).
    #[arg(long)]
    pub(crate) group: String,
    /// Kubeconfig for both clusters, instead of the configuration's.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Context of the primary cluster, instead of the configuration's.
    #[arg(long)]
    pub(crate) primary_context: Option<String>,
    /// Context of the standby cluster, instead of the configuration's.
    #[arg(long)]
    pub(crate) standby_context: Option<String>,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// A safety check refused the command.
#[derive(Debug, thiserror::Error)]
#[error("refused by check {check}: {detail}")]
pub(crate) struct Refused {
    pub(crate) check: &'static str,
    pub(crate) detail: String,
}

/// Refuses with `check` named.
pub(crate) fn refuse(check: &'static str, detail: impl Into<String>) -> Failure {
    Failure::refused(Refused {
        check,
        detail: detail.into(),
    })
}

/// A command's run-time failure, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("group {group}: {what}")]
pub(crate) struct OpError {
    pub(crate) group: String,
    pub(crate) what: String,
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The group, its clusters and the operator acting.
pub(crate) struct Session {
    pub(crate) group: GroupConfig,
    /// The standby cluster's client (its handle's), where the record is.
    pub(crate) standby: kube::Client,
    /// The clusters as the daemon holds them: a client, `/readyz` and the watch caches
    /// its probes read, started at the first probe.
    primary_cluster: Arc<ClusterHandle>,
    standby_cluster: Arc<ClusterHandle>,
    /// What was last said about each side's caches (primary, standby), so that a
    /// waiting command does not repeat it at every look.
    said: Mutex<[Option<String>; 2]>,
    /// The kubeconfig user of the standby context (where the record is written).
    pub(crate) operator: String,
    pub(crate) dry_run: bool,
    pub(crate) actuator: Actuator,
    http: reqwest::Client,
}

impl Target {
    /// Runs `body` on a fresh runtime with the group's session.
    pub(crate) fn run<F, Fut>(&self, body: F) -> Result<(), Failure>
    where
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let config = self.config.load()?;
        let Some(group) = config.groups.iter().find(|g| g.name == self.group) else {
            let known: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(Failure::invalid(format!(
                "no group {:?} in {} (groups: {})",
                self.group,
                self.config.path().display(),
                known.join(", ")
            )));
        };
        let mut group = group.clone();
        override_cluster(&mut group.primary, &self.kubeconfig, &self.primary_context);
        override_cluster(&mut group.standby, &self.kubeconfig, &self.standby_context);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Failure::runtime)?;
        runtime.block_on(async move {
            let options = ClientOptions::for_call_timeout(CALL_TIMEOUT)
                .with_user_agent(kube_failover::user_agent::cli());
            // The daemon's handles (src/kube/cluster.rs), for one group: its namespaces
            // are watched by themselves whatever `daemon.watch_scope` says, so the
            // operator needs no grant across the cluster.
            let mut clusters = Clusters::new(
                options,
                READYZ_INTERVAL,
                CALL_TIMEOUT,
                None,
                WatchScope::Namespaces,
            );
            let primary_cluster = clusters
                .get(&group.primary, Side::Primary)
                .await
                .map_err(Failure::invalid)?;
            let standby_cluster = clusters
                .get(&group.standby, Side::Standby)
                .await
                .map_err(Failure::invalid)?;
            let standby = standby_cluster.client().clone();
            let operator = operator_name(&group.standby);
            let actuator = Actuator::new(
                &group,
                primary_cluster.client().clone(),
                standby.clone(),
                format!("operator:{operator}"),
            )
            .with_call_timeout(CALL_TIMEOUT);
            let http = probe::http::client(CALL_TIMEOUT, kube_failover::user_agent::cli())
                .map_err(Failure::runtime)?;
            body(Session {
                group,
                standby,
                primary_cluster,
                standby_cluster,
                said: Mutex::new([None, None]),
                operator,
                dry_run: self.dry_run,
                actuator,
                http,
            })
            .await
        })
    }
}

fn override_cluster(
    cluster: &mut ClusterConfig,
    kubeconfig: &Option<PathBuf>,
    context: &Option<String>,
) {
    if let Some(k) = kubeconfig {
        cluster.kubeconfig = Some(k.clone());
    }
    if let Some(c) = context {
        cluster.context = Some(c.clone());
    }
}

/// `cluster` as a message names it: its side, kubeconfig and context (or in-cluster
/// credentials), and namespace.
fn cluster_name(side: Side, cluster: &ClusterConfig) -> String {
    match client::resolve_kubeconfig(cluster) {
        Ok(Some(resolved)) => format!(
            "{side} cluster (kubeconfig {}, context {:?}, namespace {})",
            resolved.source, resolved.context, cluster.namespace
        ),
        Ok(None) => format!(
            "{side} cluster (in-cluster credentials, namespace {})",
            cluster.namespace
        ),
        Err(_) => format!("{side} cluster (namespace {})", cluster.namespace),
    }
}

/// The kubeconfig user name of `cluster`'s context (what `kubectl --as` would show):
/// it names the operator in the record and in Events. Never a credential.
fn operator_name(cluster: &ClusterConfig) -> String {
    match client::resolve_kubeconfig(cluster) {
        Ok(Some(resolved)) => resolved
            .kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == resolved.context)
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone())
            .unwrap_or_else(|| resolved.context.clone()),
        _ => std::env::var("USER").unwrap_or_else(|_| "in-cluster".to_string()),
    }
}

impl Session {
    pub(crate) fn fail(
        &self,
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Failure {
        Failure::runtime(OpError {
            group: self.group.name.clone(),
            what: what.into(),
            source: Some(source.into()),
        })
    }

    /// Who acts, as written into the record's `holder` and history.
    pub(crate) fn holder(&self) -> String {
        format!("operator:{}", self.operator)
    }

    /// Reads the record (the default record when it does not exist yet).
    pub(crate) async fn read_record(&self) -> Result<FailoverRecord, Failure> {
        let ns = &self.group.standby.namespace;
        let name = self.group.record_name();
        match tokio::time::timeout(CALL_TIMEOUT, record::read(&self.standby, ns, &name)).await {
            Ok(Ok(r)) => Ok(r.unwrap_or_default()),
            Ok(Err(e)) => Err(self.fail("cannot read the failover record", e)),
            Err(_) => Err(self.fail(
                "cannot read the failover record",
                format!("ConfigMap {ns}/{name}: no answer within {CALL_TIMEOUT:?}"),
            )),
        }
    }

    /// A missing record is written as the default one (phase `primary`, epoch 0) only
    /// when no promotion is in force: when the standby's Deployments want replicas under
    /// a promotion's epoch annotation, the record was lost (deleted) and the daemons
    /// write it back from their last copy. A record created now would say `primary` at
    /// epoch 0 over it.
    async fn refuse_if_promoted_without_record(&self) -> Result<(), Failure> {
        let ns = &self.group.standby.namespace;
        let name = self.group.record_name();
        let standby = self.observe_standby().await;
        if standby.deployments.is_none() {
            let why = if standby.api.passed() {
                &standby.workloads
            } else {
                &standby.api
            };
            return Err(self.fail(
                "cannot tell whether a promotion is in force",
                format!(
                    "the failover record {ns}/{name} is missing and the standby's Deployments \
                     could not be read ({}: {}); the record is not written blind",
                    why.reason.as_str(),
                    why.detail
                ),
            ));
        }
        match standby.active_epoch() {
            Some(epoch) => Err(refuse(
                "record_missing",
                format!(
                    "the failover record {ns}/{name} is missing while the standby's \
                     Deployments want replicas under promotion epoch {epoch}: it was lost, \
                     not failed back; a running daemon writes it back from its last copy \
                     within a tick (record_lost). Run the command again once \
                     `kubectl -n {ns} get configmap {name}` finds it"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Reads the record, lets `change` decide what to write (`Ok(None)`: nothing), and
    /// writes it on condition of the resourceVersion read; a lost race reads again and
    /// decides again. Returns the record as stored (or as read, when nothing changed).
    pub(crate) async fn modify(
        &self,
        mut change: impl FnMut(&FailoverRecord) -> Result<Option<FailoverRecord>, Failure>,
    ) -> Result<FailoverRecord, Failure> {
        let ns = &self.group.standby.namespace;
        let name = self.group.record_name();
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.read_record().await?;
            if !current.exists() {
                self.refuse_if_promoted_without_record().await?;
            }
            let Some(mut next) = change(&current)? else {
                return Ok(current);
            };
            next.holder = self.holder();
            if self.dry_run {
                return Ok(next);
            }
            let write = record::write(
                &self.standby,
                ns,
                &name,
                &self.group.name,
                &next,
                current.resource_version.as_deref(),
            );
            match tokio::time::timeout(CALL_TIMEOUT, write).await {
                Ok(Ok(stored)) => return Ok(stored),
                Ok(Err(e)) if e.is_conflict() => continue,
                Ok(Err(e)) => return Err(self.fail("cannot write the failover record", e)),
                Err(_) => {
                    return Err(self.fail(
                        "cannot write the failover record",
                        format!("ConfigMap {ns}/{name}: no answer within {CALL_TIMEOUT:?}"),
                    ));
                }
            }
        }
        Err(refuse(
            "record_changed",
            format!(
                "the failover record {ns}/{name} kept changing while it was written \
                 ({WRITE_ATTEMPTS} attempts); run the command again"
            ),
        ))
    }

    /// One observation of both clusters, by the daemon's probes over the clusters'
    /// caches, once these are established (waited for up to [`CALL_TIMEOUT`]). A
    /// cluster whose caches are not is named on stderr; its signals are unknown, never
    /// down, and each command judges them as it judges any it cannot read.
    pub(crate) async fn observe(&self, recorded: &[String]) -> Observation {
        let (primary, standby) = tokio::join!(
            async {
                let caches =
                    cached::primary_caches(&self.primary_cluster, &self.group, CALL_TIMEOUT).await;
                self.say_caches(Side::Primary, caches);
                cached::probe_primary(
                    &self.primary_cluster,
                    &self.group,
                    &self.http,
                    CALL_TIMEOUT,
                    recorded,
                )
                .await
            },
            self.observe_standby(),
        );
        Observation {
            wall_unix: now_unix() as f64,
            primary,
            standby,
            observers: Vec::new(),
        }
    }

    /// The standby's half of [`Session::observe`].
    async fn observe_standby(&self) -> StandbyObservation {
        let caches = cached::standby_caches(&self.standby_cluster, &self.group, CALL_TIMEOUT).await;
        self.say_caches(Side::Standby, caches);
        cached::probe_standby(&self.standby_cluster, &self.group, CALL_TIMEOUT).await
    }

    /// Names the cluster on `side` on stderr when its caches are not established (once
    /// per change, and once more when they are again).
    fn say_caches(&self, side: Side, caches: Result<(), NotEstablished>) {
        let cluster = match side {
            Side::Primary => &self.group.primary,
            Side::Standby => &self.group.standby,
        };
        let line = caches.err().map(|e| {
            format!(
                "warning: group {}: the caches of the {} are not established ({}: {}); its \
                 signals are unknown",
                self.group.name,
                cluster_name(side, cluster),
                e.reason.as_str(),
                e.detail
            )
        });
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        let last = &mut said[usize::from(side == Side::Standby)];
        if *last == line {
            return;
        }
        match &line {
            Some(line) => eprintln!("{line}"),
            None => eprintln!(
                "group {}: the caches of the {} are established",
                self.group.name,
                cluster_name(side, cluster)
            ),
        }
        *last = line;
    }

    /// An Event on the record naming the operator, the command and the reason.
    pub(crate) async fn event(&self, reason: &'static str, message: String) {
        if self.dry_run {
            return;
        }
        let message = format!(
            "group {}: {message} (by operator {})",
            self.group.name, self.operator
        );
        self.actuator.record_event(reason, message).await;
    }

    /// A progress line on stderr, prefixed `[dry run]` when nothing is changed.
    pub(crate) fn say(&self, line: impl std::fmt::Display) {
        if self.dry_run {
            eprintln!("[dry run] would: {line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message names the cluster as the configuration does: side, kubeconfig,
    /// context and namespace, never anything the kubeconfig holds.
    #[test]
    fn a_cluster_is_named_by_its_kubeconfig_context_and_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: standby\n  context:\n    cluster: a\n    user: u\n\
             users:\n- name: u\n  user:\n    token: secret-token\n",
        )
        .unwrap();
        let cluster = ClusterConfig {
            kubeconfig: Some(path.clone()),
            context: Some("standby".into()),
            namespace: "agents".into(),
        };
        let name = cluster_name(Side::Standby, &cluster);
        assert_eq!(
            name,
            format!(
                "standby cluster (kubeconfig {}, context \"standby\", namespace agents)",
                path.display()
            )
        );
        assert!(!name.contains("secret-token"));
    }
}
