//! Terraform state around the agent, as the daemon's state checks see it: the state
//! PersistentVolumeClaim (no storage provisioner and no volume binder run here, so the
//! claim's phase is set through its status subresource, as the binder would: a
//! PersistentVolume bound to it for `Bound`, nothing for `Pending`); a
//! CustomResourceDefinition with VolSync's group, version, kind and status field
//! (`volsync.backube/v1alpha1` `ReplicationDestination`, `.status.lastSyncTime`) and
//! objects of it whose status the test sets (no operator runs); RBAC for the daemon to
//! read that kind, as a user adds it; and a container image changed on one side, as a
//! `helm upgrade` on one cluster only does.

use super::Cluster;
use crate::error::Result;
use crate::objects;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;
use std::time::{Duration, Instant};

/// VolSync's group.
pub const VOLSYNC_GROUP: &str = "volsync.backube";
/// VolSync's version of `ReplicationDestination`.
pub const VOLSYNC_VERSION: &str = "v1alpha1";
/// The kind whose `.status.lastSyncTime` says when the state volume was last synced.
pub const REPLICATION_DESTINATION: &str = "ReplicationDestination";

/// How long a new CustomResourceDefinition may take to be served.
const CRD_TIMEOUT: Duration = Duration::from_secs(20);

fn replication_destination() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(VOLSYNC_GROUP, VOLSYNC_VERSION, REPLICATION_DESTINATION),
        "replicationdestinations",
    )
}

impl Cluster {
    /// Installs a CustomResourceDefinition shaped like VolSync's `ReplicationDestination`
    /// (namespaced, `v1alpha1`, status subresource, `.status.lastSyncTime` a date-time)
    /// and waits until the API server serves it.
    pub async fn install_volsync_crd(&self) -> Result<()> {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": { "name": format!("replicationdestinations.{VOLSYNC_GROUP}") },
            "spec": {
                "group": VOLSYNC_GROUP,
                "names": {
                    "kind": REPLICATION_DESTINATION,
                    "listKind": "ReplicationDestinationList",
                    "plural": "replicationdestinations",
                    "singular": "replicationdestination",
                },
                "scope": "Namespaced",
                "versions": [{
                    "name": VOLSYNC_VERSION,
                    "served": true,
                    "storage": true,
                    "subresources": { "status": {} },
                    "schema": { "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": true,
                                "properties": {
                                    "lastSyncTime": { "type": "string", "format": "date-time" },
                                },
                            },
                        },
                    }},
                }],
            },
        }))
        .expect("static CustomResourceDefinition manifest");
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &crd)
            .await
            .map_err(|e| self.kube_err("creating the ReplicationDestination CRD".into(), e))?;
        // Served once a list of the kind answers.
        let objects: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.spec.namespace,
            &replication_destination(),
        );
        let start = Instant::now();
        loop {
            match objects.list(&Default::default()).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > CRD_TIMEOUT => {
                    return Err(self.timeout(
                        "the ReplicationDestination CRD to be served".into(),
                        CRD_TIMEOUT,
                        e.to_string(),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Creates the `ReplicationDestination` `name` in the agent namespace if it does not
    /// exist, then sets its `.status.lastSyncTime` (RFC 3339; `None` removes it) through
    /// the status subresource, as VolSync would.
    pub async fn set_replication_destination(
        &self,
        name: &str,
        last_sync: Option<&str>,
    ) -> Result<()> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.spec.namespace,
            &replication_destination(),
        );
        let exists = api
            .get_opt(name)
            .await
            .map_err(|e| self.kube_err(format!("reading ReplicationDestination {name}"), e))?
            .is_some();
        if !exists {
            let mut obj = DynamicObject::new(name, &replication_destination());
            obj.data = json!({ "spec": { "trigger": { "manual": "testbed" } } });
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(|e| self.kube_err(format!("creating ReplicationDestination {name}"), e))?;
        }
        let patch = json!({ "status": { "lastSyncTime": last_sync } });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                self.kube_err(
                    format!("setting the status of ReplicationDestination {name}"),
                    e,
                )
            })?;
        Ok(())
    }

    /// Lets the daemon's user get, list and watch `resource` of `group` in the agent
    /// namespace: the rule a user adds for the kind of a freshness check.
    pub async fn allow_daemon_to_read(&self, group: &str, resource: &str) -> Result<()> {
        let name = format!("kube-failover-read-{resource}");
        let role: Role = serde_json::from_value(json!({
            "metadata": { "name": name },
            "rules": [{ "apiGroups": [group], "resources": [resource], "verbs": ["get", "list", "watch"] }],
        }))
        .expect("static Role manifest");
        let ns = &self.spec.namespace;
        let roles: Api<Role> = Api::namespaced(self.client.clone(), ns);
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), ns);
        roles
            .create(&PostParams::default(), &role)
            .await
            .map_err(|e| self.kube_err(format!("creating role {name}"), e))?;
        bindings
            .create(&PostParams::default(), &objects::daemon_binding(&name))
            .await
            .map_err(|e| self.kube_err(format!("creating rolebinding {name}"), e))?;
        Ok(())
    }

    /// Creates the PersistentVolumeClaim `claim` (1Gi, ReadWriteOnce) in the agent
    /// namespace, `Pending` as a claim nobody provisions stays.
    pub async fn create_state_volume_claim(&self, claim: &str) -> Result<()> {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": { "name": claim },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "resources": { "requests": { "storage": "1Gi" } },
            },
        }))
        .expect("static PersistentVolumeClaim manifest");
        self.claims()
            .create(&PostParams::default(), &pvc)
            .await
            .map_err(|e| self.kube_err(format!("creating persistentvolumeclaim {claim}"), e))?;
        self.set_claim_phase(claim, "Pending").await
    }

    /// Binds the claim `claim` as the volume binder would: a PersistentVolume (hostPath,
    /// never mounted) claimed by it, the claim's `volumeName` set, and both `Bound`.
    pub async fn bind_state_volume_claim(&self, claim: &str) -> Result<()> {
        let pv_name = format!("{}-{claim}", self.spec.namespace);
        let uid = self
            .claims()
            .get(claim)
            .await
            .map_err(|e| self.kube_err(format!("reading persistentvolumeclaim {claim}"), e))?
            .metadata
            .uid;
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": { "name": pv_name },
            "spec": {
                "capacity": { "storage": "1Gi" },
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": { "path": "/srv/env0-state" },
                "claimRef": { "namespace": self.spec.namespace, "name": claim, "uid": uid },
            },
        }))
        .expect("static PersistentVolume manifest");
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        pvs.create(&PostParams::default(), &pv)
            .await
            .map_err(|e| self.kube_err(format!("creating persistentvolume {pv_name}"), e))?;
        pvs.patch_status(
            &pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Bound" } })),
        )
        .await
        .map_err(|e| self.kube_err(format!("binding persistentvolume {pv_name}"), e))?;
        self.claims()
            .patch(
                claim,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "volumeName": pv_name } })),
            )
            .await
            .map_err(|e| self.kube_err(format!("naming the volume of claim {claim}"), e))?;
        self.set_claim_phase(claim, "Bound").await
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.spec.namespace)
    }

    async fn set_claim_phase(&self, claim: &str, phase: &str) -> Result<()> {
        self.claims()
            .patch_status(
                claim,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "phase": phase } })),
            )
            .await
            .map_err(|e| self.kube_err(format!("setting claim {claim} {phase}"), e))?;
        Ok(())
    }

    /// Sets the image of every container of Deployment `name` (its Pod template), as a
    /// `helm upgrade` of the chart on this cluster only would. Returns the image before.
    pub async fn set_deployment_image(&self, name: &str, image: &str) -> Result<Option<String>> {
        let d = self.deployment(name).await?;
        let containers = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers)
            .unwrap_or_default();
        let before = containers.first().and_then(|c| c.image.clone());
        let patch: Vec<_> = containers
            .iter()
            .map(|c| json!({ "name": c.name, "image": image }))
            .collect();
        self.deployments()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Strategic(
                    json!({ "spec": { "template": { "spec": { "containers": patch } } } }),
                ),
            )
            .await
            .map_err(|e| self.kube_err(format!("setting the image of deployment {name}"), e))?;
        Ok(before)
    }
}
