//! End-to-end env0: the real daemon on a test-bed pair asks a local stand-in for env0's
//! API (testbed `Env0StandIn`: env0 itself cannot be reached from here) which
//! deployments a promotion stranded, names them in the notice, the promotion's Event and
//! `/status`, and with `redeploy = "waiting"` redeploys the one that waited for approval
//! exactly once, across a change of leader and a restart.

use crate::support;

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_failover_testbed::{ClusterPair, Env0Fault, Env0StandIn, env0_environment};
use std::path::Path;
use std::time::Duration;
use support::receiver::Receiver;
use support::*;

const KEY_ID: &str = "e2e-key-id";
const KEY_SECRET: &str = "e2e-env0-s3cret";
const ORG: &str = "org-e2e";

/// An hour before now, RFC 3339: long before the promotion.
fn an_hour_ago() -> String {
    (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(3600))
        .to_string()
}

/// The stand-in with three environments in the agent's project (waiting for approval,
/// in progress, finished) and one waiting in a project of another agent.
async fn stand_in() -> Env0StandIn {
    let env0 = Env0StandIn::start(KEY_ID, KEY_SECRET, ORG).await;
    let t = an_hour_ago();
    env0.set_environments(vec![
        env0_environment(
            "env-wait",
            "approve-me",
            "p-agent",
            "dep-wait",
            "WAITING_FOR_USER",
            &t,
        ),
        env0_environment(
            "env-run",
            "running",
            "p-agent",
            "dep-run",
            "IN_PROGRESS",
            &t,
        ),
        env0_environment("env-done", "finished", "p-agent", "dep-done", "SUCCESS", &t),
        env0_environment(
            "env-else",
            "elsewhere",
            "p-other",
            "dep-else",
            "WAITING_FOR_USER",
            &t,
        ),
    ]);
    env0.set_assignments(
        Some("agent-other"),
        &[("p-agent", "agent-a"), ("p-other", "agent-other")],
    );
    env0
}

/// `[env0]` and a webhook, with the key files written into `dir`.
fn env0_toml(dir: &Path, url: &str, org: &str, redeploy: &str, webhook: &str) -> String {
    let id = dir.join("env0-key-id");
    let secret = dir.join("env0-key-secret");
    std::fs::write(&id, format!("{KEY_ID}\n")).unwrap();
    std::fs::write(&secret, format!("{KEY_SECRET}\n")).unwrap();
    format!(
        "[notify]\n[[notify.webhooks]]\nname = \"oncall\"\nurl = \"{webhook}\"\ntimeout = \"2s\"\n\n\
         [env0]\napi_url = \"{url}\"\nkey_id_file = \"{}\"\nkey_secret_file = \"{}\"\n\
         organization_id = \"{org}\"\nagent_id = \"agent-a\"\nredeploy = \"{redeploy}\"\n\
         timeout = \"2s\"\nlookup_timeout = \"20s\"\n",
        id.display(),
        secret.display()
    )
}

async fn wait_notice(rx: &Receiver, d: &Daemon) -> serde_json::Value {
    let took = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { !rx.received("/oncall").is_empty() },
    )
    .await;
    assert!(took.is_some(), "no notice in 60s\n{}", d.log_text());
    rx.received("/oncall")[0].json()
}

async fn promotion_event(pair: &ClusterPair) -> String {
    let events = Api::<Event>::namespaced(pair.standby.client(), pair.standby.namespace())
        .list(&ListParams::default())
        .await
        .expect("list events");
    events
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("KubeFailoverPromotionComplete"))
        .and_then(|e| e.message)
        .expect("the promotion's Event")
}

fn claims(pair: &ClusterPair) -> Api<ConfigMap> {
    Api::namespaced(pair.standby.client(), pair.standby.namespace())
}

const CLAIMS: &str = "kube-failover-env0-env0";

/// Removes the record of the finished lookup of `epoch`, so that the next leader
/// looks again (and meets the redeploy's claim).
async fn forget_lookup(pair: &ClusterPair, epoch: u64) {
    let patch = serde_json::json!({"data": {format!("{epoch}._lookup"): null}});
    claims(pair)
        .patch(CLAIMS, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove the lookup marker");
}

fn environment_listings(env0: &Env0StandIn) -> usize {
    env0.requests()
        .iter()
        .filter(|r| r.path == "/environments" && r.status == 200)
        .count()
}

/// Waits until `d` reports env0's lookup `done` for `epoch`.
async fn wait_env0_done(d: &Daemon, epoch: u64) -> kube_failover::env0::Env0Status {
    d.wait_group("env0 lookup done", Duration::from_secs(40), |g| {
        g.env0
            .as_ref()
            .is_some_and(|e| e.state == "done" && e.epoch == Some(epoch))
    })
    .await;
    d.group().await.and_then(|g| g.env0).expect("env0 status")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_names_the_stranded_env0_deployments_and_redeploys_the_waiting_one_once() {
    let pair = pair().await;
    let env0 = stand_in().await;
    // env0 is unwell at first: a 500 and a 429 before the list is given.
    env0.script(
        "/environments",
        &[Env0Fault::Status(500), Env0Fault::RateLimited(1)],
    );
    let rx = Receiver::start().await;
    let extra = env0_toml(
        pair.primary.dir(),
        &env0.url(),
        ORG,
        "waiting",
        &rx.url("/oncall"),
    );
    let opts = |identity: &str| DaemonOpts {
        identity: Some(identity.to_string()),
        extra_toml: extra.clone(),
        ..DaemonOpts::default()
    };
    let mut a = Daemon::start(&pair, &opts("a")).await;
    a.wait_leading(Duration::from_secs(20)).await;
    let mut b = Daemon::start(&pair, &opts("b")).await;
    a.wait_state("primary_active", Duration::from_secs(20))
        .await;
    b.wait_state("primary_active", Duration::from_secs(20))
        .await;
    assert_eq!(
        environment_listings(&env0),
        0,
        "nothing is asked before a promotion"
    );

    let stopped = std::time::Instant::now();
    stop_primary_api_and_time_promotion(&pair, Duration::from_millis(100)).await;
    let notice = wait_notice(&rx, &a).await;
    measured(
        "primary API stopped -> notice with env0's names (after a 500 and a 429)",
        stopped.elapsed(),
    );

    // Exactly the waiting and the running one of the agent's project.
    let named: Vec<&str> = notice["env0"]["stranded"]
        .as_array()
        .expect("env0.stranded")
        .iter()
        .map(|s| s["environment"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["approve-me", "running"], "{notice:#}");
    assert_eq!(notice["env0"]["stranded"][0]["deployment_id"], "dep-wait");
    assert_eq!(notice["env0"]["stranded"][0]["status"], "WAITING_FOR_USER");
    let link = notice["env0"]["stranded"][1]["link"].as_str().unwrap();
    assert_eq!(
        link,
        format!(
            "{}/p/p-agent/environments/env-run/deployments/dep-run",
            env0.url()
        )
    );
    let text = notice["actions"].to_string();
    assert!(
        !text.contains("finished") && !text.contains("elsewhere"),
        "{text}"
    );
    assert!(
        !text.contains("that were waiting for approval: their working"),
        "the general sentence is replaced: {text}"
    );
    assert!(
        text.contains("running (project p-agent, deployment dep-run"),
        "{text}"
    );
    // The waiting one was redeployed, once; the notice says so.
    assert_eq!(env0.redeploys(), ["env-wait"]);
    let redeploys = notice["env0"]["redeploys"].as_array().unwrap();
    assert_eq!(redeploys.len(), 1, "{notice:#}");
    assert_eq!(redeploys[0]["result"], "done");
    assert_eq!(redeploys[0]["by"], "a");
    assert!(
        text.contains("approve-me (deployment dep-wait): redeploy done by a"),
        "{text}"
    );
    // The Event and /status name them too.
    let event = promotion_event(&pair).await;
    assert!(
        event.contains("approve-me") && event.contains("running") && !event.contains("finished"),
        "{event}"
    );
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverEnv0Redeployed").await,
        1
    );
    let epoch = notice["epoch"].as_u64().unwrap();
    let status = wait_env0_done(&a, epoch).await;
    assert_eq!(status.report.stranded.len(), 2);
    assert_eq!(
        a.metric(r#"kube_failover_env0_redeploys_total{group="env0",result="done"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        a.metric(r#"kube_failover_env0_requests_total{call="list_environments",result="env0_rate_limited"}"#)
            .await,
        Some(1.0)
    );
    // The claim was written before the call, and says how it ended.
    let cm = claims(&pair).get(CLAIMS).await.expect("claims ConfigMap");
    let claim = &cm.data.as_ref().unwrap()[&format!("{epoch}.env-wait")];
    assert!(claim.contains("\"outcome\":\"done\""), "{claim}");

    // A change of leader: b now leads a promotion whose lookup it did not do. With
    // the lookup's record gone, it looks again (the stand-in sees it), meets the claim
    // and asks nothing.
    forget_lookup(&pair, epoch).await;
    let listed = environment_listings(&env0);
    a.kill().await;
    b.wait_leading(Duration::from_secs(30)).await;
    let status = wait_env0_done(&b, epoch).await;
    assert!(environment_listings(&env0) > listed, "b looked env0 up");
    assert_eq!(status.report.redeploys.len(), 1);
    assert_eq!(status.report.redeploys[0].by, "a", "{status:?}");
    assert_eq!(env0.redeploys(), ["env-wait"], "no second redeploy");

    // A restart: the same again with a new process.
    forget_lookup(&pair, epoch).await;
    b.kill().await;
    let listed = environment_listings(&env0);
    let b2 = Daemon::start(&pair, &opts("b")).await;
    b2.wait_leading(Duration::from_secs(30)).await;
    wait_env0_done(&b2, epoch).await;
    assert!(
        environment_listings(&env0) > listed,
        "the new process looked env0 up"
    );
    assert_eq!(
        env0.redeploys(),
        ["env-wait"],
        "no redeploy after a restart"
    );
    assert_eq!(
        rx.received("/oncall").len(),
        1,
        "one notice: neither resumes a notice"
    );
    let log = [a.log_text(), b2.log_text()].concat();
    assert!(
        !log.contains(KEY_SECRET),
        "the key's secret is never logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_files_and_a_wrong_organization_are_named_and_never_stop_the_failover() {
    let pair = pair().await;
    let env0 = stand_in().await;
    let rx = Receiver::start().await;
    let dir = pair.primary.dir();

    // check-config reads the key files and names the key.
    let extra = env0_toml(dir, &env0.url(), ORG, "waiting", &rx.url("/oncall"));
    std::fs::write(dir.join("env0-key-secret"), "").unwrap();
    let config = dir.join("bad-key.toml");
    let admin = free_port();
    std::fs::write(
        &config,
        config_toml(&pair, &DaemonOpts::default(), admin) + &extra,
    )
    .unwrap();
    let out = std::process::Command::new(daemon_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("env0.key_secret_file") && stderr.contains("is empty"),
        "{stderr}"
    );

    // A wrong organization id: found at first use, named, and the failover completes.
    let extra = env0_toml(dir, &env0.url(), "org-wrong", "waiting", &rx.url("/oncall"));
    let d = Daemon::start(
        &pair,
        &DaemonOpts {
            extra_toml: extra,
            ..DaemonOpts::default()
        },
    )
    .await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let times = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(100)).await;
    measured(
        "primary API stopped -> standby Ready (env0 refusing)",
        times.ready,
    );
    let notice = wait_notice(&rx, &d).await;
    let error = notice["env0"]["error"].as_str().expect("env0.error");
    assert!(
        error.starts_with("env0.organization_id:") && error.contains("org-wrong"),
        "{error}"
    );
    let first = notice["actions"][0]["text"].as_str().unwrap();
    assert!(
        first.contains("waiting for approval") && first.contains("org-wrong"),
        "{first}"
    );
    let status = d
        .wait_group("env0 failed", Duration::from_secs(20), |g| {
            g.env0
                .as_ref()
                .is_some_and(|e| e.reason.as_deref() == Some("env0_wrong_organization"))
        })
        .await;
    assert!(status < Duration::from_secs(20));
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert!(
        promotion_event(&pair)
            .await
            .contains("env0.organization_id")
    );
    assert!(env0.redeploys().is_empty());
    assert!(
        d.log_text().contains("env0_wrong_organization"),
        "the log names the reason code"
    );
}
