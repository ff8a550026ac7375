//! The admin server against real sockets on 127.0.0.1.

use super::routes::*;
use super::server::*;
use super::state::*;
use super::*;
use crate::metrics::Metrics;
use crate::status::{GroupStatus, StatusReport};
use http_body_util::BodyExt;
use hyper::header::ALLOW;
use hyper::{Method, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

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

async fn text(resp: Response<Text>) -> String {
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
    let s =
        Arc::new(state(1, Duration::from_millis(100)).with_stall_limit(Duration::from_millis(300)));
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
async fn each_tick_takes_its_groups_place_and_ready_waits_for_every_group() {
    let s = state(3, Duration::from_secs(1));
    for (i, name) in ["c", "a", "b"].into_iter().enumerate() {
        assert!(!s.is_ready(), "only {i} of 3 groups ticked");
        s.tick_done(group(name), i as f64);
    }
    assert!(s.is_ready());
    let mut later = group("a");
    later.state = crate::model::GroupState::Promoting.into();
    s.tick_done(later, 9.0);
    let report: StatusReport =
        serde_json::from_str(&text(route_parts(&s, &Method::GET, "/status").await).await).unwrap();
    let shown: Vec<(&str, bool)> = report
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.state == "promoting"))
        .collect();
    assert_eq!(
        shown,
        [("c", false), ("a", true), ("b", false)],
        "in the order of their first ticks, each replaced in place"
    );
    let one = route_parts(&s, &Method::GET, "/status?group=b").await;
    let report: StatusReport = serde_json::from_str(&text(one).await).unwrap();
    assert_eq!(report.groups.len(), 1);
    assert_eq!(report.groups[0].name, "b");
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

#[tokio::test]
async fn metrics_are_answered_in_parts_of_a_known_length() {
    use hyper::body::Body;
    let s = state(1, Duration::from_secs(1));
    let get = route_parts(&s, &Method::GET, "/metrics").await;
    let exact = get.body().size_hint().exact();
    let body = text(get).await;
    assert!(body.contains("kube_failover_build_info"), "{body}");
    assert_eq!(exact, Some(body.len() as u64));
    let head = route_parts(&s, &Method::HEAD, "/metrics").await;
    assert_eq!(
        head.headers()[hyper::header::CONTENT_LENGTH],
        body.len().to_string().as_str()
    );
}

#[tokio::test]
async fn a_text_body_writes_its_parts_in_order_and_counts_down_its_length() {
    use hyper::body::Body;
    let mut t = Text::parts([
        bytes::Bytes::from_static(b"stored\n"),
        bytes::Bytes::new(),
        bytes::Bytes::from_static(b"live\n"),
    ]);
    assert_eq!(t.size_hint().exact(), Some(12));
    let first = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"stored\n");
    assert_eq!(t.size_hint().exact(), Some(5));
    assert!(!t.is_end_stream());
    let second = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"live\n");
    assert!(t.is_end_stream());
    assert_eq!(t.size_hint().exact(), Some(0));
    assert!(t.frame().await.is_none());
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

#[test]
fn the_group_parameter_is_form_decoded() {
    assert_eq!(group_parameter("group=env0").as_deref(), Some("env0"));
    assert_eq!(
        group_parameter("x=1&group=env%30-a+b&group=second").as_deref(),
        Some("env0-a b")
    );
    assert_eq!(group_parameter("groups=env0"), None);
    assert_eq!(group_parameter(""), None);
    // A broken escape is kept as it is.
    assert_eq!(group_parameter("group=a%2").as_deref(), Some("a%2"));
}
