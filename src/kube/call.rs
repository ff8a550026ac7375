//! Kubernetes call plumbing shared by probes, the record and the actuator: a hard time
//! bound on every call ([`bounded`]), and the classification of every failure into a
//! bounded [`ProbeReason`] with a short, secret-free description, so a 403 means
//! `forbidden` everywhere.

use crate::model::ProbeReason;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::time::Duration;

/// Why a bounded Kubernetes call did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the bound.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The client or the API server reported an error. Shown only as [`describe`] says
    /// it, and not a source: kube's own text may carry the server's message or a URL.
    #[error("{}", describe(.0))]
    Kube(kube::Error),
}

impl CallError {
    /// The bounded reason code of this failure.
    pub fn reason(&self) -> ProbeReason {
        match self {
            CallError::Timeout(_) => ProbeReason::Timeout,
            CallError::Kube(err) => classify(err),
        }
    }

    /// The HTTP status code the API server answered with, if it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            CallError::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }
}

/// Runs one Kubernetes call with a hard time bound.
pub async fn bounded<T, F>(timeout: Duration, call: F) -> Result<T, CallError>
where
    F: Future<Output = Result<T, kube::Error>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(CallError::Kube),
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

/// Classifies a kube client error into a bounded reason.
///
/// API answers map by status code (401, 403, 404, other); transport failures are found
/// by walking the error's source chain, because kube wraps them in several layers
/// (`Service` → hyper-util client error → connect error → `io::Error` → rustls error).
pub fn classify(err: &kube::Error) -> ProbeReason {
    match err {
        kube::Error::Api(status) => classify_status(status),
        kube::Error::SerdeError(_)
        | kube::Error::FromUtf8(_)
        | kube::Error::LinesCodecMaxLineLengthExceeded => ProbeReason::Decode,
        kube::Error::RustlsTls(_) | kube::Error::TlsRequired => ProbeReason::Tls,
        // Credentials could not be obtained or refreshed (token file, exec plugin).
        kube::Error::Auth(_) => ProbeReason::Unauthorized,
        kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            // A failure below the API answer with no more specific cause is a transport
            // failure (for example a name that does not resolve).
            chain_reason(err).unwrap_or(ProbeReason::Connect)
        }
        kube::Error::HyperError(h) => chain_reason(err).unwrap_or(
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                ProbeReason::Connect
            } else {
                ProbeReason::Error
            },
        ),
        _ => chain_reason(err).unwrap_or(ProbeReason::Error),
    }
}

fn classify_status(status: &kube::core::Status) -> ProbeReason {
    // The HTTP code decides; the reason only stands in when the code is missing.
    // (kube's `Status::is_forbidden` and friends never fall back to the code, so a
    // proxy's plain-text 403 would not count as forbidden there.)
    match (status.code, status.reason.as_str()) {
        (401, _) | (0, "Unauthorized") => ProbeReason::Unauthorized,
        (403, _) | (0, "Forbidden") => ProbeReason::Forbidden,
        (404, _) | (0, "NotFound") => ProbeReason::NotFound,
        (429, _) | (0, "TooManyRequests") => ProbeReason::Throttled,
        _ => ProbeReason::HttpStatus,
    }
}

/// Classifies an HTTP check's error into a bounded reason.
pub fn classify_reqwest(err: &reqwest::Error) -> ProbeReason {
    if err.is_timeout() {
        return ProbeReason::Timeout;
    }
    if let Some(reason) = chain_reason(err) {
        return reason;
    }
    if err.is_connect() {
        ProbeReason::Connect
    } else if err.is_decode() || err.is_body() {
        ProbeReason::Decode
    } else if err.is_status() {
        ProbeReason::HttpStatus
    } else {
        ProbeReason::Error
    }
}

/// The reason a call cut off by `tokio::time::timeout` gets; here so every caller
/// says the same.
pub fn classify_elapsed(_: &tokio::time::error::Elapsed) -> ProbeReason {
    ProbeReason::Timeout
}

/// Walks an error's causes, innermost last, for a transport failure we can name.
fn chain_reason(err: &(dyn StdError + 'static)) -> Option<ProbeReason> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    // Error chains are short; the bound only guards against a pathological cycle.
    for _ in 0..32 {
        let e = current?;
        if e.is::<rustls::Error>() {
            return Some(ProbeReason::Tls);
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return Some(ProbeReason::Timeout);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_timeout()
        {
            return Some(ProbeReason::Timeout);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(reason) = io_reason(io.kind()) {
                return Some(reason);
            }
            // `io::Error::source` skips the wrapped error itself (tokio-rustls wraps
            // the rustls error as `InvalidData`), so step into it explicitly.
            current = io.get_ref().map(|inner| inner as &(dyn StdError + 'static));
            continue;
        }
        current = e.source();
    }
    None
}

fn io_reason(kind: io::ErrorKind) -> Option<ProbeReason> {
    use io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => Some(ProbeReason::Refused),
        K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => Some(ProbeReason::Connect),
        K::TimedOut => Some(ProbeReason::Timeout),
        _ => None,
    }
}

/// A short, secret-free description of a kube error: the HTTP status for API answers,
/// the transport failure otherwise. Never the server's message (it can be long and
/// echo request content) nor a URL (it can carry credentials).
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) if s.reason.is_empty() || s.reason == "Failed to parse error data" => {
            format!("HTTP {}", s.code)
        }
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        // Written by this crate's exec plugin runner (src/kube/client/exec.rs), secret-free:
        // it says which plugin gave no credential and why.
        kube::Error::Auth(kube::client::AuthError::AuthExec(message)) => {
            format!("credentials unavailable: {message}")
        }
        _ => {
            let reason = classify(err);
            match tls_cause(err) {
                Some(tls) => format!("TLS: {tls}"),
                None => reason_text(reason).to_string(),
            }
        }
    }
}

/// A short, secret-free description of an HTTP check's error.
pub fn describe_reqwest(err: &reqwest::Error) -> String {
    match tls_cause(err) {
        Some(tls) => format!("TLS: {tls}"),
        None => reason_text(classify_reqwest(err)).to_string(),
    }
}

fn reason_text(reason: ProbeReason) -> &'static str {
    match reason {
        ProbeReason::Refused => "connection refused",
        ProbeReason::Connect => "connection failed",
        ProbeReason::Tls => "TLS failure",
        ProbeReason::Timeout => "timed out",
        ProbeReason::Decode => "could not decode the answer",
        ProbeReason::Unauthorized => "credentials rejected or unavailable",
        other => other.as_str(),
    }
}

/// The rustls error in a chain, if any: its text names the certificate problem.
fn tls_cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    for _ in 0..32 {
        let e = current?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("message", reason).with_code(code).boxed())
    }

    fn service(err: impl StdError + Send + Sync + 'static) -> kube::Error {
        kube::Error::Service(Box::new(err))
    }

    #[test]
    fn api_statuses_map_by_code() {
        assert_eq!(
            classify(&api(401, "Unauthorized")),
            ProbeReason::Unauthorized
        );
        assert_eq!(classify(&api(403, "Forbidden")), ProbeReason::Forbidden);
        assert_eq!(classify(&api(404, "NotFound")), ProbeReason::NotFound);
        assert_eq!(
            classify(&api(429, "TooManyRequests")),
            ProbeReason::Throttled,
            "throttling says the watcher asks too much, not that the primary is down"
        );
        assert_eq!(classify(&api(409, "Conflict")), ProbeReason::HttpStatus);
        assert_eq!(
            classify(&api(500, "InternalError")),
            ProbeReason::HttpStatus
        );
        // A body that was not a Status keeps the HTTP code.
        assert_eq!(
            classify(&api(403, "Failed to parse error data")),
            ProbeReason::Forbidden
        );
    }

    #[test]
    fn transport_errors_found_in_the_chain() {
        let refused = service(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&refused), ProbeReason::Refused);
        let reset = service(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&reset), ProbeReason::Connect);
        let timed_out = service(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify(&timed_out), ProbeReason::Timeout);
        // tokio-rustls wraps handshake failures as InvalidData around the rustls error.
        let tls = service(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(classify(&tls), ProbeReason::Tls);
        assert!(describe(&tls).starts_with("TLS: "), "{}", describe(&tls));
        // Nested deeper, as hyper-util's connect error does.
        let nested = service(Wrapper(Box::new(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(classify(&nested), ProbeReason::Refused);
        // Nothing recognisable below a transport failure is still a transport failure.
        let unknown = service(io::Error::other("dns error"));
        assert_eq!(classify(&unknown), ProbeReason::Connect);
    }

    #[test]
    fn decode_errors() {
        let serde = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(
            classify(&kube::Error::SerdeError(serde)),
            ProbeReason::Decode
        );
    }

    #[test]
    fn descriptions_carry_no_server_message() {
        let err = kube::Error::Api(
            Status::failure("secret-looking text", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert_eq!(describe(&err), "HTTP 403 Forbidden");
        let err = service(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(describe(&err), "connection refused");
    }

    #[test]
    fn missing_exec_credentials_are_unauthorized_and_say_why() {
        let err = kube::Error::Auth(kube::client::AuthError::AuthExec(
            "primary cluster: exec credential plugin /bin/p did not answer within 750ms".into(),
        ));
        assert_eq!(classify(&err), ProbeReason::Unauthorized);
        assert_eq!(
            describe(&err),
            "credentials unavailable: primary cluster: exec credential plugin /bin/p did not answer within 750ms"
        );
        // kube's other credential errors can quote what a plugin printed: never shown.
        let err = kube::Error::Auth(kube::client::AuthError::ExecPluginFailed);
        assert_eq!(describe(&err), "credentials rejected or unavailable");
    }

    #[tokio::test]
    async fn bounded_calls_time_out() {
        let never = std::future::pending::<Result<(), kube::Error>>();
        let err = bounded(Duration::from_millis(10), never).await.unwrap_err();
        assert_eq!(err.reason(), ProbeReason::Timeout);
        assert_eq!(err.status_code(), None);
    }

    /// A client pointed at a closed loopback port: the real kube/hyper error chain.
    #[tokio::test]
    async fn real_kube_client_refused_connection() {
        let port = closed_port();
        let client = plain_client(port);
        let err = client
            .request_text(http_get("/readyz"))
            .await
            .expect_err("nothing listens there");
        assert_eq!(classify(&err), ProbeReason::Refused, "{err:?}");
    }

    /// An HTTPS client talking to a server that answers in plain HTTP fails the TLS
    /// handshake: the real rustls error must be found in the chain.
    #[tokio::test]
    async fn real_kube_client_tls_failure() {
        crate::tls::install_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut sock, _)) = listener.accept().await {
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
        config.accept_invalid_certs = true;
        let client = kube::Client::try_from(config).unwrap();
        let err = bounded(
            Duration::from_secs(5),
            client.request_text(http_get("/readyz")),
        )
        .await
        .expect_err("not TLS");
        server.abort();
        assert_eq!(err.reason(), ProbeReason::Tls, "{err:?}");
    }

    /// A server that accepts but never answers: the bound turns it into `timeout`.
    #[tokio::test]
    async fn real_kube_client_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let client = plain_client(port);
        let err = bounded(
            Duration::from_millis(300),
            client.request_text(http_get("/readyz")),
        )
        .await
        .expect_err("silent server");
        server.abort();
        assert_eq!(err.reason(), ProbeReason::Timeout);
    }

    #[tokio::test]
    async fn real_reqwest_errors() {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let err = http
            .get(format!("http://127.0.0.1:{}/", closed_port()))
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify_reqwest(&err), ProbeReason::Refused, "{err:?}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let err = http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        server.abort();
        assert_eq!(classify_reqwest(&err), ProbeReason::Timeout, "{err:?}");
    }

    #[derive(Debug)]
    struct Wrapper(Box<dyn StdError + Send + Sync>);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapper")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    fn plain_client(port: u16) -> kube::Client {
        crate::tls::install_provider();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn http_get(path: &str) -> ::http::Request<Vec<u8>> {
        ::http::Request::get(path).body(Vec::new()).unwrap()
    }
}
