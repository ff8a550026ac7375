//! What drift compares, read from one side's objects: per Deployment and container the
//! image, the environment (values shown only when they cannot be secret), `envFrom`,
//! resource requests and the digests running Pods report; per Deployment the ConfigMaps
//! and Secrets its Pods mount or read, and a hash of their data.
//!
//! Hashes are SipHash with keys drawn once per daemon process: two equal values hash
//! equal within one process, and a hash says nothing about the value to anyone else
//! (no dictionary can be built against a key that is never shown).

use crate::config::printable;
use crate::kube::kept::{KeptContainer, KeptDeployment, KeptEnvVar, KeptPod, KeptPodSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

/// Longest value shown for an image or an environment variable.
const MAX_VALUE_CHARS: usize = 120;

/// Parts of an environment variable's name that say its value may be secret.
const SECRET_NAME_PARTS: [&str; 10] = [
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "CERT",
];

/// `h:<16 hex digits>`: a hash of `bytes` keyed per daemon process.
pub fn keyed_hash(parts: &[&[u8]]) -> String {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let keys = KEYS.get_or_init(RandomState::new);
    format!("h:{:016x}", keys.hash_one(parts))
}

/// The hash of a ConfigMap's `data` and `binaryData`.
pub fn configmap_hash(cm: &ConfigMap) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for (k, v) in cm.data.iter().flatten() {
        parts.extend([b"d".as_slice(), k.as_bytes(), v.as_bytes()]);
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        parts.extend([b"b".as_slice(), k.as_bytes(), v.0.as_slice()]);
    }
    keyed_hash(&parts)
}

/// The hash of a Secret's `data` (and its type, which changes how it is used).
pub fn secret_hash(secret: &Secret) -> String {
    let mut parts: Vec<&[u8]> = vec![secret.type_.as_deref().unwrap_or("").as_bytes()];
    for (k, v) in secret.data.iter().flatten() {
        parts.extend([k.as_bytes(), v.0.as_slice()]);
    }
    keyed_hash(&parts)
}

/// One container as drift compares it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    /// `image`, as written in the spec.
    pub image: String,
    /// Each variable's shown value (or reference, or hash), by name.
    pub env: BTreeMap<String, String>,
    /// `envFrom`, in order: `configMapRef <name>`, `secretRef <name>`.
    pub env_from: String,
    /// Resource requests, `cpu=250m, memory=512Mi`, or `none`.
    pub requests: String,
}

/// One Deployment as drift compares it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwinFacts {
    /// Containers by name; init containers as `init:<name>`.
    pub containers: BTreeMap<String, ContainerFacts>,
    /// ConfigMap and Secret volumes (projected ones included): `configMap <name>`.
    pub volumes: BTreeSet<String>,
    /// Every ConfigMap the Pods read (volumes, `envFrom`, `valueFrom`).
    pub configmaps: BTreeSet<String>,
    /// Every Secret the Pods read.
    pub secrets: BTreeSet<String>,
    /// Image digests reported by the Deployment's Pods, by container.
    pub image_ids: BTreeMap<String, BTreeSet<String>>,
}

/// One side's Deployments and the data they read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideFacts {
    /// The selected Deployments (and twins found by name), by name.
    pub deployments: BTreeMap<String, TwinFacts>,
    /// Hash of each referenced ConfigMap's data; `None` when it does not exist.
    pub configmaps: BTreeMap<String, Option<String>>,
    /// Hash of each referenced Secret's data; `None` when it does not exist. Empty
    /// when Secrets are not read (see `secrets_unread`).
    pub secrets: BTreeMap<String, Option<String>>,
    /// Why Secrets' data was not read on this side, when it was not.
    pub secrets_unread: Option<String>,
}

/// Whether a variable's name says its value may be secret.
fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|p| upper.contains(p))
}

/// Whether a value carries credentials in a URL (`scheme://user:password@host`).
fn credentials_in_url(value: &str) -> bool {
    value
        .split_once("://")
        .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains('@')))
}

/// What drift shows for one variable: a reference by name, a hash when the value may be
/// secret, else the value (escaped and cut).
fn env_value(var: &KeptEnvVar) -> String {
    if let Some(from) = &var.value_from {
        if let Some(r) = &from.config_map_key_ref {
            return format!("configMapKeyRef {}/{}", r.name, r.key);
        }
        if let Some(r) = &from.secret_key_ref {
            return format!("secretKeyRef {}/{}", r.name, r.key);
        }
        if let Some(r) = &from.field_ref {
            return format!("fieldRef {}", r.field_path);
        }
        if let Some(r) = &from.resource_field_ref {
            return format!(
                "resourceFieldRef {} {}",
                r.container_name.as_deref().unwrap_or(""),
                r.resource
            );
        }
        return "valueFrom".to_string();
    }
    let value = var.value.as_deref().unwrap_or("");
    if secret_name(&var.name) || credentials_in_url(value) {
        keyed_hash(&[value.as_bytes()])
    } else {
        printable(value, MAX_VALUE_CHARS)
    }
}

fn container_facts(c: &KeptContainer) -> ContainerFacts {
    let env = c
        .env
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), env_value(v)))
        .collect();
    let env_from = c
        .env_from
        .iter()
        .flatten()
        .map(|e| {
            let prefix = e
                .prefix
                .as_deref()
                .map(|p| format!(" prefix {p}"))
                .unwrap_or_default();
            match (&e.config_map_ref, &e.secret_ref) {
                (Some(cm), _) => format!("configMapRef {}{prefix}", cm.name),
                (None, Some(s)) => format!("secretRef {}{prefix}", s.name),
                (None, None) => format!("none{prefix}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.iter()
                .map(|(k, v)| format!("{k}={}", v.0))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".to_string());
    ContainerFacts {
        image: printable(c.image.as_deref().unwrap_or(""), MAX_VALUE_CHARS),
        env,
        env_from: if env_from.is_empty() {
            "none".to_string()
        } else {
            env_from
        },
        requests,
    }
}

/// The ConfigMaps and Secrets a Pod spec reads, and its ConfigMap/Secret volumes.
fn references(spec: &KeptPodSpec, twin: &mut TwinFacts) {
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                twin.configmaps.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                twin.secrets.insert(r.name.clone());
            }
        }
        for v in c.env.iter().flatten() {
            let Some(from) = &v.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                twin.configmaps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                twin.secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            twin.volumes.insert(format!("configMap {}", cm.name));
            twin.configmaps.insert(cm.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
            twin.volumes.insert(format!("secret {name}"));
            twin.secrets.insert(name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                twin.volumes.insert(format!("configMap {}", cm.name));
                twin.configmaps.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                twin.volumes.insert(format!("secret {}", s.name));
                twin.secrets.insert(s.name.clone());
            }
        }
    }
}

/// The digest part of a container status' `imageID` (after `@`), or all of it.
fn digest(image_id: &str) -> &str {
    image_id.rsplit_once('@').map_or(image_id, |(_, d)| d)
}

/// A Deployment's facts; `pods` are the namespace's Pods (those its selector matches
/// and that are not terminating report image digests).
pub fn twin(d: &KeptDeployment, pods: &BTreeMap<String, Arc<KeptPod>>) -> TwinFacts {
    let mut twin = TwinFacts::default();
    let Some(spec) = d.spec.as_ref() else {
        return twin;
    };
    if let Some(pod_spec) = spec.template.spec.as_ref() {
        for c in &pod_spec.containers {
            twin.containers.insert(c.name.clone(), container_facts(c));
        }
        for c in pod_spec.init_containers.iter().flatten() {
            twin.containers
                .insert(format!("init:{}", c.name), container_facts(c));
        }
        references(pod_spec, &mut twin);
    }
    let selector = Selector::try_from(spec.selector.clone())
        .ok()
        .filter(|s| !s.selects_all());
    if let Some(selector) = selector {
        let empty = BTreeMap::new();
        for pod in pods.values() {
            if pod.metadata.deletion_timestamp.is_some()
                || !selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
            {
                continue;
            }
            let status = pod.status.as_ref();
            let statuses = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c.name.clone(), c))
                .chain(
                    status
                        .and_then(|s| s.init_container_statuses.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|c| (format!("init:{}", c.name), c)),
                );
            for (name, c) in statuses {
                let id = digest(&c.image_id);
                if !id.is_empty() {
                    twin.image_ids
                        .entry(name)
                        .or_default()
                        .insert(printable(id, MAX_VALUE_CHARS));
                }
            }
        }
    }
    twin
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caches keep less of a Deployment and its Pods than a cluster serves: every
    /// fact compared is read from what they keep.
    #[test]
    fn cached_objects_give_the_facts_of_served_ones() {
        let (deployment, pod) = crate::kube::watch_cache::served();
        let pods: BTreeMap<String, Arc<KeptPod>> = [("trigger-abc".to_string(), pod)].into();
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        let trigger = ContainerFacts {
            image: "env0/agent:1".into(),
            env: [("A", "1"), ("S", "secretKeyRef creds/k")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env_from: "configMapRef agent-config".into(),
            requests: "cpu=100m".into(),
        };
        let init = ContainerFacts {
            image: "busybox".into(),
            env: BTreeMap::new(),
            env_from: "none".into(),
            requests: "none".into(),
        };
        assert_eq!(
            twin(&deployment, &pods),
            TwinFacts {
                containers: [
                    ("trigger".to_string(), trigger),
                    ("init:init".to_string(), init)
                ]
                .into(),
                volumes: strings(&["configMap agent-config"]),
                configmaps: strings(&["agent-config"]),
                secrets: strings(&["creds"]),
                image_ids: [("trigger".to_string(), strings(&["sha256:abc"]))].into(),
            }
        );
    }

    fn deployment(value: serde_json::Value) -> KeptDeployment {
        serde_json::from_value(value).unwrap()
    }

    fn agent() -> KeptDeployment {
        deployment(serde_json::json!({
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "initContainers": [{"name": "setup", "image": "busybox:1"}],
                        "containers": [{
                            "name": "agent",
                            "image": "env0/deployment-agent:3.1.0",
                            "env": [
                                {"name": "ENV0_API_URL", "value": "https://api.env0.com"},
                                {"name": "ENV0_API_KEY", "value": "k-123"},
                                {"name": "DATABASE_URL", "value": "postgres://u:p@db/x"},
                                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "x"}}},
                                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "y"}}},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                            ],
                            "envFrom": [{"configMapRef": {"name": "agent-env"}}, {"secretRef": {"name": "agent-secrets"}, "prefix": "S_"}],
                            "resources": {"requests": {"memory": "512Mi", "cpu": "250m"}}
                        }],
                        "volumes": [
                            {"name": "a", "configMap": {"name": "scripts"}},
                            {"name": "b", "secret": {"secretName": "tls"}},
                            {"name": "c", "projected": {"sources": [{"configMap": {"name": "ca"}}, {"secret": {"name": "token"}}]}},
                            {"name": "d", "emptyDir": {}}
                        ]
                    }
                }
            }
        }))
    }

    fn pod(name: &str, labels: serde_json::Value, image_id: &str) -> (String, Arc<KeptPod>) {
        let p: KeptPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"containerStatuses": [{
                "name": "agent", "image": "x", "imageID": image_id, "ready": true,
                "restartCount": 0
            }]}
        }))
        .unwrap();
        (name.to_string(), Arc::new(p))
    }

    #[test]
    fn a_deployment_reads_into_comparable_secret_free_facts() {
        let pods: BTreeMap<_, _> = [
            pod(
                "a1",
                serde_json::json!({"app": "agent"}),
                "docker.io/env0/deployment-agent@sha256:abc",
            ),
            pod("other", serde_json::json!({"app": "other"}), "sha256:zzz"),
        ]
        .into();
        let t = twin(&agent(), &pods);
        let c = &t.containers["agent"];
        assert_eq!(c.image, "env0/deployment-agent:3.1.0");
        assert_eq!(c.env["ENV0_API_URL"], "https://api.env0.com");
        assert!(
            c.env["ENV0_API_KEY"].starts_with("h:"),
            "secret-looking name hashed"
        );
        assert!(
            c.env["DATABASE_URL"].starts_with("h:"),
            "credentials in a URL hashed"
        );
        assert_eq!(c.env["FROM_SECRET"], "secretKeyRef creds/x");
        assert_eq!(c.env["FROM_CM"], "configMapKeyRef settings/y");
        assert_eq!(c.env["POD"], "fieldRef metadata.name");
        assert_eq!(
            c.env_from,
            "configMapRef agent-env, secretRef agent-secrets prefix S_"
        );
        assert_eq!(c.requests, "cpu=250m, memory=512Mi");
        assert_eq!(t.containers["init:setup"].image, "busybox:1");
        assert_eq!(t.containers["init:setup"].requests, "none");
        let all = format!("{t:?}");
        for secret in ["k-123", "u:p@"] {
            assert!(!all.contains(secret), "{secret} shown: {all}");
        }
        assert_eq!(
            t.configmaps.iter().map(String::as_str).collect::<Vec<_>>(),
            ["agent-env", "ca", "scripts", "settings"]
        );
        assert_eq!(
            t.secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            ["agent-secrets", "creds", "tls", "token"]
        );
        assert_eq!(
            t.volumes.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "configMap ca",
                "configMap scripts",
                "secret tls",
                "secret token"
            ]
        );
        assert_eq!(
            t.image_ids["agent"]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["sha256:abc"],
            "only the Deployment's own Pods"
        );
    }

    #[test]
    fn hashes_are_stable_in_a_process_and_tell_data_apart() {
        let cm = |v: &str| ConfigMap {
            data: Some([("k".to_string(), v.to_string())].into()),
            ..ConfigMap::default()
        };
        assert_eq!(configmap_hash(&cm("a")), configmap_hash(&cm("a")));
        assert_ne!(configmap_hash(&cm("a")), configmap_hash(&cm("b")));
        let secret = |v: &[u8]| Secret {
            data: Some([("k".to_string(), k8s_openapi::ByteString(v.to_vec()))].into()),
            ..Secret::default()
        };
        assert_eq!(secret_hash(&secret(b"s")), secret_hash(&secret(b"s")));
        assert_ne!(secret_hash(&secret(b"s")), secret_hash(&secret(b"t")));
        assert_eq!(keyed_hash(&[b"x"]).len(), 18);
    }
}
