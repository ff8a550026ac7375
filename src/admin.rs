//! The admin server: `/metrics`, `/healthz`, `/readyz`, `/status`. Read-only by design
//! (safety invariant 7): GET and HEAD only, a header-read timeout, small buffers, and no
//! request body is ever read.

use crate::metrics::Metrics;
use crate::status::{GroupStatus, StatusReport};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Slow clients get this long to send their request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer per connection; requests larger than this are refused.
const MAX_BUF: usize = 16 * 1024;
/// Open connections at most; further ones wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} (daemon.listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the admin server shows; updated by the daemon's group loops.
pub struct AdminState {
    metrics: Metrics,
    interval: Duration,
    started: Instant,
    status: RwLock<StatusReport>,
    last_ticks: Mutex<HashMap<String, Instant>>,
    groups: usize,
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl AdminState {
    /// `status` is the initial document (groups may be empty until their first tick).
    pub fn new(metrics: Metrics, interval: Duration, groups: usize, status: StatusReport) -> Self {
        AdminState {
            metrics,
            interval,
            started: Instant::now(),
            status: RwLock::new(status),
            last_ticks: Mutex::new(HashMap::new()),
            groups,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Records a finished tick of `group` and its status.
    pub fn tick_done(&self, group: GroupStatus, wall_unix: f64) {
        let name = group.name.clone();
        let all_ticked = {
            let mut ticks = self.last_ticks.lock().unwrap_or_else(|e| e.into_inner());
            ticks.insert(name.clone(), Instant::now());
            ticks.len() >= self.groups
        };
        {
            let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
            match status.groups.iter_mut().find(|g| g.name == name) {
                Some(slot) => *slot = group,
                None => status.groups.push(group),
            }
            status.last_tick_unix = Some(wall_unix);
            status.ready = all_ticked && !self.shutting_down.load(Ordering::SeqCst);
        }
        if all_ticked {
            self.ready.store(true, Ordering::SeqCst);
        }
    }

    /// True once every group has finished a tick.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// `/readyz` goes 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.ready = false;
    }

    /// True while every group has ticked within three intervals (or the daemon started
    /// less than three intervals ago).
    pub fn is_healthy(&self) -> bool {
        let limit = self.interval * 3;
        let ticks = self.last_ticks.lock().unwrap_or_else(|e| e.into_inner());
        if ticks.len() < self.groups {
            return self.started.elapsed() <= limit;
        }
        ticks.values().all(|t| t.elapsed() <= limit)
    }

    fn status_json(&self) -> Vec<u8> {
        let status = self.status.read().unwrap_or_else(|e| e.into_inner());
        serde_json::to_vec_pretty(&*status).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Binds the admin listener; done before anything else so that a taken port fails the
/// start, naming the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_BUF)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// The whole routing table. Only the method and path are read.
pub fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    route_parts(state, req.method(), req.uri().path())
}

fn route_parts(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    const PATHS: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/status"];
    if !PATHS.contains(&path) {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or /status\n",
            method,
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: the admin port is read-only\n",
            method,
        );
        resp.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode(),
            method,
        ),
        "/healthz" => {
            if state.is_healthy() {
                plain(StatusCode::OK, "ok\n", method)
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stalled: no tick within three intervals\n",
                    method,
                )
            }
        }
        "/readyz" => {
            if state.shutting_down.load(Ordering::SeqCst) {
                plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n", method)
            } else if state.is_ready() {
                plain(StatusCode::OK, "ok\n", method)
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: first tick not done\n",
                    method,
                )
            }
        }
        _ => body(
            StatusCode::OK,
            "application/json",
            state.status_json(),
            method,
        ),
    }
}

fn plain(status: StatusCode, text: &'static str, method: &Method) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
        method,
    )
}

fn body(
    status: StatusCode,
    content_type: &'static str,
    bytes: Vec<u8>,
    method: &Method,
) -> Response<Full<Bytes>> {
    let len = bytes.len();
    let payload = if method == Method::HEAD {
        Vec::new()
    } else {
        bytes
    };
    let mut resp = Response::new(Full::new(Bytes::from(payload)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    h.insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    if method == Method::HEAD {
        h.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(len),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn state(groups: usize, interval: Duration) -> AdminState {
        AdminState::new(
            Metrics::new().unwrap(),
            interval,
            groups,
            StatusReport {
                version: "test".into(),
                mode: "auto".into(),
                identity: "host".into(),
                ready: false,
                last_tick_unix: None,
                groups: vec![],
            },
        )
    }

    fn group(name: &str) -> GroupStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": "primary_active", "since_unix": 1.0,
            "primary_down": false, "standby_fit": true, "active_cluster": "primary",
            "signals": [], "standby": {"api_reason": "ok", "workloads_reason": "ok", "detail": ""},
            "record": null,
            "last_decision": {"at_unix": 1.0, "reasons": [], "actions": [], "would_promote": false},
            "unexpected_standby_replicas": 0, "last_action_error": null
        }))
        .unwrap()
    }

    async fn text(resp: Response<Full<Bytes>>) -> String {
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn writes_are_refused_with_allow() {
        let s = state(1, Duration::from_secs(1));
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let r = route_parts(&s, &m, "/status");
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
        assert_eq!(
            route_parts(&s, &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn readyz_after_every_group_ticked_and_503_while_shutting_down() {
        let s = state(2, Duration::from_secs(1));
        assert_eq!(
            route_parts(&s, &Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.tick_done(group("a"), 1.0);
        assert_eq!(
            route_parts(&s, &Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.tick_done(group("b"), 2.0);
        assert_eq!(
            route_parts(&s, &Method::GET, "/readyz").status(),
            StatusCode::OK
        );
        s.begin_shutdown();
        let r = route_parts(&s, &Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text(r).await, "shutting down\n");
    }

    #[tokio::test]
    async fn healthz_goes_503_when_ticks_stop() {
        let s = state(1, Duration::from_millis(10));
        s.tick_done(group("a"), 1.0);
        assert_eq!(
            route_parts(&s, &Method::GET, "/healthz").status(),
            StatusCode::OK
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            route_parts(&s, &Method::GET, "/healthz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn status_serves_the_latest_group_document_and_head_has_no_body() {
        let s = state(1, Duration::from_secs(1));
        s.tick_done(group("a"), 7.0);
        let mut g = group("a");
        g.state = crate::model::GroupState::Promoting.into();
        s.tick_done(g, 8.0);
        let r = route_parts(&s, &Method::GET, "/status");
        let report: StatusReport = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(report.groups.len(), 1);
        assert_eq!(report.groups[0].state, "promoting");
        assert_eq!(report.last_tick_unix, Some(8.0));
        let head = route_parts(&s, &Method::HEAD, "/metrics");
        assert_eq!(head.status(), StatusCode::OK);
        assert!(text(head).await.is_empty());
    }
}
