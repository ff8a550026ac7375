//! An in-memory Lease API for the coordination tests: get, create and replace (409 on a
//! stale resourceVersion or an existing name), every request logged, so that the tests
//! prove which calls the coordination makes without a control plane.

use crate::kube::watch_cache::WatchStore;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher::Event;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

const PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases";

#[derive(Default)]
struct Inner {
    leases: BTreeMap<String, Lease>,
    rv: u64,
    log: Vec<String>,
    /// Answer every request with this status instead.
    failing: Option<u16>,
}

/// The fake API; clones share it.
#[derive(Clone, Default)]
pub struct FakeLeases {
    inner: Arc<Mutex<Inner>>,
}

impl FakeLeases {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// A client whose every request this fake answers (namespace `ns`).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "ns")
    }

    /// The requests so far, as `VERB name` (`POST` without a name), and forgets them.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().log)
    }

    /// A stored Lease.
    pub fn lease(&self, name: &str) -> Option<Lease> {
        self.lock().leases.get(name).cloned()
    }

    /// Stores `lease` as another writer would (a new resourceVersion); returns it.
    pub fn put(&self, mut lease: Lease) -> String {
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv.to_string();
        lease.metadata.resource_version = Some(rv.clone());
        lease.metadata.namespace = Some("ns".into());
        let name = lease.metadata.name.clone().unwrap();
        inner.leases.insert(name, lease);
        rv
    }

    /// Answers every request with `status` (or normally again with `None`).
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().failing = status;
    }

    /// Lists everything into `store`, as a watch's (re)list does.
    pub fn mirror(&self, store: &WatchStore<Lease>) {
        let leases: Vec<Lease> = self.lock().leases.values().cloned().collect();
        store.apply(Event::Init);
        for l in leases {
            store.apply(Event::InitApply(l));
        }
        store.apply(Event::InitDone);
    }

    fn answer(&self, method: &Method, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut inner = self.lock();
        let name = path
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string);
        inner.log.push(match &name {
            Some(n) => format!("{method} {n}"),
            None => method.to_string(),
        });
        if let Some(code) = inner.failing {
            return status(code, "Failing", "failing on purpose");
        }
        match (method.clone(), name) {
            (Method::GET, Some(name)) => match inner.leases.get(&name) {
                Some(l) => (200, serde_json::to_vec(l).unwrap()),
                None => status(404, "NotFound", "leases not found"),
            },
            (Method::POST, None) => {
                let mut lease: Lease = serde_json::from_slice(body).unwrap();
                let name = lease.metadata.name.clone().unwrap();
                if inner.leases.contains_key(&name) {
                    return status(409, "AlreadyExists", "leases already exists");
                }
                inner.rv += 1;
                lease.metadata.resource_version = Some(inner.rv.to_string());
                inner.leases.insert(name, lease.clone());
                (201, serde_json::to_vec(&lease).unwrap())
            }
            (Method::PUT, Some(name)) => {
                let mut lease: Lease = serde_json::from_slice(body).unwrap();
                let Some(current) = inner.leases.get(&name) else {
                    return status(404, "NotFound", "leases not found");
                };
                if lease.metadata.resource_version != current.metadata.resource_version {
                    return status(409, "Conflict", "the object has been modified");
                }
                inner.rv += 1;
                lease.metadata.resource_version = Some(inner.rv.to_string());
                inner.leases.insert(name, lease.clone());
                (200, serde_json::to_vec(&lease).unwrap())
            }
            _ => status(405, "MethodNotAllowed", "not in this fake"),
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Vec<u8>) {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code, "message": message,
    });
    (code, serde_json::to_vec(&body).unwrap())
}

impl tower_service::Service<Request<kube::client::Body>> for FakeLeases {
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
            let (code, out) = me.answer(&parts.method, parts.uri.path(), &body);
            Ok(Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(out)))
                .unwrap())
        })
    }
}
