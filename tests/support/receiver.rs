//! A webhook receiver on 127.0.0.1 for notice scenarios: records every request (path,
//! headers, body) and answers each path with the statuses it was told, then 200.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// What it was answered.
    pub status: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    scripts: HashMap<String, VecDeque<u16>>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(Mutex::new(State::default()));
        let task =
            kube_failover_testbed::serve_http(listener, state.clone(), |state, req| async move {
                answer(&state, req).await
            });
        Receiver { addr, state, task }
    }

    /// The URL of `path` (e.g. `/oncall`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests to `path` with `statuses`, in order, then 200.
    pub fn script(&self, path: &str, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_string(), statuses.iter().copied().collect());
    }

    /// Every request to `path` so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let mut st = state.lock().unwrap();
    let status = st
        .scripts
        .get_mut(&path)
        .and_then(|s| s.pop_front())
        .unwrap_or(200);
    st.received.push(Received {
        path,
        headers,
        body,
        status,
    });
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("static answer")
}
