//! Liveness as progress: each group loop has a [`Heartbeat`] that beats at every step
//! of its tick (start, probes done, each action done) and whenever one of its
//! Kubernetes calls ends — with an answer, an error or a timeout. `/healthz` and the
//! systemd watchdog look at the age of the last beat, not at when the last tick
//! finished: a tick whose actions are slow (a standby API taking 8 s per call during a
//! promotion) keeps beating, because each of its calls ends within the actuator's call
//! timeout; a loop that is really stuck stops beating.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The last sign of progress of one group loop. Cheap to clone; every clone beats the
/// same clock.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last beat.
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Self {
        Heartbeat {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records progress now.
    pub fn beat(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

/// Beats when dropped: a call that ends in any way (answer, error, or its caller's
/// timeout dropping the future) is progress.
struct BeatOnDrop(Heartbeat);

impl Drop for BeatOnDrop {
    fn drop(&mut self) {
        self.0.beat();
    }
}

/// A client that sends through `client` and beats `heartbeat` each time a request ends.
/// Requests, answers and errors pass unchanged: `kube::Client::send` turns the error
/// this service returns back into the very same `kube::Error`.
pub fn beating_client(client: kube::Client, heartbeat: Heartbeat) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    kube::Client::new(BeatingService { client, heartbeat }, namespace)
}

/// A group's [`beating_client`], built on its first use. A `kube::Client` carries a
/// request buffer of its own (its first block is about 10 kB, and a task), which a
/// group whose writes never happen (a healthy pair, observe mode) need not hold: at
/// 200 groups that is 4 MB. Clones share the client once built.
#[derive(Clone)]
pub struct LazyClient(Arc<LazyInner>);

struct LazyInner {
    /// The cluster's shared client and the group's heartbeat; `None` when built eagerly.
    from: Option<(kube::Client, Heartbeat)>,
    built: std::sync::OnceLock<kube::Client>,
}

impl LazyClient {
    /// The beating client over `client` for `heartbeat`, built when first used (which
    /// must be inside the Tokio runtime, as every Kubernetes call is).
    pub fn beating(client: kube::Client, heartbeat: Heartbeat) -> Self {
        LazyClient(Arc::new(LazyInner {
            from: Some((client, heartbeat)),
            built: std::sync::OnceLock::new(),
        }))
    }

    /// Whether the client has been built.
    pub fn is_built(&self) -> bool {
        self.0.built.get().is_some()
    }
}

impl From<kube::Client> for LazyClient {
    /// A client used as it is, built already.
    fn from(client: kube::Client) -> Self {
        LazyClient(Arc::new(LazyInner {
            from: None,
            built: std::sync::OnceLock::from(client),
        }))
    }
}

impl std::ops::Deref for LazyClient {
    type Target = kube::Client;

    fn deref(&self) -> &kube::Client {
        self.0.built.get_or_init(|| {
            let (client, heartbeat) = self
                .0
                .from
                .clone()
                .expect("a client not built eagerly has what it is built from");
            beating_client(client, heartbeat)
        })
    }
}

#[derive(Clone)]
struct BeatingService {
    client: kube::Client,
    heartbeat: Heartbeat,
}

type KubeResponse = http::Response<kube::client::Body>;

impl tower_service::Service<http::Request<kube::client::Body>> for BeatingService {
    type Response = KubeResponse;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<KubeResponse, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        // The inner client has its own buffer and readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let client = self.client.clone();
        let done = BeatOnDrop(self.heartbeat.clone());
        Box::pin(async move {
            let _done = done;
            client.send(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn age_grows_until_the_next_beat() {
        let h = Heartbeat::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age() >= Duration::from_millis(30));
        h.clone().beat();
        assert!(h.age() < Duration::from_millis(30));
    }

    /// An API server on loopback that answers one request per connection after `delay`
    /// with a 404 Status, or never answers at all.
    async fn fake_api(delay: Option<Duration>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let Some(delay) = delay else {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"configmaps \"x\" not found"}"#;
                    let resp = format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn client_for(addr: std::net::SocketAddr) -> kube::Client {
        crate::tls::install_provider();
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn every_ended_call_beats_and_errors_pass_unchanged() {
        let addr = fake_api(Some(Duration::from_millis(150))).await;
        let h = Heartbeat::new();
        let client = beating_client(client_for(addr), h.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = h.age();
        assert!(before >= Duration::from_millis(100));
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let err = api.get("x").await.expect_err("the fake answers 404");
        // The same error a plain client gives: an API answer, not a service error.
        match err {
            kube::Error::Api(status) => assert_eq!(status.code, 404),
            other => panic!("expected the API's 404, got {other:?}"),
        }
        assert!(h.age() < Duration::from_millis(100), "the answer beat");
    }

    #[tokio::test]
    async fn a_call_cut_by_its_timeout_beats_too() {
        let addr = fake_api(None).await;
        let h = Heartbeat::new();
        let client = beating_client(client_for(addr), h.clone());
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let cut = tokio::time::timeout(Duration::from_millis(200), api.get("x")).await;
        assert!(cut.is_err(), "the fake never answers");
        assert!(
            h.age() < Duration::from_millis(100),
            "the dropped call beat"
        );
    }

    #[tokio::test]
    async fn a_lazy_client_is_built_at_its_first_call_and_beats() {
        let addr = fake_api(Some(Duration::from_millis(150))).await;
        let h = Heartbeat::new();
        let lazy = LazyClient::beating(client_for(addr), h.clone());
        let copy = lazy.clone();
        assert!(!lazy.is_built(), "nothing built before the first use");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let api: Api<ConfigMap> = Api::namespaced((*copy).clone(), "ns");
        let _ = api.get("x").await;
        assert!(lazy.is_built(), "clones share the client built");
        assert!(h.age() < Duration::from_millis(100), "its calls beat");
        // A plain client is taken as it is.
        assert!(LazyClient::from(client_for(addr)).is_built());
    }
}
