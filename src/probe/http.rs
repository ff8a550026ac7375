//! Optional HTTP checks against the primary's workload: `GET url` must answer with the
//! expected status. Details name the check, never the URL (it may carry a token).

use crate::config::HttpCheckConfig;
use crate::kube::call::{classify_elapsed, classify_reqwest, describe_reqwest};
use crate::model::{ProbeOutcome, ProbeReason};
use std::time::{Duration, Instant};

/// The client for HTTP checks. Redirects are not followed: a check is about the
/// configured URL, and a 3xx (a login page, a maintenance page elsewhere) passes only
/// when it is the expected status. `timeout` bounds each request; each carries
/// `user_agent` ([`crate::user_agent`]). Webhook notices go through this client too.
pub fn client(
    timeout: Duration,
    user_agent: http::HeaderValue,
) -> reqwest::Result<reqwest::Client> {
    crate::tls::install_provider();
    reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Runs one HTTP check, bounded by its own timeout or, when it has none, `default_timeout`.
pub async fn check(
    client: &reqwest::Client,
    check: &HttpCheckConfig,
    default_timeout: Duration,
) -> ProbeOutcome {
    let timeout = check.timeout.unwrap_or(default_timeout);
    let start = Instant::now();
    // reqwest's own timeout covers connect and body; the outer bound also covers
    // anything reqwest does before it starts its timer (DNS resolution).
    let request = client.get(&check.url).timeout(timeout).send();
    let result = tokio::time::timeout(timeout, request).await;
    let latency = start.elapsed();
    let name = &check.name;
    match result {
        Err(elapsed) => ProbeOutcome::fail(
            classify_elapsed(&elapsed),
            latency,
            format!("http check {name}: no answer within {timeout:?}"),
        ),
        Ok(Err(err)) => ProbeOutcome::fail(
            classify_reqwest(&err),
            latency,
            format!("http check {name}: {}", describe_reqwest(&err)),
        ),
        Ok(Ok(response)) => status_outcome(
            name,
            response.status().as_u16(),
            check.expected_status,
            latency,
        ),
    }
}

fn status_outcome(name: &str, got: u16, expected: u16, latency: Duration) -> ProbeOutcome {
    if got == expected {
        ProbeOutcome::ok(latency)
    } else {
        ProbeOutcome::fail(
            ProbeReason::HttpStatus,
            latency,
            format!(
                "http check {name}: HTTP {got}{}, expected {expected}",
                if (300..400).contains(&got) {
                    " (a redirect, not followed)"
                } else {
                    ""
                }
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route loopback server answering every request with `status`.
    async fn serve(status: u16) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (port, task)
    }

    /// A loopback server answering `GET /start` with 302 to `/ok`, and anything else
    /// with 200.
    async fn serve_redirect() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let reply = if buf[..n].starts_with(b"GET /start ") {
                    "HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\n\
                     connection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (port, task)
    }

    fn config(port: u16, expected: u16) -> HttpCheckConfig {
        HttpCheckConfig {
            name: "agent".into(),
            url: format!("http://127.0.0.1:{port}/health?token=hidden"),
            expected_status: expected,
            timeout: Some(Duration::from_secs(2)),
        }
    }

    #[tokio::test]
    async fn expected_status_passes_other_fails() {
        let (port, server) = serve(204).await;
        let client = reqwest::Client::new();
        let ok = check(&client, &config(port, 204), Duration::from_secs(1)).await;
        assert!(ok.passed(), "{ok:?}");
        let bad = check(&client, &config(port, 200), Duration::from_secs(1)).await;
        server.abort();
        assert_eq!(bad.reason, ProbeReason::HttpStatus);
        assert_eq!(bad.detail, "http check agent: HTTP 204, expected 200");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (port, server) = serve_redirect().await;
        let start = |expected| HttpCheckConfig {
            url: format!("http://127.0.0.1:{port}/start"),
            ..config(port, expected)
        };
        let timeout = Duration::from_secs(2);
        // A client that follows redirects would see the 200 of the target page.
        let following = reqwest::Client::new();
        let followed = check(&following, &start(200), timeout).await;
        assert!(followed.passed(), "control: {followed:?}");

        let client = client(timeout, crate::user_agent::anonymous()).unwrap();
        let bad = check(&client, &start(200), timeout).await;
        assert_eq!(bad.reason, ProbeReason::HttpStatus, "{bad:?}");
        assert_eq!(
            bad.detail,
            "http check agent: HTTP 302 (a redirect, not followed), expected 200"
        );
        let ok = check(&client, &start(302), timeout).await;
        server.abort();
        assert!(ok.passed(), "{ok:?}");
    }

    #[tokio::test]
    async fn refused_connection_hides_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = reqwest::Client::new();
        let out = check(&client, &config(port, 200), Duration::from_secs(1)).await;
        assert_eq!(out.reason, ProbeReason::Refused, "{out:?}");
        assert!(!out.detail.contains("hidden"), "{}", out.detail);
    }
}
