//! End-to-end state checks on real API servers: the state volume claim in the standby
//! (missing, `Pending`, `Bound`), a remote state backend on loopback (refusing, then
//! answering), a VolSync-like `ReplicationDestination` whose `.status.lastSyncTime` the
//! test sets (its CRD not installed, stale, fresh; forbidden to the daemon) and a
//! container image changed on the standby only (drift). With gate `block` each holds a
//! promotion in `blocked` with its own reason until it is fixed; with gate `warn` the
//! promotion goes ahead and the failing checks are listed, metered and recorded in an
//! Event.

use crate::support;

use kube_failover::status::{GroupStatus, StateCheckStatus};
use kube_failover_testbed::{ClusterPair, VOLSYNC_GROUP};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLAIM: &str = "env0-state-volume-claim";
const DESTINATION: &str = "env0-state";
const OTHER_IMAGE: &str = "env0/deployment-agent:older";

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

/// A state backend on `addr` answering every request with 403, as a bucket does to an
/// anonymous GET.
async fn serve_backend(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the backend's port again");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = sock.read(&mut buf).await;
            let reply = "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    })
}

/// The state keys of the group, every gate `gate`, the backend at `backend`.
fn state_toml(gate: &str, backend: SocketAddr) -> String {
    format!(
        r#"
[[groups.state.backends]]
name = "s3"
url = "http://{backend}/my-bucket?X-Amz-Signature=never-shown"
gate = "{gate}"

[groups.state.volume]
claim = "{CLAIM}"
gate = "{gate}"

[[groups.state.freshness]]
name = "volsync"
api_version = "volsync.backube/v1alpha1"
kind = "ReplicationDestination"
object = "{DESTINATION}"
pointer = "/status/lastSyncTime"
max_age = "15m"
gate = "{gate}"

[groups.drift]
gate = "{gate}"
"#
    )
}

/// Starts the daemon on `pair` with the group's state keys appended.
async fn start(pair: &ClusterPair, state: &str) -> Daemon {
    let admin = free_port();
    let dir = pair.primary.dir().to_path_buf();
    let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
    let toml = config_toml(pair, &DaemonOpts::default(), admin) + state;
    std::fs::write(&config, toml).expect("write daemon config");
    Daemon::start_with_config(&config, admin, &dir).await
}

fn check<'a>(g: &'a GroupStatus, name: &str) -> Option<&'a StateCheckStatus> {
    g.state_checks.iter().find(|c| c.name == name)
}

/// The check `name` has `result`.
fn has(g: &GroupStatus, name: &str, result: &str) -> bool {
    check(g, name).is_some_and(|c| c.result == result)
}

fn reasons(g: &GroupStatus) -> Vec<String> {
    g.last_decision
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn warnings(g: &GroupStatus) -> Vec<String> {
    g.last_decision
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `kube_failover_state_check_ok` of one check.
fn ok_series(check: &str, gate: &str) -> String {
    format!(r#"kube_failover_state_check_ok{{check="{check}",gate="{gate}",group="env0"}}"#)
}

/// Asserts for `how_long` that the standby stays at 0 replicas.
async fn stays_unpromoted(pair: &ClusterPair, how_long: Duration) {
    let until = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < until {
        assert_eq!(replicas(&pair.standby).await, 0, "standby scaled up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Gate `block`: a missing then unbound claim, a refusing backend, a CRD not installed
/// then a stale replication timestamp, and an older image on the standby are each
/// reported; with the primary down, the promotion waits in `blocked` naming every one,
/// and goes ahead only once the last is fixed.
#[tokio::test(flavor = "multi_thread")]
async fn block_gates_hold_the_promotion_with_named_reasons_until_fixed() {
    let pair = pair().await;
    let backend = free_port(); // nothing listens there yet: refused
    let standby = &pair.standby;
    let trigger = standby.trigger_deployment();
    let original = standby
        .set_deployment_image(&trigger, OTHER_IMAGE)
        .await
        .expect("older image on the standby")
        .expect("an image before");
    standby
        .allow_daemon_to_read(VOLSYNC_GROUP, "replicationdestinations")
        .await
        .expect("RBAC for the freshness kind");
    let d = start(&pair, &state_toml("block", backend)).await;

    d.wait_group("every check failing", Duration::from_secs(20), |g| {
        g.state == "primary_active"
            && has(g, "backend:s3", "unreachable")
            && has(g, "volume", "missing")
            && has(g, "freshness:volsync", "not_installed")
            && has(g, "drift:image", "drift")
    })
    .await;
    let g = d.group().await.expect("status");
    assert!(!g.standby_fit, "{g:#?}");
    let c = check(&g, "backend:s3").unwrap();
    assert_eq!(c.gate, "block");
    assert!(!c.ok);
    assert_eq!(
        c.reason.as_ref().map(ToString::to_string).as_deref(),
        Some("standby_state_backend_unreachable")
    );
    assert!(!c.detail.contains("never-shown"), "{}", c.detail);
    assert!(c.last_checked_unix.is_some());
    assert_eq!(
        check(&g, "freshness:volsync")
            .and_then(|c| c.reason.as_ref())
            .map(ToString::to_string)
            .as_deref(),
        Some("standby_state_unanswerable"),
        "a kind not installed is unanswerable, named as such"
    );
    let drift = g.drift.as_ref().expect("drift status");
    let image = drift
        .items
        .iter()
        .find(|i| i.field == "image" && i.deployment == trigger)
        .expect("image drift of the trigger");
    assert_eq!(image.primary, original);
    assert_eq!(image.standby, OTHER_IMAGE);
    let drift_series =
        format!(r#"kube_failover_drift{{deployment="{trigger}",field="image",group="env0"}}"#);
    assert_eq!(d.metric(&drift_series).await, Some(1.0));
    assert_eq!(d.metric(&ok_series("volume", "block")).await, Some(0.0));
    assert_eq!(
        d.metric(r#"kube_failover_standby_fit{group="env0"}"#).await,
        Some(0.0)
    );

    // The CRD appears with a stale object; the claim appears, Pending.
    standby
        .install_volsync_crd()
        .await
        .expect("install the CRD");
    let hour_ago = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_hours(1))
    .to_string();
    standby
        .set_replication_destination(DESTINATION, Some(&hour_ago))
        .await
        .expect("stale ReplicationDestination");
    standby
        .create_state_volume_claim(CLAIM)
        .await
        .expect("create the claim");
    d.wait_group("stale and unbound", Duration::from_secs(20), |g| {
        has(g, "freshness:volsync", "stale") && has(g, "volume", "unbound")
    })
    .await;

    pair.primary.stop_apiserver().await.expect("stop primary");
    let every = [
        "standby_state_backend_unreachable",
        "standby_state_volume_unbound",
        "standby_state_stale",
        "standby_agent_drift",
    ];
    d.wait_group("blocked by every check", Duration::from_secs(20), |g| {
        let r = reasons(g);
        g.state == "blocked"
            && r.first().map(String::as_str) == Some("primary_down_quorum")
            && every.iter().all(|code| r.iter().any(|x| x == code))
    })
    .await;
    stays_unpromoted(&pair, Duration::from_secs(3)).await;

    // Fixed one by one during the outage: each reason goes, the promotion waits.
    standby
        .bind_state_volume_claim(CLAIM)
        .await
        .expect("bind the claim");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    standby
        .set_replication_destination(DESTINATION, Some(&now))
        .await
        .expect("fresh ReplicationDestination");
    let server = serve_backend(backend).await;
    d.wait_group("only drift left", Duration::from_secs(20), |g| {
        let r = reasons(g);
        g.state == "blocked"
            && r == ["primary_down_quorum", "standby_agent_drift"]
            && has(g, "volume", "ok")
            && has(g, "freshness:volsync", "ok")
            && has(g, "backend:s3", "ok")
    })
    .await;
    let g = d.group().await.expect("status");
    assert_eq!(
        check(&g, "backend:s3").map(|c| c.detail.as_str()),
        Some("backend s3: HTTP 403"),
        "any answer below 500 proves reachability"
    );
    stays_unpromoted(&pair, Duration::from_secs(2)).await;
    assert_eq!(d.metric(STARTED).await, Some(0.0));

    // The standby runs the primary's agent again: drift is judged against the primary
    // as last seen healthy, and the promotion goes ahead.
    standby
        .set_deployment_image(&trigger, &original)
        .await
        .expect("image back");
    let took = d
        .wait_group("promotion started", Duration::from_secs(30), |g| {
            g.state == "promoting" || g.state == "promoted"
        })
        .await;
    measured("last block check fixed -> promotion started", took);
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert_eq!(replicas(&pair.standby).await, 2);
    assert_eq!(d.metric(STARTED).await, Some(1.0));
    assert_eq!(d.metric(&drift_series).await, Some(0.0));
    server.abort();
}

/// Gate `warn`: the same failures (the replication object forbidden to the daemon this
/// time) never hold the promotion back; they are listed as warnings, metered, and named
/// in an Event when the promotion starts.
#[tokio::test(flavor = "multi_thread")]
async fn warn_gates_only_warn_and_the_promotion_goes_ahead() {
    let pair = pair().await;
    let backend = free_port();
    let standby = &pair.standby;
    let trigger = standby.trigger_deployment();
    standby
        .set_deployment_image(&trigger, OTHER_IMAGE)
        .await
        .expect("older image on the standby");
    standby
        .install_volsync_crd()
        .await
        .expect("install the CRD");
    standby
        .set_replication_destination(DESTINATION, Some("2020-01-01T00:00:00Z"))
        .await
        .expect("ReplicationDestination");
    let d = start(&pair, &state_toml("warn", backend)).await;
    d.wait_group("every check failing", Duration::from_secs(20), |g| {
        g.state == "primary_active"
            && has(g, "backend:s3", "unreachable")
            && has(g, "volume", "missing")
            && has(g, "freshness:volsync", "forbidden")
            && has(g, "drift:image", "drift")
    })
    .await;
    let g = d.group().await.expect("status");
    assert!(g.standby_fit, "warn gates never make the standby unfit");
    assert_eq!(
        warnings(&g),
        [
            "standby_state_backend_unreachable",
            "standby_state_volume_missing",
            "standby_state_unanswerable",
            "standby_agent_drift",
        ]
    );
    for name in ["backend:s3", "volume", "freshness:volsync", "drift:image"] {
        assert_eq!(
            d.metric(&ok_series(name, "warn")).await,
            Some(0.0),
            "{name}"
        );
    }

    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert_eq!(replicas(&pair.standby).await, 2);
    assert_eq!(d.metric(STARTED).await, Some(1.0));
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverStateCheckFailing").await,
        1,
        "one Event naming the failing checks when the promotion started"
    );
    let g = d.group().await.expect("status");
    assert_eq!(warnings(&g).len(), 4, "still listed after the promotion");
}
