//! An HTTP-aware fault proxy in front of one cluster's API server: it terminates TLS,
//! looks at each request's method and path, and answers, delays or resets it by rules a
//! test changes at run time; everything else goes to the API server as the daemon's
//! restricted identity, responses streamed (watches included).
//!
//! The TCP [`crate::FaultProxy`] cannot do this: TLS passes through it, so it never sees
//! a path. This one can fail `/readyz` alone while every other request is still served,
//! which is what an API server with one failing readiness check looks like.

use crate::cluster::Cluster;
use crate::error::{Result, TestbedError};
use crate::pki::Pki;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A failing `/readyz` body (status 500) as kube-apiserver v1.35 writes it, here with its
/// etcd checks failing: one line per check, reasons withheld from non-verbose callers.
pub const READYZ_FAILED_BODY: &str = concat!(
    "[+]ping ok\n",
    "[+]log ok\n",
    "[-]etcd failed: reason withheld\n",
    "[-]etcd-readiness failed: reason withheld\n",
    "[+]informer-sync ok\n",
    "[+]poststarthook/start-apiserver-admission-initializer ok\n",
    "[+]poststarthook/generic-apiserver-start-informers ok\n",
    "[+]poststarthook/max-in-flight-filter ok\n",
    "[+]poststarthook/storage-object-count-tracker-hook ok\n",
    "[+]poststarthook/start-apiextensions-informers ok\n",
    "[+]poststarthook/start-apiextensions-controllers ok\n",
    "[+]poststarthook/crd-informer-synced ok\n",
    "[+]poststarthook/start-system-namespaces-controller ok\n",
    "[+]poststarthook/start-cluster-authentication-info-controller ok\n",
    "[+]poststarthook/start-kube-apiserver-identity-lease-controller ok\n",
    "[+]poststarthook/start-kube-apiserver-identity-lease-garbage-collector ok\n",
    "[+]poststarthook/start-legacy-token-tracking-controller ok\n",
    "[+]poststarthook/start-service-ip-repair-controllers ok\n",
    "[+]poststarthook/rbac/bootstrap-roles ok\n",
    "[+]poststarthook/scheduling/bootstrap-system-priority-classes ok\n",
    "[+]poststarthook/priority-and-fairness-config-producer ok\n",
    "[+]poststarthook/bootstrap-controller ok\n",
    "[+]poststarthook/start-kubernetes-service-cidr-controller ok\n",
    "[+]poststarthook/start-kube-aggregator-informers ok\n",
    "[+]poststarthook/apiservice-status-local-available-controller ok\n",
    "[+]poststarthook/apiservice-status-remote-available-controller ok\n",
    "[+]poststarthook/apiservice-registration-controller ok\n",
    "[+]poststarthook/apiservice-discovery-controller ok\n",
    "[+]poststarthook/kube-apiserver-autoregistration ok\n",
    "[+]autoregister-completion ok\n",
    "[+]poststarthook/apiservice-openapi-controller ok\n",
    "[+]poststarthook/apiservice-openapiv3-controller ok\n",
    "[+]shutdown ok\n",
    "readyz check failed\n",
);

/// What the proxy does with a request a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAction {
    /// Answer at once with this status and body; the API server never sees the request.
    /// The content type is `application/json` when the body starts with `{`, otherwise
    /// `text/plain; charset=utf-8`, as kube-apiserver's own answers.
    Respond {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
    /// Hold the request this long, then forward it. `Duration::MAX` holds it forever.
    Delay(Duration),
    /// Reset the client's connection (TCP RST) without an answer.
    Reset,
}

/// One rule: requests whose path starts with `path_prefix` (and, if set, whose method is
/// `method`) get `action`. The query string is not part of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    /// Requests whose path starts with this match.
    pub path_prefix: String,
    /// Only requests with this method match, when set.
    pub method: Option<Method>,
    /// What a matching request gets.
    pub action: HttpAction,
    /// How many more requests the rule applies to, when limited: it is used up then
    /// (and removed), as a fault that hits exactly one request.
    pub times: Option<u64>,
}

impl HttpRule {
    /// Answer requests under `path_prefix` with `status` and `body`.
    pub fn respond(path_prefix: &str, status: u16, body: impl Into<String>) -> HttpRule {
        HttpRule::new(
            path_prefix,
            HttpAction::Respond {
                status,
                body: body.into(),
            },
        )
    }

    /// Forward requests under `path_prefix` after `delay`.
    pub fn delay(path_prefix: &str, delay: Duration) -> HttpRule {
        HttpRule::new(path_prefix, HttpAction::Delay(delay))
    }

    /// Reset the connection of requests under `path_prefix`.
    pub fn reset(path_prefix: &str) -> HttpRule {
        HttpRule::new(path_prefix, HttpAction::Reset)
    }

    /// `/readyz` (and `/readyz/<check>`) answers 500 with [`READYZ_FAILED_BODY`], as
    /// kube-apiserver does when its etcd check fails.
    pub fn readyz_failing() -> HttpRule {
        HttpRule::respond("/readyz", 500, READYZ_FAILED_BODY)
    }

    /// A rule for a path prefix, any method.
    pub fn new(path_prefix: &str, action: HttpAction) -> HttpRule {
        HttpRule {
            path_prefix: path_prefix.to_string(),
            method: None,
            action,
            times: None,
        }
    }

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: u64) -> HttpRule {
        self.times = Some(n);
        self
    }

    /// Only requests with this method match.
    pub fn method(mut self, method: Method) -> HttpRule {
        self.method = Some(method);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        path.starts_with(&self.path_prefix) && self.method.as_ref().is_none_or(|m| m == method)
    }
}

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    requests: AtomicU64,
    faulted: AtomicU64,
}

struct Shared {
    cluster: String,
    upstream: SocketAddr,
    acceptor: TlsAcceptor,
    /// Presents the daemon's client certificate.
    with_cert: TlsConnector,
    /// Presents none: for requests that carry their own `Authorization` header.
    without_cert: TlsConnector,
    rules: RwLock<Vec<HttpRule>>,
    stats: Stats,
}

/// A running HTTP fault proxy; dropping it closes the listener and every connection.
///
/// Rules are checked in order when a request arrives (first match wins); a change applies
/// to every request that arrives afterwards, on new and existing connections, but not to
/// requests already forwarded (a running watch keeps streaming).
pub struct HttpFaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for HttpFaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFaultProxy")
            .field("cluster", &self.shared.cluster)
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("rules", &self.rules())
            .finish_non_exhaustive()
    }
}

impl HttpFaultProxy {
    /// Listens on a free port of 127.0.0.1 in front of `cluster`'s API server, with no
    /// rules (everything forwarded).
    pub async fn start(cluster: &Cluster) -> Result<HttpFaultProxy> {
        HttpFaultProxy::start_to(cluster, cluster.api_addr()).await
    }

    /// Like [`HttpFaultProxy::start`], but forwards to `upstream`, for instance a
    /// [`crate::FaultProxy`] in front of the cluster's API server, to combine HTTP rules
    /// with TCP faults.
    pub async fn start_to(cluster: &Cluster, upstream: SocketAddr) -> Result<HttpFaultProxy> {
        let name = cluster.name().to_string();
        let (acceptor, with_cert, without_cert) = tls_configs(&name, cluster.pki())?;
        let what = || format!("for an HTTP fault proxy to cluster {name}");
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| TestbedError::Port {
                what: what(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| TestbedError::Port {
            what: what(),
            source,
        })?;
        let kubeconfig = cluster.daemon_kubeconfig_via(addr)?;
        let shared = Arc::new(Shared {
            cluster: name,
            upstream,
            acceptor,
            with_cert,
            without_cert,
            rules: RwLock::new(Vec::new()),
            stats: Stats::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(HttpFaultProxy {
            addr,
            shared,
            kubeconfig,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Where requests go.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The daemon's kubeconfig with the server at this proxy (same CA, same client
    /// certificate, context named after the cluster).
    pub fn daemon_kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Replaces every rule.
    pub fn set_rules(&self, rules: Vec<HttpRule>) {
        *self.shared.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: HttpRule) {
        self.shared
            .rules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Removes the rules for `path_prefix`; returns how many there were.
    pub fn remove_rules(&self, path_prefix: &str) -> usize {
        let mut rules = self.shared.rules.write().unwrap_or_else(|p| p.into_inner());
        let before = rules.len();
        rules.retain(|r| r.path_prefix != path_prefix);
        before - rules.len()
    }

    /// Removes every rule: everything is forwarded again.
    pub fn clear_rules(&self) {
        self.set_rules(Vec::new());
    }

    /// The rules in force, first match first.
    pub fn rules(&self) -> Vec<HttpRule> {
        self.shared
            .rules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.shared.stats.accepted.load(Ordering::Relaxed)
    }

    /// Requests received since start.
    pub fn requests(&self) -> u64 {
        self.shared.stats.requests.load(Ordering::Relaxed)
    }

    /// Requests a rule matched since start.
    pub fn faulted(&self) -> u64 {
        self.shared.stats.faulted.load(Ordering::Relaxed)
    }
}

impl Drop for HttpFaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

fn tls_configs(cluster: &str, pki: &Pki) -> Result<(TlsAcceptor, TlsConnector, TlsConnector)> {
    let tls_err = |what: &str, e: rustls::Error| TestbedError::State {
        cluster: cluster.to_string(),
        message: format!("HTTP fault proxy: {what}: {e}"),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The API server's own serving certificate (127.0.0.1, signed by the cluster's
    // server CA): every kubeconfig of the cluster trusts the proxy as it is.
    let serving_chain = read_certs(&pki.serving.cert)?;
    let serving_key = read_key(&pki.serving.key)?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("server protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(serving_chain, serving_key)
        .map_err(|e| tls_err("serving certificate", e))?;
    // HTTP/1.1 only, so a client cannot pick h2.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];

    let mut roots = RootCertStore::empty();
    for cert in read_certs(&pki.server_ca)? {
        roots
            .add(cert)
            .map_err(|e| tls_err("server CA certificate", e))?;
    }
    let client_builder = || {
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots.clone()))
            .map_err(|e| tls_err("client protocol versions", e))
    };
    let mut with_cert = client_builder()?
        .with_client_auth_cert(read_certs(&pki.daemon.cert)?, read_key(&pki.daemon.key)?)
        .map_err(|e| tls_err("daemon client certificate", e))?;
    with_cert.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut without_cert = client_builder()?.with_no_client_auth();
    without_cert.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        TlsAcceptor::from(Arc::new(server)),
        TlsConnector::from(Arc::new(with_cert)),
        TlsConnector::from(Arc::new(without_cert)),
    ))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| TestbedError::io("reading", path, e))?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| TestbedError::io("reading", path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_err(path, e))
}

fn pem_err(path: &Path, e: rustls::pki_types::pem::Error) -> TestbedError {
    TestbedError::io(
        "parsing PEM in",
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    )
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        conns.spawn(connection(client, shared.clone()));
        while conns.try_join_next().is_some() {}
    }
}

/// The upstream connections of one client connection, opened on first use. HTTP/1.1
/// handles one request at a time per connection, so one of each kind is enough.
#[derive(Default)]
struct Upstreams {
    with_cert: Mutex<Option<SendRequest<Incoming>>>,
    without_cert: Mutex<Option<SendRequest<Incoming>>>,
}

type ProxyBody = Either<Incoming, Full<Bytes>>;

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    // A second handle on the same socket, so a reset can set SO_LINGER to zero after
    // TLS has taken the stream: the kernel sends RST when the last handle closes.
    let Some(handle) = duplicate(&client) else {
        return;
    };
    let Ok(tls) = shared.acceptor.accept(client).await else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let upstreams = Arc::new(Upstreams::default());
    let service = {
        let reset = reset.clone();
        hyper::service::service_fn(move |req| {
            handle_request(req, shared.clone(), upstreams.clone(), reset.clone())
        })
    };
    let serve =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = serve => {}
        _ = reset.notified() => {
            let _ = handle.set_zero_linger();
        }
    }
    // Dropping `serve` and `handle` here closes the socket (with RST after a reset).
}

fn duplicate(stream: &TcpStream) -> Option<TcpStream> {
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true).ok()?;
    TcpStream::from_std(std).ok()
}

/// Never completes: a connection being reset, or a request held forever.
async fn forever<T>() -> T {
    std::future::pending().await
}

async fn handle_request(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    upstreams: Arc<Upstreams>,
    reset: Arc<Notify>,
) -> std::result::Result<Response<ProxyBody>, std::convert::Infallible> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let rule = {
        let mut rules = shared.rules.write().unwrap_or_else(|p| p.into_inner());
        let at = rules
            .iter()
            .position(|r| r.matches(req.method(), req.uri().path()));
        at.map(|i| {
            let action = rules[i].action.clone();
            if let Some(n) = rules[i].times.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    rules.remove(i);
                }
            }
            action
        })
    };
    if rule.is_some() {
        shared.stats.faulted.fetch_add(1, Ordering::Relaxed);
    }
    match rule {
        Some(HttpAction::Respond { status, body }) => return Ok(answer(status, body)),
        Some(HttpAction::Reset) => {
            reset.notify_one();
            return forever().await;
        }
        Some(HttpAction::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    match forward(req, &shared, &upstreams).await {
        Ok(resp) => Ok(resp.map(Either::Left)),
        Err(()) => {
            // The API server is unreachable or broke the connection: the client sees its
            // connection reset, as through the TCP proxy, never an answer the API server
            // did not give.
            reset.notify_one();
            forever().await
        }
    }
}

fn answer(status: u16, body: String) -> Response<ProxyBody> {
    let content_type = if body.trim_start().starts_with('{') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn forward(
    req: Request<Incoming>,
    shared: &Shared,
    upstreams: &Upstreams,
) -> std::result::Result<Response<Incoming>, ()> {
    // A request with its own credentials (a bearer token, an exec plugin's output) goes
    // with them alone, so token faults pass through; the rest as the daemon's certificate.
    let own_credentials = req.headers().contains_key(header::AUTHORIZATION);
    let (slot, connector) = if own_credentials {
        (&upstreams.without_cert, &shared.without_cert)
    } else {
        (&upstreams.with_cert, &shared.with_cert)
    };
    let mut sender = slot.lock().await;
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(shared.upstream, connector).await?);
    }
    let s = sender.as_mut().ok_or(())?;
    s.ready().await.map_err(|_| ())?;
    s.send_request(req).await.map_err(|_| ())
}

async fn connect(
    upstream: SocketAddr,
    connector: &TlsConnector,
) -> std::result::Result<SendRequest<Incoming>, ()> {
    let tcp = TcpStream::connect(upstream).await.map_err(|_| ())?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(upstream.ip().into());
    let tls = connector.connect(name, tcp).await.map_err(|_| ())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|_| ())?;
    // Ends when the sender is dropped and the last response body is done or dropped.
    tokio::spawn(conn);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_prefix_and_method() {
        let r = HttpRule::readyz_failing();
        assert!(r.matches(&Method::GET, "/readyz"));
        assert!(r.matches(&Method::GET, "/readyz/etcd"));
        assert!(!r.matches(&Method::GET, "/livez"));
        let w = HttpRule::reset("/apis/apps/v1").method(Method::PATCH);
        assert!(w.matches(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/a/deployments/b/scale"
        ));
        assert!(!w.matches(&Method::GET, "/apis/apps/v1/namespaces/a/deployments"));
    }

    #[test]
    fn canned_answers_carry_the_content_type_of_their_body() {
        let text = answer(500, READYZ_FAILED_BODY.to_string());
        assert_eq!(text.status(), 500);
        assert_eq!(
            text.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let json = answer(503, r#"{"kind":"Status"}"#.to_string());
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    }
}
