//! The coordination against an in-memory API (src/kube/fake_api.rs), on tokio's paused
//! clock.

use super::clock::Clock;
use super::group::GroupCoord;
use super::lease::{
    HEARTBEAT_ANNOTATION, INSTANCE_ANNOTATION, VERDICTS_ANNOTATION, annotation, leader_lease_name,
};
use super::observer::{self, GroupVerdict};
use super::presence::{self, Presence};
use super::*;
use crate::config::Config;
use crate::engine::Decision;
use crate::kube::fake_api::FakeApi;
use crate::kube::watch_cache::WatchStore;
use crate::model::Verdict;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::ObjectMeta;
use kube_failover_core::engine::GroupState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    /// The test's clock: tokio's (each test runs on a paused runtime of its own thread).
    static CLOCK: Clock = Clock::tokio();
}

fn clock() -> Clock {
    CLOCK.with(|c| *c)
}

// The coordination against an in-memory API (src/kube/fake_api.rs), with a
// short timing: interval 100 ms, lease duration 600 ms, renew deadline 400 ms,
// observer ttl 300 ms, so renewals every 100 ms.

const LEASE: Duration = Duration::from_millis(600);

fn config(groups: usize) -> Config {
    config_with(groups, "600ms", "400ms", "300ms")
}

fn config_with(groups: usize, lease: &str, deadline: &str, ttl: &str) -> Config {
    let mut text = format!(
        "[daemon]\nprobe_interval = \"100ms\"\nprobe_timeout = \"1s\"\n\
         [daemon.leader]\nlease_duration = \"{lease}\"\nrenew_deadline = \"{deadline}\"\n"
    );
    for g in 0..groups {
        text.push_str(&format!(
            "[[groups]]\nname = \"g{g}\"\nprimary = {{ namespace = \"p\" }}\n\
             standby = {{ namespace = \"ns\" }}\nworkloads = [{{ name = \"w\" }}]\n\
             policy.observers.ttl = \"{ttl}\"\n"
        ));
    }
    toml::from_str(&text).expect("test config")
}

/// One instance: the groups of `config`, its observer Lease, and the Lease cache
/// the tests fill from the fake (as its watch would).
struct Instance {
    coords: Vec<GroupCoord>,
    presence: Arc<Presence>,
    store: Arc<WatchStore<Lease>>,
    metrics: CoordMetrics,
    /// Where `kube_failover_leader` is gathered.
    live: prometheus::Registry,
}

fn instance(fake: &FakeApi, config: &Config, identity: &str) -> Instance {
    let store = WatchStore::<Lease>::new("Leases in ns");
    let timing = leader_timing(&config.daemon);
    // A process of its own, eager from the start (no warm-up): the tests decide who runs.
    let process = Coordination::with_clock(config, clock(), Duration::ZERO);
    let presence = Presence::new(
        fake.client(),
        store.clone(),
        "ns",
        identity,
        (config.daemon.probe_timeout, timing),
        process,
    );
    let live = prometheus::Registry::new();
    let metrics =
        CoordMetrics::new(&crate::metric_registry::MetricRegistry::default(), &live).unwrap();
    let coords = config
        .groups
        .iter()
        .map(|g| {
            GroupCoord::with_parts(
                g,
                config,
                fake.client(),
                presence.clone(),
                identity.to_string(),
                metrics.clone(),
            )
        })
        .collect();
    Instance {
        coords,
        presence,
        store,
        metrics,
        live,
    }
}

fn decision(verdict: Verdict) -> Decision {
    Decision {
        state: GroupState::PrimaryActive,
        reasons: vec![],
        actions: vec![],
        primary_down: verdict == Verdict::Down,
        standby_fit: true,
        unexpected_standby_replicas: 0,
        dual_active: false,
        no_active_side: false,
        signals: vec![],
        state_changed: false,
        verdict,
        warnings: vec![],
        acts: false,
    }
}

impl Instance {
    /// One tick of every group, the cache listed from the fake first when `seen`.
    async fn tick(&self, fake: &FakeApi, seen: bool, verdict: Verdict) {
        if seen {
            fake.mirror(&self.store);
        }
        for c in &self.coords {
            c.sync(clock().now(), clock().unix()).await;
            c.publish(&decision(verdict), clock().unix()).await;
        }
    }

    fn leading(&self) -> usize {
        let now = clock().now();
        self.coords.iter().filter(|c| c.may_write(now)).count()
    }
}

fn count(requests: &[String], what: &str) -> usize {
    requests.iter().filter(|r| r.as_str() == what).count()
}

fn held(holder: &str, instance: &str, heartbeat: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(leader_lease_name("g0")),
            annotations: Some(BTreeMap::from([
                (INSTANCE_ANNOTATION.into(), instance.into()),
                (HEARTBEAT_ANNOTATION.into(), heartbeat.into()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            ..LeaseSpec::default()
        }),
    }
}

fn beat(identity: &str, instance: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(presence::observer_lease_name(identity)),
            annotations: Some(BTreeMap::from([(
                INSTANCE_ANNOTATION.into(),
                instance.into(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            renew_time: Some(clock().micro()),
            ..LeaseSpec::default()
        }),
    }
}

async fn ticks_for(i: &Instance, fake: &FakeApi, seen: bool, d: Duration) {
    let until = clock().now() + d;
    while clock().now() < until {
        i.tick(fake, seen, Verdict::Up).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ticks `i` every `poll` until it leads `n` groups; how long that took, or `None`
/// when it did not within `within`.
async fn ticks_until_leading(
    i: &Instance,
    fake: &FakeApi,
    seen: bool,
    n: usize,
    within: Duration,
    poll: Duration,
) -> Option<Duration> {
    let from = clock().now();
    while (clock().now() - from) < within {
        i.tick(fake, seen, Verdict::Up).await;
        if i.leading() == n {
            return Some(clock().now() - from);
        }
        tokio::time::sleep(poll).await;
    }
    None
}

#[tokio::test(start_paused = true)]
async fn renewals_are_spaced_and_shared_by_every_group() {
    let fake = FakeApi::new();
    let cfg = config(10);
    let me = instance(&fake, &cfg, "me");
    assert_eq!(me.presence.spacing(), Duration::from_millis(100));
    // The groups take their Leases, then tick for 3 renew deadlines.
    ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
    assert_eq!(me.leading(), 10);
    let first = fake.take_requests();
    assert_eq!(
        count(&first, "POST"),
        11,
        "ten leader Leases and one observer Lease: {first:?}"
    );
    let started = clock().now();
    let mut syncs = 0;
    while (clock().now() - started) < Duration::from_millis(1200) {
        me.tick(&fake, true, Verdict::Up).await;
        syncs += me.coords.len();
        assert_eq!(me.leading(), 10, "every term kept by the heartbeat alone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = clock().now() - started;
    let requests = fake.take_requests();
    let observer = format!("PUT {}", presence::observer_lease_name("me"));
    let renewals = count(&requests, &observer);
    // One write per spacing for all ten groups (a tick's worth of slack); nothing
    // else: no leader Lease write, no read.
    let most = (elapsed.as_millis() / 100 + 2) as usize;
    assert!(
        (elapsed.as_millis() / 100 / 2) as usize <= renewals && renewals <= most,
        "{renewals} renewals in {elapsed:?} for {syncs} group ticks"
    );
    assert_eq!(renewals, requests.len(), "{requests:?}");
    // Every group's verdict is in the one Lease.
    let lease = fake.lease(&presence::observer_lease_name("me")).unwrap();
    let verdicts = observer::decode_verdicts(annotation(&lease, VERDICTS_ANNOTATION).unwrap());
    assert_eq!(verdicts.len(), 10);
    assert!(verdicts.values().all(|v| v.verdict() == Verdict::Up));
}

#[tokio::test(start_paused = true)]
async fn a_verdict_turning_down_is_published_at_once() {
    let fake = FakeApi::new();
    // Renewals every 10 s: none during the test but the first.
    let cfg = config_with(2, "60s", "40s", "30s");
    let me = instance(&fake, &cfg, "me");
    assert_eq!(me.presence.spacing(), Duration::from_secs(10));
    me.tick(&fake, true, Verdict::Up).await;
    let name = presence::observer_lease_name("me");
    let verdict_of = |g: &str| {
        let lease = fake.lease(&name)?;
        let v = observer::decode_verdicts(annotation(&lease, VERDICTS_ANNOTATION)?);
        v.get(g).map(GroupVerdict::verdict)
    };
    // Wait for a renewal that carries the verdicts (the first one may go before the
    // groups published), then change within the spacing.
    tokio::time::sleep(Duration::from_millis(10_050)).await;
    assert_eq!(verdict_of("g0"), Some(Verdict::Up));
    fake.take_requests();
    me.coords[0]
        .publish(&decision(Verdict::Suspect), clock().unix())
        .await;
    assert_eq!(
        fake.take_requests(),
        Vec::<String>::new(),
        "suspect waits for the renewal"
    );
    me.coords[0]
        .publish(&decision(Verdict::Down), clock().unix())
        .await;
    assert_eq!(
        verdict_of("g0"),
        Some(Verdict::Down),
        "down is written before publish returns"
    );
    me.coords[0]
        .publish(&decision(Verdict::Up), clock().unix())
        .await;
    assert_eq!(
        verdict_of("g0"),
        Some(Verdict::Up),
        "and so is the end of down"
    );
}

#[tokio::test(start_paused = true)]
async fn no_take_over_while_the_lease_cache_is_not_established() {
    let fake = FakeApi::new();
    // A holder that died: its leader Lease and heartbeat never change again.
    fake.put(beat("other", "p-other"));
    fake.put(held(
        "other",
        "p-other",
        &presence::observer_lease_name("other"),
    ));
    let cfg = config(1);
    let me = instance(&fake, &cfg, "me");
    // Never listed: for two lease durations, nothing of the group is read or written.
    ticks_for(&me, &fake, false, 2 * LEASE).await;
    assert_eq!(me.leading(), 0);
    assert_eq!(me.coords[0].role(clock().now()), Role::Follower);
    let requests = fake.take_requests();
    assert!(
        requests
            .iter()
            .all(|r| r.ends_with(&presence::observer_lease_name("me")) || r == "POST"),
        "only this instance's own observer Lease: {requests:?}"
    );
    // Listed now, then lost again (a relist after a lost watch): the clock starts
    // again from the next view, so the take-over needs a whole lease duration of
    // established views.
    me.tick(&fake, true, Verdict::Up).await;
    me.store.suspect("test");
    ticks_for(&me, &fake, false, LEASE).await;
    fake.mirror(&me.store);
    let took = ticks_until_leading(&me, &fake, false, 1, 3 * LEASE, Duration::from_millis(20))
        .await
        .expect("taken over once seen silent for a lease duration");
    assert!(took >= LEASE, "took over after {took:?}");
    let requests = fake.take_requests();
    // The heartbeat was read fresh before the write.
    let heartbeat = format!("GET {}", presence::observer_lease_name("other"));
    let write = format!("PUT {}", leader_lease_name("g0"));
    let read_at = requests.iter().position(|r| *r == heartbeat);
    let write_at = requests.iter().position(|r| *r == write);
    assert!(read_at.is_some() && read_at < write_at, "{requests:?}");
}

#[tokio::test(start_paused = true)]
async fn a_take_over_backs_off_when_the_fresh_heartbeat_moved() {
    let fake = FakeApi::new();
    let other = presence::observer_lease_name("other");
    fake.put(beat("other", "p-other"));
    fake.put(held("other", "p-other", &other));
    let cfg = config(1);
    let me = instance(&fake, &cfg, "me");
    me.tick(&fake, true, Verdict::Up).await;
    // From now on the cache misses every change (a watch silently stuck), while the
    // holder keeps beating: never taken over.
    let until = clock().now() + 3 * LEASE;
    while clock().now() < until {
        fake.put(beat("other", "p-other"));
        me.tick(&fake, false, Verdict::Up).await;
        assert_eq!(me.leading(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = fake.take_requests();
    assert!(
        count(&requests, &format!("GET {other}")) >= 1,
        "{requests:?}"
    );
    assert_eq!(
        count(&requests, &format!("PUT {}", leader_lease_name("g0"))),
        0
    );
    // The holder stops; the cache catches up: taken after a lease duration.
    fake.mirror(&me.store);
    ticks_for(&me, &fake, false, 4 * LEASE).await;
    assert_eq!(me.leading(), 1, "{:?}", fake.take_requests());
}

#[tokio::test(start_paused = true)]
async fn accepted_renewals_stand_for_the_standby_readyz_and_failed_ones_do_not() {
    let fake = FakeApi::new();
    let cfg = config(2);
    let me = instance(&fake, &cfg, "me");
    let proof = Arc::new(crate::kube::cluster::WriteProof::default());
    me.presence.prove_writes_to(proof.clone());
    let before = clock().now();
    ticks_for(&me, &fake, true, Duration::from_millis(300)).await;
    let (sent, _) = proof.since(before).expect("a renewal reported");
    let requests = fake.take_requests();
    assert!(
        count(
            &requests,
            &format!("PUT {}", presence::observer_lease_name("me"))
        ) >= 2,
        "{requests:?}"
    );
    // Failing writes prove nothing: the last accepted one stays the proof.
    fake.fail_with(Some(503));
    let cut = clock().now();
    ticks_for(&me, &fake, false, Duration::from_millis(300)).await;
    assert!(!fake.take_requests().is_empty(), "renewals were tried");
    assert_eq!(proof.since(cut), None);
    assert!(proof.since(sent).is_some_and(|(at, _)| at < cut));
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_renewals_fail_stops_at_the_deadline() {
    let fake = FakeApi::new();
    let cfg = config(2);
    let me = instance(&fake, &cfg, "me");
    ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
    assert_eq!(me.leading(), 2);
    // The API answers 500 to everything now; the cache still shows the Leases.
    fake.fail_with(Some(500));
    let stopped = ticks_until_leading(&me, &fake, false, 0, 3 * LEASE, Duration::from_millis(10))
        .await
        .expect("stopped leading");
    // At the renew deadline (400 ms) after the last renewal sent before the cut, a
    // spacing (100 ms) before it at most: not at the first failed renewal (its early
    // retry comes a quarter spacing later), and by the first tick past the deadline
    // (the clock is tokio's paused one: no slack for a busy machine is needed).
    assert!(stopped >= Duration::from_millis(300), "{stopped:?}");
    assert!(stopped <= Duration::from_millis(410), "{stopped:?}");
    // Back: the groups write their Leases again to lead.
    fake.fail_with(None);
    ticks_for(&me, &fake, true, Duration::from_millis(300)).await;
    assert_eq!(me.leading(), 2);
}

/// The leader gauge of each group, as gathered now.
fn leader_gauge(i: &Instance) -> Vec<i64> {
    i.live
        .gather()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_gauge().value() as i64)
        .collect()
}

/// A leader whose tick is blocked (no sync runs) and whose renewals fail: its role
/// and the leader gauge end at the renew deadline, read when asked, not at the next
/// tick.
#[tokio::test(start_paused = true)]
async fn a_blocked_leader_stops_saying_leader_at_its_deadline() {
    let fake = FakeApi::new();
    let cfg = config(2);
    let me = instance(&fake, &cfg, "me");
    ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
    assert_eq!(me.leading(), 2);
    assert_eq!(leader_gauge(&me), vec![1, 1]);
    let role = |g: &str| me.metrics.roles.of(g, clock().now()).map(|r| r.role);
    assert_eq!(role("g0"), Some(Role::Leader));
    // Cut: every renewal fails, and no tick runs from now on.
    fake.fail_with(Some(500));
    let cut = clock().now();
    while (clock().now() - cut) < 3 * LEASE && role("g0") == Some(Role::Leader) {
        // Role and gauge say the same at every reading (the deadline may pass
        // between two readings, never back).
        let before = leader_gauge(&me)[0];
        let now = role("g0");
        let after = leader_gauge(&me)[0];
        assert!(before >= after);
        if now == Some(Role::Leader) {
            assert_eq!(before, 1);
        } else {
            assert_eq!(after, 0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = clock().now() - cut;
    assert_eq!(role("g0"), Some(Role::Follower));
    assert_eq!(role("g1"), Some(Role::Follower));
    assert_eq!(leader_gauge(&me), vec![0, 0]);
    // Renew deadline 400 ms after the last renewal sent, which is at most a spacing
    // (100 ms) before the cut; read every 10 ms.
    assert!(stopped >= Duration::from_millis(300), "{stopped:?}");
    assert!(stopped <= Duration::from_millis(410), "{stopped:?}");
    // The next tick ends the term (and says so in the log).
    me.tick(&fake, false, Verdict::Up).await;
    assert_eq!(me.coords[0].lock().election.term(clock().now()), None);
}

#[tokio::test(start_paused = true)]
async fn another_process_writing_the_observer_lease_is_a_clash() {
    let fake = FakeApi::new();
    let cfg = config(2);
    let me = instance(&fake, &cfg, "me");
    ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
    assert_eq!(me.leading(), 2);
    // A twin with the same identity writes the Lease, every tick.
    let mut clash = false;
    let until = clock().now() + Duration::from_millis(500);
    while clock().now() < until && !clash {
        fake.put(beat("me", "a-twin"));
        me.tick(&fake, true, Verdict::Up).await;
        clash = me
            .coords
            .iter()
            .all(|c| c.role(clock().now()) == Role::IdentityClash);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(clash, "clash not seen");
    assert_eq!(me.leading(), 0);
    // Nothing is written while it lasts.
    fake.take_requests();
    let until = clock().now() + Duration::from_millis(300);
    while clock().now() < until {
        fake.put(beat("me", "a-twin"));
        me.tick(&fake, true, Verdict::Up).await;
        assert_eq!(me.leading(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = fake.take_requests();
    assert!(
        requests.iter().all(|r| r.starts_with("GET")),
        "{requests:?}"
    );
    // The twin stops: after a ttl of silence this instance publishes and leads again.
    ticks_for(&me, &fake, true, 3 * LEASE).await;
    assert!(
        me.coords
            .iter()
            .all(|c| c.role(clock().now()) != Role::IdentityClash)
    );
    assert_eq!(me.leading(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_api_that_fails_every_write_gets_no_more_writes_than_a_healthy_one() {
    let fake = FakeApi::new();
    // Ten groups, renewals every 500 ms (lease duration 3 s), and an API server that
    // answers 500 to everything from the start (overloaded): every group wants to
    // create its leader Lease at every tick.
    let cfg = config_with(10, "3s", "2s", "1500ms");
    let lease = Duration::from_secs(3);
    let me = instance(&fake, &cfg, "me");
    let spacing = me.presence.spacing();
    assert_eq!(spacing, Duration::from_millis(500));
    fake.fail_with(Some(500));
    let started = clock().now();
    let mut syncs = 0;
    while (clock().now() - started) < Duration::from_millis(1600) {
        me.tick(&fake, true, Verdict::Up).await;
        syncs += me.coords.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = clock().now() - started;
    let requests = fake.take_requests();
    assert_eq!(me.leading(), 0);
    let observer = presence::observer_lease_name("me");
    let renewals = requests.iter().filter(|r| r.ends_with(&observer)).count();
    let leader_writes = requests.len() - renewals;
    // The observer Lease: one attempt per spacing, and one early retry (a quarter
    // spacing) of the episode's first failure; every failure retried early was 13.
    let most = (elapsed.as_millis() / spacing.as_millis()) as usize + 2;
    assert!(renewals <= most, "{renewals} in {elapsed:?}: {requests:?}");
    // The leader Leases: after a failure, none for a spacing, then twice that, up to
    // the lease duration, less a quarter at most: at most four in 1.6 s, where every
    // group's tick wrote one before (hundreds).
    assert!(
        (1..=4).contains(&leader_writes),
        "{leader_writes} leader Lease writes for {syncs} group ticks: {requests:?}"
    );
    // Back to health: every group is led again within a lease duration.
    fake.fail_with(None);
    let led = ticks_until_leading(&me, &fake, true, 10, 2 * lease, Duration::from_millis(20))
        .await
        .expect("every group led once the API answers again");
    assert!(led <= lease, "{led:?}");
}

#[tokio::test(start_paused = true)]
async fn a_group_nobody_leads_is_reported_after_a_lease_duration() {
    let fake = FakeApi::new();
    let cfg = config(1);
    let me = instance(&fake, &cfg, "me");
    // The leader Lease cannot be written (say, no grant on the coordination
    // namespace): nobody leads.
    fake.fail_with(Some(403));
    ticks_for(&me, &fake, true, LEASE / 2).await;
    assert_eq!(
        me.coords[0].status(clock().now()).no_leader_seconds,
        None,
        "not within a lease duration"
    );
    ticks_for(&me, &fake, true, LEASE).await;
    let status = me.coords[0].status(clock().now());
    assert!(
        status
            .no_leader_seconds
            .is_some_and(|s| s > LEASE.as_secs_f64()),
        "{status:?}"
    );
    assert_eq!(status.leader, None);
    // Writable again: led, and said so.
    fake.fail_with(None);
    ticks_until_leading(&me, &fake, true, 1, 3 * LEASE, Duration::from_millis(20))
        .await
        .expect("led");
    me.tick(&fake, true, Verdict::Up).await;
    assert_eq!(me.coords[0].status(clock().now()).no_leader_seconds, None);
}

#[tokio::test(start_paused = true)]
async fn a_peers_down_verdict_is_news_only_to_an_instance_that_says_down() {
    let fake = FakeApi::new();
    let cfg = config(1);
    let a = instance(&fake, &cfg, "a");
    let b = instance(&fake, &cfg, "b");
    for _ in 0..3 {
        a.tick(&fake, true, Verdict::Up).await;
        b.tick(&fake, true, Verdict::Up).await;
    }
    // b says down (published at once); a does not yet: no news for a.
    b.tick(&fake, true, Verdict::Down).await;
    fake.mirror(&a.store);
    assert!(!a.coords[0].peer_down_news(), "a says up itself");
    // a says down too, and saw b's down at its sync: no news either.
    a.tick(&fake, true, Verdict::Down).await;
    assert!(
        !a.coords[0].peer_down_news(),
        "b's down was seen by the sync"
    );
    // b goes up and down again after a's sync: news until a syncs again.
    b.tick(&fake, true, Verdict::Up).await;
    a.tick(&fake, true, Verdict::Down).await;
    b.tick(&fake, true, Verdict::Down).await;
    assert!(!a.coords[0].peer_down_news(), "not in a's cache yet");
    fake.mirror(&a.store);
    assert!(a.coords[0].peer_down_news());
    a.tick(&fake, true, Verdict::Down).await;
    assert!(!a.coords[0].peer_down_news());
}

#[tokio::test(start_paused = true)]
async fn release_hands_the_leader_leases_over_and_withdraws_the_verdicts() {
    let fake = FakeApi::new();
    let cfg = config(2);
    let me = instance(&fake, &cfg, "me");
    ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
    assert_eq!(me.leading(), 2);
    let name = presence::observer_lease_name("me");
    me.coords[0].release().await;
    let l = fake.lease(&leader_lease_name("g0")).unwrap();
    assert_eq!(l.spec.unwrap().holder_identity, None, "released");
    assert!(
        fake.lease(&name)
            .unwrap()
            .spec
            .unwrap()
            .renew_time
            .is_some(),
        "still renewed for g1"
    );
    me.coords[1].release().await;
    assert_eq!(fake.lease(&name).unwrap().spec.unwrap().renew_time, None);
    fake.take_requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.take_requests(),
        Vec::<String>::new(),
        "renewals stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn two_instances_see_each_other_and_lead_once() {
    let fake = FakeApi::new();
    let cfg = config(4);
    let a = instance(&fake, &cfg, "a");
    let b = instance(&fake, &cfg, "b");
    let until = clock().now() + 4 * LEASE;
    while clock().now() < until {
        a.tick(&fake, true, Verdict::Up).await;
        b.tick(&fake, true, Verdict::Up).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.leading() + b.leading(), 4, "every group led once");
    let status = a.coords[0].status(clock().now());
    assert!(
        status
            .observers
            .iter()
            .any(|o| o.identity == "b" && o.fresh),
        "{status:?}"
    );
    // b stops without a word (killed: its renewals end with it): its groups move to
    // a after a lease duration.
    drop(b);
    let moved = ticks_until_leading(&a, &fake, true, 4, 4 * LEASE, Duration::from_millis(20))
        .await
        .expect("a leads every group");
    assert!(moved >= Duration::from_millis(400), "{moved:?}");
}
