//! The README's first command, scripted: the sandbox runs the real daemon against two
//! test-bed clusters, stops the primary's API server, brings it back, and the report
//! says the standby was promoted and the old primary fenced.

use kube_failover_testbed::sandbox::{SandboxOptions, run_sandbox};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_shows_a_failover_and_a_fence() {
    let admin = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut opts = SandboxOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_kube-failover")));
    opts.admin_addr = admin;
    opts.outage_after = Some(Duration::from_secs(8));
    opts.outage_for = Duration::from_secs(12);
    opts.exit_after = Some(Duration::from_secs(35));
    opts.interactive = false;
    let report = run_sandbox(opts).await.expect("sandbox run");
    assert_eq!(report.outages, 1);
    let promoted = report
        .promoted_after
        .expect("standby promoted during the outage");
    let fenced = report
        .fenced_after
        .expect("primary fenced after it came back");
    assert!(
        fenced > promoted,
        "fenced ({fenced:?}) only after the promotion ({promoted:?})"
    );
    eprintln!(
        "measured: sandbox outage -> promoted {:.2}s, -> fenced {:.2}s",
        promoted.as_secs_f64(),
        fenced.as_secs_f64()
    );
}
