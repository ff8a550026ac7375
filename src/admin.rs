//! The admin server: `/metrics`, `/healthz`, `/readyz`, `/status`. Read-only by design
//! (safety invariant 8): GET and HEAD only, small buffers, and no request body is ever
//! read.
//!
//! It must stay answerable whatever clients do, because `/healthz` is the liveness probe:
//! a probe that goes unanswered gets the daemon restarted, back in `startup_grace`, and
//! never promoting. So:
//!
//! - It runs on its own thread and runtime: admin traffic never takes a worker from the
//!   group loops, and busy group loops never delay a health answer.
//! - It always accepts. At [`Limits::max_connections`] it closes the connection that has
//!   waited longest for a request (then, if none waits, the oldest one) to make room:
//!   a flood of idle or slow connections cannot keep the next probe out, and the kernel's
//!   listen backlog ([`LISTEN_BACKLOG`]) is drained as fast as connections arrive.
//! - A connection must deliver a complete request head within [`Limits::read_timeout`]
//!   of being accepted or of its previous answer: this bounds idle keep-alive
//!   connections and slow-header (slowloris) clients alike.
//! - A write that makes no progress for [`Limits::write_timeout`] closes the connection:
//!   a client that pipelines requests and never reads the answers is dropped.
//! - At most [`Limits::max_requests`] requests per connection; the last answer carries
//!   `Connection: close`.
//! - `/healthz` and `/readyz` answer from atomics; `/status` is serialized once per
//!   change (a tick's status, or a group's role), not per request; `/metrics` is encoded
//!   at most once per [`METRICS_MAX_AGE`], off the server's thread, and a request that
//!   arrives while it is being encoded gets the previous copy. No answer waits behind
//!   another.
//! - A group's coordination role (`/status`) and `kube_failover_leader` are read from the
//!   coordination state at the request, not from the group's last finished tick: a
//!   leader whose tick waits on an unreachable standby stops saying `leader` at the
//!   instant it stops writing.

use crate::coord::{Role, RoleNow};
use crate::liveness::Heartbeat;
use crate::metrics::Metrics;
use crate::status::{GroupStatus, StatusReport};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot, watch};

/// Read buffer per connection; requests larger than this are refused.
const MAX_BUF: usize = 16 * 1024;
/// Connections the kernel may hold for the server before it accepts them. The server
/// accepts at once, so this only absorbs bursts (1,000 clients connecting at once).
/// Linux caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 1024;
/// Kernel send and receive buffer of each connection (Linux doubles it).
const SOCKET_BUFFER: u32 = 64 * 1024;
/// `/metrics` answers are at most this old.
pub const METRICS_MAX_AGE: Duration = Duration::from_secs(1);
/// Backstop for a request being answered: the answer is produced without waiting on
/// anything but the metrics encoding, so this only ends a connection stuck otherwise.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one summary line of dropped connections per this period.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Bounds on the admin server's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; a new one closes the connection that has waited
    /// longest for a request.
    pub max_connections: usize,
    /// A complete request head within this time of the connection being accepted or
    /// of its previous answer (idle keep-alive and slow headers).
    pub read_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// Requests per connection.
    pub max_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Well below the 1024 open files systemd gives a service by default, and
            // about 256 × 20 KiB of buffers at most.
            max_connections: 256,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_requests: 100,
        }
    }
}

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} (daemon.listen)")]
    /// The admin address cannot be bound.
    Bind {
        /// The address from `daemon.listen`.
        addr: SocketAddr,
        #[source]
        /// Why.
        source: std::io::Error,
    },
}

/// The longest a group loop may go without a sign of progress before `/healthz` turns
/// 503 and the systemd watchdog pings stop.
///
/// The longest legitimate gap between two beats of a loop is the longest of: the wait
/// for the next tick (one interval), the probes (each bounded by `probe_timeout` or a
/// check's timeout, which validation keeps below the interval), and one Kubernetes call
/// of an action (bounded by the actuator's call timeout, 10 s). The limit is twice that
/// call timeout and at least three intervals (the old bound on a whole tick): 20 s
/// with the default 5 s interval. A tick that needs several slow calls keeps beating
/// after each; a loop stuck anywhere stops.
pub fn stall_limit(interval: Duration) -> Duration {
    (interval * 3).max(crate::actuate::Actuator::DEFAULT_CALL_TIMEOUT * 2)
}

/// What the admin server shows; updated by the daemon's group loops.
pub struct AdminState {
    metrics: Metrics,
    metrics_cache: MetricsCache,
    stall_limit: Duration,
    started: Instant,
    status: RwLock<StatusReport>,
    /// `status`, serialized when first asked for after it changed (`None`: changed).
    /// Not at every tick: with many groups, serializing the whole document at each
    /// group's tick would cost more than the ticks.
    /// Kept with the roles it shows (see [`live_roles`]): a change of role serializes
    /// it again too.
    status_json: RwLock<Option<(Vec<Role>, Bytes)>>,
    ticked: Mutex<HashSet<String>>,
    heartbeats: RwLock<HashMap<String, Heartbeat>>,
    groups: usize,
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl AdminState {
    /// `status` is the initial document (groups may be empty until their first tick).
    pub fn new(metrics: Metrics, interval: Duration, groups: usize, status: StatusReport) -> Self {
        AdminState {
            metrics,
            metrics_cache: MetricsCache::default(),
            stall_limit: stall_limit(interval),
            started: Instant::now(),
            status: RwLock::new(status),
            status_json: RwLock::new(None),
            ticked: Mutex::new(HashSet::new()),
            heartbeats: RwLock::new(HashMap::new()),
            groups,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Replaces the bound of [`stall_limit`] (tests).
    pub fn with_stall_limit(mut self, limit: Duration) -> Self {
        self.stall_limit = limit;
        self
    }

    /// The heartbeat of `group`, registered (and beating) on first use. Give it to
    /// [`crate::liveness::beating_client`] so that each of the group's Kubernetes calls
    /// counts as progress.
    pub fn heartbeat(&self, group: &str) -> Heartbeat {
        if let Some(h) = self
            .heartbeats
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
        {
            return h.clone();
        }
        self.heartbeats
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(group.to_string())
            .or_default()
            .clone()
    }

    /// The loop of `group` made progress (a tick started, probes or an action ended).
    pub fn progress(&self, group: &str) {
        self.heartbeat(group).beat();
    }

    /// Records a finished tick of `group` and its status.
    pub fn tick_done(&self, group: GroupStatus, wall_unix: f64) {
        let name = group.name.clone();
        self.progress(&name);
        let all_ticked = {
            let mut ticked = self.ticked.lock().unwrap_or_else(|e| e.into_inner());
            ticked.insert(name.clone());
            ticked.len() >= self.groups
        };
        {
            let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
            match status.groups.iter_mut().find(|g| g.name == name) {
                Some(slot) => *slot = group,
                None => status.groups.push(group),
            }
            status.last_tick_unix = Some(wall_unix);
            status.ready = all_ticked && !self.shutting_down.load(Ordering::SeqCst);
            *self.status_json.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if all_ticked {
            self.ready.store(true, Ordering::SeqCst);
        }
    }

    /// True once every group has finished a tick.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// `/readyz` goes 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.ready = false;
        *self.status_json.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The whole `/status` document, serialized at most once per change (of a tick's
    /// status, or of a role).
    fn status_document(&self) -> Bytes {
        let now = Instant::now();
        let shown_now = self.metrics.coord.roles.roles(now);
        if let Some((shown, json)) = self
            .status_json
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && *shown == shown_now
        {
            return json.clone();
        }
        let roles = self.metrics.coord.roles.all(now);
        let mut status = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        live_roles(&mut status.groups, &roles);
        let json = encode_status(&status);
        *self.status_json.write().unwrap_or_else(|e| e.into_inner()) =
            Some((shown_now, json.clone()));
        json
    }

    /// `/status?group=NAME`: the document with that group only; `Err` with the status
    /// code and message when there is no such group or it has not ticked yet.
    fn group_document(&self, name: &str) -> Result<Bytes, (StatusCode, String)> {
        let status = self.status.read().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = status.groups.iter().find(|g| g.name == name) {
            let mut one = StatusReport {
                version: status.version.clone(),
                mode: status.mode.clone(),
                identity: status.identity.clone(),
                ready: status.ready,
                last_tick_unix: status.last_tick_unix,
                groups: vec![g.clone()],
            };
            drop(status);
            if let Some(role) = self.metrics.coord.roles.of(name, Instant::now()) {
                live_roles(&mut one.groups, &[(name.to_string(), role)]);
            }
            return Ok(encode_status(&one));
        }
        drop(status);
        // Echo at most a short, printable name.
        let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        let known = self
            .heartbeats
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name);
        Err(if known {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("group {shown:?} has not finished a tick yet\n"),
            )
        } else {
            (StatusCode::NOT_FOUND, format!("no group named {shown:?}\n"))
        })
    }

    /// True while every group's loop has made progress within [`stall_limit`] (see
    /// [`crate::liveness`]), or, before every loop has started, while the daemon is
    /// younger than that.
    pub fn is_healthy(&self) -> bool {
        self.stalled().is_none()
    }

    /// The first group found without progress within the limit, and for how long.
    fn stalled(&self) -> Option<(String, Duration)> {
        let beats = self.heartbeats.read().unwrap_or_else(|e| e.into_inner());
        if beats.len() < self.groups {
            let age = self.started.elapsed();
            return (age > self.stall_limit).then(|| ("(not started)".to_string(), age));
        }
        beats
            .iter()
            .map(|(name, h)| (name, h.age()))
            .find(|(_, age)| *age > self.stall_limit)
            .map(|(name, age)| (name.clone(), age))
    }
}

/// Sets each group's coordination role and leader to what they are now (`roles`), not
/// what they were when its last tick ended: a leader whose tick waits on an unreachable
/// standby stops saying `leader` at its renew deadline, when it stops writing.
fn live_roles(groups: &mut [GroupStatus], roles: &[(String, RoleNow)]) {
    let roles: HashMap<&str, &RoleNow> = roles.iter().map(|(g, r)| (g.as_str(), r)).collect();
    for g in groups {
        if let (Some(c), Some(now)) = (g.coordination.as_mut(), roles.get(g.name.as_str())) {
            c.role = now.role.as_str().to_string();
            c.leader.clone_from(&now.leader);
        }
    }
}

fn encode_status(status: &StatusReport) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(status).unwrap_or_else(|_| b"{}".to_vec()))
}

/// The last `/metrics` text and when it was encoded.
#[derive(Default)]
struct MetricsCache {
    latest: Mutex<Option<(Instant, Bytes)>>,
    /// The answer last served: the stored text it was made of, the roles its live part
    /// showed, and the whole. Served again while both are the same, so a
    /// flood of requests costs a comparison each, not an encoding.
    served: Mutex<Option<(Bytes, Vec<Role>, Bytes)>>,
    /// Held while encoding, so that one request encodes and the others do not wait.
    refresh: tokio::sync::Mutex<()>,
}

impl MetricsCache {
    fn fresh(&self) -> Result<Bytes, Option<Bytes>> {
        match &*self.latest.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, text)) if at.elapsed() < METRICS_MAX_AGE => Ok(text.clone()),
            Some((_, text)) => Err(Some(text.clone())),
            None => Err(None),
        }
    }

    /// The stored metrics (encoded at most once per [`METRICS_MAX_AGE`]) followed by the
    /// live ones, read now.
    async fn get(&self, metrics: &Metrics) -> Bytes {
        let stored = self.stored(metrics).await;
        let roles = metrics.coord.roles.roles(Instant::now());
        let same = |(text, shown, _): &(Bytes, Vec<Role>, Bytes)| {
            text.as_ptr() == stored.as_ptr() && text.len() == stored.len() && *shown == roles
        };
        if let Some(served) = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|s| same(s))
        {
            return served.2.clone();
        }
        let live = metrics.encode_live();
        let mut text = Vec::with_capacity(stored.len() + live.len());
        text.extend_from_slice(&stored);
        text.extend(live);
        let text = Bytes::from(text);
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((stored, roles, text.clone()));
        text
    }

    async fn stored(&self, metrics: &Metrics) -> Bytes {
        let stale = match self.fresh() {
            Ok(text) => return text,
            Err(stale) => stale,
        };
        let _refreshing = match (stale, self.refresh.try_lock()) {
            (_, Ok(guard)) => guard,
            // Another request is encoding: the copy from a moment ago will do.
            (Some(stale), Err(_)) => return stale,
            (None, Err(_)) => self.refresh.lock().await,
        };
        if let Ok(text) = self.fresh() {
            return text;
        }
        let m = metrics.clone();
        // Off the server's thread: health answers never wait behind an encoding.
        let text = match tokio::task::spawn_blocking(move || m.encode_stored()).await {
            Ok(text) => Bytes::from(text),
            Err(e) => {
                tracing::error!(error = %e, "encoding metrics failed");
                Bytes::new()
            }
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), text.clone()));
        text
    }
}

/// Binds the admin listener; done before anything else so that a taken port fails the
/// start, naming the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    let err = |source| AdminError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    // As `TcpListener::bind` does: a restart may reuse the port at once.
    socket.set_reuseaddr(true).map_err(err)?;
    // Accepted connections inherit these: the kernel memory a client that never reads
    // (or pipelines requests) can pin stays small, instead of megabytes per connection
    // with autotuning. Normal answers fit; larger ones wait for the client to read.
    socket.set_send_buffer_size(SOCKET_BUFFER).map_err(err)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Serves until `stop` turns true, on a thread and runtime of its own.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: watch::Receiver<bool>) {
    serve_with(listener, state, stop, Limits::default()).await
}

/// [`serve`] with other bounds.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AdminState>,
    stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin server: cannot hand the listener to its thread");
            return;
        }
    };
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(2)
                .build();
            match runtime {
                Ok(rt) => rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, state, stop, limits).await,
                        Err(e) => tracing::error!(error = %e, "admin server: cannot listen"),
                    }
                }),
                Err(e) => tracing::error!(error = %e, "admin server: cannot start its runtime"),
            }
            drop(done_tx);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "admin server: cannot start its thread");
        return;
    }
    let _ = done_rx.await;
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// A request is being answered.
    busy: AtomicBool,
    /// The server has tried to read the next request and found nothing (yet). Until
    /// then a new connection may have its request waiting in the socket: it is not
    /// idle, only not looked at.
    waiting: AtomicBool,
    /// Milliseconds from the server's epoch to the moment the connection was accepted
    /// or its last answer was handed over: the start of its wait for a request.
    since_ms: AtomicU64,
    requests: AtomicU32,
    evict: Notify,
}

/// The server's table of open connections.
struct Server {
    state: Arc<AdminState>,
    limits: Limits,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    evicted: AtomicU64,
    timed_out: AtomicU64,
}

impl Server {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection, closing another one first if the table is full.
    fn admit(&self) -> (u64, Arc<Conn>) {
        let conn = Arc::new(Conn {
            busy: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            since_ms: AtomicU64::new(self.now_ms()),
            requests: AtomicU32::new(0),
            evict: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while open.len() >= self.limits.max_connections.max(1) {
            // Found waiting for a request first, then not yet looked at, then being
            // answered; in each, the longest wait first.
            let victim = open
                .iter()
                .min_by_key(|(id, c)| {
                    let tier = if c.busy.load(Ordering::Relaxed) {
                        2
                    } else if c.waiting.load(Ordering::Relaxed) {
                        0
                    } else {
                        1
                    };
                    (tier, c.since_ms.load(Ordering::Relaxed), **id)
                })
                .map(|(id, _)| *id);
            let Some(victim) = victim.and_then(|v| open.remove(&v)) else {
                break;
            };
            victim.evict.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        open.insert(id, conn.clone());
        (id, conn)
    }

    /// When the connection's current wait ends.
    fn deadline(&self, conn: &Conn) -> Instant {
        let since = self.epoch + Duration::from_millis(conn.since_ms.load(Ordering::Relaxed));
        if conn.busy.load(Ordering::Relaxed) {
            since + ANSWER_TIMEOUT
        } else {
            since + self.limits.read_timeout
        }
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Registered(Arc<Server>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let server = Arc::new(Server {
        state,
        limits,
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        evicted: AtomicU64::new(0),
        timed_out: AtomicU64::new(0),
    });
    let mut reported = (Instant::now(), 0u64, 0u64);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, for example: try again shortly.
                tracing::warn!(error = %e, "admin server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (id, conn) = server.admit();
        tokio::spawn(connection(server.clone(), id, conn, stream, peer));
        // Let the new connection read its request before the next accept: under a
        // flood of connections, each is looked at before it can become the oldest.
        tokio::task::yield_now().await;

        if reported.0.elapsed() >= REPORT_EVERY {
            let evicted = server.evicted.load(Ordering::Relaxed);
            let timed_out = server.timed_out.load(Ordering::Relaxed);
            if evicted > reported.1 || timed_out > reported.2 {
                tracing::warn!(
                    closed_for_room = evicted - reported.1,
                    timed_out = timed_out - reported.2,
                    max_connections = limits.max_connections,
                    "admin server: connections closed by the server in the last minute"
                );
            }
            reported = (Instant::now(), evicted, timed_out);
        }
    }
}

async fn connection(
    server: Arc<Server>,
    id: u64,
    conn: Arc<Conn>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _registered = Registered(server.clone(), id);
    let service = {
        let server = server.clone();
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            let server = server.clone();
            let conn = conn.clone();
            conn.busy.store(true, Ordering::Relaxed);
            conn.waiting.store(false, Ordering::Relaxed);
            conn.since_ms.store(server.now_ms(), Ordering::Relaxed);
            let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let mut resp = route_parts(&server.state, req.method(), target).await;
                if n >= server.limits.max_requests {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                let done = AnswerDone(server, conn);
                Ok::<_, Infallible>(resp.map(|body| Answer { body, _done: done }))
            }
        })
    };
    let io = Guarded::new(stream, conn.clone(), server.limits.write_timeout);
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(server.limits.read_timeout)
        .max_buf_size(MAX_BUF)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    loop {
        let deadline = server.deadline(&conn);
        tokio::select! {
            biased;
            _ = conn.evict.notified() => {
                tracing::debug!(%peer, "admin connection closed to make room for a new one");
                return;
            }
            result = &mut http => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                // The wait may have been renewed meanwhile (a request came in).
                if server.deadline(&conn) <= Instant::now() {
                    server.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "admin connection timed out waiting for a request");
                    return;
                }
            }
        }
    }
}

/// Marks the connection as waiting for its next request when the answer has been
/// handed to the connection (the body is dropped once written).
struct AnswerDone(Arc<Server>, Arc<Conn>);

impl Drop for AnswerDone {
    fn drop(&mut self) {
        self.1.since_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.1.busy.store(false, Ordering::Relaxed);
    }
}

/// An answer body that reports when it is done with.
struct Answer {
    body: Full<Bytes>,
    _done: AnswerDone,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's stream: notes when a read finds nothing to read (the connection is
/// waiting for a request), and fails writes that have made no progress for `limit`
/// (the peer does not read what it asked for).
struct Guarded<T> {
    io: T,
    conn: Arc<Conn>,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Guarded<T> {
    fn new(io: T, conn: Arc<Conn>, limit: Duration) -> Self {
        Guarded {
            io,
            conn,
            limit,
            stalled: None,
        }
    }

    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match r {
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client has not read its answers",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if r.is_pending() {
            self.conn.waiting.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, r)
    }
}

/// The group named by a `group=NAME` query parameter (percent-escapes decoded).
fn group_parameter(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("group="))
        .map(percent_decode)
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole routing table. Only the method, the path and, for `/status`, the `group`
/// query parameter are read.
async fn route_parts(state: &AdminState, method: &Method, target: &str) -> Response<Full<Bytes>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    const PATHS: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/status"];
    if !PATHS.contains(&path) {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            method,
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: the admin port is read-only\n".into(),
            method,
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics_cache.get(&state.metrics).await,
            method,
        ),
        "/healthz" => match state.stalled() {
            None => plain(StatusCode::OK, "ok\n".into(), method),
            Some((group, age)) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "stalled: group {group} made no progress for {:.0}s (limit {:.0}s)\n",
                    age.as_secs_f64(),
                    state.stall_limit.as_secs_f64()
                ),
                method,
            ),
        },
        "/readyz" => {
            if state.shutting_down.load(Ordering::SeqCst) {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down\n".into(),
                    method,
                )
            } else if state.is_ready() {
                plain(StatusCode::OK, "ok\n".into(), method)
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: first tick not done\n".into(),
                    method,
                )
            }
        }
        _ => match group_parameter(query) {
            None => body(
                StatusCode::OK,
                "application/json",
                state.status_document(),
                method,
            ),
            Some(name) => match state.group_document(&name) {
                Ok(json) => body(StatusCode::OK, "application/json", json, method),
                Err((code, text)) => plain(code, text, method),
            },
        },
    }
}

fn plain(status: StatusCode, text: String, method: &Method) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(text),
        method,
    )
}

fn body(
    status: StatusCode,
    content_type: &'static str,
    bytes: Bytes,
    method: &Method,
) -> Response<Full<Bytes>> {
    let len = bytes.len();
    let payload = if method == Method::HEAD {
        Bytes::new()
    } else {
        bytes
    };
    let mut resp = Response::new(Full::new(payload));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if method == Method::HEAD {
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn state(groups: usize, interval: Duration) -> AdminState {
        AdminState::new(
            Metrics::new().unwrap(),
            interval,
            groups,
            StatusReport {
                version: "test".into(),
                mode: "auto".into(),
                identity: "host".into(),
                ready: false,
                last_tick_unix: None,
                groups: vec![],
            },
        )
    }

    fn group(name: &str) -> GroupStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": "primary_active", "since_unix": 1.0,
            "primary_down": false, "standby_fit": true, "active_cluster": "primary",
            "signals": [], "standby": {"api_reason": "ok", "workloads_reason": "ok", "detail": ""},
            "record": null,
            "last_decision": {"at_unix": 1.0, "reasons": [], "actions": [], "would_promote": false},
            "unexpected_standby_replicas": 0, "last_action_error": null
        }))
        .unwrap()
    }

    async fn text(resp: Response<Full<Bytes>>) -> String {
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    async fn status_of(s: &AdminState, method: Method, path: &str) -> StatusCode {
        route_parts(s, &method, path).await.status()
    }

    #[tokio::test]
    async fn writes_are_refused_with_allow() {
        let s = state(1, Duration::from_secs(1));
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let r = route_parts(&s, &m, "/status").await;
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
        assert_eq!(
            status_of(&s, Method::GET, "/nope").await,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn readyz_after_every_group_ticked_and_503_while_shutting_down() {
        let s = state(2, Duration::from_secs(1));
        assert_eq!(
            status_of(&s, Method::GET, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.tick_done(group("a"), 1.0);
        assert_eq!(
            status_of(&s, Method::GET, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.tick_done(group("b"), 2.0);
        assert_eq!(status_of(&s, Method::GET, "/readyz").await, StatusCode::OK);
        s.begin_shutdown();
        let r = route_parts(&s, &Method::GET, "/readyz").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text(r).await, "shutting down\n");
        let status = text(route_parts(&s, &Method::GET, "/status").await).await;
        assert!(status.contains("\"ready\": false"), "{status}");
    }

    #[tokio::test]
    async fn healthz_goes_503_when_the_loop_stops_making_progress() {
        let s = state(1, Duration::from_millis(10)).with_stall_limit(Duration::from_millis(30));
        s.tick_done(group("a"), 1.0);
        assert_eq!(status_of(&s, Method::GET, "/healthz").await, StatusCode::OK);
        std::thread::sleep(Duration::from_millis(60));
        let r = route_parts(&s, &Method::GET, "/healthz").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text(r)
                .await
                .starts_with("stalled: group a made no progress")
        );
        assert!(!s.is_healthy());
    }

    #[tokio::test]
    async fn a_group_that_never_starts_turns_healthz_503_after_the_limit() {
        let s = state(2, Duration::from_millis(10)).with_stall_limit(Duration::from_millis(30));
        s.progress("a");
        assert!(s.is_healthy(), "young daemon");
        std::thread::sleep(Duration::from_millis(60));
        s.progress("a");
        assert!(!s.is_healthy(), "group b never made progress");
    }

    /// A tick whose actions take far longer than the stall limit in total (five calls
    /// of 120 ms against a 300 ms limit) keeps the daemon healthy, because each ended
    /// call is progress; when the loop stops, `/healthz` turns 503.
    #[tokio::test]
    async fn slow_actions_keep_healthz_200_and_a_stalled_loop_makes_it_503() {
        let s = Arc::new(
            state(1, Duration::from_millis(100)).with_stall_limit(Duration::from_millis(300)),
        );
        let loop_state = s.clone();
        let tick = tokio::spawn(async move {
            let beat = loop_state.heartbeat("a");
            loop_state.progress("a"); // tick start
            tokio::time::sleep(Duration::from_millis(50)).await; // probes
            loop_state.progress("a");
            for _ in 0..5 {
                // One action of two Kubernetes calls, each ending after 60 ms.
                for _ in 0..2 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    beat.beat();
                }
                loop_state.progress("a");
            }
            loop_state.tick_done(group("a"), 1.0);
            // Then the loop wedges: no more ticks, no more calls.
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        let mut samples = 0;
        while started.elapsed() < Duration::from_millis(700) {
            assert_eq!(
                status_of(&s, Method::GET, "/healthz").await,
                StatusCode::OK,
                "after {:?}",
                started.elapsed()
            );
            samples += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(samples > 20);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            status_of(&s, Method::GET, "/healthz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(!s.is_healthy());
        tick.abort();
    }

    #[tokio::test]
    async fn status_serves_the_latest_group_document_and_head_has_no_body() {
        let s = state(1, Duration::from_secs(1));
        s.tick_done(group("a"), 7.0);
        let mut g = group("a");
        g.state = crate::model::GroupState::Promoting.into();
        s.tick_done(g, 8.0);
        let r = route_parts(&s, &Method::GET, "/status").await;
        let report: StatusReport = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(report.groups.len(), 1);
        assert_eq!(report.groups[0].state, "promoting");
        assert_eq!(report.last_tick_unix, Some(8.0));
        let head = route_parts(&s, &Method::HEAD, "/metrics").await;
        assert_eq!(head.status(), StatusCode::OK);
        assert!(text(head).await.is_empty());
    }

    #[tokio::test]
    async fn status_of_one_group_and_unknown_groups() {
        let s = state(2, Duration::from_secs(1));
        s.tick_done(group("a"), 7.0);
        s.tick_done(group("b-1"), 8.0);
        let r = route_parts(&s, &Method::GET, "/status?group=b-1").await;
        assert_eq!(r.status(), StatusCode::OK);
        let report: StatusReport = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(report.groups.len(), 1);
        assert_eq!(report.groups[0].name, "b-1");
        assert_eq!(report.last_tick_unix, Some(8.0));
        let r = route_parts(&s, &Method::GET, "/status?x=1&group=b%2D1").await;
        assert_eq!(r.status(), StatusCode::OK, "escapes are decoded");
        let r = route_parts(&s, &Method::GET, "/status?group=nope").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(text(r).await, "no group named \"nope\"\n");
        let whole = route_parts(&s, &Method::GET, "/status?other=1").await;
        let report: StatusReport = serde_json::from_str(&text(whole).await).unwrap();
        assert_eq!(report.groups.len(), 2, "without group=, the whole document");
        // A later tick shows in the whole document (serialized again after a change).
        let mut g = group("a");
        g.state = crate::model::GroupState::Promoting.into();
        s.tick_done(g, 9.0);
        let whole = route_parts(&s, &Method::GET, "/status").await;
        let report: StatusReport = serde_json::from_str(&text(whole).await).unwrap();
        assert_eq!(report.groups[0].state, "promoting");
    }

    #[tokio::test]
    async fn metrics_are_encoded_at_most_once_per_period() {
        let s = state(1, Duration::from_secs(1));
        let first = text(route_parts(&s, &Method::GET, "/metrics").await).await;
        assert!(first.contains("kube_failover_build_info"), "{first}");
        s.metrics.tick_done("a", 0.5, 1234.0);
        let cached = text(route_parts(&s, &Method::GET, "/metrics").await).await;
        assert_eq!(first, cached, "within {METRICS_MAX_AGE:?}: the same text");
        tokio::time::sleep(METRICS_MAX_AGE + Duration::from_millis(50)).await;
        let later = text(route_parts(&s, &Method::GET, "/metrics").await).await;
        assert!(
            later.contains("kube_failover_last_tick_timestamp_seconds 1234"),
            "{later}"
        );
    }

    // --- the server on a real socket -----------------------------------------------

    struct Running {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn shut(self) {
            let _ = self.stop.send(true);
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("the server stops")
                .expect("the server task");
        }
    }

    /// The attack tests load both cores on purpose: one at a time, so that one's flood
    /// does not become another's two-second timeout.
    static ONE_ATTACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn start(limits: Limits) -> Running {
        let s = Arc::new(state(1, Duration::from_secs(1)));
        s.tick_done(group("a"), 1.0);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve_with(listener, s, rx, limits));
        Running { addr, stop, task }
    }

    /// One request on a new connection; the status code, or why there was none within
    /// two seconds.
    async fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
        let exchange = async {
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
            let head = String::from_utf8_lossy(&buf);
            head.split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("no status line in {head:?}"))
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer within 2s".into()))
    }

    /// Probes `/healthz` every 100 ms for `time`: every probe must be answered 200.
    async fn healthz_holds(addr: SocketAddr, time: Duration) -> usize {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < time {
            assert_eq!(get(addr, "/healthz").await, Ok(200), "probe {n}");
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    }

    /// True once the peer has closed the connection (end of stream or reset) within
    /// `within`, reading and discarding whatever it sent first.
    async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
        let drain = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, drain).await.is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_is_answered_past_1000_idle_connections() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let server = start(Limits::default()).await;
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(TcpStream::connect(server.addr).await.expect("connect"));
        }
        let probes = healthz_holds(server.addr, Duration::from_secs(2)).await;
        assert!(probes >= 10);
        // The server kept at most its cap: the oldest idle ones were closed for room.
        let mut closed = 0;
        for s in idle.iter_mut().take(100) {
            if closed_by_server(s, Duration::from_millis(200)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 100, "the oldest idle connections were closed");
        server.shut().await;
    }

    /// Idle clients that reconnect as soon as they are closed make the server close a
    /// connection for every one it accepts; a probe's connection, whose request is
    /// already there, is still answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_is_answered_while_1000_idle_clients_reconnect_at_once() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let server = start(Limits::default()).await;
        let addr = server.addr;
        let until = Instant::now() + Duration::from_secs(4);
        let mut attackers = Vec::new();
        for _ in 0..1000 {
            attackers.push(tokio::spawn(async move {
                let mut reconnects = 0u32;
                while Instant::now() < until {
                    let Ok(mut s) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    reconnects += 1;
                    let left = until.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(left, s.read(&mut [0u8; 16])).await;
                }
                reconnects
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        healthz_holds(addr, Duration::from_secs(2)).await;
        let mut reconnects = 0;
        for a in attackers {
            reconnects += a.await.unwrap();
        }
        assert!(
            reconnects > 2000,
            "the attackers were closed and came back ({reconnects} connections)"
        );
        server.shut().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_oldest_idle_connection_is_the_one_closed_for_room() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let limits = Limits {
            max_connections: 3,
            read_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let server = start(limits).await;
        let mut a = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut b = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // A asks something and keeps the connection: it has waited least now.
        a.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = a.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(30)).await;
        // A fourth connection: B has waited longest for a request.
        assert_eq!(get(server.addr, "/healthz").await, Ok(200));
        assert!(closed_by_server(&mut b, Duration::from_secs(1)).await);
        // A and C are still served.
        for s in [&mut a, &mut c] {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("answered")
                .unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        }
        server.shut().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slowloris_connections_are_cut_and_healthz_stays_answered() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let limits = Limits {
            read_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        let server = start(limits).await;
        let addr = server.addr;
        let request = b"GET /status HTTP/1.1\r\nHost: a\r\nX-Slow: yes\r\n\r\n";
        let mut slow = Vec::new();
        for _ in 0..200 {
            slow.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let started = Instant::now();
                // One header byte every 200 ms: the head would take 10 s.
                for byte in request {
                    if s.write_all(&[*byte]).await.is_err() {
                        return started.elapsed();
                    }
                    let mut probe = [0u8; 1];
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_millis(200), s.read(&mut probe)).await
                    {
                        return started.elapsed();
                    }
                }
                started.elapsed()
            }));
        }
        healthz_holds(addr, Duration::from_secs(2)).await;
        for task in slow {
            let cut_after = task.await.unwrap();
            assert!(
                cut_after < Duration::from_secs(3),
                "a slow client lasted {cut_after:?}"
            );
        }
        server.shut().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelining_clients_that_never_read_are_dropped_and_healthz_stays_answered() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let limits = Limits {
            write_timeout: Duration::from_secs(1),
            max_requests: 10_000,
            ..Limits::default()
        };
        let server = start(limits).await;
        let addr = server.addr;
        // Far more answers than the socket buffers between the two hold.
        let burst = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".repeat(20_000);
        let mut clients = Vec::new();
        for _ in 0..200 {
            let burst = burst.clone();
            clients.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                // Writes until the server stops reading, blocked on answers nobody reads.
                let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&burst)).await;
                s
            }));
        }
        healthz_holds(addr, Duration::from_secs(3)).await;
        let mut dropped = 0;
        for c in clients {
            let mut s = c.await.unwrap();
            // Only now read: the server has given up on this client already, so the
            // answers end after what the socket buffers held.
            if closed_by_server(&mut s, Duration::from_secs(3)).await {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 200);
        server.shut().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_per_connection_are_bounded() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let limits = Limits {
            max_requests: 3,
            ..Limits::default()
        };
        let server = start(limits).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(&b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n".repeat(10))
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
            .await
            .expect("the server closes the connection")
            .expect("read");
        let answers = String::from_utf8_lossy(&buf);
        assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 3, "{answers}");
        assert_eq!(answers.matches("connection: close").count(), 1, "{answers}");
        server.shut().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_is_answered_during_a_metrics_flood() {
        let _one = ONE_ATTACK_AT_A_TIME.lock().await;
        let server = start(Limits::default()).await;
        let addr = server.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let mut flood = Vec::new();
        for _ in 0..200 {
            let stop = stop.clone();
            flood.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) && n < 1000 {
                    let _ = get(addr, "/metrics").await;
                    n += 1;
                }
                n
            }));
        }
        healthz_holds(addr, Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let mut served = 0;
        for f in flood {
            served += f.await.unwrap();
        }
        assert!(
            served > 200,
            "the flood itself was served ({served} requests)"
        );
        server.shut().await;
    }
}
