//! The guard's admin port: `GET /healthz` (200 while the loop turns, 503 when it has
//! not for the stall limit), `GET /metrics`, and for a sidecar guard `GET /agent` (200
//! while the agent may run, 503 with the reason once it must stop). Read-only;
//! anything else is 404 or 405.

use super::verdict::Verdict;
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

/// What the admin port reads.
#[derive(Clone)]
pub(super) struct Admin {
    pub(super) metrics: GuardMetrics,
    pub(super) progress: Arc<Progress>,
    /// How long the loop may go without a turn before `/healthz` says 503.
    pub(super) stall: Duration,
    /// A sidecar's verdict; `None` for a wrapper.
    pub(super) verdict: Option<Arc<Verdict>>,
}

/// Serves until the process ends; each connection gets 5 s to send its headers.
pub(super) async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = route(req.method(), req.uri().path(), &admin);
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

fn route(method: &Method, path: &str, admin: &Admin) -> Response<Full<Bytes>> {
    let Admin {
        metrics,
        progress,
        stall,
        verdict,
    } = admin;
    let stall = *stall;
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
        "/agent" => {
            let Some(verdict) = verdict else {
                return text(
                    StatusCode::NOT_FOUND,
                    "not found: this guard runs its agent as its child (form = \"wrapper\"); \
                     /agent is a sidecar's\n"
                        .into(),
                );
            };
            let (allowed, body) = verdict.answer();
            let answer = if allowed { "allowed" } else { "refused" };
            metrics.verdicts.with_label_values(&[answer]).inc();
            let status = if allowed {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /metrics or (a sidecar) /agent\n".into(),
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
    use super::super::config::GuardForm;
    use super::super::decide::GuardReason;
    use super::*;
    use crate::model::Side;
    use http_body_util::BodyExt;

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn admin(form: GuardForm) -> Admin {
        Admin {
            metrics: GuardMetrics::new("env0", Side::Primary, form),
            progress: Arc::new(Progress::default()),
            stall: Duration::from_secs(5),
            verdict: (form == GuardForm::Sidecar).then(|| Arc::new(Verdict::default())),
        }
    }

    #[tokio::test]
    async fn read_only_routes() {
        let admin = admin(GuardForm::Wrapper);
        let ok = route(&Method::GET, "/healthz", &admin);
        assert_eq!(ok.status(), StatusCode::OK);
        let m = route(&Method::GET, "/metrics", &admin);
        let text = body(m).await;
        // The same text in every process: labels sorted, group and side included.
        assert!(
            text.lines()
                .any(|l| l == r#"kube_failover_guard_agent_running{group="env0",side="primary"} 0"#),
            "{text}"
        );
        assert!(!text.contains("kube_failover_guard_verdict"), "{text}");
        let post = route(&Method::POST, "/healthz", &admin);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            route(&Method::GET, "/x", &admin).status(),
            StatusCode::NOT_FOUND
        );
        let agent = route(&Method::GET, "/agent", &admin);
        assert_eq!(
            agent.status(),
            StatusCode::NOT_FOUND,
            "a wrapper has no verdict"
        );
        assert!(body(agent).await.contains("form = \"wrapper\""));
    }

    /// Each registry of the prometheus crate appends its common labels in its own hash
    /// map's order: the guard's labels must not depend on it.
    #[tokio::test]
    async fn metric_labels_come_in_one_order() {
        for _ in 0..16 {
            let admin = admin(GuardForm::Wrapper);
            admin
                .metrics
                .changes
                .with_label_values(&["stop", "other_side_active"])
                .inc();
            let text = body(route(&Method::GET, "/metrics", &admin)).await;
            assert!(
                text.lines().any(|l| l
                    == r#"kube_failover_guard_agent_changes_total{action="stop",group="env0",reason="other_side_active",side="primary"} 1"#),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_sidecar_answers_its_verdict_and_counts_the_asks() {
        let admin = admin(GuardForm::Sidecar);
        let verdict = admin.verdict.clone().expect("a sidecar's verdict");
        let first = route(&Method::GET, "/agent", &admin);
        assert_eq!(
            first.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "not judged yet"
        );
        verdict.allow(GuardReason::SideActive);
        let ok = route(&Method::GET, "/agent", &admin);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            body(ok).await,
            "allowed: side_active: the record says this side is active\n"
        );
        verdict.refuse(GuardReason::OtherSideActive, Some(2));
        let refused = route(&Method::GET, "/agent", &admin);
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body(refused)
                .await
                .starts_with("refused: other_side_active: ")
        );
        assert_eq!(
            route(&Method::POST, "/agent", &admin).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let text = body(route(&Method::GET, "/metrics", &admin)).await;
        let count = |answer: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("kube_failover_guard_verdict_requests_total{")
                        && l.contains(&format!(r#"answer="{answer}""#))
                })
                .unwrap_or_default()
                .to_string()
        };
        assert!(count("allowed").ends_with(" 1"), "{text}");
        assert!(count("refused").ends_with(" 2"), "{text}");
        assert!(
            text.contains("kube_failover_guard_agent_allowed{"),
            "{text}"
        );
        assert!(
            !text.contains("kube_failover_guard_agent_running"),
            "{text}"
        );
    }
}
