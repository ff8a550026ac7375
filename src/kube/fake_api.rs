//! An in-memory Kubernetes API server for unit tests, behind a `kube::Client`: `/readyz`,
//! and get, list (by label selector), create, replace, JSON merge patch (the
//! Deployments' `scale` subresource included) and delete of namespaced objects of any
//! kind, kept as JSON. Every request is logged. A replace must carry the stored
//! resourceVersion, and a merge patch or a delete that names one must match it (409
//! otherwise; a create of an existing name is 409 too), so a write without its
//! precondition, or on a stale one, fails here as on an API server.
//!
//! The caches are not fed by it: a test copies the objects into a
//! [`WatchStore`] when its watch would have seen them ([`FakeApi::mirror`]).
//! [`FakeApi::fail_with`] answers every request with an error status,
//! [`FakeApi::fail_readyz`] only `/readyz`.
//!
//! The coordination's tests (src/coord/tests.rs) use one cluster and read the log as
//! `VERB name` ([`FakeApi::take_requests`]); the tick's tests (src/daemon/runner/) use two
//! clusters that log into one list, in order ([`FakeApi::beside`],
//! [`FakeApi::take_lines`]).

use super::watch_cache::WatchStore;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Resource;
use kube::core::SelectorExt;
use kube::runtime::watcher::Event;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Where an object is kept: its resource (plural), namespace and name.
type Key = (String, String, String);

#[derive(Default)]
struct Cluster {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uids: u64,
    /// Answer every request with this status instead.
    failing: Option<u16>,
    /// Answer `/readyz` with this status instead.
    readyz_failing: Option<u16>,
}

impl Cluster {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// Gives a new object its resourceVersion, and a uid unless it has one.
    fn stamp(&mut self, obj: &mut Value, namespace: &str) {
        let rv = self.next_rv();
        let meta = meta_mut(obj);
        meta.insert("namespace".into(), namespace.into());
        meta.insert("resourceVersion".into(), rv.into());
        if !meta.contains_key("uid") {
            self.uids += 1;
            meta.insert("uid".into(), format!("uid-{}", self.uids).into());
        }
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The label of the cluster it went to (`None` for [`FakeApi::new`]'s).
    pub cluster: Option<String>,
    /// The HTTP method.
    pub method: Method,
    /// `/readyz`; `<namespace>/<resource>[/<name>[/<subresource>]]`; or the path as sent
    /// for anything else.
    pub target: String,
    /// The selectors of the query (`labelSelector`, `fieldSelector`), decoded, as
    /// `key=value` joined by `&`; empty without (other parameters, such as a write's
    /// `fieldManager`, are left out).
    pub selectors: String,
    /// The name of the object: the one in the path, or the one a create names.
    pub name: Option<String>,
    /// A create's note: an Event's reason (their names are time-based), else the name.
    pub created: Option<String>,
    /// The body sent, when it was JSON.
    pub body: Option<Value>,
}

impl fmt::Display for Logged {
    /// `[cluster ]VERB target[?selectors][ created]`, e.g. `standby PATCH
    /// ns/deployments/app/scale`, `primary GET ns/deployments?labelSelector=app=x` or
    /// `standby POST ns/events KubeFailoverPromoted`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.cluster {
            write!(f, "{c} ")?;
        }
        write!(f, "{} {}", self.method, self.target)?;
        if !self.selectors.is_empty() {
            write!(f, "?{}", self.selectors)?;
        }
        if let Some(what) = &self.created {
            write!(f, " {what}")?;
        }
        Ok(())
    }
}

/// The fake API of one cluster; clones share it. Clusters made with
/// [`FakeApi::beside`] log into the same list.
#[derive(Clone)]
pub struct FakeApi {
    label: Option<String>,
    namespace: String,
    cluster: Arc<Mutex<Cluster>>,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    /// One cluster whose clients default to namespace `ns`; its log lines carry no label.
    pub fn new() -> Self {
        FakeApi {
            label: None,
            namespace: "ns".to_string(),
            cluster: Arc::default(),
            log: Arc::default(),
        }
    }

    /// One cluster labelled `label` in its log lines, its clients defaulting to
    /// `namespace`.
    pub fn cluster(label: &str, namespace: &str) -> Self {
        FakeApi {
            label: Some(label.to_string()),
            namespace: namespace.to_string(),
            ..Self::new()
        }
    }

    /// Another cluster, labelled `label`, logging into this one's list: the order of
    /// requests across both is kept.
    pub fn beside(&self, label: &str, namespace: &str) -> Self {
        FakeApi {
            label: Some(label.to_string()),
            namespace: namespace.to_string(),
            cluster: Arc::default(),
            log: self.log.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap()
    }

    /// A client whose every request this fake answers (its default namespace as given).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), self.namespace.as_str())
    }

    /// The requests so far, as `VERB name` (`VERB` alone for a collection: a create or
    /// a list), and forgets them.
    pub fn take_requests(&self) -> Vec<String> {
        self.take_log()
            .into_iter()
            .map(|l| match (&l.name, l.created.is_some()) {
                (Some(n), false) => format!("{} {n}", l.method),
                _ => l.method.to_string(),
            })
            .collect()
    }

    /// The requests so far, in order, and forgets them.
    pub fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// The requests so far as lines ([`Logged`]'s `Display`), and forgets them.
    pub fn take_lines(&self) -> Vec<String> {
        self.take_log().iter().map(ToString::to_string).collect()
    }

    /// A stored Lease of the default namespace.
    pub fn lease(&self, name: &str) -> Option<Lease> {
        self.get(&self.namespace, name)
    }

    /// A stored object.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let key = (K::plural(&()).into_owned(), namespace.into(), name.into());
        let value = self.lock().objects.get(&key).cloned()?;
        Some(serde_json::from_value(value).expect("a stored object decodes"))
    }

    /// The stored objects of a kind in `namespace`, by name.
    pub fn list<K>(&self, namespace: &str) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let plural = K::plural(&());
        self.lock()
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == plural && ns == namespace)
            .map(|(_, v)| serde_json::from_value(v.clone()).expect("a stored object decodes"))
            .collect()
    }

    /// Stores `obj` as another writer would (in the default namespace unless it names
    /// one; a new resourceVersion, a uid unless it has one), unlogged; returns the
    /// resourceVersion.
    pub fn put<K>(&self, obj: K) -> String
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let mut value = serde_json::to_value(&obj).expect("an object encodes");
        let namespace = obj
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let name = obj.meta().name.clone().expect("a named object");
        let mut cluster = self.lock();
        let key = (K::plural(&()).into_owned(), namespace.clone(), name);
        if let Some(uid) = cluster
            .objects
            .get(&key)
            .and_then(|v| v["metadata"]["uid"].as_str())
        {
            meta_mut(&mut value).insert("uid".into(), uid.into());
        }
        cluster.stamp(&mut value, &namespace);
        let rv = value["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        cluster.objects.insert(key, value);
        rv
    }

    /// Answers every request with `status` (or normally again with `None`).
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().failing = status;
    }

    /// Answers `/readyz` with `status` (or `ok` again with `None`).
    pub fn fail_readyz(&self, status: Option<u16>) {
        self.lock().readyz_failing = status;
    }

    /// Lists the default namespace's objects of the store's kind into `store`, as a
    /// watch's (re)list does.
    pub fn mirror<K>(&self, store: &WatchStore<K>)
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + 'static,
    {
        self.mirror_selected(store, &self.namespace.clone(), None);
    }

    /// Lists the objects of `namespace` matching `selector` (a label selector) into
    /// `store`, as a watch's (re)list does.
    pub fn mirror_selected<K>(&self, store: &WatchStore<K>, namespace: &str, selector: Option<&str>)
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + 'static,
    {
        let objects: Vec<K> = self
            .list::<K>(namespace)
            .into_iter()
            .filter(|o| selector.is_none_or(|s| selected(s, o.meta().labels.as_ref())))
            .collect();
        store.apply(Event::Init);
        for o in objects {
            store.apply(Event::InitApply(o));
        }
        store.apply(Event::InitDone);
    }

    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let target = Target::of(path);
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let name = match &target {
            Target::Object { name: Some(n), .. } => Some(n.clone()),
            Target::Object { name: None, .. } if *method == Method::POST => json
                .as_ref()
                .and_then(|b| b["metadata"]["name"].as_str())
                .map(str::to_string),
            _ => None,
        };
        let created = (*method == Method::POST).then(|| {
            let reason = json.as_ref().and_then(|b| b["reason"].as_str());
            match (&target, reason) {
                (Target::Object { resource, .. }, Some(r)) if resource == "events" => r.into(),
                _ => name.clone().unwrap_or_default(),
            }
        });
        self.log.lock().unwrap().push(Logged {
            cluster: self.label.clone(),
            method: method.clone(),
            target: target.to_string(),
            selectors: form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .filter(|(k, _)| k.ends_with("Selector"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
            name,
            created,
            body: json.clone(),
        });
        let mut cluster = self.lock();
        if let Some(code) = cluster.failing {
            return status(code, "Failing", "failing on purpose");
        }
        let Target::Object {
            api_version,
            namespace,
            resource,
            name,
            sub,
        } = target
        else {
            return match target {
                Target::Readyz if *method == Method::GET => match cluster.readyz_failing {
                    Some(code) => status(code, "InternalError", "[-]etcd failed"),
                    None => (200, b"ok".to_vec()),
                },
                _ => status(404, "NotFound", "not in this fake"),
            };
        };
        if query.is_some_and(|q| param(q, "watch").is_some_and(|w| w == "true" || w == "1")) {
            return status(405, "MethodNotAllowed", "no watches in this fake");
        }
        let key = |n: &str| (resource.clone(), namespace.clone(), n.to_string());
        let current_rv = |cluster: &Cluster, n: &str| {
            cluster.objects.get(&key(n)).and_then(|v| {
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string)
            })
        };
        match (method.clone(), name, sub.as_deref()) {
            (Method::GET, None, None) => {
                let selector = query.and_then(|q| param(q, "labelSelector"));
                let items: Vec<Value> = cluster
                    .objects
                    .iter()
                    .filter(|((r, ns, _), _)| *r == resource && *ns == namespace)
                    .map(|(_, v)| v.clone())
                    .filter(|v| {
                        selector.as_deref().is_none_or(|s| {
                            let labels: Option<BTreeMap<String, String>> =
                                serde_json::from_value(v["metadata"]["labels"].clone()).ok();
                            selected(s, labels.as_ref())
                        })
                    })
                    .collect();
                let list = json!({
                    "apiVersion": api_version,
                    "kind": "List",
                    "metadata": {"resourceVersion": cluster.rv.to_string()},
                    "items": items,
                });
                (200, to_vec(&list))
            }
            (Method::GET, Some(n), sub) => match (cluster.objects.get(&key(&n)), sub) {
                (Some(v), None) => (200, to_vec(v)),
                (Some(v), Some("scale")) if resource == "deployments" => (200, to_vec(&scale(v))),
                _ => not_found(&resource, &n),
            },
            (Method::POST, None, None) => {
                let Some(mut obj) = json else {
                    return status(400, "BadRequest", "not JSON");
                };
                let Some(n) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                    return status(422, "Invalid", "metadata.name: Required value");
                };
                if cluster.objects.contains_key(&key(&n)) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{resource} {n:?} already exists"),
                    );
                }
                cluster.stamp(&mut obj, &namespace);
                cluster.objects.insert(key(&n), obj.clone());
                (201, to_vec(&obj))
            }
            (Method::PUT, Some(n), None) => {
                let Some(mut obj) = json else {
                    return status(400, "BadRequest", "not JSON");
                };
                let Some(stored) = cluster.objects.get(&key(&n)) else {
                    return not_found(&resource, &n);
                };
                let uid = stored["metadata"]["uid"].clone();
                if obj["metadata"]["resourceVersion"].as_str()
                    != current_rv(&cluster, &n).as_deref()
                {
                    return conflict(&resource, &n);
                }
                meta_mut(&mut obj).insert("uid".into(), uid);
                cluster.stamp(&mut obj, &namespace);
                cluster.objects.insert(key(&n), obj.clone());
                (200, to_vec(&obj))
            }
            (Method::PATCH, Some(n), sub) => {
                if content_type != Some("application/merge-patch+json") {
                    return status(415, "UnsupportedMediaType", "only merge patches here");
                }
                let Some(mut patch) = json else {
                    return status(400, "BadRequest", "not JSON");
                };
                let Some(mut obj) = cluster.objects.get(&key(&n)).cloned() else {
                    return not_found(&resource, &n);
                };
                // A resourceVersion in a patch is its precondition.
                if let Some(rv) = meta_mut(&mut patch).remove("resourceVersion")
                    && rv.as_str() != current_rv(&cluster, &n).as_deref()
                {
                    return conflict(&resource, &n);
                }
                match sub {
                    None => merge(&mut obj, &patch),
                    Some("scale") if resource == "deployments" => {
                        if let Some(replicas) = patch["spec"].get("replicas") {
                            obj["spec"]["replicas"] = replicas.clone();
                        }
                    }
                    Some(_) => return not_found(&resource, &n),
                }
                cluster.stamp(&mut obj, &namespace);
                cluster.objects.insert(key(&n), obj.clone());
                match sub {
                    Some(_) => (200, to_vec(&scale(&obj))),
                    None => (200, to_vec(&obj)),
                }
            }
            (Method::DELETE, Some(n), None) => {
                let Some(stored) = cluster.objects.get(&key(&n)) else {
                    return not_found(&resource, &n);
                };
                let pre = json.as_ref().map(|b| &b["preconditions"]);
                let holds = |field: &str| {
                    pre.and_then(|p| p[field].as_str())
                        .is_none_or(|want| stored["metadata"][field].as_str() == Some(want))
                };
                if !(holds("uid") && holds("resourceVersion")) {
                    return conflict(&resource, &n);
                }
                let gone = cluster.objects.remove(&key(&n)).unwrap_or_default();
                (200, to_vec(&gone))
            }
            _ => status(405, "MethodNotAllowed", "not in this fake"),
        }
    }
}

/// What a path asks for.
enum Target {
    Readyz,
    Object {
        /// `v1` or `group/version`.
        api_version: String,
        namespace: String,
        resource: String,
        name: Option<String>,
        sub: Option<String>,
    },
    Other(String),
}

impl Target {
    fn of(path: &str) -> Target {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (api_version, rest) = match segments.as_slice() {
            ["readyz"] => return Target::Readyz,
            ["api", version, rest @ ..] => (version.to_string(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return Target::Other(path.to_string()),
        };
        let (namespace, resource, name, sub) = match rest {
            ["namespaces", ns, resource] => (ns, resource, None, None),
            ["namespaces", ns, resource, name] => (ns, resource, Some(name), None),
            ["namespaces", ns, resource, name, sub] => (ns, resource, Some(name), Some(sub)),
            _ => return Target::Other(path.to_string()),
        };
        Target::Object {
            api_version,
            namespace: namespace.to_string(),
            resource: resource.to_string(),
            name: name.map(|n| n.to_string()),
            sub: sub.map(|s| s.to_string()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Readyz => f.write_str("/readyz"),
            Target::Other(path) => f.write_str(path),
            Target::Object {
                namespace,
                resource,
                name,
                sub,
                ..
            } => {
                write!(f, "{namespace}/{resource}")?;
                for part in [name, sub].into_iter().flatten() {
                    write!(f, "/{part}")?;
                }
                Ok(())
            }
        }
    }
}

/// A query parameter's value.
fn param(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Whether `labels` match the label selector `text`.
fn selected(text: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
    let selector = crate::selection::parse_label_selector(text).expect("a valid selector");
    selector.matches(labels.unwrap_or(&BTreeMap::new()))
}

/// `obj`'s metadata, made an object if it was not.
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"].as_object_mut().expect("an object")
}

/// Applies a JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(into) = target else { return };
    for (k, v) in fields {
        if v.is_null() {
            into.remove(k);
        } else {
            merge(into.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// A Deployment's `scale` subresource.
fn scale(deployment: &Value) -> Value {
    let meta = &deployment["metadata"];
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"],
            "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
        },
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {"replicas": deployment["status"]["replicas"].as_i64().unwrap_or(0)},
    })
}

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON encodes")
}

fn not_found(resource: &str, name: &str) -> (u16, Vec<u8>) {
    status(404, "NotFound", &format!("{resource} {name:?} not found"))
}

fn conflict(resource: &str, name: &str) -> (u16, Vec<u8>) {
    let message = format!("{resource} {name:?}: the object has been modified");
    status(409, "Conflict", &message)
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Vec<u8>) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code, "message": message,
    });
    (code, to_vec(&body))
}

impl tower_service::Service<Request<kube::client::Body>> for FakeApi {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let (code, out) = me.answer(
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                content_type,
                &body,
            );
            let kind = if out.first() == Some(&b'{') {
                "application/json"
            } else {
                "text/plain"
            };
            Ok(Response::builder()
                .status(StatusCode::from_u16(code).expect("a status code"))
                .header("content-type", kind)
                .body(Full::new(Bytes::from(out)))
                .expect("a response"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};

    fn deployment(name: &str, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}}},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn objects_are_written_on_their_preconditions_and_every_request_is_logged() {
        let primary = FakeApi::cluster("primary", "p");
        let standby = primary.beside("standby", "s");
        primary.put(deployment("app", 1));
        primary.put(deployment("other", 1));
        let api: Api<Deployment> = Api::default_namespaced(primary.client());
        let read = api.get("app").await.unwrap();
        let rv = read.metadata.resource_version.clone();
        let selected = api
            .list(&ListParams::default().labels("app=app"))
            .await
            .unwrap();
        assert_eq!(selected.items.len(), 1);
        // A scale on the resourceVersion read goes through, a second one on it does not.
        let scale =
            Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": 0}}));
        let params = PatchParams::default();
        let s = api.patch_scale("app", &params, &scale).await.unwrap();
        assert_eq!(s.spec.unwrap().replicas, Some(0));
        let stale = api.patch_scale("app", &params, &scale).await.unwrap_err();
        assert!(matches!(stale, kube::Error::Api(s) if s.code == 409));
        let stored: Deployment = primary.get("p", "app").unwrap();
        assert_eq!(stored.spec.unwrap().replicas, Some(0));
        assert_eq!(stored.metadata.uid, read.metadata.uid, "the uid stays");

        // The other cluster: a create, a replace without and with the stored version.
        let cms: Api<ConfigMap> = Api::default_namespaced(standby.client());
        let mut cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("record".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = cms.create(&PostParams::default(), &cm).await.unwrap();
        assert!(
            cms.create(&PostParams::default(), &cm).await.is_err(),
            "it exists"
        );
        assert!(
            cms.replace("record", &PostParams::default(), &cm)
                .await
                .is_err(),
            "no version"
        );
        cm.metadata.resource_version = created.metadata.resource_version.clone();
        cms.replace("record", &PostParams::default(), &cm)
            .await
            .unwrap();
        let wrong = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some("not-it".into()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        assert!(cms.delete("record", &wrong).await.is_err(), "another uid");
        cms.delete("record", &DeleteParams::default())
            .await
            .unwrap();
        assert!(standby.get::<ConfigMap>("s", "record").is_none());
        standby.fail_readyz(Some(500));
        let client = standby.client();
        let readyz =
            || client.request_text(http::Request::get("/readyz").body(Vec::new()).unwrap());
        assert!(readyz().await.is_err());
        standby.fail_readyz(None);
        assert_eq!(readyz().await.unwrap(), "ok");

        let log = primary.take_log();
        assert_eq!(
            log.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "primary GET p/deployments/app",
                "primary GET p/deployments?labelSelector=app=app",
                "primary PATCH p/deployments/app/scale",
                "primary PATCH p/deployments/app/scale",
                "standby POST s/configmaps record",
                "standby POST s/configmaps record",
                "standby PUT s/configmaps/record",
                "standby PUT s/configmaps/record",
                "standby DELETE s/configmaps/record",
                "standby DELETE s/configmaps/record",
                "standby GET /readyz",
                "standby GET /readyz",
            ]
        );
        // The bodies are kept: the scale carried the resourceVersion it was read at.
        let sent = log[2].body.as_ref().unwrap();
        assert_eq!(
            sent["metadata"]["resourceVersion"],
            json!(read.metadata.resource_version)
        );
        assert!(standby.take_lines().is_empty(), "one list for both");
    }
}
