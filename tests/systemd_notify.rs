//! The daemon under a service manager, as deploy/systemd/kube-failover.service runs it
//! (`Type=notify`, `WatchdogSec=`): the real binary on a test-bed pair, with
//! `NOTIFY_SOCKET` pointing at a datagram socket this test reads in place of systemd.
//! READY=1 must come only once the first tick is done, WATCHDOG=1 must keep coming well
//! within the watchdog timeout, and SIGTERM must announce STOPPING=1 before a clean exit.

use crate::support;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{DaemonOpts, config_toml, pair};

/// What the unit's WatchdogSec=30s becomes here, shortened so the test sees several pings.
const WATCHDOG: Duration = Duration::from_secs(3);

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

/// The next datagram, or None after `timeout`. Blocking reads run off the async runtime.
async fn next_message(sock: &UnixDatagram, timeout: Duration) -> Option<(String, Instant)> {
    let sock = sock.try_clone().expect("clone socket");
    tokio::task::spawn_blocking(move || {
        sock.set_read_timeout(Some(timeout)).expect("set timeout");
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        Some((
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            Instant::now(),
        ))
    })
    .await
    .expect("recv task")
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_reports_ready_after_first_tick_pets_the_watchdog_and_says_stopping() {
    let pair = pair().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_toml(&pair, &DaemonOpts::default(), admin))
        .expect("write config");
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("create log");

    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kube-failover");
    let log_text = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    // READY=1, and by then the first tick is done: /readyz answers 200 and /status shows
    // a decided state.
    let mut before_ready = Vec::new();
    loop {
        let Some((msg, _)) = next_message(&sock, Duration::from_secs(30)).await else {
            panic!(
                "no READY=1 within 30s (got {before_ready:?})\n{}",
                log_text()
            );
        };
        if msg.lines().any(|l| l == "READY=1") {
            break;
        }
        before_ready.push(msg);
    }
    support::measured("daemon start -> READY=1", started.elapsed());
    let http = reqwest::Client::new();
    let readyz = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(readyz.status(), 200, "READY=1 sent before /readyz is 200");
    let status: serde_json::Value = http
        .get(format!("http://{admin}/status"))
        .send()
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("/status is JSON");
    assert_ne!(
        status["groups"][0]["state"], "starting",
        "READY=1 sent before the first decision: {status}"
    );

    // WATCHDOG=1 keeps coming, each well within the watchdog timeout.
    let mut pings = Vec::new();
    let window = Instant::now();
    while window.elapsed() < 2 * WATCHDOG {
        match next_message(&sock, WATCHDOG).await {
            Some((msg, at)) if msg.lines().any(|l| l == "WATCHDOG=1") => pings.push(at),
            Some(_) => {}
            None => panic!(
                "no message for {WATCHDOG:?}: the watchdog would fire\n{}",
                log_text()
            ),
        }
    }
    assert!(
        pings.len() >= 3,
        "only {} pings in {:?}",
        pings.len(),
        2 * WATCHDOG
    );
    // What systemd enforces: no gap as long as the timeout (the daemon aims at a third).
    let worst = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        worst < WATCHDOG,
        "a gap of {worst:?} between pings: systemd would kill the daemon at {WATCHDOG:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    let pid = child.id().expect("daemon running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let mut stopping = false;
    while let Some((msg, _)) = next_message(&sock, Duration::from_secs(10)).await {
        if msg.lines().any(|l| l == "STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM\n{}", log_text());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20s of SIGTERM")
        .expect("wait for the daemon");
    assert!(
        exit.success(),
        "exit status {exit} after SIGTERM\n{}",
        log_text()
    );
}
