//! A TCP proxy on 127.0.0.1 whose behaviour a test switches at run time, to break only
//! the path between the daemon and one API server while the cluster itself is fine.
//!
//! It works on raw TCP, so TLS passes through untouched and the API server still sees
//! the daemon's client certificate.

use crate::error::{Result, TestbedError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy does with traffic. Applies to new and existing connections alike, from
/// the moment it is set, except [`ProxyMode::BlackholeExisting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Accept connections but forward and answer nothing, like a network that drops
    /// packets: existing connections stall, new ones hang after the TCP handshake. When
    /// the mode changes back, held traffic flows again, as after a healed partition.
    Blackhole,
    /// [`ProxyMode::Blackhole`] for the connections accepted before the mode was set,
    /// while new ones pass: a flow that dies without a word (a NAT entry dropped, a
    /// stateful firewall forgetting it) while the network itself is fine. When the mode
    /// changes, held traffic flows again.
    BlackholeExisting,
    /// Reset every connection, existing and new (TCP RST).
    Reset,
    /// Forward with an added delay per direction (to the API server, back to the client).
    Latency {
        /// Added before forwarding each chunk to the API server.
        to_upstream: Duration,
        /// Added before forwarding each chunk to the client.
        to_client: Duration,
    },
}

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
    /// Connections accepted when the mode was last set.
    cutoff: AtomicU64,
}

/// A running fault proxy; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

/// Whether a connection holds its traffic: `index` is its place in accept order and
/// `cutoff` the number of connections accepted when the mode was last set.
fn stalls(mode: ProxyMode, index: u64, cutoff: &AtomicU64) -> bool {
    match mode {
        ProxyMode::Blackhole => true,
        ProxyMode::BlackholeExisting => index < cutoff.load(Ordering::SeqCst),
        _ => false,
    }
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`, in
    /// [`ProxyMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| TestbedError::Port {
                what: format!("for a fault proxy to {upstream}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| TestbedError::Port {
            what: format!("for a fault proxy to {upstream}"),
            source,
        })?;
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, upstream, mode.clone(), stats.clone()));
        Ok(FaultProxy {
            addr,
            upstream,
            mode,
            stats,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`, for a kubeconfig.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Where traffic goes.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the mode; new and open connections follow it.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_modify(|m| {
            let accepted = self.stats.accepted.load(Ordering::SeqCst);
            self.stats.cutoff.store(accepted, Ordering::SeqCst);
            *m = mode;
        });
    }

    /// The mode in force.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open on the client side: accepted and not closed yet by
    /// the client (a close is seen while blackholed too) nor by the proxy.
    pub fn open_connections(&self) -> u64 {
        self.stats.open.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    stats: Arc<Stats>,
) {
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
        let index = stats.accepted.fetch_add(1, Ordering::SeqCst);
        conns.spawn(connection(
            client,
            index,
            upstream,
            mode.subscribe(),
            stats.clone(),
        ));
        while conns.try_join_next().is_some() {}
    }
}

/// Counts a connection as open on the client side until the client closes it (seen
/// even while the proxy holds it blackholed) or the proxy drops it.
struct ClientOpen {
    stats: Arc<Stats>,
    counted: AtomicBool,
}

impl ClientOpen {
    fn new(stats: Arc<Stats>) -> ClientOpen {
        stats.open.fetch_add(1, Ordering::Relaxed);
        ClientOpen {
            stats,
            counted: AtomicBool::new(true),
        }
    }

    /// The client closed its side (or the connection ended).
    fn closed(&self) {
        if self.counted.swap(false, Ordering::Relaxed) {
            self.stats.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ClientOpen {
    fn drop(&mut self) {
        self.closed();
    }
}

async fn connection(
    client: TcpStream,
    index: u64,
    upstream: SocketAddr,
    mut mode: watch::Receiver<ProxyMode>,
    stats: Arc<Stats>,
) {
    let open = ClientOpen::new(stats.clone());
    let stalled = move |m: ProxyMode| stalls(m, index, &stats.cutoff);
    let _ = client.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    // Hold a new connection while blackholed. What the client sends is kept, to be
    // delivered when the path heals (as a network delivers what it held), and a close
    // by the client is seen and counted at once.
    let mut held = Vec::new();
    let mut client_done = false;
    let now = loop {
        let m = *mode.borrow_and_update();
        if !stalled(m) {
            break m;
        }
        let mut buf = [0u8; 16 * 1024];
        tokio::select! {
            changed = mode.changed() => if changed.is_err() { return },
            n = client_r.read(&mut buf), if !client_done => match n {
                Ok(0) | Err(_) => {
                    client_done = true;
                    open.closed();
                }
                Ok(n) => held.extend_from_slice(&buf[..n]),
            },
        }
    };
    if now == ProxyMode::Reset {
        if let Ok(client) = client_r.reunite(client_w) {
            reset(&client);
        }
        return;
    }
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => {
            // The closest a proxy gets to "connection refused".
            if let Ok(client) = client_r.reunite(client_w) {
                reset(&client);
            }
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (mut server_r, mut server_w) = server.into_split();
    if server_w.write_all(&held).await.is_err() {
        return;
    }
    let was_reset = {
        let up = pump(
            &mut client_r,
            &mut server_w,
            Direction::ToUpstream,
            mode.clone(),
            &stalled,
            || open.closed(),
        );
        let down = pump(
            &mut server_r,
            &mut client_w,
            Direction::ToClient,
            mode.clone(),
            &stalled,
            || {},
        );
        let both = async { tokio::try_join!(up, down) };
        tokio::select! {
            _ = both => false,
            _ = mode.wait_for(|m| *m == ProxyMode::Reset) => true,
        }
    };
    if was_reset {
        // Reunite first: dropping a write half on its own would send FIN before the RST.
        if let Ok(client) = client_r.reunite(client_w) {
            reset(&client);
        }
        if let Ok(server) = server_r.reunite(server_w) {
            reset(&server);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    ToUpstream,
    ToClient,
}

/// Copies one direction, each chunk held for the delay in force when it was read, and
/// for as long as `stalled` says the connection is blackholed. Reading and writing run concurrently, so a
/// delay adds latency without cutting throughput. `ended` is called when the reading
/// side closes or fails (even while what it sent is still held).
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    mode: watch::Receiver<ProxyMode>,
    stalled: &impl Fn(ProxyMode) -> bool,
    ended: impl FnOnce(),
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let read_mode = mode.clone();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    ended();
                    return Err(e);
                }
            };
            if n == 0 {
                ended();
                return Ok(());
            }
            let delay = match (*read_mode.borrow(), direction) {
                (ProxyMode::Latency { to_upstream, .. }, Direction::ToUpstream) => to_upstream,
                (ProxyMode::Latency { to_client, .. }, Direction::ToClient) => to_client,
                _ => Duration::ZERO,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let mut write_mode = mode;
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if write_mode.wait_for(|m| !stalled(*m)).await.is_err() {
                return Ok(());
            }
            to.write_all(&chunk).await?;
        }
        // The reader saw end of stream: pass the half-close on.
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

fn reset(stream: &TcpStream) {
    // With a zero linger time, closing the socket sends RST instead of FIN.
    let _ = stream.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.open_connections(), 1);
    }

    #[tokio::test]
    async fn blackhole_stalls_existing_and_new_connections_then_heals() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut old, b"before").await.unwrap(), b"before");

        proxy.set_mode(ProxyMode::Blackhole);
        let stalled = tokio::time::timeout(SHORT, roundtrip(&mut old, b"during")).await;
        assert!(
            stalled.is_err(),
            "existing connection must stall: {stalled:?}"
        );
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        let stalled = tokio::time::timeout(SHORT, roundtrip(&mut new, b"new")).await;
        assert!(stalled.is_err(), "new connection must stall: {stalled:?}");

        proxy.set_mode(ProxyMode::Pass);
        // The bytes written while blackholed arrive now, in order.
        let mut buf = [0u8; 6];
        tokio::time::timeout(SHORT, old.read_exact(&mut buf))
            .await
            .expect("old connection resumes")
            .unwrap();
        assert_eq!(&buf, b"during");
        let mut buf = [0u8; 3];
        tokio::time::timeout(SHORT, new.read_exact(&mut buf))
            .await
            .expect("new connection resumes")
            .unwrap();
        assert_eq!(&buf, b"new");
    }

    #[tokio::test]
    async fn blackhole_existing_stalls_only_the_connections_open_before_it() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut old, b"before").await.unwrap(), b"before");

        proxy.set_mode(ProxyMode::BlackholeExisting);
        let stalled = tokio::time::timeout(SHORT, roundtrip(&mut old, b"during")).await;
        assert!(
            stalled.is_err(),
            "existing connection must stall: {stalled:?}"
        );
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            tokio::time::timeout(SHORT, roundtrip(&mut new, b"new"))
                .await
                .expect("a new connection passes")
                .unwrap(),
            b"new"
        );

        proxy.set_mode(ProxyMode::Pass);
        let mut buf = [0u8; 6];
        tokio::time::timeout(SHORT, old.read_exact(&mut buf))
            .await
            .expect("old connection resumes")
            .unwrap();
        assert_eq!(&buf, b"during");
    }

    #[tokio::test]
    async fn a_client_closing_while_blackholed_is_no_longer_open_and_its_bytes_still_arrive() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set_mode(ProxyMode::Blackhole);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"held").await.unwrap();
        let wait_open = |n: u64| {
            let proxy = &proxy;
            async move {
                for _ in 0..100 {
                    if proxy.open_connections() == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(wait_open(1).await);
        // The client closes its side while nothing flows: seen at once.
        s.shutdown().await.unwrap();
        assert!(wait_open(0).await, "{}", proxy.open_connections());
        assert_eq!(proxy.accepted(), 1);
        // Healed: what it sent reaches the upstream (the echo comes back).
        proxy.set_mode(ProxyMode::Pass);
        let mut buf = [0u8; 4];
        tokio::time::timeout(SHORT, s.read_exact(&mut buf))
            .await
            .expect("delivered after the heal")
            .unwrap();
        assert_eq!(&buf, b"held");
    }

    #[tokio::test]
    async fn reset_drops_existing_and_new_connections() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut old, b"x").await.unwrap(), b"x");

        proxy.set_mode(ProxyMode::Reset);
        let mut buf = [0u8; 1];
        let got = tokio::time::timeout(SHORT, old.read(&mut buf))
            .await
            .expect("reset is immediate");
        let err = got.expect_err("existing connection must be reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        let got = tokio::time::timeout(SHORT, roundtrip(&mut new, b"y"))
            .await
            .expect("reset is immediate");
        assert!(got.is_err(), "new connection must be reset: {got:?}");

        // Back to pass, a new connection works again.
        proxy.set_mode(ProxyMode::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut again, b"z").await.unwrap(), b"z");
    }

    #[tokio::test]
    async fn latency_delays_each_direction_without_losing_throughput() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut s, b"warm").await.unwrap();

        proxy.set_mode(ProxyMode::Latency {
            to_upstream: Duration::from_millis(150),
            to_client: Duration::from_millis(100),
        });
        let start = std::time::Instant::now();
        roundtrip(&mut s, b"slow").await.unwrap();
        let rtt = start.elapsed();
        assert!(
            rtt >= Duration::from_millis(250),
            "rtt {rtt:?} must include both delays"
        );
        assert!(rtt < Duration::from_millis(1000), "rtt {rtt:?} too long");

        // Ten messages sent back to back arrive after about one delay, not ten.
        let start = std::time::Instant::now();
        for _ in 0..10 {
            s.write_all(b"0123456789").await.unwrap();
        }
        let mut buf = [0u8; 100];
        s.read_exact(&mut buf).await.unwrap();
        let burst = start.elapsed();
        assert!(burst < Duration::from_millis(1000), "burst took {burst:?}");

        proxy.set_mode(ProxyMode::Pass);
        let start = std::time::Instant::now();
        roundtrip(&mut s, b"fast").await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn unreachable_upstream_resets_the_client() {
        let free = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let dead = free.local_addr().unwrap();
        drop(free);
        let proxy = FaultProxy::start(dead).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let got = tokio::time::timeout(SHORT, roundtrip(&mut s, b"q"))
            .await
            .expect("refusal is immediate");
        assert!(got.is_err(), "must fail: {got:?}");
    }

    #[tokio::test]
    async fn drop_closes_the_listener_and_connections() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let addr = proxy.addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        roundtrip(&mut s, b"a").await.unwrap();
        drop(proxy);
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(SHORT, s.read(&mut buf))
            .await
            .expect("close is immediate");
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "connection must be closed: {n:?}"
        );
        // Give the runtime a moment to run the abort.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener must be closed"
        );
    }
}
