//! Remote state backends, asked from the daemon's host: an HTTP(S) URL (GET, redirects
//! not followed, any answer judged by its status) or a TCP `host:port` (a connection
//! accepted). Each distinct target is asked at most once per probe interval, whatever
//! the number of groups and checks naming it: the answer of the current interval is
//! shared, as the clusters' `/readyz` is (see `crate::kube::cluster`).
//!
//! What a pass proves: the daemon's host reaches the backend. Not that the standby's
//! Pods do (another network, other egress rules, other DNS), nor that the credentials
//! the agent uses are valid. Details name the check, never the URL (it may carry a
//! token).

use crate::config::BackendConfig;
use crate::kube::call::{classify_reqwest, describe_reqwest};
use crate::model::ProbeReason;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube_failover_core::checks::{CheckKind, CheckResult, StateCheck};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a backend answered, before a check's expected statuses judge it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP answer with this status.
    Status(u16),
    /// A TCP connection was accepted.
    Connected,
    /// No answer: why (timeout, refused, connect, TLS, …) and a secret-free detail.
    Failed(ProbeReason, String),
}

/// One answer and when it arrived (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The answer.
    pub answer: Answer,
    /// When it arrived.
    pub at_unix: f64,
}

type SharedAnswer = Shared<BoxFuture<'static, Answered>>;

/// Asks backends, one request per distinct target and probe interval.
pub struct BackendProber {
    epoch: Instant,
    answers: Mutex<HashMap<String, (u128, SharedAnswer)>>,
}

impl Default for BackendProber {
    fn default() -> Self {
        BackendProber {
            epoch: Instant::now(),
            answers: Mutex::new(HashMap::new()),
        }
    }
}

impl BackendProber {
    /// The daemon's prober, shared by every group of the process.
    pub fn global() -> &'static BackendProber {
        static PROBER: OnceLock<BackendProber> = OnceLock::new();
        PROBER.get_or_init(BackendProber::default)
    }

    /// The check of `backend`: the answer of the current interval for its target (asked
    /// now unless another check of this interval asked already), judged by its expected
    /// statuses.
    pub async fn check(
        &self,
        http: &reqwest::Client,
        backend: &BackendConfig,
        interval: Duration,
        default_timeout: Duration,
    ) -> StateCheck {
        let timeout = backend.timeout.unwrap_or(default_timeout);
        let answered = self.answer(http, backend, interval, timeout).await;
        judge(backend, &answered)
    }

    fn answer(
        &self,
        http: &reqwest::Client,
        backend: &BackendConfig,
        interval: Duration,
        timeout: Duration,
    ) -> SharedAnswer {
        let key = match (&backend.url, &backend.tcp) {
            (Some(url), _) => format!("url\n{url}\n{}", timeout.as_nanos()),
            (None, Some(tcp)) => format!("tcp\n{tcp}\n{}", timeout.as_nanos()),
            (None, None) => String::new(),
        };
        let slot = self.epoch.elapsed().as_nanos() / interval.as_nanos().max(1);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, answer)) = answers.get(&key)
            && *s >= slot
        {
            return answer.clone();
        }
        let request: BoxFuture<'static, Answer> = match (&backend.url, &backend.tcp) {
            (Some(url), _) => get(http.clone(), url.clone(), timeout).boxed(),
            (None, Some(tcp)) => connect(tcp.clone(), timeout).boxed(),
            (None, None) => {
                async { Answer::Failed(ProbeReason::Error, "no url or tcp configured".to_string()) }
                    .boxed()
            }
        };
        let answer = async move {
            let answer = request.await;
            Answered {
                answer,
                at_unix: now_unix(),
            }
        }
        .boxed()
        .shared();
        answers.insert(key, (slot, answer.clone()));
        answer
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// GET `url`, bounded by `timeout` (DNS included); the body is never read.
async fn get(http: reqwest::Client, url: String, timeout: Duration) -> Answer {
    let request = http.get(&url).timeout(timeout).send();
    match tokio::time::timeout(timeout, request).await {
        Err(_) => Answer::Failed(
            ProbeReason::Timeout,
            format!("no answer within {timeout:?}"),
        ),
        Ok(Err(err)) => Answer::Failed(classify_reqwest(&err), describe_reqwest(&err)),
        Ok(Ok(response)) => Answer::Status(response.status().as_u16()),
    }
}

/// Connects to `target` (`host:port`), bounded by `timeout` (DNS included), and closes
/// the connection at once.
async fn connect(target: String, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target.as_str())).await {
        Err(_) => Answer::Failed(
            ProbeReason::Timeout,
            format!("no connection within {timeout:?}"),
        ),
        Ok(Ok(_stream)) => Answer::Connected,
        Ok(Err(err)) => {
            let (reason, text) = match err.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    (ProbeReason::Refused, "connection refused")
                }
                std::io::ErrorKind::TimedOut => (ProbeReason::Timeout, "timed out"),
                _ => (ProbeReason::Connect, "connection failed"),
            };
            Answer::Failed(reason, text.to_string())
        }
    }
}

/// Judges one answer by the check's expected statuses.
pub fn judge(backend: &BackendConfig, answered: &Answered) -> StateCheck {
    let name = &backend.name;
    let (result, detail) = match &answered.answer {
        Answer::Connected => (CheckResult::Ok, format!("backend {name}: connected")),
        Answer::Status(status) if backend.expects(*status) => {
            (CheckResult::Ok, format!("backend {name}: HTTP {status}"))
        }
        Answer::Status(status) => (
            CheckResult::HttpStatus,
            format!(
                "backend {name}: HTTP {status}, expected {}",
                match &backend.expected_status {
                    Some(set) => set
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "a status below 500".to_string(),
                }
            ),
        ),
        Answer::Failed(reason, text) => (
            CheckResult::Unreachable,
            format!("backend {name}: {text} ({})", reason.as_str()),
        ),
    };
    StateCheck {
        name: backend.check_name(),
        kind: CheckKind::Backend,
        gate: backend.gate,
        result,
        detail,
        checked_at_unix: Some(answered.at_unix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gate;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server answering every request with `status`, counting requests.
    async fn serve(status: u16) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                if sock.read(&mut buf).await.unwrap_or(0) > 0 {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (port, count, task)
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn url_backend(port: u16, expected: Option<Vec<u16>>) -> BackendConfig {
        BackendConfig {
            name: "s3".into(),
            url: Some(format!(
                "http://127.0.0.1:{port}/bucket?X-Amz-Signature=hidden"
            )),
            tcp: None,
            expected_status: expected,
            gate: Gate::Block,
            timeout: Some(Duration::from_secs(2)),
        }
    }

    #[tokio::test]
    async fn any_answer_below_500_proves_reachability_by_default() {
        let (port, _, server) = serve(403).await;
        let http =
            crate::probe::http::client(Duration::from_secs(2), crate::user_agent::anonymous())
                .unwrap();
        let prober = BackendProber::default();
        let interval = Duration::from_secs(5);
        let check = prober
            .check(&http, &url_backend(port, None), interval, interval)
            .await;
        assert_eq!(check.result, CheckResult::Ok, "{check:?}");
        assert_eq!(check.detail, "backend s3: HTTP 403");
        assert_eq!(check.name, "backend:s3");
        assert_eq!(check.gate, Gate::Block);
        let strict = BackendProber::default()
            .check(
                &http,
                &url_backend(port, Some(vec![200])),
                interval,
                interval,
            )
            .await;
        server.abort();
        assert_eq!(strict.result, CheckResult::HttpStatus);
        assert_eq!(strict.detail, "backend s3: HTTP 403, expected 200");
    }

    #[tokio::test]
    async fn refused_url_and_tcp_are_unreachable_and_never_show_the_url() {
        let http =
            crate::probe::http::client(Duration::from_secs(2), crate::user_agent::anonymous())
                .unwrap();
        let interval = Duration::from_secs(5);
        let port = closed_port();
        let check = BackendProber::default()
            .check(&http, &url_backend(port, None), interval, interval)
            .await;
        assert_eq!(check.result, CheckResult::Unreachable, "{check:?}");
        assert!(check.detail.ends_with("(refused)"), "{}", check.detail);
        assert!(!check.detail.contains("hidden") && !check.detail.contains("127.0.0.1"));
        let tcp = BackendConfig {
            url: None,
            tcp: Some(format!("127.0.0.1:{port}")),
            ..url_backend(port, None)
        };
        let check = BackendProber::default()
            .check(&http, &tcp, interval, interval)
            .await;
        assert_eq!(check.result, CheckResult::Unreachable);
        assert_eq!(check.detail, "backend s3: connection refused (refused)");
        let (open, _, server) = serve(200).await;
        let tcp = BackendConfig {
            tcp: Some(format!("127.0.0.1:{open}")),
            ..tcp
        };
        let check = BackendProber::default()
            .check(&http, &tcp, interval, interval)
            .await;
        server.abort();
        assert!(check.passed(), "{check:?}");
    }

    #[tokio::test]
    async fn one_request_per_target_and_interval_however_many_checks_ask() {
        let (port, count, server) = serve(200).await;
        let http =
            crate::probe::http::client(Duration::from_secs(2), crate::user_agent::anonymous())
                .unwrap();
        let prober = BackendProber::default();
        let interval = Duration::from_millis(400);
        let backend = url_backend(port, None);
        let other_group = BackendConfig {
            name: "state".into(),
            gate: Gate::Warn,
            ..backend.clone()
        };
        // Align with the start of an interval, then ask as five checks would.
        let into = prober.epoch.elapsed().as_nanos() % interval.as_nanos();
        tokio::time::sleep(interval - Duration::from_nanos(into as u64) + interval / 10).await;
        for b in [&backend, &other_group, &backend, &other_group, &backend] {
            assert!(prober.check(&http, b, interval, interval).await.passed());
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "one request for five asks");
        tokio::time::sleep(interval).await;
        assert!(
            prober
                .check(&http, &backend, interval, interval)
                .await
                .passed()
        );
        server.abort();
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "the next interval asks again"
        );
    }
}
