//! The guard's admin port: `GET /healthz` (200 while the loop turns, 503 when it has
//! not for the stall limit) and `GET /metrics`. Read-only; anything else is 404 or 405.

use super::{GuardMetrics, Progress};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves until the process ends; each connection gets 5 s to send its headers.
pub(super) async fn serve(
    listener: TcpListener,
    metrics: GuardMetrics,
    progress: Arc<Progress>,
    stall: Duration,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (metrics, progress) = (metrics.clone(), progress.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = route(req.method(), req.uri().path(), &metrics, &progress, stall);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(
    method: &Method,
    path: &str,
    metrics: &GuardMetrics,
    progress: &Progress,
    stall: Duration,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => {
            let age = progress.age();
            if age <= stall {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the guard's loop has not turned for {}\n",
                        humantime::format_duration(Duration::from_millis(
                            u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
                        ))
                    ),
                )
            }
        }
        "/metrics" => text(StatusCode::OK, metrics.render()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::super::decide::GuardSide;
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn read_only_routes() {
        let metrics = GuardMetrics::new("env0", GuardSide::Primary);
        let progress = Progress::default();
        let stall = Duration::from_secs(5);
        let ok = route(&Method::GET, "/healthz", &metrics, &progress, stall);
        assert_eq!(ok.status(), StatusCode::OK);
        let m = route(&Method::GET, "/metrics", &metrics, &progress, stall);
        let text = body(m).await;
        // Label order is the registry's own: look for each label.
        let running = text
            .lines()
            .find(|l| l.starts_with("kube_failover_guard_agent_running{"))
            .unwrap_or_default();
        assert!(
            running.contains(r#"group="env0""#)
                && running.contains(r#"side="primary""#)
                && running.ends_with(" 0"),
            "{text}"
        );
        let post = route(&Method::POST, "/healthz", &metrics, &progress, stall);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            route(&Method::GET, "/x", &metrics, &progress, stall).status(),
            StatusCode::NOT_FOUND
        );
    }
}
