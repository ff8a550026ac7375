//! The listener and its connections, each within the bounds the module describes.

use super::routes::{Text, route_parts};
use super::*;
use bytes::Bytes;
use hyper::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot, watch};

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
pub(super) struct Conn {
    /// A request is being answered.
    pub(super) busy: AtomicBool,
    /// The server has tried to read the next request and found nothing (yet). Until
    /// then a new connection may have its request waiting in the socket: it is not
    /// idle, only not looked at.
    pub(super) waiting: AtomicBool,
    /// Milliseconds from the server's epoch to the moment the connection was accepted
    /// or its last answer was handed over: the start of its wait for a request.
    pub(super) since_ms: AtomicU64,
    pub(super) requests: AtomicU32,
    pub(super) evict: Notify,
}

/// The server's table of open connections.
pub(super) struct Server {
    pub(super) state: Arc<AdminState>,
    pub(super) limits: Limits,
    pub(super) epoch: Instant,
    pub(super) next_id: AtomicU64,
    pub(super) open: Mutex<HashMap<u64, Arc<Conn>>>,
    pub(super) evicted: AtomicU64,
    pub(super) timed_out: AtomicU64,
}

impl Server {
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection, closing another one first if the table is full.
    pub(super) fn admit(&self) -> (u64, Arc<Conn>) {
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
    pub(super) fn deadline(&self, conn: &Conn) -> Instant {
        let since = self.epoch + Duration::from_millis(conn.since_ms.load(Ordering::Relaxed));
        if conn.busy.load(Ordering::Relaxed) {
            since + ANSWER_TIMEOUT
        } else {
            since + self.limits.read_timeout
        }
    }
}

/// Removes a connection from the table when its task ends, however it ends.
pub(super) struct Registered(Arc<Server>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

pub(super) async fn accept_loop(
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

pub(super) async fn connection(
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
pub(super) struct AnswerDone(Arc<Server>, Arc<Conn>);

impl Drop for AnswerDone {
    fn drop(&mut self) {
        self.1.since_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.1.busy.store(false, Ordering::Relaxed);
    }
}

/// An answer body that reports when it is done with.
pub(super) struct Answer {
    pub(super) body: Text,
    pub(super) _done: AnswerDone,
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
pub(super) struct Guarded<T> {
    pub(super) io: T,
    pub(super) conn: Arc<Conn>,
    pub(super) limit: Duration,
    pub(super) stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Guarded<T> {
    pub(super) fn new(io: T, conn: Arc<Conn>, limit: Duration) -> Self {
        Guarded {
            io,
            conn,
            limit,
            stalled: None,
        }
    }

    pub(super) fn check<R>(
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
