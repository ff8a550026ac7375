//! The routing table: only the method, the path and, for `/status`, the `group` query
//! parameter are read.

use super::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use std::sync::atomic::Ordering;

/// The group named by a `group=NAME` query parameter (form-decoded: `%XX` escapes and
/// `+` for a space).
pub(super) fn group_parameter(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "group")
        .map(|(_, value)| value.into_owned())
}

/// The whole routing table. Only the method, the path and, for `/status`, the `group`
/// query parameter are read.
pub(super) async fn route_parts(
    state: &AdminState,
    method: &Method,
    target: &str,
) -> Response<Full<Bytes>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    const PATHS: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/status"];
    if !PATHS.contains(&path) {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            method,
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: the admin port is read-only\n".into(),
            method,
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics_cache.get(&state.metrics).await,
            method,
        ),
        "/healthz" => match state.stalled() {
            None => plain(StatusCode::OK, "ok\n".into(), method),
            Some((group, age)) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "stalled: group {group} made no progress for {:.0}s (limit {:.0}s)\n",
                    age.as_secs_f64(),
                    state.stall_limit.as_secs_f64()
                ),
                method,
            ),
        },
        "/readyz" => {
            if state.shutting_down.load(Ordering::SeqCst) {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down\n".into(),
                    method,
                )
            } else if state.is_ready() {
                plain(StatusCode::OK, "ok\n".into(), method)
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: first tick not done\n".into(),
                    method,
                )
            }
        }
        _ => match group_parameter(query) {
            None => body(
                StatusCode::OK,
                "application/json",
                state.status_document(),
                method,
            ),
            Some(name) => match state.group_document(&name) {
                Ok(json) => body(StatusCode::OK, "application/json", json, method),
                Err((code, text)) => plain(code, text, method),
            },
        },
    }
}

pub(super) fn plain(status: StatusCode, text: String, method: &Method) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(text),
        method,
    )
}

pub(super) fn body(
    status: StatusCode,
    content_type: &'static str,
    bytes: Bytes,
    method: &Method,
) -> Response<Full<Bytes>> {
    let len = bytes.len();
    let payload = if method == Method::HEAD {
        Bytes::new()
    } else {
        bytes
    };
    let mut resp = Response::new(Full::new(payload));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if method == Method::HEAD {
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}
