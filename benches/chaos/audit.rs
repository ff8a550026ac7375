//! "No write by an instance after its leadership deadline", from the API servers' audit
//! logs: what each instance's requests did, as the servers recorded them, whatever the
//! instance believed.
//!
//! An instance leads from a successful write of the group's leader Lease (its acquisition,
//! or a new term after its own term ran out) and keeps leading through the renewals of its
//! observer Lease, the heartbeat the leader Lease names. Another instance takes the Lease
//! over only after it has seen both unchanged for a lease duration, so a write that only
//! the leader may make (every write of the daemon but those two Leases: the record,
//! scaling on either side, Events, stale locks) is safe when it reached the API server
//! less than a lease duration after the instance's last renewal had landed. Past that,
//! another instance may already lead: a violation. So is a write after another
//! instance's successful write of the leader Lease, which means a take-over (a holder
//! only ever writes its own Lease, against its resourceVersion). A heartbeat that landed
//! after such a take-over, or after a silence longer than the lease duration (a paused
//! process), renews nothing: only a write of the leader Lease starts a term again. The daemon's own rule is stricter (it stops
//! `renew_deadline` after its last renewal was sent); how close each instance came to it
//! is measured, not judged: a write checked just before the deadline reaches the server
//! later by the time the request took on its way.
//!
//! At level `Metadata` the log has no bodies: a leader Lease write that releases the
//! Lease (at shutdown, or handing a group over) looks like one that takes it, so a write
//! after an instance's own release is caught only once the lease duration has passed.
//!
//! Shared by the campaign (`check.rs`) and its unit tests in the suite
//! (`tests/suite.rs`), hence the module-wide `dead_code` allowance.
#![allow(dead_code)]

use kube_failover_testbed::{AuditEvent, DAEMON_USER};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// What the check needs to know of the daemon's deployment.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The instances' identities (`daemon.identity`), as their user agents carry them.
    pub identities: Vec<String>,
    /// The cluster whose audit log holds the coordination Leases (the standby).
    pub coordination_cluster: String,
    /// The coordination namespace.
    pub namespace: String,
    /// The group's leader Lease (`kube-failover-<group>-leader`).
    pub leader_lease: String,
    /// An instance's observer Lease, its heartbeat (`kube-failover.observer.<identity>`).
    pub observer_lease: fn(&str) -> String,
    /// `daemon.leader.lease_duration`: the budget.
    pub lease_duration: Duration,
    /// `daemon.leader.renew_deadline`: what the measured value is compared with.
    pub renew_deadline: Duration,
}

/// A leader-only write that reached an API server when another instance may already
/// have led.
#[derive(Debug, Clone)]
pub struct Late {
    pub identity: String,
    /// `verb resource[/subresource] namespace/name on cluster (code)`.
    pub write: String,
    /// When the write reached the API server.
    pub received: SystemTime,
    /// The instance's last renewal before it (`None`: it never held the Lease).
    pub renewal: Option<Renewal>,
    /// Another instance's take-over that preceded the write, if any.
    pub taken_over: Option<(String, SystemTime)>,
}

/// A successful write of an instance's leader Lease or heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Renewal {
    /// The leader Lease itself (a term starts), not the heartbeat.
    pub leader_lease: bool,
    pub received: SystemTime,
    /// When its answer was sent: from then on the others could see it.
    pub landed: SystemTime,
}

/// Per instance: what was checked and the closest call.
#[derive(Debug, Clone, Default)]
pub struct InstanceAudit {
    /// Leader-only writes answered 2xx, by `resource[/subresource] on cluster`.
    pub writes: BTreeMap<String, usize>,
    /// Successful writes of the leader Lease (terms started, or released).
    pub leader_lease_writes: usize,
    /// Successful heartbeat writes.
    pub heartbeats: usize,
    /// The largest (write received − last renewal received) over its leader-only
    /// writes, with that write.
    pub worst: Option<(Duration, String)>,
}

impl InstanceAudit {
    pub fn checked(&self) -> usize {
        self.writes.values().sum()
    }
}

/// What the check found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// By identity, in the order of [`Spec::identities`].
    pub instances: Vec<(String, InstanceAudit)>,
    pub late: Vec<Late>,
    /// Successful writes of the operator's commands (`kube-failover-cli/…`), not checked.
    pub operator_writes: usize,
    /// Successful writes of other clients (the test bed's admin: the campaign's faults,
    /// the controller manager, kwok; the guards), not checked, by `user agent-product`.
    pub other_writes: BTreeMap<String, usize>,
    /// Successful writes of the daemon's user with an agent naming no instance of the
    /// campaign, nor the CLI or a guard: a misnamed or unknown client.
    pub unattributed: Vec<String>,
    /// Audit events with a write verb, a 2xx code and no timestamp (not checkable).
    pub untimed: usize,
    /// [`Spec::lease_duration`], the budget.
    pub lease_duration: Duration,
    /// [`Spec::renew_deadline`].
    pub renew_deadline: Duration,
}

impl Findings {
    /// Leader-only writes checked, over every instance.
    pub fn checked(&self) -> usize {
        self.instances.iter().map(|(_, a)| a.checked()).sum()
    }

    /// The worst (write − last renewal) over the instances.
    pub fn worst(&self) -> Option<(&str, Duration, &str)> {
        self.instances
            .iter()
            .filter_map(|(id, a)| a.worst.as_ref().map(|(d, w)| (id.as_str(), *d, w.as_str())))
            .max_by_key(|(_, d, _)| *d)
    }
}

/// Which instance sent a request, from its user agent `kube-failover/<version> (<id>)`.
fn instance_of<'a>(spec: &'a Spec, agent: &str) -> Option<&'a str> {
    let id = agent
        .strip_prefix("kube-failover/")?
        .split_once(" (")?
        .1
        .strip_suffix(')')?;
    spec.identities
        .iter()
        .find(|i| i.as_str() == id)
        .map(String::as_str)
}

fn describe(cluster: &str, e: &AuditEvent) -> String {
    let (what, at) = match &e.object_ref {
        Some(o) => (
            if o.subresource.is_empty() {
                o.resource.clone()
            } else {
                format!("{}/{}", o.resource, o.subresource)
            },
            format!("{}/{}", o.namespace, o.name),
        ),
        None => (e.request_uri.clone(), String::new()),
    };
    format!(
        "{} {what} {at} on {cluster} ({})",
        e.verb,
        e.code().unwrap_or_default()
    )
}

fn kind_of(cluster: &str, e: &AuditEvent) -> String {
    match &e.object_ref {
        Some(o) if o.subresource.is_empty() => format!("{} on {cluster}", o.resource),
        Some(o) => format!("{}/{} on {cluster}", o.resource, o.subresource),
        None => format!("{} on {cluster}", e.request_uri),
    }
}

/// What a successful write of an instance was.
enum Write {
    LeaderLease,
    Heartbeat,
    LeaderOnly,
}

/// Checks the successful writes of both clusters' audit logs, `(cluster, event)` in any
/// order (they are sorted by the time the servers received them).
pub fn check(spec: &Spec, events: impl IntoIterator<Item = (String, AuditEvent)>) -> Findings {
    let mut f = Findings {
        instances: spec
            .identities
            .iter()
            .map(|i| (i.clone(), InstanceAudit::default()))
            .collect(),
        lease_duration: spec.lease_duration,
        renew_deadline: spec.renew_deadline,
        ..Findings::default()
    };
    let mut writes: Vec<(SystemTime, SystemTime, String, AuditEvent)> = Vec::new();
    for (cluster, e) in events {
        if !e.is_successful_write() || e.stage != "ResponseComplete" {
            continue;
        }
        match (e.received(), e.staged()) {
            (Some(r), Some(s)) => writes.push((r, s, cluster, e)),
            _ => f.untimed += 1,
        }
    }
    writes.sort_by_key(|(r, ..)| *r);
    let heartbeats: Vec<String> = spec
        .identities
        .iter()
        .map(|i| (spec.observer_lease)(i))
        .collect();
    // Per instance: its last renewal, and whether another instance has written the
    // leader Lease since its own last write of it (its term is over).
    let mut last: Vec<Option<Renewal>> = vec![None; spec.identities.len()];
    let mut deposed: Vec<Option<(String, SystemTime)>> = vec![None; spec.identities.len()];
    for (received, landed, cluster, e) in writes {
        // Told apart by their user agent: an instance may use the daemon's user or a
        // token of its own (a ServiceAccount).
        let Some(id) = instance_of(spec, &e.user_agent) else {
            let product = match e.user_agent.split('/').next() {
                Some(p) if !p.is_empty() => p,
                _ => "(no agent)",
            };
            if product == "kube-failover-cli" {
                f.operator_writes += 1;
            } else if e.user.username == DAEMON_USER && product != "kube-failover-guard" {
                f.unattributed
                    .push(format!("{} by {:?}", describe(&cluster, &e), e.user_agent));
            } else {
                *f.other_writes
                    .entry(format!("{} {product}", e.user.username))
                    .or_default() += 1;
            }
            continue;
        };
        let i = spec.identities.iter().position(|x| x == id).unwrap_or(0);
        let lease = |name: &str| {
            cluster == spec.coordination_cluster
                && e.object_ref.as_ref().is_some_and(|o| {
                    o.resource == "leases"
                        && o.subresource.is_empty()
                        && o.namespace == spec.namespace
                        && o.name == name
                })
        };
        let kind = if lease(&spec.leader_lease) {
            Write::LeaderLease
        } else if lease(&heartbeats[i]) {
            Write::Heartbeat
        } else {
            Write::LeaderOnly
        };
        let audit = &mut f.instances[i].1;
        match kind {
            Write::LeaderLease => {
                audit.leader_lease_writes += 1;
                last[i] = Some(Renewal {
                    leader_lease: true,
                    received,
                    landed,
                });
                deposed[i] = None;
                for (j, d) in deposed.iter_mut().enumerate() {
                    if j != i && last[j].is_some() && d.is_none() {
                        *d = Some((id.to_string(), landed));
                    }
                }
            }
            Write::Heartbeat => {
                audit.heartbeats += 1;
                // A heartbeat renews a running term only: one that lands after a
                // silence longer than the lease duration (a paused process) revives
                // nothing, as in the daemon, where only a write of the leader Lease
                // starts a term again.
                let running = last[i].is_some_and(|r| {
                    received
                        .duration_since(r.landed)
                        .map_or(true, |d| d <= spec.lease_duration)
                });
                if running && deposed[i].is_none() {
                    last[i] = Some(Renewal {
                        leader_lease: false,
                        received,
                        landed,
                    });
                }
            }
            Write::LeaderOnly => {
                *audit.writes.entry(kind_of(&cluster, &e)).or_default() += 1;
                let what = describe(&cluster, &e);
                if let Some(r) = last[i] {
                    let gap = received.duration_since(r.received).unwrap_or_default();
                    if audit.worst.as_ref().is_none_or(|(w, _)| gap > *w) {
                        audit.worst = Some((gap, what.clone()));
                    }
                }
                let expired = last[i].is_none_or(|r| {
                    received
                        .duration_since(r.landed)
                        .is_ok_and(|d| d > spec.lease_duration)
                });
                let taken_over = deposed[i].clone().filter(|(_, at)| received > *at);
                if expired || taken_over.is_some() {
                    f.late.push(Late {
                        identity: id.to_string(),
                        write: what,
                        received,
                        renewal: last[i],
                        taken_over,
                    });
                }
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "env0-agent";

    fn spec() -> Spec {
        Spec {
            identities: vec!["chaos-a".into(), "chaos-b".into()],
            coordination_cluster: "standby".into(),
            namespace: NS.into(),
            leader_lease: "kube-failover-env0-leader".into(),
            observer_lease: |i| format!("kube-failover.observer.{i}"),
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
        }
    }

    /// An audit line as kube-apiserver writes it at level `Metadata` (a campaign's,
    /// shortened: no credential id, no authorization annotations), the request received
    /// at `at` seconds past 02:00:00 and answered 4 ms later.
    fn line(
        agent: &str,
        verb: &str,
        resource: &str,
        sub: &str,
        name: &str,
        at: f64,
        code: u16,
    ) -> AuditEvent {
        let stamp = |s: f64| format!("2025-01-01T02:00:{:09.6}Z", s);
        let user = if agent.starts_with("kube/") {
            "admin"
        } else {
            DAEMON_USER
        };
        let text = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"5b1c0d2e","stage":"ResponseComplete","requestURI":"/x","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["127.0.0.1"],"userAgent":"{agent}","objectRef":{{"resource":"{resource}","namespace":"{NS}","name":"{name}","apiVersion":"v1","subresource":"{sub}"}},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"{}","stageTimestamp":"{}"}}"#,
            stamp(at),
            stamp(at + 0.004)
        );
        serde_json::from_str(&text).expect("an audit line")
    }

    const A: &str = "kube-failover/0.1.0 (chaos-a)";
    const B: &str = "kube-failover/0.1.0 (chaos-b)";

    fn on(cluster: &str, e: AuditEvent) -> (String, AuditEvent) {
        (cluster.to_string(), e)
    }

    fn acquire(agent: &str, at: f64) -> (String, AuditEvent) {
        on(
            "standby",
            line(
                agent,
                "update",
                "leases",
                "",
                "kube-failover-env0-leader",
                at,
                200,
            ),
        )
    }

    fn heartbeat(agent: &str, id: &str, at: f64) -> (String, AuditEvent) {
        on(
            "standby",
            line(
                agent,
                "update",
                "leases",
                "",
                &format!("kube-failover.observer.{id}"),
                at,
                200,
            ),
        )
    }

    fn scale(agent: &str, at: f64) -> (String, AuditEvent) {
        on(
            "primary",
            line(agent, "patch", "deployments", "scale", "agent", at, 200),
        )
    }

    #[test]
    fn a_write_a_second_after_the_last_renewal_is_in_time() {
        let f = check(
            &spec(),
            [
                acquire(A, 1.0),
                heartbeat(A, "chaos-a", 2.0),
                scale(A, 3.0),
                // A failed write is no write.
                on(
                    "standby",
                    line(
                        A,
                        "update",
                        "configmaps",
                        "",
                        "kube-failover-env0",
                        9.0,
                        409,
                    ),
                ),
            ],
        );
        assert!(f.late.is_empty(), "{:?}", f.late);
        assert_eq!(f.checked(), 1);
        let (id, worst, what) = f.worst().expect("a measured write");
        assert_eq!(id, "chaos-a");
        assert_eq!(worst, Duration::from_secs(1));
        assert!(what.starts_with("patch deployments/scale"), "{what}");
        let a = &f.instances[0].1;
        assert_eq!((a.leader_lease_writes, a.heartbeats), (1, 1));
        assert_eq!(
            a.writes.get("deployments/scale on primary"),
            Some(&1),
            "{:?}",
            a.writes
        );
    }

    #[test]
    fn a_write_three_and_a_half_seconds_after_the_last_renewal_is_late() {
        let f = check(
            &spec(),
            // Given out of order: sorted by reception.
            [scale(A, 5.5), heartbeat(A, "chaos-a", 2.0), acquire(A, 1.0)],
        );
        assert_eq!(f.late.len(), 1, "{:?}", f.late);
        let late = &f.late[0];
        assert_eq!(late.identity, "chaos-a");
        assert!(late.write.contains("deployments/scale"), "{}", late.write);
        let r = late.renewal.expect("the preceding renewal");
        assert!(!r.leader_lease);
        assert_eq!(
            late.received.duration_since(r.received).unwrap(),
            Duration::from_millis(3500)
        );
        assert!(late.taken_over.is_none());
        assert_eq!(f.worst().unwrap().1, Duration::from_millis(3500));
    }

    #[test]
    fn a_write_after_another_took_over_is_late_and_later_heartbeats_renew_nothing() {
        let f = check(
            &spec(),
            [
                acquire(A, 1.0),
                heartbeat(A, "chaos-a", 2.0),
                // B takes over (a bug of B's, or A's heartbeats were not seen).
                acquire(B, 2.5),
                // A's heartbeat still lands, and A writes within a second of it.
                heartbeat(A, "chaos-a", 2.7),
                scale(A, 3.0),
                // B writes in its own term.
                scale(B, 3.1),
            ],
        );
        assert_eq!(f.late.len(), 1, "{:?}", f.late);
        let late = &f.late[0];
        assert_eq!(late.identity, "chaos-a");
        let (by, _) = late.taken_over.clone().expect("the take-over");
        assert_eq!(by, "chaos-b");
        // The heartbeat after the take-over did not count.
        let r = late.renewal.expect("a renewal");
        assert_eq!(
            late.received.duration_since(r.received).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(f.instances[0].1.heartbeats, 2);
        assert_eq!(f.checked(), 2);
    }

    #[test]
    fn a_heartbeat_after_a_silence_longer_than_the_lease_duration_revives_nothing() {
        let f = check(
            &spec(),
            [
                acquire(A, 1.0),
                heartbeat(A, "chaos-a", 2.0),
                // Paused 5 s: the first heartbeat after it, then a write at once.
                heartbeat(A, "chaos-a", 7.0),
                scale(A, 7.1),
                // The Lease written anew: a new term, in which writes are in time.
                acquire(A, 8.0),
                heartbeat(A, "chaos-a", 9.0),
                scale(A, 9.5),
            ],
        );
        assert_eq!(f.late.len(), 1, "{:?}", f.late);
        let late = &f.late[0];
        assert!(late.taken_over.is_none());
        let r = late.renewal.expect("the renewal before the pause");
        assert_eq!(
            late.received.duration_since(r.received).unwrap(),
            Duration::from_millis(5100)
        );
        assert_eq!(f.instances[0].1.heartbeats, 3);
        assert_eq!(f.checked(), 2);
    }

    #[test]
    fn an_instance_is_known_by_its_agent_whatever_its_user() {
        let mut write = scale(B, 2.0);
        write.1.user.username = "system:serviceaccount:env0-agent:chaos-b".into();
        let f = check(&spec(), [acquire(B, 1.0), write]);
        assert!(f.late.is_empty(), "{:?}", f.late);
        assert_eq!(f.instances[1].1.checked(), 1);
        assert!(f.other_writes.is_empty(), "{:?}", f.other_writes);
    }

    #[test]
    fn writes_of_a_never_leader_are_late_and_other_clients_are_counted_apart() {
        let f = check(
            &spec(),
            [
                // A heartbeat alone is no term.
                heartbeat(A, "chaos-a", 1.0),
                on(
                    "standby",
                    line(A, "create", "events", "", "agent.1", 1.5, 201),
                ),
                on(
                    "standby",
                    line(
                        "kube-failover-cli/0.1.0",
                        "update",
                        "configmaps",
                        "",
                        "kube-failover-env0",
                        2.0,
                        200,
                    ),
                ),
                on(
                    "primary",
                    line("kube/v1.33", "delete", "rolebindings", "", "x", 2.0, 200),
                ),
                on(
                    "primary",
                    line(
                        "kubectl/v1.33",
                        "patch",
                        "deployments",
                        "",
                        "agent",
                        2.0,
                        200,
                    ),
                ),
            ],
        );
        assert_eq!(f.late.len(), 1);
        assert!(f.late[0].renewal.is_none());
        assert_eq!(f.operator_writes, 1);
        assert_eq!(
            f.other_writes,
            BTreeMap::from([("admin kube".to_string(), 1)])
        );
        assert_eq!(f.unattributed.len(), 1, "{:?}", f.unattributed);
        assert!(f.worst().is_none());
    }
}
