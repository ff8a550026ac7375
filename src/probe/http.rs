//! Optional HTTP checks against the primary's workload: `GET url` must answer with the
//! expected status. Details name the check, never the URL (it may carry a token).

use super::{classify_elapsed, classify_reqwest, describe_reqwest};
use crate::config::HttpCheckConfig;
use crate::model::{ProbeOutcome, ProbeReason};
use std::time::{Duration, Instant};

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
            format!("http check {name}: HTTP {got}, expected {expected}"),
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
