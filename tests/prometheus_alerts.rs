//! The shipped alert rules against the real daemon: a Prometheus server on loopback
//! scrapes kube-failover while the primary's API server of a test-bed pair is stopped,
//! and its HTTP API must show the primary-down and failover alerts firing. This is the
//! proof that the rules' expressions and the daemon's metric names agree; the rules' `for`
//! durations are covered by the promtool unit tests (deploy/prometheus/alerts.test.yaml)
//! and are shortened here so the scenario takes seconds, not minutes.
//!
//! The daemon of that scenario also has state checks that fail with gate `warn` and an
//! image changed on the standby only: `KubeFailoverStateCheckFailing` and
//! `KubeFailoverStandbyDrift` must fire, and the failover still goes ahead.
//!
//! A second scenario scales the standby up behind the daemon's back (standby correction
//! off) and waits for `KubeFailoverDualActive` to fire and resolve.
//!
//! Also checks the daemon's /metrics against the metric contract the rules and the
//! dashboard are written against (deploy/prometheus/metrics.txt).
//!
//! Needs a `prometheus` binary (Debian's package; `PROMETHEUS` names another one), so it
//! is `#[ignore]`d and run by ci/check-deploy.sh, which installs it.

use crate::support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::{Daemon, DaemonOpts, grant_mirror_roles, pair, wait_for};

/// Every `for:` of the shipped rules becomes this.
const SHORT_FOR: &str = "3s";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

/// The contract: `(name, type)` from deploy/prometheus/metrics.txt.
fn metric_contract() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file("deploy/prometheus/metrics.txt"))
        .expect("read metrics.txt");
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("name and type");
            (name.to_string(), kind.trim().to_string())
        })
        .collect()
}

/// alerts.yaml with every `for:` shortened; everything else, expressions first, unchanged.
fn shortened_rules() -> String {
    let text =
        std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yaml")).expect("read rules");
    let mut shortened = 0;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for: ") {
                shortened += 1;
                format!("{}for: {SHORT_FOR}", &line[..line.len() - trimmed.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(
        shortened > 0,
        "no `for:` found in alerts.yaml: has its layout changed?"
    );
    out.join("\n") + "\n"
}

/// A Prometheus server on loopback with its own data folder; killed on drop.
struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Prometheus {
    async fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        std::fs::write(dir.join("rules.yaml"), shortened_rules()).expect("write rules");
        // The job name is the one the KubeFailoverDaemonDown alert matches.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yaml\n\
             scrape_configs:\n  - job_name: kube-failover\n    static_configs:\n      \
             - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let listen = free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("create prometheus log");
        let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = tokio::process::Command::new(&bin)
            .current_dir(dir)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} (install Debian's prometheus): {e}"));
        let p = Prometheus {
            _child: child,
            url: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
            log,
        };
        let ready = wait_for(Duration::from_secs(30), Duration::from_millis(200), || async {
            matches!(p.http.get(format!("{}/-/ready", p.url)).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(
            ready.is_some(),
            "Prometheus not ready in 30s\n{}",
            p.log_text()
        );
        p
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// Names of the alerts in state "firing".
    async fn firing(&self) -> BTreeSet<String> {
        let Some(data) = self.api("/api/v1/alerts").await else {
            return BTreeSet::new();
        };
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
            .collect()
    }

    async fn target_up(&self) -> bool {
        let Some(data) = self
            .api("/api/v1/query?query=up%7Bjob%3D%22kube-failover%22%7D")
            .await
        else {
            return false;
        };
        data["result"][0]["value"][1] == "1"
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!("--- prometheus log ---\n{}", lines[start..].join("\n"))
    }
}

/// A Prometheus scraping `daemon` with the shortened rules, once it has scraped it.
async fn scrape(daemon: &Daemon) -> (tempfile::TempDir, Prometheus) {
    let dir = tempfile::tempdir().expect("temp dir");
    let prom = Prometheus::start(dir.path(), daemon.admin).await;
    let up = wait_for(Duration::from_secs(20), Duration::from_millis(250), || {
        prom.target_up()
    })
    .await;
    assert!(
        up.is_some(),
        "Prometheus never scraped the daemon\n{}",
        prom.log_text()
    );
    (dir, prom)
}

/// Waits until `alert` is firing (`firing == true`) or no longer is; how long it took.
async fn wait_alert(prom: &Prometheus, alert: &str, firing: bool) -> Option<Duration> {
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(500),
        move || async move { prom.firing().await.contains(alert) == firing },
    )
    .await
}

/// The daemon on `pair` with state checks that fail with gate `warn` (so the failover
/// goes ahead): a backend nobody listens on, a state volume that does not exist, a
/// replication timestamp a day old, and an image changed on the standby only. Their
/// metrics and alerts are then part of the scenario.
async fn start_with_failing_state_checks(
    pair: &kube_failover_testbed::ClusterPair,
    webhook: &str,
) -> Daemon {
    let standby = &pair.standby;
    standby
        .set_deployment_image(&standby.trigger_deployment(), "env0/deployment-agent:older")
        .await
        .expect("older image on the standby");
    standby
        .install_volsync_crd()
        .await
        .expect("install the CRD");
    standby
        .allow_daemon_to_read(
            kube_failover_testbed::VOLSYNC_GROUP,
            "replicationdestinations",
        )
        .await
        .expect("RBAC for the freshness kind");
    let day_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(24);
    standby
        .set_replication_destination("env0-state", Some(&day_ago.to_string()))
        .await
        .expect("stale ReplicationDestination");
    let state = format!(
        r#"
[[groups.state.backends]]
name = "s3"
url = "http://{}/bucket"

[groups.state.volume]

[[groups.state.freshness]]
name = "volsync"
api_version = "volsync.backube/v1alpha1"
kind = "ReplicationDestination"
object = "env0-state"
pointer = "/status/lastSyncTime"
max_age = "15m"

[groups.state.mirror]
sync_interval = "5s"
max_lag = "60s"

[groups.guards]
primary = 1
"#,
        free_port()
    );
    // With the Terraform state mirror too, so its metrics and alerts are covered: it
    // stops at the promotion, so it must not be reported lagging afterwards.
    grant_mirror_roles(pair, false).await;
    let admin = free_port();
    let dir = pair.primary.dir().to_path_buf();
    let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
    // A webhook, so that the notice metrics exist (their series are per webhook), and the
    // failover's notice is delivered (KubeFailoverNoticeFailing stays quiet).
    let opts = DaemonOpts {
        extra_toml: format!(
            "[notify]\n[[notify.webhooks]]\nname = \"oncall\"\nurl = \"{webhook}\"\n"
        ),
        group_toml: state,
        ..DaemonOpts::default()
    };
    let toml = support::config_toml(pair, &opts, admin);
    std::fs::write(&config, toml).expect("write daemon config");
    Daemon::start_with_config(&config, admin, &dir).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a prometheus binary: run by ci/check-deploy.sh"]
async fn prometheus_fires_primary_down_and_failover_alerts_on_the_daemons_metrics() {
    let pair = pair().await;
    let receiver = support::receiver::Receiver::start().await;
    let daemon = start_with_failing_state_checks(&pair, &receiver.url("/notices")).await;
    daemon
        .wait_state("primary_active", Duration::from_secs(30))
        .await;

    let (_dir, prom) = scrape(&daemon).await;

    // Healthy: none of the alerts about the primary or the daemon fires. Give the rules a
    // few evaluations (and the shortened `for`) first, so "not firing" means something.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let healthy = prom.firing().await;
    for quiet in [
        "KubeFailoverPrimaryDown",
        "KubeFailoverPrimaryUnobservable",
        "KubeFailoverDualActive",
        "KubeFailoverNoActiveSide",
        "KubeFailoverRecordRestored",
        "KubeFailoverStuckStarting",
        "KubeFailoverDaemonDown",
        "KubeFailoverDaemonAbsent",
        "KubeFailoverDaemonStalled",
        "KubeFailoverMirrorLagging",
        "KubeFailoverMirrorConflict",
    ] {
        assert!(
            !healthy.contains(quiet),
            "{quiet} fires while all is well: {healthy:?}"
        );
    }

    // The outage.
    pair.primary
        .stop_apiserver()
        .await
        .expect("stop the primary's API server");
    let want = [
        "KubeFailoverPrimaryDown",
        "KubeFailoverFailoverInProgress",
        "KubeFailoverFailoverExecuted",
        "KubeFailoverStateCheckFailing",
        "KubeFailoverStandbyDrift",
    ];
    let seen = std::cell::RefCell::new(BTreeSet::new());
    let (prom_ref, seen_ref) = (&prom, &seen);
    let took = wait_for(
        Duration::from_secs(90),
        Duration::from_millis(500),
        move || async move {
            let firing = prom_ref.firing().await;
            let all = want.iter().all(|a| firing.contains(*a));
            *seen_ref.borrow_mut() = firing;
            all
        },
    )
    .await;
    let last = seen.into_inner();
    assert!(
        took.is_some(),
        "after 90s firing were {last:?}, wanted {want:?}\n{}\n{}",
        prom.log_text(),
        daemon.log_text()
    );
    support::measured(
        "primary API stopped -> failover alerts firing",
        took.unwrap(),
    );
    // The exposition itself follows Prometheus practice: promtool has nothing to say.
    let exposition = daemon.metrics().await;
    assert!(exposition.contains("kube_failover_promotions_total"));
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus)");
    {
        use std::io::Write as _;
        let mut stdin = promtool.stdin.take().expect("promtool stdin");
        stdin
            .write_all(exposition.as_bytes())
            .expect("feed promtool");
    }
    let out = promtool.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    // A stopped API server is down evidence, not blindness; the primary's replicas are
    // unknown while it is down, so both sides are never seen active.
    for quiet in [
        "KubeFailoverFailoverFailed",
        "KubeFailoverPrimaryUnobservable",
        "KubeFailoverDualActive",
        "KubeFailoverNoActiveSide",
        "KubeFailoverRecordRestored",
        "KubeFailoverDaemonDown",
        "KubeFailoverDaemonStalled",
        "KubeFailoverMirrorLagging",
        "KubeFailoverMirrorConflict",
        "KubeFailoverNoticeFailing",
    ] {
        assert!(
            !last.contains(quiet),
            "{quiet} fires during a clean failover: {last:?}"
        );
    }

    // The contract the rules and the dashboard rely on: every metric, with its type. Read
    // after the failover, because some series exist only once their first event happened
    // (a promotion's duration and time, the actuator's actions).
    let text = daemon.metrics().await;
    let missing: Vec<String> = metric_contract()
        .into_iter()
        .filter(|(name, kind)| !text.lines().any(|l| l == format!("# TYPE {name} {kind}")))
        .map(|(name, kind)| format!("{name} ({kind})"))
        .collect();
    assert!(missing.is_empty(), "/metrics lacks {missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a prometheus binary: run by ci/check-deploy.sh"]
async fn prometheus_fires_dual_active_on_the_daemons_metric_whatever_the_config() {
    // Correction off: nothing ends the dual-active state but a person, which is what the
    // alert is for (the daemon's gauge is on whatever the config says).
    let pair = pair().await;
    let opts = DaemonOpts {
        correct_standby: false,
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start(&pair, &opts).await;
    daemon
        .wait_state("primary_active", Duration::from_secs(30))
        .await;
    let (_dir, prom) = scrape(&daemon).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let healthy = prom.firing().await;
    assert!(
        !healthy.contains("KubeFailoverDualActive"),
        "KubeFailoverDualActive fires while only the primary is active: {healthy:?}"
    );

    // A `helm upgrade` on the standby puts the trigger back at 1.
    let trigger = pair.standby.trigger_deployment();
    pair.standby
        .scale(&trigger, 1)
        .await
        .expect("scale the standby's trigger up");
    let took = wait_alert(&prom, "KubeFailoverDualActive", true).await;
    assert!(
        took.is_some(),
        "KubeFailoverDualActive not firing 60s after the standby was scaled up: {:?}\n{}\n{}",
        prom.firing().await,
        prom.log_text(),
        daemon.log_text()
    );
    support::measured(
        "standby scaled up -> KubeFailoverDualActive firing",
        took.unwrap(),
    );
    let metrics = daemon.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kube_failover_dual_active{") && l.ends_with(" 1")),
        "the gauge behind the alert is not 1"
    );

    // Scaled back by hand: the alert resolves.
    pair.standby
        .scale(&trigger, 0)
        .await
        .expect("scale the standby's trigger down");
    let cleared = wait_alert(&prom, "KubeFailoverDualActive", false).await;
    assert!(
        cleared.is_some(),
        "KubeFailoverDualActive still firing 60s after the standby went back to 0: {:?}",
        prom.firing().await
    );
}
