//! The HTTP stack under a cluster's client: kube's own (`kube::Client::try_from`) layer
//! for layer — base URI, authentication, extra headers, kube's tracing spans, the
//! connection timeouts — over a connection pool that speaks HTTP/2 when the API server
//! offers it.
//!
//! kube's builder speaks HTTP/1.1 only: every open watch is a TCP+TLS connection of its
//! own (hundreds on a cluster whose groups each have a namespace), and a connection that
//! dies without a word (a dropped NAT entry, a silently discarded flow) is noticed only
//! by its read timeout, minutes for a watch. Here TLS offers `h2` and `http/1.1` (ALPN):
//! - an API server that speaks HTTP/2 carries every request of a pool on one
//!   connection, and that connection is PINGed every [`Http2::ping_interval`] in which
//!   nothing was read, while idle too; a PING not answered within
//!   [`Http2::ping_timeout`] closes it, every request on it fails, and the watches on it
//!   resume on a new one (for the watch stores an ordinary resumption, never down
//!   evidence);
//! - an API server or proxy that does not speak HTTP/2 is talked to in HTTP/1.1, as
//!   before; `daemon.http2 = false` offers HTTP/1.1 only.
//!
//! An HTTP/2 server bounds the streams of one connection (kube-apiserver
//! `--http2-max-streams-per-connection`, 250 by default; proxies and load balancers
//! often 100) and the client queues requests over that bound on the same connection, so
//! a request may wait behind long watches. A client therefore holds several pools, each
//! with its own connection, and a request names its pool with a [`Pool`] extension: the
//! cluster handle spreads its watches over pools of at most 100 (its
//! `WATCHES_PER_CONNECTION`), and the short calls (`/readyz`, Leases,
//! scale and record writes) have a client of their own, so they never queue behind a
//! watch.

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{BoxError, ServiceBuilder};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// HTTP/2 for a client: offered by ALPN, its connections PINGed as said here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2 {
    /// A connection on which nothing was read for this long is PINGed (while idle too).
    pub ping_interval: Duration,
    /// A PING not answered within this closes the connection and fails every request on
    /// it.
    pub ping_timeout: Duration,
}

/// Which connection pool of a client a request goes through (an extension of the
/// request); pool 0 when absent. Each pool holds its own connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pool(pub usize);

/// The target of kube's own spans and messages, kept so that log filters still apply.
const KUBE: &str = "kube_client::client::builder";

type Connector = TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>;

/// The bottom of the stack: one hyper client (one connection pool) per [`Pool`], made
/// when first asked for.
#[derive(Clone)]
struct Pools {
    builder: hyper_util::client::legacy::Builder,
    connector: Connector,
    clients: Arc<Mutex<Vec<HyperClient<Connector, kube::client::Body>>>>,
}

impl Pools {
    fn client(&self, pool: usize) -> HyperClient<Connector, kube::client::Body> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        while clients.len() <= pool {
            clients.push(self.builder.build(self.connector.clone()));
        }
        clients[pool].clone()
    }
}

impl tower::Service<Request<kube::client::Body>> for Pools {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let pool = request
            .extensions()
            .get::<Pool>()
            .copied()
            .unwrap_or_default();
        self.client(pool.0).request(request)
    }
}

/// kube's client for `config`, built as `kube::Client::try_from` builds it, with
/// HTTP/2 offered when `http2` is given. Never contacts the cluster.
pub(super) fn client(
    config: &kube::Config,
    http2: Option<Http2>,
) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        // An HTTP or SOCKS proxy between the daemon and the API server: kube's own stack
        // (and its error when this build cannot use the proxy).
        return kube::Client::try_from(config.clone());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into().map_err(|e| {
                kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e))
            })?,
        )),
        None => tls,
    };
    let tls = match http2 {
        Some(_) => tls.enable_http1().enable_http2().wrap_connector(http),
        None => tls.enable_http1().wrap_connector(http),
    };
    let mut connector = TimeoutConnector::new(tls);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);

    let mut builder = hyper_util::client::legacy::Builder::new(TokioExecutor::new());
    if let Some(h2) = http2 {
        builder
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(h2.ping_interval)
            .http2_keep_alive_timeout(h2.ping_timeout)
            .http2_keep_alive_while_idle(true);
    }
    let pools = Pools {
        builder,
        connector,
        clients: Arc::new(Mutex::new(Vec::new())),
    };

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(
            // kube's spans and messages, as its own builder makes them.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<kube::client::Body>| {
                    tracing::debug_span!(
                        target: KUBE,
                        "HTTP",
                        http.method = %req.method(),
                        http.url = %req.uri(),
                        http.status_code = tracing::field::Empty,
                        otel.name = req.extensions().get::<&'static str>().unwrap_or(&"HTTP"),
                        otel.kind = "client",
                        otel.status_code = tracing::field::Empty,
                    )
                })
                .on_request(|_: &Request<kube::client::Body>, _: &Span| {
                    tracing::debug!(target: KUBE, "requesting");
                })
                .on_response(|res: &Response<Incoming>, _: Duration, span: &Span| {
                    let status = res.status();
                    span.record("http.status_code", status.as_u16());
                    if status.is_client_error() || status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                })
                .on_body_chunk(())
                .on_eos(|_: Option<&HeaderMap>, _: Duration, _: &Span| {
                    tracing::debug!(target: KUBE, "stream closed");
                })
                .on_failure(|ec: ServerErrorsFailureClass, _: Duration, span: &Span| {
                    span.record("otel.status_code", "ERROR");
                    match ec {
                        ServerErrorsFailureClass::StatusCode(status) => {
                            span.record("http.status_code", status.as_u16());
                            tracing::error!(target: KUBE, "failed with status {}", status)
                        }
                        ServerErrorsFailureClass::Error(err) => {
                            tracing::error!(target: KUBE, "failed with error {}", err)
                        }
                    }
                }),
        )
        .map_err(BoxError::from)
        .service(pools);
    // An exec plugin's credential has no expiry to carry here: kube never runs the
    // plugin for these clients (src/kube/client/exec.rs does).
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}
