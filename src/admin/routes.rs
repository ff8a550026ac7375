//! The routing table: only the method, the path and, for `/status`, the `group` query
//! parameter are read.

use super::*;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

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
) -> Response<Text> {
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

pub(super) fn plain(status: StatusCode, text: String, method: &Method) -> Response<Text> {
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
    text: impl Into<Text>,
    method: &Method,
) -> Response<Text> {
    let text = text.into();
    let len = text.len;
    let payload = if method == Method::HEAD {
        Text::default()
    } else {
        text
    };
    let mut resp = Response::new(payload);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if method == Method::HEAD {
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// An answer's body: its text in one or more parts, written one after the other, with
/// its whole length known (`Content-Length`). `/metrics` answers in two parts, the
/// stored metrics and the live ones, so no whole copy of the text is made per answer.
#[derive(Debug, Default)]
pub(super) struct Text {
    /// The parts not yet written, in reverse order.
    parts: Vec<Bytes>,
    /// The length of what is not yet written.
    len: u64,
}

impl Text {
    /// A body of `parts` written in order.
    pub(super) fn parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let mut parts: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        parts.reverse();
        let len = parts.iter().map(|p| p.len() as u64).sum();
        Text { parts, len }
    }
}

impl From<Bytes> for Text {
    fn from(bytes: Bytes) -> Self {
        Text::parts([bytes])
    }
}

impl Body for Text {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.pop();
        if let Some(part) = &next {
            self.len -= part.len() as u64;
        }
        Poll::Ready(next.map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
