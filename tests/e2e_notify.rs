//! End-to-end notices: the real daemon on a test-bed pair POSTs to a receiver on
//! 127.0.0.1 when a promotion completes and when the group is failed back, names the
//! stale Terraform lock Leases of the standby, and (with `clear_stale_locks`) deletes
//! them.

use crate::support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::receiver::{Received, Receiver};
use support::*;

/// The secret header's value; must never appear in the daemon's log.
const SECRET: &str = "Bearer e2e-notice-s3cret";

/// A Terraform lock Lease as the `kubernetes` backend writes it, held by `lock_id`
/// (`None`: released), locked a minute ago.
fn lock_lease(name: &str, lock_id: Option<&str>) -> Lease {
    let created =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let info = serde_json::json!({
        "ID": lock_id.unwrap_or(""), "Operation": "OperationTypeApply", "Info": "",
        "Who": "runner@agent-7", "Version": "1.9.0", "Created": created.to_string(), "Path": "",
    });
    let mut annotations = serde_json::Map::new();
    if lock_id.is_some() {
        annotations.insert("app.terraform.io/lock-info".into(), info.to_string().into());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {"tfstate": "true", "tfstateSecretSuffix": "default",
                       "tfstateWorkspace": "default", "app.kubernetes.io/managed-by": "terraform"},
            "annotations": annotations,
        },
        "spec": {"holderIdentity": lock_id},
    }))
    .expect("lease manifest")
}

async fn create_lease(cluster: &kube_failover_testbed::Cluster, lease: &Lease) {
    Api::<Lease>::namespaced(cluster.client(), cluster.namespace())
        .create(&PostParams::default(), lease)
        .await
        .expect("create lease");
}

async fn lease_exists(cluster: &kube_failover_testbed::Cluster, name: &str) -> bool {
    Api::<Lease>::namespaced(cluster.client(), cluster.namespace())
        .get_opt(name)
        .await
        .expect("read lease")
        .is_some()
}

async fn events(cluster: &kube_failover_testbed::Cluster, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(cluster.client(), cluster.namespace())
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn webhook(name: &str, url: &str, format: &str, extra: &str) -> String {
    format!(
        "[[notify.webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nformat = \"{format}\"\n\
         timeout = \"2s\"\n{extra}\n"
    )
}

/// Waits until `path` has received `n` requests answered 2xx.
async fn wait_delivered(rx: &Receiver, path: &str, n: usize, d: &Daemon) -> Vec<Received> {
    let took = wait_for(
        Duration::from_secs(40),
        Duration::from_millis(100),
        || async {
            rx.received(path)
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .count()
                >= n
        },
    )
    .await;
    assert!(
        took.is_some(),
        "{path}: {n} notice(s) not delivered in 40s: {:?}\n{}",
        rx.received(path),
        d.log_text()
    );
    rx.received(path)
}

fn action_ids(notice: &Value) -> Vec<String> {
    notice["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_sends_one_notice_per_webhook_retries_and_clears_a_stale_lock() {
    let pair = pair().await;
    pair.standby
        .grant_daemon_roles(Path::new("clear-stale-locks/role.yaml"))
        .await
        .expect("grant the clear-stale-locks Role");
    // Held since before the promotion: stale. Released (no holder): not a lock.
    create_lease(
        &pair.standby,
        &lock_lease("lock-tfstate-default", Some("e2e-lock-id")),
    )
    .await;
    create_lease(&pair.standby, &lock_lease("lock-tfstate-released", None)).await;

    let rx = Receiver::start().await;
    rx.script("/flaky", &[500]);
    let token = pair.primary.dir().join("webhook-token");
    std::fs::write(&token, format!("{SECRET}\n")).expect("write the token file");
    let notify = format!(
        "[notify]\nqueue = 10\n{}{}{}",
        webhook(
            "oncall",
            &rx.url("/oncall"),
            "json",
            &format!(
                "secret_header = \"Authorization\"\nsecret_file = \"{}\"",
                token.display()
            )
        ),
        webhook("flaky", &rx.url("/flaky"), "json", ""),
        webhook(
            "chat",
            &rx.url("/chat"),
            "slack",
            "events = [\"promotion\", \"failed\"]"
        ),
    );
    // A failing warn check (no state claim in the standby) and the state mirror, so the
    // notice carries the state checks and the mirror's age at the promotion.
    grant_mirror_roles(&pair, false).await;
    let opts = DaemonOpts {
        group_toml: "\n[groups.state]\nclear_stale_locks = true\n\
                     [groups.state.volume]\ngate = \"warn\"\n\
                     [groups.state.mirror]\nsync_interval = \"2s\"\n"
            .into(),
        extra_toml: notify,
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let oncall_sent =
        r#"kube_failover_notices_total{event="promotion",result="sent",webhook="oncall"}"#;
    assert_eq!(
        d.metric(oncall_sent).await,
        Some(0.0),
        "series exist from the start"
    );

    let stopped = std::time::Instant::now();
    let times = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(100)).await;
    measured("primary API stopped -> standby Ready", times.ready);
    let oncall = wait_delivered(&rx, "/oncall", 1, &d).await;
    measured("primary API stopped -> notice delivered", stopped.elapsed());
    // The flaky receiver answered 500 first: the same notice again after the backoff.
    let flaky = wait_delivered(&rx, "/flaky", 1, &d).await;
    measured(
        "primary API stopped -> notice delivered after a 500 and a retry",
        stopped.elapsed(),
    );
    d.wait_state("promoted", Duration::from_secs(20)).await;
    let chat = wait_delivered(&rx, "/chat", 1, &d).await;
    // Nothing more comes: exactly one notice per event.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rx.received("/oncall").len(),
        1,
        "{:?}",
        rx.received("/oncall")
    );
    assert_eq!(rx.received("/chat").len(), 1);
    let flaky_now = rx.received("/flaky");
    assert_eq!(
        flaky_now.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200],
        "one retry after the 500"
    );
    assert_eq!(
        flaky[0].body, flaky_now[1].body,
        "the retry sends the same notice"
    );

    let n = oncall[0].json();
    eprintln!("notice: {n:#}");
    assert_eq!(n["version"], 1);
    assert_eq!(n["id"], "env0/1/promotion");
    assert_eq!(n["event"], "promotion");
    assert_eq!(n["group"], GROUP);
    assert_eq!(n["epoch"], 1);
    assert_eq!(n["sent_by"], "e2e");
    assert_eq!(n["from"]["side"], "primary");
    assert_eq!(n["from"]["context"], pair.primary.context());
    assert_eq!(n["from"]["namespace"], pair.primary.namespace());
    assert_eq!(n["to"]["side"], "standby");
    assert_eq!(n["to"]["context"], pair.standby.context());
    assert!(n["to"]["cluster"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(n["reasons"][0]["code"], "primary_down_quorum");
    assert!(
        n["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["signal"] == "api"),
        "the primary's failing API signal is a reason: {n}"
    );
    let took = n["duration_seconds"].as_f64().expect("time taken");
    assert!((0.0..60.0).contains(&took), "{took}");
    assert!(n["started_at"].is_string() && n["finished_at"].is_string());
    let checks = n["state_checks"].as_array().expect("state checks listed");
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
    };
    assert_eq!(check("volume")["passed"], false, "{checks:?}");
    assert_eq!(check("volume")["gate"], "warn");
    assert_eq!(check("volume")["reason"], "standby_state_volume_missing");
    assert_eq!(
        check("drift:image")["passed"],
        true,
        "same images: {checks:?}"
    );
    let age = n["mirror_age_seconds"]
        .as_f64()
        .expect("the mirror's age at the promotion");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(n["stale_locks_error"], Value::Null);
    let locks = n["stale_locks"].as_array().expect("stale locks listed");
    assert_eq!(locks.len(), 1, "only the held lock: {locks:?}");
    assert_eq!(locks[0]["name"], "lock-tfstate-default");
    assert_eq!(locks[0]["lock_id"], "e2e-lock-id");
    assert_eq!(locks[0]["operation"], "OperationTypeApply");
    assert_eq!(locks[0]["deleted"], true);
    let ids = action_ids(&n);
    for id in [
        "redeploy_waiting_runs",
        "check_in_flight_runs",
        "clear_stale_locks",
        "check_state_freshness",
        "plan_failback",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} missing: {ids:?}");
    }
    assert_eq!(oncall[0].header("authorization").as_deref(), Some(SECRET));
    assert_eq!(
        oncall[0].header("idempotency-key").as_deref(),
        Some("env0/1/promotion")
    );
    assert_eq!(flaky_now[1].header("authorization"), None);

    let slack = chat[0].json();
    let text = slack["text"].as_str().expect("slack text");
    assert!(text.contains("env0") && text.contains("standby"), "{text}");
    let blocks = slack["blocks"].as_array().expect("slack blocks");
    assert!(
        blocks
            .iter()
            .any(|b| b["type"] == "section" && b["text"]["type"] == "mrkdwn")
    );
    let all = serde_json::to_string(blocks).unwrap();
    assert!(
        all.contains("lock-tfstate-default") && all.contains("What to do now"),
        "{all}"
    );

    // The stale lock is gone, the released Lease left alone; both explained by Events.
    assert!(!lease_exists(&pair.standby, "lock-tfstate-default").await);
    assert!(lease_exists(&pair.standby, "lock-tfstate-released").await);
    let cleared = events(&pair.standby, "KubeFailoverStaleLockCleared").await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(
        cleared[0].involved_object.name.as_deref(),
        Some("lock-tfstate-default")
    );
    let complete = events(&pair.standby, "KubeFailoverPromotionComplete").await;
    assert_eq!(complete.len(), 1, "{complete:?}");
    let message = complete[0].message.clone().unwrap_or_default();
    assert!(message.contains("lock-tfstate-default"), "{message}");
    assert_eq!(complete[0].type_.as_deref(), Some("Normal"), "no lock left");

    assert_eq!(d.metric(oncall_sent).await, Some(1.0));
    let flaky_sent =
        r#"kube_failover_notices_total{event="promotion",result="sent",webhook="flaky"}"#;
    assert_eq!(d.metric(flaky_sent).await, Some(1.0));
    let cleared_ok =
        r#"kube_failover_actions_total{action="clear_stale_locks",group="env0",result="success"}"#;
    assert_eq!(d.metric(cleared_ok).await, Some(1.0));
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(log.contains("notice sent"), "{}", d.log_text());
    assert!(
        !log.contains("e2e-notice-s3cret"),
        "the secret reached the log"
    );
    assert!(!d.metrics().await.contains("e2e-notice-s3cret"));
}

/// An operator's promotion and failback (the CLI writes the record): the daemon notices
/// both from the record, names the stale lock it may not delete, and leaves it.
#[tokio::test(flavor = "multi_thread")]
async fn operator_promotion_and_failback_are_notified_and_a_stale_lock_is_only_named() {
    let pair = pair().await;
    create_lease(
        &pair.standby,
        &lock_lease("lock-tfstate-default", Some("e2e-lock-id")),
    )
    .await;
    let rx = Receiver::start().await;
    let opts = DaemonOpts {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        extra_toml: format!(
            "[notify]\n{}",
            webhook("oncall", &rx.url("/oncall"), "json", "")
        ),
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let op = |args: &'static [&'static str]| operator(&d.config, args);
    assert_eq!(op(&["promote", "--wait"]).await, Some(0));
    d.wait_state("promoted", Duration::from_secs(20)).await;
    let got = wait_delivered(&rx, "/oncall", 1, &d).await;
    let n = got[0].json();
    assert_eq!(n["id"], "env0/1/promotion");
    assert_eq!(n["reasons"][0]["code"], "operator_promotion");
    let locks = n["stale_locks"].as_array().expect("stale locks listed");
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["deleted"], false);
    let clear = n["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "clear_stale_locks")
        .expect("an action to clear the lock");
    assert!(
        clear["text"]
            .as_str()
            .unwrap()
            .contains("delete lease lock-tfstate-default"),
        "{clear}"
    );
    assert!(lease_exists(&pair.standby, "lock-tfstate-default").await);
    let complete = events(&pair.standby, "KubeFailoverPromotionComplete").await;
    assert_eq!(complete.len(), 1);
    assert_eq!(
        complete[0].type_.as_deref(),
        Some("Warning"),
        "a lock is left"
    );

    assert_eq!(op(&["failback", "--wait"]).await, Some(0));
    let got = wait_delivered(&rx, "/oncall", 2, &d).await;
    let back = got[1].json();
    assert_eq!(back["id"], "env0/1/failback");
    assert_eq!(back["event"], "failback");
    assert_eq!(
        (back["from"]["side"].clone(), back["to"]["side"].clone()),
        ("standby".into(), "primary".into())
    );
    assert_eq!(back["stale_locks"], Value::Null);
    assert!(
        action_ids(&back)
            .iter()
            .any(|i| i == "redeploy_waiting_runs")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.received("/oncall").len(), 2, "one notice per event");
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
}

/// Seconds between two RFC 3339 times of a notice.
fn between(notice: &Value) -> f64 {
    let at = |key: &str| {
        notice[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {notice}"))
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{key} is not RFC 3339: {e}"))
            .as_millisecond() as f64
            / 1000.0
    };
    at("finished_at") - at("started_at")
}

/// Issue 17, item 1: the agent's Pods count as available only seconds after they start
/// (Deployment `minReadySeconds`, as an agent pulling its image): the promotion notice
/// runs from the record's promotion to the standby Ready, and the failback notice from
/// the failback's first step to the primary Ready, both at least that long.
#[tokio::test(flavor = "multi_thread")]
async fn notice_times_span_pods_that_become_available_seconds_late() {
    const LATE: i32 = 4;
    let pair = pair().await;
    for cluster in [&pair.primary, &pair.standby] {
        for name in cluster.deployment_names() {
            cluster
                .set_min_ready_seconds(&name, LATE)
                .await
                .expect("set minReadySeconds");
        }
    }
    let rx = Receiver::start().await;
    let opts = DaemonOpts {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        extra_toml: format!(
            "[notify]\n{}",
            webhook("oncall", &rx.url("/oncall"), "json", "")
        ),
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let op = |args: &'static [&'static str]| operator(&d.config, args);
    let late = f64::from(LATE);

    // The daemon records `promoted` once the standby is Ready (available), LATE seconds
    // after its Pods started.
    let promoting = std::time::Instant::now();
    assert_eq!(op(&["promote"]).await, Some(0));
    d.wait_state("promoted", Duration::from_secs(30)).await;
    let promoted_after = promoting.elapsed().as_secs_f64();
    let got = wait_delivered(&rx, "/oncall", 1, &d).await;
    let n = got[0].json();
    assert_eq!(n["id"], "env0/1/promotion");
    let took = n["duration_seconds"].as_f64().expect("promotion duration");
    measured(
        "promotion notice duration (Pods available 4 s late)",
        Duration::from_secs_f64(took),
    );
    // The record's times are whole seconds: a second either way.
    assert!(took >= late - 1.0, "promotion took {took} s: {n}");
    assert!(
        took <= promoted_after + 1.0,
        "{took} vs {promoted_after}: {n}"
    );
    assert!((between(&n) - took).abs() < 0.11, "{n}");

    let failing_back = std::time::Instant::now();
    assert_eq!(op(&["failback", "--wait"]).await, Some(0));
    let failback_took = failing_back.elapsed().as_secs_f64();
    let got = wait_delivered(&rx, "/oncall", 2, &d).await;
    let back = got[1].json();
    assert_eq!(back["id"], "env0/1/failback");
    let took = back["duration_seconds"]
        .as_f64()
        .expect("failback duration");
    measured(
        "failback notice duration (Pods available 4 s late)",
        Duration::from_secs_f64(took),
    );
    // From the first step to the primary Ready: at least the late start, at most the
    // command's whole run.
    assert!(took >= late, "failback took {took} s: {back}");
    assert!(took <= failback_took, "{took} vs {failback_took}: {back}");
    assert!((between(&back) - took).abs() < 0.11, "{back}");
    let summary = back["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(&format!("in {took:.1} s")), "{summary}");
}
