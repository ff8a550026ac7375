//! Whole ticks of one group (`GroupRunner::tick`: observe, decide, act, publish, notices,
//! report) against two in-memory API servers (src/kube/fake_api.rs), on tokio's paused
//! clock, asserting every request the tick sends.
//!
//! The runner is built as the daemon builds it (`GroupRunner::new`), with cluster handles
//! whose clients go to the fakes and whose stores no watch fills
//! (`ClusterHandle::for_tests`): before each tick the test copies the fakes' objects into
//! them, as the watches would have, and plays the Deployment controller and the kubelet
//! (a Deployment's available replicas, its Ready Pods). The coordination runs on the same
//! clock as the runner (`Coordination::with_clock`), its observer Lease renewed by its
//! own task.
//!
//! The group: a probe interval of 1 s, `failure_threshold` 3, a startup grace of 2 s,
//! `clear_stale_locks`; its workload two Deployments selected by one label selector.
//!
//! Ticks are an interval and 10 ms apart, so the observer Lease's renewals (every
//! interval) never fall on the instant of a tick, where their order against the tick's
//! requests would be the runtime's: each interval between two ticks holds exactly one
//! renewal. A tick's requests are compared in order, but for those that run
//! concurrently: the first tick's (its reads of both clusters, the coordination's first
//! writes of the leader Lease and, from its own task, of the observer Lease), and a
//! write of the leader Lease beside the primary's `/readyz`.

use super::GroupRunner;
use crate::admin::AdminState;
use crate::config::Config;
use crate::coord::observer::{GroupVerdict, decode_verdicts};
use crate::coord::{
    Clock, Coordination, HEARTBEAT_ANNOTATION, INSTANCE_ANNOTATION, Role, VERDICTS_ANNOTATION,
};
use crate::engine::GroupState;
use crate::kube::cluster::ClusterHandle;
use crate::kube::fake_api::{FakeApi, Logged};
use crate::kube::kept::{KeptDeployment, KeptPod};
use crate::metrics::Metrics;
use crate::model::{EPOCH_ANNOTATION, FailoverRecord, RecordPhase, Verdict};
use crate::record::APP_LABEL_VALUE;
use crate::status::StatusReport;
use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent};
use kube::runtime::watcher::Event;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "agents";
const RECORD: &str = "kube-failover-g";
const INTERVAL: Duration = Duration::from_secs(1);
/// Between two ticks: an interval, and a little more (see the module's text).
const TICK_SPACING: Duration = Duration::from_millis(1010);
/// The workload: two Deployments by one label selector.
const NAMES: [&str; 2] = ["trigger", "worker"];

const READYZ: &str = "primary GET /readyz";
const RENEWAL: &str = "standby PUT agents/leases/kube-failover.observer.me";

fn config(mode: &str) -> Config {
    let text = format!(
        "[daemon]\nmode = \"{mode}\"\nidentity = \"me\"\nprobe_interval = \"1s\"\n\
         probe_timeout = \"500ms\"\n\
         [[groups]]\nname = \"g\"\nprimary = {{ namespace = \"{NS}\" }}\n\
         standby = {{ namespace = \"{NS}\" }}\nworkloads = [{{ selector = \"part-of=agent\" }}]\n\
         policy.startup_grace = \"2s\"\nstate.clear_stale_locks = true\n"
    );
    toml::from_str(&text).expect("test config")
}

fn deployment(name: &str, replicas: i32, available: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS,
            "labels": {"app": name, "part-of": "agent"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "agent", "image": "env0/agent:1"}]}}},
        "status": {"replicas": available, "availableReplicas": available,
            "readyReplicas": available},
    }))
    .unwrap()
}

fn ready_pod(deployment: &str) -> KeptPod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{deployment}-0"), "namespace": NS,
            "labels": {"app": deployment}},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

/// A Terraform lock of the standby taken long before any promotion of these tests.
fn stale_lock() -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": "lock-tfstate-default-state", "namespace": NS,
            "annotations": {"app.terraform.io/lock-info":
                r#"{"ID":"1f5c-9","Operation":"OperationTypeApply","Who":"runner@agent-7","Created":"2025-01-02T02:00:00Z"}"#}},
        "spec": {"holderIdentity": "1f5c-9"},
    }))
    .unwrap()
}

/// The Deployment controller's part: `available` replicas of each Deployment are.
fn set_available(fake: &FakeApi, available: i32) {
    for name in NAMES {
        let mut d: Deployment = fake.get(NS, name).unwrap();
        d.status = deployment(name, 0, available).status;
        fake.put(d);
    }
}

/// The lines of `log`, with what tells the writes apart: the phase of a record written
/// (and `fenced` once it says so), the replicas of a scale, the epoch a Deployment is
/// marked with.
fn lines(log: Vec<Logged>) -> Vec<String> {
    log.into_iter()
        .map(|l| {
            let mut line = l.to_string();
            let body = l.body.clone().unwrap_or_default();
            if l.method == Method::PUT && l.target.ends_with(&format!("/configmaps/{RECORD}")) {
                let data = &body["data"];
                line.push_str(&format!(" phase={}", data["phase"].as_str().unwrap_or("?")));
                if data.get("fenced_at").is_some() {
                    line.push_str(" fenced");
                }
            } else if l.method == Method::PATCH && l.target.ends_with("/scale") {
                line.push_str(&format!(" replicas={}", body["spec"]["replicas"]));
            } else if l.method == Method::PATCH {
                let epoch = &body["metadata"]["annotations"][EPOCH_ANNOTATION];
                line.push_str(&format!(" epoch={}", epoch.as_str().unwrap_or("?")));
            }
            line
        })
        .collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// One group from a primary to a standby cluster, each behind its own fake, logging
/// into one list.
struct Pair {
    primary: FakeApi,
    standby: FakeApi,
    p: Arc<ClusterHandle>,
    s: Arc<ClusterHandle>,
    runner: GroupRunner,
    clock: Clock,
    /// Whether each side's Deployments have a Ready Pod.
    primary_running: bool,
    standby_running: bool,
    /// Another instance leads the group: its heartbeat is renewed before each tick.
    other_leads: bool,
}

impl Pair {
    /// The primary serving (each Deployment at 1, Ready), the standby at 0, the record
    /// saying `primary` at epoch 0, and a stale Terraform lock in the standby.
    fn new(mode: &str) -> Pair {
        let primary = FakeApi::cluster("primary", NS);
        let standby = primary.beside("standby", NS);
        for name in NAMES {
            primary.put(deployment(name, 1, 1));
            standby.put(deployment(name, 0, 0));
        }
        let record = FailoverRecord {
            phase: Some(RecordPhase::Primary),
            ..FailoverRecord::default()
        };
        standby.put(crate::record::to_config_map(NS, RECORD, "g", &record));
        standby.put(stale_lock());
        let config = config(mode);
        let timeout = config.daemon.probe_timeout;
        let p = ClusterHandle::for_tests(primary.client(), timeout);
        let s = ClusterHandle::for_tests(standby.client(), timeout);
        let clock = Clock::tokio();
        // No warm-up: the only instance takes its group at once.
        let coordination = Coordination::with_clock(&config, clock, Duration::ZERO);
        let metrics = Metrics::new().unwrap();
        let admin = Arc::new(AdminState::new(
            metrics.clone(),
            INTERVAL,
            1,
            StatusReport {
                version: "test".into(),
                mode: mode.into(),
                identity: "me".into(),
                ready: false,
                last_tick_unix: None,
                groups: Vec::new(),
            },
        ));
        let runner = GroupRunner::new(
            config.groups[0].clone(),
            &config,
            p.clone(),
            s.clone(),
            crate::probe::http::client(timeout, crate::user_agent::daemon("me")).unwrap(),
            "me".into(),
            metrics,
            admin,
            &coordination,
        );
        Pair {
            primary,
            standby,
            p,
            s,
            runner,
            clock,
            primary_running: true,
            standby_running: false,
            other_leads: false,
        }
    }

    /// Another instance, `other`, holds the group's leader Lease and renews its
    /// heartbeat (before every tick).
    fn led_by_another(&mut self) {
        let lease = |name: &str, annotations: serde_json::Value, holder: &str| -> Lease {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS,
                    "labels": {"app.kubernetes.io/name": APP_LABEL_VALUE},
                    "annotations": annotations},
                "spec": {"holderIdentity": holder},
            }))
            .unwrap()
        };
        self.standby.put(lease(
            "kube-failover-g-leader",
            json!({INSTANCE_ANNOTATION: "p-other",
                HEARTBEAT_ANNOTATION: "kube-failover.observer.other"}),
            "other",
        ));
        self.other_leads = true;
    }

    /// The caches as the watches would hold them now.
    fn seen(&self) {
        if self.other_leads {
            let mut beat: Lease = serde_json::from_value(json!({
                "metadata": {"name": "kube-failover.observer.other", "namespace": NS,
                    "labels": {"app.kubernetes.io/name": APP_LABEL_VALUE},
                    "annotations": {INSTANCE_ANNOTATION: "p-other"}},
                "spec": {"holderIdentity": "other"},
            }))
            .unwrap();
            beat.spec.as_mut().unwrap().renew_time = Some(self.clock.micro());
            self.standby.put(beat);
        }
        for (fake, handle, running) in [
            (&self.primary, &self.p, self.primary_running),
            (&self.standby, &self.s, self.standby_running),
        ] {
            fake.mirror::<KeptDeployment>(&handle.deployments(NS));
            fake.mirror::<ConfigMap>(&handle.configmaps(NS));
            let pods = handle.pods(NS);
            pods.apply(Event::Init);
            for name in NAMES.into_iter().filter(|_| running) {
                pods.apply(Event::InitApply(ready_pod(name)));
            }
            pods.apply(Event::InitDone);
        }
        // The coordination's cache: only this daemon's Leases (the lock is not one).
        let selector = format!("app.kubernetes.io/name={APP_LABEL_VALUE}");
        self.standby
            .mirror_selected(&self.s.leases(NS, &selector), NS, Some(&selector));
    }

    /// A scheduled tick, due now, on the caches as they are now.
    async fn tick(&mut self) -> Vec<String> {
        self.seen();
        let due = self.clock.now();
        self.runner.tick(None, due).await;
        lines(self.primary.take_log())
    }

    /// The first tick; its requests in any order.
    async fn first_tick(&mut self) -> Vec<String> {
        let requests = self.tick().await;
        sorted(requests)
    }

    /// The next tick, after [`TICK_SPACING`]: the requests in between (the
    /// coordination's renewal), then the tick's.
    async fn next_tick(&mut self) -> Vec<String> {
        tokio::time::sleep(TICK_SPACING).await;
        let between = lines(self.primary.take_log());
        assert_eq!(between, [RENEWAL], "between two ticks, one renewal alone");
        self.tick().await
    }

    fn leads(&self) -> bool {
        self.runner.coord.role(self.clock.now()) == Role::Leader
    }

    fn record(&self) -> FailoverRecord {
        let cm: ConfigMap = self.standby.get(NS, RECORD).unwrap();
        crate::record::from_config_map(&cm).unwrap()
    }

    /// This instance's verdict on the group, as its observer Lease says.
    fn published_verdict(&self) -> Option<Verdict> {
        let lease: Lease = self.standby.get(NS, "kube-failover.observer.me")?;
        let text = lease.metadata.annotations?.remove(VERDICTS_ANNOTATION)?;
        decode_verdicts(&text).get("g").map(GroupVerdict::verdict)
    }

    fn replicas(fake: &FakeApi) -> Vec<Option<i32>> {
        NAMES
            .iter()
            .map(|n| {
                fake.get::<Deployment>(NS, n)
                    .unwrap()
                    .spec
                    .unwrap()
                    .replicas
            })
            .collect()
    }
}

/// What the first tick of a group sends: `/readyz` of both clusters, and the
/// coordination's first writes: its observer Lease (read first: it may be there from a
/// previous process) and, when it takes the group, the leader Lease.
fn first_requests(takes_the_lead: bool) -> Vec<String> {
    let mut expected = vec![
        READYZ.to_string(),
        "standby GET /readyz".into(),
        "standby GET agents/leases/kube-failover.observer.me".into(),
        "standby POST agents/leases kube-failover.observer.me".into(),
    ];
    if takes_the_lead {
        expected.push("standby POST agents/leases kube-failover-g-leader".into());
    }
    sorted(expected)
}

#[tokio::test(start_paused = true)]
async fn a_healthy_pair_sees_no_write_but_the_coordinations_own_leases() {
    let mut pair = Pair::new("auto");
    assert_eq!(pair.first_tick().await, first_requests(true));
    assert!(pair.leads(), "the only instance leads: it would act");
    // A minute of ticks: each asks the primary's /readyz (an answer newer than the
    // last one) and reads everything else from the caches; the standby's /readyz
    // answer holds for its slot (the test handle's lasts a day). Between two ticks the
    // observer Lease is renewed, and it keeps the leader Lease too: nothing else.
    for _ in 0..60 {
        assert_eq!(pair.next_tick().await, [READYZ]);
    }
    assert_eq!(pair.runner.state, GroupState::PrimaryActive);
    assert_eq!(pair.published_verdict(), Some(Verdict::Up));
    assert!(pair.leads());
    let leader: Lease = pair.standby.get(NS, "kube-failover-g-leader").unwrap();
    assert_eq!(leader.spec.unwrap().holder_identity.as_deref(), Some("me"));
    assert_eq!(pair.record().epoch, 0);
}

/// Ticks healthy past the startup grace, then the primary's Pods go away; ticks until
/// the next tick reaches the failure threshold.
async fn primary_down_until_the_threshold(pair: &mut Pair, takes_the_lead: bool) {
    assert_eq!(pair.first_tick().await, first_requests(takes_the_lead));
    for _ in 0..3 {
        assert_eq!(pair.next_tick().await, [READYZ]);
    }
    assert_eq!(pair.runner.state, GroupState::PrimaryActive);
    pair.primary_running = false;
    set_available(&pair.primary, 0);
    // failure_threshold = 3: the first two failing ticks only suspect it.
    for _ in 0..2 {
        assert_eq!(pair.next_tick().await, [READYZ]);
        assert_eq!(pair.runner.state, GroupState::PrimarySuspect);
    }
}

/// What the tick that promotes sends, in order.
const PROMOTION: [&str; 17] = [
    READYZ,
    // The record first: nothing is scaled unless it says `promoting`.
    "standby PUT agents/configmaps/kube-failover-g phase=promoting",
    // The old primary fenced (it still wants replicas): the record read again before
    // scaling, the Deployments selected, each scaled to 0 with an Event.
    "standby GET agents/configmaps/kube-failover-g",
    "primary GET agents/deployments?labelSelector=part-of=agent",
    "primary PATCH agents/deployments/trigger/scale replicas=0",
    "primary POST agents/events KubeFailoverFenced",
    "primary PATCH agents/deployments/worker/scale replicas=0",
    "primary POST agents/events KubeFailoverFenced",
    // The standby scaled up: the record read again, each Deployment marked with the
    // epoch, then scaled, with an Event.
    "standby GET agents/configmaps/kube-failover-g",
    "standby GET agents/deployments?labelSelector=part-of=agent",
    "standby PATCH agents/deployments/trigger epoch=1",
    "standby PATCH agents/deployments/trigger/scale replicas=1",
    "standby POST agents/events KubeFailoverPromoted",
    "standby PATCH agents/deployments/worker epoch=1",
    "standby PATCH agents/deployments/worker/scale replicas=1",
    "standby POST agents/events KubeFailoverPromoted",
    // The verdict turned down: published at once, after the actions.
    RENEWAL,
];

/// The tick that finds the standby Ready: the `promoted` record, then what follows it:
/// the stale Terraform lock found and deleted (clear_stale_locks) with an Event, then the
/// promotion's Event (its text composed with the notice).
const PROMOTED: [&str; 7] = [
    READYZ,
    "standby GET agents/configmaps/kube-failover-g",
    "standby PUT agents/configmaps/kube-failover-g phase=promoted",
    "standby GET agents/leases",
    "standby DELETE agents/leases/lock-tfstate-default-state",
    "standby POST agents/events KubeFailoverStaleLockCleared",
    "standby POST agents/events KubeFailoverPromotionComplete",
];

#[tokio::test(start_paused = true)]
async fn a_primary_down_for_its_threshold_is_promoted_with_the_record_written_first() {
    let mut pair = Pair::new("auto");
    primary_down_until_the_threshold(&mut pair, true).await;
    assert!(pair.leads());
    assert_eq!(pair.next_tick().await, PROMOTION);
    assert_eq!(pair.runner.state, GroupState::Promoting);
    assert_eq!(Pair::replicas(&pair.primary), [Some(0), Some(0)]);
    assert_eq!(Pair::replicas(&pair.standby), [Some(1), Some(1)]);

    // The standby's Pods are not Ready yet: nothing to do but wait.
    assert_eq!(pair.next_tick().await, [READYZ]);
    assert_eq!(pair.runner.state, GroupState::Promoting);

    // Ready: the record says `promoted`; the actions that follow it find the stale
    // Terraform lock and delete it (clear_stale_locks) with an Event, then write the
    // promotion's Event (its text composed with the notice).
    pair.standby_running = true;
    set_available(&pair.standby, 1);
    assert_eq!(pair.next_tick().await, PROMOTED);
    // The old primary seen at 0: the record says it is fenced.
    assert_eq!(
        pair.next_tick().await,
        [
            READYZ,
            "standby GET agents/configmaps/kube-failover-g",
            "standby PUT agents/configmaps/kube-failover-g phase=promoted fenced",
        ]
    );
    assert_eq!(pair.runner.state, GroupState::Promoted);
    // Settled: nothing more is written.
    for _ in 0..5 {
        assert_eq!(pair.next_tick().await, [READYZ]);
    }
    let record = pair.record();
    assert_eq!(record.phase, Some(RecordPhase::Promoted));
    assert_eq!((record.epoch, record.holder.as_str()), (1, "me"));
    assert!(record.fenced_at.is_some());
    assert!(
        pair.standby
            .get::<Lease>(NS, "lock-tfstate-default-state")
            .is_none()
    );
    let reasons = |fake: &FakeApi| -> Vec<String> {
        let mut events = fake.list::<KubeEvent>(NS);
        events.sort_by_key(|e| {
            e.metadata
                .resource_version
                .clone()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        events.into_iter().map(|e| e.reason.unwrap()).collect()
    };
    assert_eq!(
        reasons(&pair.primary),
        ["KubeFailoverFenced", "KubeFailoverFenced"]
    );
    assert_eq!(
        reasons(&pair.standby),
        [
            "KubeFailoverPromoted",
            "KubeFailoverPromoted",
            "KubeFailoverStaleLockCleared",
            "KubeFailoverPromotionComplete",
        ]
    );
}

/// The same fault, on an instance that must not write: the verdict alone is published.
async fn no_write_but_the_verdict(pair: &mut Pair, takes_the_lead: bool) {
    primary_down_until_the_threshold(pair, takes_the_lead).await;
    // Its own verdict turned down: published at once, nothing else.
    assert_eq!(pair.next_tick().await, [READYZ, RENEWAL]);
    assert_eq!(pair.published_verdict(), Some(Verdict::Down));
    assert_eq!(pair.runner.state, GroupState::PrimaryDown);
    for _ in 0..5 {
        assert_eq!(pair.next_tick().await, [READYZ]);
        assert_eq!(pair.runner.state, GroupState::PrimaryDown);
    }
    assert_eq!(pair.record().phase, Some(RecordPhase::Primary));
    assert_eq!(Pair::replicas(&pair.primary), [Some(1), Some(1)]);
    assert_eq!(Pair::replicas(&pair.standby), [Some(0), Some(0)]);
    assert!(pair.standby.list::<KubeEvent>(NS).is_empty());
    assert!(pair.primary.list::<KubeEvent>(NS).is_empty());
}

#[tokio::test(start_paused = true)]
async fn in_observe_mode_the_leader_writes_nothing_for_a_primary_down() {
    let mut pair = Pair::new("observe");
    // It leads (its Lease is the coordination's, in every mode) and decides, but its
    // decision is not carried out.
    no_write_but_the_verdict(&mut pair, true).await;
    assert!(pair.leads());
}

#[tokio::test(start_paused = true)]
async fn a_follower_writes_nothing_for_a_primary_down() {
    let mut pair = Pair::new("auto");
    pair.led_by_another();
    no_write_but_the_verdict(&mut pair, false).await;
    assert!(!pair.leads());
    let leader: Lease = pair.standby.get(NS, "kube-failover-g-leader").unwrap();
    assert_eq!(
        leader.spec.unwrap().holder_identity.as_deref(),
        Some("other")
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_scaled_while_the_promoting_record_cannot_be_written() {
    let mut pair = Pair::new("auto");
    primary_down_until_the_threshold(&mut pair, true).await;
    // The standby's API answers 500 to everything for one tick (its `/readyz` answer
    // of the slot was ok): the record write fails, and the rest of the promotion is not
    // tried. The verdict is published all the same (and fails too).
    pair.standby.fail_with(Some(500));
    assert_eq!(
        pair.next_tick().await,
        [
            READYZ,
            "standby PUT agents/configmaps/kube-failover-g phase=promoting",
            RENEWAL,
        ]
    );
    assert!(pair.leads(), "its term runs until the renew deadline");
    assert_eq!(pair.record().phase, Some(RecordPhase::Primary));
    assert_eq!(Pair::replicas(&pair.primary), [Some(1), Some(1)]);
    assert_eq!(Pair::replicas(&pair.standby), [Some(0), Some(0)]);
    // Back. With a renewal and the verdict's write failed, its term ran out at the renew
    // deadline, before the next renewal: the next tick writes the leader Lease again
    // (beside the primary's /readyz, in either order), then promotes at the same epoch.
    // Its `down` verdict went out with the renewal before this tick: no write of its own.
    pair.standby.fail_with(None);
    let back = pair.next_tick().await;
    assert_eq!(
        sorted(back[..2].to_vec()),
        [READYZ, "standby PUT agents/leases/kube-failover-g-leader"]
    );
    assert_eq!(back[2..], PROMOTION[1..PROMOTION.len() - 1]);
    assert_eq!(pair.published_verdict(), Some(Verdict::Down));
    assert!(pair.leads());
    assert_eq!(pair.record().epoch, 1);
}

/// The `promoted` record cannot be written (the standby answers 500 for one tick): the
/// stale locks and the promotion's Event that follow it are not tried; the next tick
/// writes all three.
#[tokio::test(start_paused = true)]
async fn what_follows_the_promoted_record_waits_until_it_is_written() {
    let mut pair = Pair::new("auto");
    primary_down_until_the_threshold(&mut pair, true).await;
    assert_eq!(pair.next_tick().await, PROMOTION);
    pair.standby_running = true;
    set_available(&pair.standby, 1);
    pair.standby.fail_with(Some(500));
    assert_eq!(
        pair.next_tick().await,
        [READYZ, "standby GET agents/configmaps/kube-failover-g"]
    );
    assert_eq!(pair.record().phase, Some(RecordPhase::Promoting));
    assert!(
        pair.standby
            .get::<Lease>(NS, "lock-tfstate-default-state")
            .is_some()
    );
    pair.standby.fail_with(None);
    assert_eq!(pair.next_tick().await, PROMOTED);
}
