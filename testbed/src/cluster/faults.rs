//! Changes a chart upgrade or a person makes to a running cluster's objects, behind the
//! daemon's back, as faults: a Deployment scaled; its Pods made unready or available
//! only seconds after they are Ready; a Deployment
//! relabelled so a label selector no longer finds it (its Pods keep running), renamed (a
//! copy under the new name, the old one gone with its ReplicaSets and Pods), deleted,
//! annotated; the daemon's RoleBindings deleted and re-created (the API server then
//! answers the daemon's identity 403, then 200 again); a ConfigMap deleted; the agent
//! namespace deleted.

use super::Cluster;
use super::start::START_TIMEOUT;
use crate::error::{Result, TestbedError};
use crate::objects;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long RBAC changes may take to reach the API server's authorizer.
const RBAC_TIMEOUT: Duration = Duration::from_secs(15);

/// The annotation the deployment controller keeps; a copy must not inherit it.
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

impl Cluster {
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

    /// Sets Deployment `name`'s `minReadySeconds`: its new Pods count as available only
    /// `seconds` after they turn Ready, so the Deployment is available that much later,
    /// as an agent that pulls its image and warms up is (kwok makes Pods Ready at once).
    /// Pods that are Ready already stay available.
    pub async fn set_min_ready_seconds(&self, name: &str, seconds: i32) -> Result<()> {
        self.deployments()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "minReadySeconds": seconds } })),
            )
            .await
            .map_err(|e| {
                self.kube_err(
                    format!("setting minReadySeconds of deployment {name} to {seconds}"),
                    e,
                )
            })?;
        Ok(())
    }

    /// Sets the Ready and ContainersReady conditions (and each container's `ready`) of
    /// every current Pod of Deployment `name`, through the status subresource as a
    /// kubelet would. kwok leaves them alone afterwards: its Pod stages match only Pods
    /// that have not started yet. Pods created later start Ready. Returns how many Pods
    /// were changed.
    pub async fn set_pods_ready(&self, name: &str, ready: bool) -> Result<usize> {
        let (pods, list) = self.pods_of(name).await?;
        let status = if ready { "True" } else { "False" };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut changed = 0;
        for pod in list {
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

    /// Sets label `key` of Deployment `name` to `value` (`None` removes it), on the
    /// Deployment's own metadata only: its selector and Pod template stay as they are, so
    /// its Pods keep running while a label selector for the old value no longer finds the
    /// Deployment. Returns the previous value, to restore it with a second call.
    pub async fn set_deployment_label(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<String>> {
        self.set_deployment_metadata(name, MetadataMap::Labels, key, value)
            .await
    }

    /// Sets annotation `key` of Deployment `name` to `value` (`None` removes it). Returns
    /// the previous value.
    pub async fn set_deployment_annotation(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<String>> {
        self.set_deployment_metadata(name, MetadataMap::Annotations, key, value)
            .await
    }

    /// Sets `key` in the labels or annotations of Deployment `name` to `value` (`None`
    /// removes it) with a merge patch; returns the previous value.
    async fn set_deployment_metadata(
        &self,
        name: &str,
        map: MetadataMap,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<String>> {
        let before = self.deployment(name).await?;
        let previous = map.of(before.metadata).and_then(|mut m| m.remove(key));
        let field = map.field();
        self.deployments()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { field: { key: value } } })),
            )
            .await
            .map_err(|e| {
                let noun = map.noun();
                self.kube_err(format!("setting {noun} {key} of deployment {name}"), e)
            })?;
        Ok(previous)
    }

    /// Renames Deployment `from` to `to` as a chart upgrade that changes the name does:
    /// creates `to` with the same labels, annotations and spec (replicas included), then
    /// deletes `from` with its ReplicaSets and Pods ([`Cluster::delete_deployment`]). For
    /// a moment both run. Does not wait for `to` to be Ready
    /// ([`Cluster::wait_deployment_ready`] does). Renaming back restores the name (with a
    /// new uid).
    pub async fn rename_deployment(&self, from: &str, to: &str) -> Result<()> {
        let old = self.deployment(from).await?;
        let mut annotations = old.metadata.annotations.unwrap_or_default();
        annotations.remove(REVISION_ANNOTATION);
        let copy = Deployment {
            metadata: ObjectMeta {
                name: Some(to.to_string()),
                labels: old.metadata.labels,
                annotations: Some(annotations).filter(|a: &BTreeMap<_, _>| !a.is_empty()),
                ..ObjectMeta::default()
            },
            spec: old.spec,
            status: None,
        };
        self.deployments()
            .create(&PostParams::default(), &copy)
            .await
            .map_err(|e| self.kube_err(format!("creating deployment {to} (renaming {from})"), e))?;
        self.delete_deployment(from).await
    }

    /// Deletes Deployment `name`, then its ReplicaSets and their Pods, as the garbage
    /// collector would (the test bed runs none): the Pods are gone when this returns.
    pub async fn delete_deployment(&self, name: &str) -> Result<()> {
        let d = self.deployment(name).await?;
        let uid = d.metadata.uid.unwrap_or_default();
        self.deployments()
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|e| self.kube_err(format!("deleting deployment {name}"), e))?;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client(), self.namespace());
        let owned: Vec<ReplicaSet> = replica_sets
            .list(&ListParams::default())
            .await
            .map_err(|e| self.kube_err(format!("listing replicasets of {name}"), e))?
            .items
            .into_iter()
            .filter(|rs| owned_by(&rs.metadata, &uid))
            .collect();
        let pods: Api<Pod> = Api::namespaced(self.client(), self.namespace());
        for rs in owned {
            let rs_name = rs.metadata.name.unwrap_or_default();
            let rs_uid = rs.metadata.uid.unwrap_or_default();
            ignore_missing(replica_sets.delete(&rs_name, &now).await)
                .map_err(|e| self.kube_err(format!("deleting replicaset {rs_name}"), e))?;
            let list = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| self.kube_err(format!("listing pods of {rs_name}"), e))?;
            for pod in list.items.iter().filter(|p| owned_by(&p.metadata, &rs_uid)) {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                ignore_missing(pods.delete(&pod_name, &now).await)
                    .map_err(|e| self.kube_err(format!("deleting pod {pod_name}"), e))?;
            }
        }
        Ok(())
    }

    /// Deletes the RoleBindings that give the daemon's user its Role(s), and waits until
    /// the API server answers the daemon's identity 403 (listing Deployments in the agent
    /// namespace). Returns how long the 403 took to appear.
    pub async fn delete_daemon_role_bindings(&self) -> Result<Duration> {
        let bindings: Api<RoleBinding> = Api::namespaced(self.client(), self.namespace());
        for role in objects::daemon_roles()? {
            let name = role.metadata.name.unwrap_or_default();
            ignore_missing(bindings.delete(&name, &DeleteParams::default()).await)
                .map_err(|e| self.kube_err(format!("deleting rolebinding {name}"), e))?;
        }
        self.wait_daemon_access(false).await
    }

    /// Re-creates the daemon's RoleBindings (those it had at start; existing ones are left
    /// alone) and waits until the daemon's identity can list Deployments again. Returns
    /// how long that took.
    pub async fn restore_daemon_role_bindings(&self) -> Result<Duration> {
        let bindings: Api<RoleBinding> = Api::namespaced(self.client(), self.namespace());
        for role in objects::daemon_roles()? {
            let name = role.metadata.name.unwrap_or_default();
            match bindings
                .create(&PostParams::default(), &objects::daemon_binding(&name))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(self.kube_err(format!("creating rolebinding {name}"), e));
                }
            }
        }
        self.wait_daemon_access(true).await
    }

    /// Whether the daemon's identity may list Deployments in the agent namespace: `true`
    /// on 200, `false` on 403; other answers are errors.
    pub async fn daemon_can_list_deployments(&self) -> Result<bool> {
        let api: Api<Deployment> = Api::namespaced(self.daemon_client().await?, self.namespace());
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
            Err(e) => Err(self.kube_err("listing deployments as the daemon".into(), e)),
        }
    }

    async fn wait_daemon_access(&self, allowed: bool) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let last = match self.daemon_can_list_deployments().await {
                Ok(now) if now == allowed => return Ok(start.elapsed()),
                Ok(now) => format!("daemon may list deployments: {now}"),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > RBAC_TIMEOUT {
                let want = if allowed { "200" } else { "403" };
                return Err(TestbedError::Timeout {
                    cluster: self.name().to_string(),
                    what: format!("{want} for the daemon's identity listing deployments"),
                    after: RBAC_TIMEOUT,
                    detail: format!("\nlast: {last}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes ConfigMap `name` in the agent namespace (the failover record, say).
    /// Returns whether it existed.
    pub async fn delete_configmap(&self, name: &str) -> Result<bool> {
        let api: Api<ConfigMap> = Api::namespaced(self.client(), self.namespace());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.kube_err(format!("deleting configmap {name}"), e)),
        }
    }
}

/// Which string map of an object's metadata a change is about.
#[derive(Debug, Clone, Copy)]
enum MetadataMap {
    Labels,
    Annotations,
}

impl MetadataMap {
    /// The field's name in `metadata`.
    fn field(self) -> &'static str {
        match self {
            MetadataMap::Labels => "labels",
            MetadataMap::Annotations => "annotations",
        }
    }

    /// One entry of the map, in error messages.
    fn noun(self) -> &'static str {
        match self {
            MetadataMap::Labels => "label",
            MetadataMap::Annotations => "annotation",
        }
    }

    fn of(self, meta: ObjectMeta) -> Option<BTreeMap<String, String>> {
        match self {
            MetadataMap::Labels => meta.labels,
            MetadataMap::Annotations => meta.annotations,
        }
    }
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn ignore_missing<T>(
    r: std::result::Result<T, kube::Error>,
) -> std::result::Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
