//! End-to-end: the daemon binary with a bearer-token kubeconfig for the primary, whose
//! token is rotated on disk (and the old one revoked) while the group is active.

use crate::support;

use kube_failover_testbed::TokenCredentials;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_token_rotated_on_disk_keeps_the_primary_active() {
    let pair = pair().await;
    let mut creds = TokenCredentials::create(&pair.primary, "daemon")
        .await
        .expect("token identity for the primary");
    let first_token = creds.token().expect("token");
    let opts = DaemonOpts {
        primary_kubeconfig: Some(creds.kubeconfig().to_path_buf()),
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;

    // Sample the group while the token is rotated and the old one revoked (the revocation
    // takes the API server about 10 s), and for a few seconds after.
    let rotating = async {
        creds.rotate().await.expect("rotate the token");
        Instant::now()
    };
    let sampling = async {
        let mut worst_streak = 0;
        let mut states: Vec<String> = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(g) = d.group().await {
                for s in &g.signals {
                    worst_streak = worst_streak.max(s.consecutive_failures);
                }
                if states.last() != Some(&g.state.to_string()) {
                    states.push(g.state.to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (worst_streak, states)
    };
    let (rotation_done, (worst_streak, states)) = tokio::join!(rotating, sampling);
    assert_eq!(
        states,
        vec!["primary_active".to_string()],
        "{}",
        d.log_text()
    );
    assert!(
        worst_streak <= 1,
        "a signal failed {worst_streak} ticks in a row\n{}",
        d.log_text()
    );
    // The sampling went on for a while after the old token was rejected.
    assert!(rotation_done.elapsed() >= Duration::from_secs(3));

    // Healthy with the new token, nothing promoted, the standby untouched.
    d.wait_group(
        "every signal up after rotation",
        Duration::from_secs(10),
        |g| {
            g.state == "primary_active"
                && g.signals
                    .iter()
                    .all(|s| s.up && s.consecutive_failures == 0 && s.consecutive_successes >= 1)
        },
    )
    .await;
    assert_eq!(d.metric(STARTED).await.unwrap_or(0.0), 0.0);
    assert_eq!(replicas(&pair.standby).await, 0);
    assert_eq!(replicas(&pair.primary).await, 2);

    let log = std::fs::read_to_string(&d.log).expect("daemon log");
    assert!(
        log.contains("credentials changed on disk: client rebuilt"),
        "the reload is logged\n{}",
        d.log_text()
    );
    for token in [first_token, creds.token().expect("token")] {
        assert!(
            !log.contains(token.trim()),
            "a token appears in the daemon's log"
        );
    }
}
