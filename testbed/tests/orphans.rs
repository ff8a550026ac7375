//! A test process that is SIGKILLed runs no destructor. Its control-plane processes must
//! die anyway (parent-death signal), and the next test bed start removes what it left on
//! disk.

use kube_failover_testbed::{Binaries, Cluster};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "KUBE_FAILOVER_TESTBED_ORPHAN_HELPER";

/// Runs only as the child of `control_plane_dies_with_a_sigkilled_test_process`: starts a
/// cluster, reports its PIDs and directory, and waits to be killed.
#[tokio::test]
#[ignore = "helper process for control_plane_dies_with_a_sigkilled_test_process"]
async fn orphan_helper() {
    let report = PathBuf::from(std::env::var_os(HELPER_ENV).expect("run by the parent test"));
    let cluster = Cluster::start("orphan").await.expect("cluster starts");
    let pids: Vec<String> = cluster.pids().iter().map(u32::to_string).collect();
    let text = format!("{}\n{}\n", cluster.dir().display(), pids.join(" "));
    let tmp = report.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &report).unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    panic!("the parent test should have killed this process");
}

/// Gone, or a zombie waiting for a reaper (it no longer runs, holds no port or memory).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn control_plane_dies_with_a_sigkilled_test_process() {
    // Build (if needed) here, so the helper's start is quick.
    tokio::task::spawn_blocking(Binaries::locate)
        .await
        .unwrap()
        .expect("binaries");
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "orphans::orphan_helper",
            "--nocapture",
        ])
        .env(HELPER_ENV, &report)
        .stdout(Stdio::null())
        .spawn()
        .expect("helper starts");

    let deadline = Instant::now() + Duration::from_secs(120);
    while !report.exists() {
        if let Some(status) = helper.try_wait().unwrap() {
            panic!("helper exited early with {status}");
        }
        assert!(Instant::now() < deadline, "helper never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&report).unwrap();
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next().unwrap());
    let pids: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4);
    assert!(
        pids.iter().all(|&p| !is_dead(p)),
        "all running before the kill"
    );

    helper.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    helper.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&p| is_dead(p)) {
        assert!(
            Instant::now() < deadline,
            "control plane outlived its test process: {:?}",
            pids.iter().filter(|&&p| !is_dead(p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dir.exists(),
        "nothing ran that could have removed {}",
        dir.display()
    );

    // The next start, in any process, sweeps the dead owner's directory away. The sweep
    // runs once per process and this test binary started clusters before, so the next
    // start is a fresh process's.
    let next = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "orphans::next_start_helper",
            "--nocapture",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("second helper runs");
    assert!(next.success(), "the next start failed: {next}");
    assert!(!Path::new(&dir).exists(), "{} was not swept", dir.display());
}

/// Runs only as the second child of `control_plane_dies_with_a_sigkilled_test_process`:
/// the first cluster start of a fresh process, which sweeps what killed ones left.
#[tokio::test]
#[ignore = "helper process for control_plane_dies_with_a_sigkilled_test_process"]
async fn next_start_helper() {
    let cluster = Cluster::start("after-orphan")
        .await
        .expect("cluster starts");
    drop(cluster);
}
