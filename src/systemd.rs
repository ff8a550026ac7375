//! systemd's notify protocol: readiness, watchdog keep-alives, stopping.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is unset (a pod, a terminal, a test), and
//! none of them can fail the daemon: the service manager is a spectator, so a lost
//! datagram is logged at debug and otherwise ignored. If the watchdog pings are lost for
//! real, systemd restarts the daemon, which is the point of the watchdog.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells the service manager that start-up is finished (`READY=1`).
///
/// The daemon calls this after its first completed tick, so `systemctl start` returns only
/// once the daemon has actually looked at both clusters.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Pets the watchdog (`WATCHDOG=1`); call it on each healthy tick.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Tells the service manager that shutdown has begun (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog timeout the service manager expects pings within (`WATCHDOG_USEC`), if
/// the watchdog is on for this process.
///
/// Ping at a fraction of it (systemd recommends half) so one slow tick does not get the
/// daemon killed. `None` when the variable is unset, unparsable, zero, or addressed to
/// another process by `WATCHDOG_PID`.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

fn send(state: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::debug!(%error, "could not notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    //! The crate forbids `unsafe`, and setting environment variables is `unsafe` in Rust
    //! 2024, so each case runs the test binary again as a child process with its own
    //! environment. That also keeps these tests independent of the other tests' threads:
    //! no shared process environment, nothing to serialize.

    use std::io::ErrorKind;
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Output};
    use std::time::Duration;

    const CHILD: &str = "KUBE_FAILOVER_NOTIFY_TEST_CHILD";

    /// Runs the `child` test below in a fresh process with the given environment.
    fn run_child(env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
        cmd.args([
            "--ignored",
            "--exact",
            "systemd::tests::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the test binary as a child");
        assert!(
            out.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A filter that matched nothing would pass vacuously: make sure the child ran.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child test did not run: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// The body the child process runs: every call, in the daemon's order.
    #[test]
    #[ignore = "run in a child process by the tests below, with NOTIFY_SOCKET set"]
    fn child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        super::ready();
        println!("watchdog interval: {:?}", super::watchdog_interval());
        super::watchdog();
        super::stopping();
    }

    /// The watchdog interval the child saw, as it printed it.
    fn watchdog_seen(out: &Output) -> String {
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.split_once("watchdog interval: ").map(|(_, v)| v))
            .unwrap_or_else(|| panic!("the child printed no watchdog interval: {stdout}"))
            .to_string()
    }

    fn receive_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 3 {
            match sock.recv(&mut buf) {
                Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    break;
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();

        let out = run_child(&[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "30000000"),
        ]);

        assert_eq!(
            receive_all(&sock),
            ["READY=1\n", "WATCHDOG=1\n", "STOPPING=1\n"]
        );
        assert_eq!(watchdog_seen(&out), "Some(30s)");
    }

    #[test]
    fn watchdog_for_another_pid_or_zero_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();

        // pid 1 is never the test binary: the watchdog belongs to someone else.
        let out = run_child(&[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "30000000"),
            ("WATCHDOG_PID", "1"),
        ]);
        assert_eq!(receive_all(&sock).len(), 3);
        assert_eq!(watchdog_seen(&out), "None");

        let out = run_child(&[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "0"),
        ]);
        assert_eq!(receive_all(&sock).len(), 3);
        assert_eq!(watchdog_seen(&out), "None");
    }

    #[test]
    fn unset_or_broken_socket_never_fails() {
        // Unset: the plain no-op case (a pod, a terminal).
        run_child(&[]);
        // Set but nobody listening: every send errors inside, and the child must still
        // finish normally rather than panic or exit.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens.sock");
        run_child(&[("NOTIFY_SOCKET", missing.to_str().unwrap())]);
    }
}
