//! Deployments and Pods as the watch caches keep them: decoded straight from the API
//! server's JSON into types that hold only what the caches' readers read, so a cached
//! object costs a few hundred bytes instead of the kilobytes of its k8s-openapi type
//! (whose `Option<PodSpec>`, `Container` and `Volume` fields take their whole size even
//! when empty: a `Deployment` with one container is about 4.6 kB before any string, a
//! `Pod` 2.4 kB with no spec). What they keep:
//!
//! - [`KeptPod`]: the metadata and, of the status, the phase, the conditions' type and
//!   status, and per container its name, image ID and waiting reason (the workload
//!   probe's `PodSummary`, the state checks' image digests);
//! - [`KeptDeployment`]: the metadata, `spec.replicas`, `spec.selector`,
//!   `status.availableReplicas`, and of the Pod template what the state checks compare:
//!   per container its name, image, env, envFrom and resource requests, and the
//!   ConfigMap, Secret and projected volumes.
//!
//! The metadata is kept whole but for its managedFields and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (the whole object
//! again), which nothing reads: both are dropped as the object is decoded. Nothing writes a kept object back: a write reads the
//! object afresh or patches it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvFromSource, EnvVarSource, Pod, ProjectedVolumeSource,
    SecretVolumeSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The annotation `kubectl apply` leaves on what it applied: the whole object again.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from `meta` what no reader of a cache reads: managedFields and the
/// last-applied annotation.
fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The metadata of a kept object, slimmed as it is decoded ([`slim_meta`]).
fn slim_metadata<'de, D>(deserializer: D) -> Result<ObjectMeta, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut meta = ObjectMeta::deserialize(deserializer)?;
    slim_meta(&mut meta);
    Ok(meta)
}

/// A list the API server may send as `null` (a Go nil slice), read as empty.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A Pod as the caches keep it (see the module documentation).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptPod {
    /// The metadata, without what [`slim_meta`] drops.
    #[serde(default, deserialize_with = "slim_metadata")]
    pub metadata: ObjectMeta,
    /// What is kept of the status.
    pub status: Option<KeptPodStatus>,
}

/// What is kept of a Pod's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptPodStatus {
    /// `phase`: `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: Option<String>,
    /// `conditions`: `Ready`, `PodScheduled`, ...
    pub conditions: Option<Vec<KeptCondition>>,
    /// `containerStatuses`.
    pub container_statuses: Option<Vec<KeptContainerStatus>>,
    /// `initContainerStatuses`.
    pub init_container_statuses: Option<Vec<KeptContainerStatus>>,
}

/// A Pod condition: its type and status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptCondition {
    /// `type`: `Ready`, `PodScheduled`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// What is kept of a container's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptContainerStatus {
    /// The container's name.
    pub name: String,
    /// `imageID`: the digest the container runs.
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    /// Its current state.
    pub state: Option<KeptContainerState>,
}

/// What is kept of a container's state: why it waits, when it does.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptContainerState {
    /// Set while the container waits.
    pub waiting: Option<KeptWaiting>,
}

/// A waiting container's reason (`CrashLoopBackOff`, `ImagePullBackOff`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptWaiting {
    /// Why it waits.
    pub reason: Option<String>,
}

/// A Deployment as the caches keep it (see the module documentation).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptDeployment {
    /// The metadata, without what [`slim_meta`] drops.
    #[serde(default, deserialize_with = "slim_metadata")]
    pub metadata: ObjectMeta,
    /// What is kept of the spec.
    pub spec: Option<KeptDeploymentSpec>,
    /// What is kept of the status.
    pub status: Option<KeptDeploymentStatus>,
}

/// What is kept of a Deployment's spec.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptDeploymentSpec {
    /// The API server defaults a missing value to 1.
    pub replicas: Option<i32>,
    /// The Pods it owns.
    #[serde(default)]
    pub selector: LabelSelector,
    /// What is kept of the Pod template.
    #[serde(default)]
    pub template: KeptPodTemplate,
}

/// What is kept of a Deployment's Pod template.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptPodTemplate {
    /// What is kept of the template's spec.
    pub spec: Option<KeptPodSpec>,
}

/// What is kept of a Pod template's spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptPodSpec {
    /// `containers`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub containers: Vec<KeptContainer>,
    /// `initContainers`.
    pub init_containers: Option<Vec<KeptContainer>>,
    /// `volumes`.
    pub volumes: Option<Vec<KeptVolume>>,
}

/// What is kept of a container of a Pod template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptContainer {
    /// The container's name.
    pub name: String,
    /// `image`, as written.
    pub image: Option<String>,
    /// `env`.
    pub env: Option<Vec<KeptEnvVar>>,
    /// `envFrom`.
    pub env_from: Option<Vec<EnvFromSource>>,
    /// What is kept of `resources`.
    pub resources: Option<KeptResources>,
}

/// An environment variable: its value or where it comes from (boxed: most variables
/// have a plain value, and the source is a few hundred bytes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptEnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value, when given in place.
    pub value: Option<String>,
    /// Where its value comes from, when it is not given in place.
    pub value_from: Option<Box<EnvVarSource>>,
}

/// A container's resource requests.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeptResources {
    /// `requests`.
    pub requests: Option<BTreeMap<String, Quantity>>,
}

/// What is kept of a volume: its ConfigMap, Secret or projected source, if it has one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptVolume {
    /// `configMap`.
    pub config_map: Option<Box<ConfigMapVolumeSource>>,
    /// `secret`.
    pub secret: Option<Box<SecretVolumeSource>>,
    /// `projected`.
    pub projected: Option<Box<ProjectedVolumeSource>>,
}

/// What is kept of a Deployment's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptDeploymentStatus {
    /// `availableReplicas`.
    pub available_replicas: Option<i32>,
}

/// Implements [`kube::Resource`] for a kept type with the API coordinates of the
/// k8s-openapi type it is kept from, so that lists and watches address the same URLs.
macro_rules! kept_resource {
    ($kept:ty, $served:ty) => {
        impl kube::Resource for $kept {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$served as k8s_openapi::Resource>::KIND)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$served as k8s_openapi::Resource>::GROUP)
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$served as k8s_openapi::Resource>::VERSION)
            }

            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$served as k8s_openapi::Resource>::API_VERSION)
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$served as k8s_openapi::Resource>::URL_PATH_SEGMENT)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

kept_resource!(KeptPod, Pod);
kept_resource!(KeptDeployment, Deployment);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    use crate::kube::watch_cache::{served, served_json};

    #[test]
    fn kept_types_address_the_urls_of_the_served_ones() {
        assert_eq!(
            KeptDeployment::url_path(&(), Some("ns")),
            Deployment::url_path(&(), Some("ns"))
        );
        assert_eq!(KeptPod::url_path(&(), None), Pod::url_path(&(), None));
        assert_eq!(KeptDeployment::api_version(&()), "apps/v1");
        assert_eq!(KeptPod::kind(&()), "Pod");
    }

    #[test]
    fn kept_objects_hold_what_their_readers_read() {
        let (deployment, pod) = served_json();
        let d: KeptDeployment = serde_json::from_value(deployment).unwrap();
        assert_eq!(
            d.metadata.name.as_deref(),
            Some("env0-agent-trigger-deployment")
        );
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()["env0"],
            "agent-trigger"
        );
        let pod_spec = spec.template.spec.as_ref().unwrap();
        let c = &pod_spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("env0/agent:1"));
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0].value.as_deref(), Some("1"));
        let secret = env[1].value_from.as_ref().unwrap();
        assert_eq!(secret.secret_key_ref.as_ref().unwrap().name, "creds");
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .config_map_ref
                .as_ref()
                .unwrap()
                .name,
            "agent-config"
        );
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
            "100m"
        );
        assert_eq!(pod_spec.init_containers.as_ref().unwrap()[0].name, "init");
        let volumes = pod_spec.volumes.as_ref().unwrap();
        assert!(volumes[0].config_map.is_none() && volumes[0].secret.is_none());
        assert_eq!(volumes[1].config_map.as_ref().unwrap().name, "agent-config");
        assert_eq!(d.status.as_ref().unwrap().available_replicas, Some(1));

        let p: KeptPod = serde_json::from_value(pod).unwrap();
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            ("Ready", "True")
        );
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.image_id, "docker.io/env0/agent@sha256:abc");
        let waiting = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    }

    #[test]
    fn slim_meta_drops_managed_fields_and_the_last_applied_copy() {
        let (deployment, _) = served_json();
        let mut meta: ObjectMeta = serde_json::from_value(deployment["metadata"].clone()).unwrap();
        assert!(
            meta.annotations
                .as_ref()
                .unwrap()
                .contains_key(LAST_APPLIED)
        );
        meta.managed_fields = Some(vec![Default::default()]);
        slim_meta(&mut meta);
        assert!(meta.managed_fields.is_none());
        let annotations = meta.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations["kube-failover/epoch"], "3");
        // And a cache applies it to what it keeps.
        let (cached, _) = served();
        let annotations = cached.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations["kube-failover/epoch"], "3");
    }

    #[test]
    fn a_template_without_containers_is_kept_with_none() {
        for containers in [serde_json::json!(null), serde_json::json!([])] {
            let d: KeptDeployment = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "d"},
                "spec": {"template": {"spec": {"containers": containers}}}
            }))
            .unwrap();
            let spec = d.spec.unwrap().template.spec.unwrap();
            assert!(spec.containers.is_empty());
        }
    }

    #[test]
    fn a_kept_object_is_a_fraction_of_the_served_one() {
        // The point of these types; if a field added later costs as much as the
        // k8s-openapi type's, this says so.
        assert!(std::mem::size_of::<KeptDeployment>() * 4 < std::mem::size_of::<Deployment>());
        assert!(std::mem::size_of::<KeptPod>() * 4 < std::mem::size_of::<Pod>());
        assert!(
            std::mem::size_of::<KeptContainer>() * 8
                < std::mem::size_of::<k8s_openapi::api::core::v1::Container>()
        );
        assert!(
            std::mem::size_of::<KeptVolume>() * 16
                < std::mem::size_of::<k8s_openapi::api::core::v1::Volume>()
        );
    }
}
