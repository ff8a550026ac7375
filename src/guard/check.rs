//! `kube-failover guard check`: the agent container's liveness probe beside a sidecar
//! guard. It is an exec probe, run from the guard's binary in the Pod's emptyDir, so the
//! agent's image needs no shell or HTTP client, and the sidecar's port stays on
//! 127.0.0.1 (the Pod's containers share it; kubelet's HTTP probes would need it on the
//! Pod's IP, open to the whole cluster network). It asks the sidecar's `GET /agent`:
//! 200 passes (and runs the agent's own probe command, when one is given, for its
//! result); anything else fails, a sidecar that does not answer included, as a wrapper
//! that cannot start runs no agent.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Where a sidecar guard with the default `listen` answers.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9095/agent";
/// The most of an answer read.
const MAX_ANSWER: u64 = 8 * 1024;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The URL is not one the check can ask.
    #[error("--url {url:?}: {why}")]
    BadUrl {
        /// The URL, as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No connection, or no whole answer within the timeout.
    #[error("the sidecar guard does not answer at {url}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An answer that is not HTTP.
    #[error("the answer at {url} is not HTTP: {start:?}")]
    NotHttp {
        /// The URL.
        url: String,
        /// Its first characters.
        start: String,
    },
    /// The sidecar refuses the agent (or answers another status).
    #[error("the sidecar guard refuses the agent (HTTP {status}): {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its answer's first line.
        body: String,
    },
}

/// Asks `url` within `timeout`: the sidecar's answer when it lets the agent run.
pub fn ask(url: &str, timeout: Duration) -> Result<String, CheckError> {
    let bad = |why: &str| CheckError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if parsed.scheme() != "http" {
        return Err(bad(
            "only http:// (the sidecar's port on the Pod's loopback)",
        ));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let mut target = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    let unreachable = |source| CheckError::Unreachable {
        url: url.to_string(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left()))
        .map_err(unreachable)?;
    let request = format!(
        "GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-failover-guard-check\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    // HTTP/1.0: the answer ends with the connection. Each read waits at most what is
    // left of the timeout (kubelet's own timeoutSeconds bounds the whole probe).
    let mut answer = Vec::new();
    stream.set_read_timeout(Some(left())).map_err(unreachable)?;
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(unreachable)?;
    let (status, body) = parse(&answer).ok_or_else(|| CheckError::NotHttp {
        url: url.to_string(),
        start: crate::config::printable(&String::from_utf8_lossy(&answer), 40),
    })?;
    if status == 200 {
        Ok(body)
    } else {
        Err(CheckError::Refused { status, body })
    }
}

/// The status and the body's first line of an HTTP/1.x answer.
fn parse(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let status_line = text.lines().next()?;
    let mut words = status_line.split_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = words.next()?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_default();
    Some((status, crate::config::printable(&body, 300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that answers `answer` to the first request.
    fn answering(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The whole request first: a socket closed with unread bytes resets.
            let mut request = Vec::new();
            let mut buf = [0u8; 256];
            while !request.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer.as_bytes());
        });
        format!("http://127.0.0.1:{port}/agent")
    }

    #[test]
    fn passes_on_200_and_fails_on_anything_else() {
        let ok = answering("HTTP/1.0 200 OK\r\ncontent-length: 12\r\n\r\nallowed: x\n\n");
        assert_eq!(ask(&ok, Duration::from_secs(5)).unwrap(), "allowed: x");
        let refused = answering(
            "HTTP/1.0 503 Service Unavailable\r\n\r\nrefused: other_side_active: the record says the other side is active\n",
        );
        let e = ask(&refused, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the sidecar guard refuses the agent (HTTP 503): refused: other_side_active: the record says the other side is active"
        );
        let garbage = answering("SSH-2.0-x\r\n");
        assert!(matches!(
            ask(&garbage, Duration::from_secs(5)),
            Err(CheckError::NotHttp { .. })
        ));
    }

    #[test]
    fn a_sidecar_that_does_not_answer_fails_the_check() {
        // A port with nobody listening: bound, then closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/agent");
        let e = ask(&url, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, CheckError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");
        // Accepts and never answers: the timeout.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/agent",
            silent.local_addr().unwrap().port()
        );
        let started = Instant::now();
        let e = ask(&url, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, CheckError::Unreachable { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(silent);
    }

    #[test]
    fn only_plain_http_urls() {
        for (url, why) in [
            ("https://127.0.0.1:9095/agent", "only http://"),
            ("127.0.0.1:9095", "not a URL"),
        ] {
            let e = ask(url, Duration::from_secs(1)).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--url {url:?}: {why}")), "{e}");
        }
    }
}
