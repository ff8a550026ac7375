//! The API server probe: `GET /readyz`, which every authenticated identity may call
//! (the built-in `system:public-info-viewer` role), so it needs no grant of its own.

use crate::kube::call::{CallError, bounded, describe};
use crate::model::{ProbeOutcome, ProbeReason};
use std::time::{Duration, Instant};

/// Asks the API server whether it is ready: passes on HTTP 200 with body `ok`.
pub async fn readyz(client: &kube::Client, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let request = match ::http::Request::get("/readyz").body(Vec::new()) {
        Ok(request) => request,
        // A constant path cannot fail to build; classified anyway rather than unwrapped.
        Err(_) => {
            return ProbeOutcome::fail(ProbeReason::Error, start.elapsed(), "readyz request");
        }
    };
    let result = bounded(timeout, client.request_text(request)).await;
    let latency = start.elapsed();
    match result {
        Ok(body) => outcome_of_body(&body, latency),
        Err(err) => failure(&err, latency),
    }
}

fn outcome_of_body(body: &str, latency: Duration) -> ProbeOutcome {
    if body.trim() == "ok" {
        ProbeOutcome::ok(latency)
    } else {
        ProbeOutcome::fail(
            ProbeReason::Decode,
            latency,
            "/readyz answered 200 without \"ok\"",
        )
    }
}

fn failure(err: &CallError, latency: Duration) -> ProbeOutcome {
    let detail = match err {
        CallError::Timeout(after) => format!("/readyz: no answer within {after:?}"),
        // A failing /readyz answers 500 and lists its failed checks in the body; the
        // status code is what counts here.
        CallError::Kube(kube_err) => format!("/readyz: {}", describe(kube_err)),
    };
    ProbeOutcome::fail(err.reason(), latency, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_must_be_ok() {
        let latency = Duration::from_millis(3);
        assert!(outcome_of_body("ok", latency).passed());
        assert!(outcome_of_body("ok\n", latency).passed());
        let bad = outcome_of_body("[-]etcd failed", latency);
        assert_eq!(bad.reason, ProbeReason::Decode);
        assert_eq!(bad.latency, latency);
    }

    #[test]
    fn failures_name_the_endpoint() {
        let err = CallError::Timeout(Duration::from_secs(2));
        let out = failure(&err, Duration::from_secs(2));
        assert_eq!(out.reason, ProbeReason::Timeout);
        assert_eq!(out.detail, "/readyz: no answer within 2s");
        let err = CallError::Kube(kube::Error::Api(
            kube::core::Status::failure("[-]etcd failed", "InternalError")
                .with_code(500)
                .boxed(),
        ));
        let out = failure(&err, Duration::ZERO);
        assert_eq!(out.reason, ProbeReason::HttpStatus);
        assert_eq!(out.detail, "/readyz: HTTP 500 InternalError");
    }
}
