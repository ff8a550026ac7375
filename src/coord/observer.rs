//! Observer verdicts: every instance publishes its verdict on the primary for each of
//! its groups in its observer Lease (one per standby cluster,
//! `kube-failover.observer.<identity>`, annotation `kube-failover/verdicts`), and reads
//! the others'.
//! Pure bookkeeping; the caller reads and writes the Leases.

use crate::model::{ObserverReport, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One observer Lease as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserverLease {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.holderIdentity`: the instance's `daemon.identity`.
    pub identity: String,
    /// The per-process instance id (annotation).
    pub instance: Option<String>,
    /// The group's verdict (anything unreadable is `unknown`).
    pub verdict: Verdict,
    /// The signals it sees down.
    pub down_signals: Vec<String>,
    /// Since when it says `down`.
    pub down_since_unix: Option<f64>,
    /// `spec.renewTime` as Unix seconds (none: withdrawn on shutdown).
    pub renewed_unix: Option<f64>,
    /// How many groups the observer's process leads (annotation).
    pub leading: Option<usize>,
}

/// One group's verdict in an observer Lease (annotation `kube-failover/verdicts`, a JSON
/// object by group name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupVerdict {
    /// `up`, `suspect`, `down` or `unknown` (anything else reads as `unknown`).
    pub verdict: String,
    /// The signals seen down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down_signals: Vec<String>,
    /// Since when (Unix seconds) the observer says `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<f64>,
}

impl GroupVerdict {
    /// The verdict, `unknown` when unreadable.
    pub fn verdict(&self) -> Verdict {
        Verdict::parse(&self.verdict)
    }
}

/// The annotation's text.
pub fn encode_verdicts(verdicts: &BTreeMap<String, GroupVerdict>) -> String {
    serde_json::to_string(verdicts).unwrap_or_else(|_| "{}".to_string())
}

/// The verdicts of an annotation; an unreadable one holds none (its writer observes
/// no group as far as this instance can tell, which never counts towards a quorum).
pub fn decode_verdicts(text: &str) -> BTreeMap<String, GroupVerdict> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Whether a new verdict must be published at once rather than with the next renewal:
/// it becomes or stops being `down` (what a quorum counts). `before` is the verdict
/// published last (`None`: none yet, which counts as not down).
pub fn urgent(before: Option<Verdict>, now: Verdict) -> bool {
    (before == Some(Verdict::Down)) != (now == Verdict::Down)
}

/// What this instance knows of the observers of one group.
#[derive(Debug, Default)]
pub struct Observers {
    /// Per Lease name: the last resourceVersion seen and since when (local clock), so
    /// that a Lease nobody renews ages even when clocks disagree.
    seen: HashMap<String, (String, Instant)>,
    /// Since when this instance has said `down` (wall clock).
    down_since: Option<f64>,
}

impl Observers {
    /// The age of a Lease's verdict: the larger of its wall-clock age and how long this
    /// instance has seen it unchanged.
    fn age(&mut self, now: Instant, wall: f64, lease: &ObserverLease) -> Option<Duration> {
        let entry = self
            .seen
            .entry(lease.name.clone())
            .or_insert_with(|| (lease.resource_version.clone(), now));
        if entry.0 != lease.resource_version {
            *entry = (lease.resource_version.clone(), now);
        }
        let local = now.saturating_duration_since(entry.1);
        let wall_age = Duration::try_from_secs_f64((wall - lease.renewed_unix?).max(0.0)).ok()?;
        Some(wall_age.max(local))
    }

    /// The other instances' verdicts (every Lease but `own`), each with its Lease and
    /// its age.
    pub fn reports<'a>(
        &mut self,
        now: Instant,
        wall: f64,
        leases: &'a [ObserverLease],
        own: &str,
    ) -> Vec<(&'a ObserverLease, ObserverReport)> {
        self.seen
            .retain(|name, _| leases.iter().any(|l| l.name == *name));
        leases
            .iter()
            .filter(|l| l.name != own)
            .map(|l| {
                let report = ObserverReport {
                    identity: l.identity.clone(),
                    verdict: l.verdict,
                    age: self.age(now, wall, l),
                    down_signals: l.down_signals.clone(),
                    down_since_unix: l.down_since_unix,
                };
                (l, report)
            })
            .collect()
    }

    /// Tracks this instance's own verdict; returns since when it has said `down`.
    pub fn own_verdict(&mut self, verdict: Verdict, wall: f64) -> Option<f64> {
        if verdict == Verdict::Down {
            Some(*self.down_since.get_or_insert(wall))
        } else {
            self.down_since = None;
            None
        }
    }
}

/// Another process publishes under this instance's identity: its Lease carries another
/// instance id and changed since this instance last read or wrote it. A Lease left by a
/// previous process of this identity (seen first, not renewed since) is no clash: it is
/// taken over by the next write.
pub fn clashes(own: Option<&ObserverLease>, instance: &str, last_known_rv: Option<&str>) -> bool {
    own.is_some_and(|l| {
        l.instance.as_deref() != Some(instance)
            && last_known_rv.is_some_and(|rv| rv != l.resource_version)
    })
}

/// A Lease name part from an identity: lower-case letters, digits and `-` (anything else
/// becomes `-`), at most `max` characters, never starting or ending with `-`. Two
/// identities that map to the same name are caught as a clash (the Lease keeps the
/// identity as written).
pub fn name_part(identity: &str, max: usize) -> String {
    let mapped: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .take(max)
        .collect();
    let trimmed = mapped.trim_matches(|c| c == '-' || c == '.');
    if trimmed.is_empty() {
        "x".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, rv: &str, verdict: Verdict, renewed: f64) -> ObserverLease {
        ObserverLease {
            name: name.into(),
            resource_version: rv.into(),
            identity: name.into(),
            instance: Some("i".into()),
            verdict,
            down_signals: vec![],
            down_since_unix: None,
            renewed_unix: Some(renewed),
            leading: None,
        }
    }

    fn ages(
        o: &mut Observers,
        now: Instant,
        wall: f64,
        leases: &[ObserverLease],
    ) -> Vec<Option<Duration>> {
        o.reports(now, wall, leases, "own")
            .into_iter()
            .map(|(_, r)| r.age)
            .collect()
    }

    #[test]
    fn ages_by_wall_clock_and_by_local_observation() {
        let t0 = Instant::now();
        let mut o = Observers::default();
        let a = lease("a", "1", Verdict::Down, 1000.0);
        let r = o.reports(t0, 1002.0, std::slice::from_ref(&a), "own");
        assert_eq!(r[0].1.age, Some(Duration::from_secs(2)));
        assert_eq!(r[0].1.verdict, Verdict::Down);
        assert_eq!(r[0].0.name, "a");
        // A clock running ahead of ours: the wall age says 0, the local one grows.
        let ahead = lease("a", "1", Verdict::Down, 5000.0);
        let r = ages(&mut o, t0 + Duration::from_secs(10), 1012.0, &[ahead]);
        assert_eq!(r, [Some(Duration::from_secs(10))]);
        // Renewed: the local age restarts.
        let renewed = lease("a", "2", Verdict::Down, 1012.0);
        let r = ages(&mut o, t0 + Duration::from_secs(11), 1012.5, &[renewed]);
        assert_eq!(r, [Some(Duration::from_millis(500))]);
        // Without a renew time, the age is unknown (never fresh).
        let mut none = lease("b", "1", Verdict::Down, 0.0);
        none.renewed_unix = None;
        assert_eq!(ages(&mut o, t0, 1000.0, &[none]), [None]);
        assert!(
            o.reports(t0, 1000.0, &[lease("own", "1", Verdict::Up, 0.0)], "own")
                .is_empty()
        );
    }

    /// Renewed every third of the ttl and read at every tick (a tick's view of a Lease
    /// is as old as the last renewal, plus the write's way through the watch), a
    /// verdict stays fresh even when one renewal is lost; silent for a ttl, it is not.
    #[test]
    fn a_verdict_renewed_every_third_of_the_ttl_stays_fresh_between_renewals() {
        let ttl = Duration::from_secs(3);
        let every = ttl / 3;
        let tick = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut o = Observers::default();
        let mut worst = Duration::ZERO;
        // The observer renews at 0.4 s past each `every`, except the one at 4.4 s (lost);
        // this instance ticks at whole seconds and sees what was written 50 ms before.
        let renewed_at = |t: f64| -> Option<f64> {
            let k = ((t - 0.45) / every.as_secs_f64()).floor();
            let mut last = (k >= 0.0).then_some(0.4 + k * every.as_secs_f64())?;
            if (last - 4.4).abs() < 1e-9 {
                last -= every.as_secs_f64();
            }
            Some(last)
        };
        for i in 1..20u32 {
            let t = f64::from(i) * tick.as_secs_f64();
            let Some(at) = renewed_at(t) else { continue };
            let l = lease("b", &format!("{at:.1}"), Verdict::Down, 1000.0 + at);
            let age = ages(&mut o, t0 + tick * i, 1000.0 + t, &[l])[0].unwrap();
            worst = worst.max(age);
        }
        assert!(worst < ttl, "worst age {worst:?} reaches the ttl {ttl:?}");
        assert!(worst >= every, "a lost renewal shows: {worst:?}");
        // Silent from 20 s: no longer fresh a ttl later.
        let l = lease("b", "silent", Verdict::Down, 1020.0);
        ages(&mut o, t0 + tick * 20, 1020.0, std::slice::from_ref(&l));
        let age = ages(&mut o, t0 + tick * 23, 1023.5, &[l])[0].unwrap();
        assert!(age > ttl, "{age:?}");
    }

    #[test]
    fn verdicts_round_trip_and_only_down_is_urgent() {
        let verdicts = BTreeMap::from([
            (
                "env0".to_string(),
                GroupVerdict {
                    verdict: "down".into(),
                    down_signals: vec!["api".into()],
                    down_since: Some(1_700_000_000.5),
                },
            ),
            (
                "env1".to_string(),
                GroupVerdict {
                    verdict: "up".into(),
                    down_signals: vec![],
                    down_since: None,
                },
            ),
        ]);
        let text = encode_verdicts(&verdicts);
        assert_eq!(
            text,
            r#"{"env0":{"verdict":"down","down_signals":["api"],"down_since":1700000000.5},"env1":{"verdict":"up"}}"#
        );
        assert_eq!(decode_verdicts(&text), verdicts);
        assert!(decode_verdicts("not json").is_empty());
        let odd = decode_verdicts(r#"{"g":{"verdict":"sideways"}}"#);
        assert_eq!(odd["g"].verdict(), Verdict::Unknown);

        assert!(urgent(None, Verdict::Down));
        assert!(urgent(Some(Verdict::Down), Verdict::Up));
        assert!(urgent(Some(Verdict::Down), Verdict::Unknown));
        assert!(!urgent(None, Verdict::Up));
        assert!(!urgent(Some(Verdict::Up), Verdict::Suspect));
        assert!(!urgent(Some(Verdict::Down), Verdict::Down));
    }

    #[test]
    fn down_since_holds_while_down() {
        let mut o = Observers::default();
        assert_eq!(o.own_verdict(Verdict::Up, 1.0), None);
        assert_eq!(o.own_verdict(Verdict::Down, 2.0), Some(2.0));
        assert_eq!(o.own_verdict(Verdict::Down, 3.0), Some(2.0));
        assert_eq!(o.own_verdict(Verdict::Suspect, 4.0), None);
        assert_eq!(o.own_verdict(Verdict::Down, 5.0), Some(5.0));
    }

    #[test]
    fn a_foreign_instance_writing_our_lease_since_we_saw_it_is_a_clash() {
        let mut l = lease("a", "5", Verdict::Up, 0.0);
        l.instance = Some("other".into());
        assert!(
            !clashes(Some(&l), "mine", None),
            "left by a previous process"
        );
        assert!(
            clashes(Some(&l), "mine", Some("4")),
            "written since we saw it"
        );
        assert!(
            !clashes(Some(&l), "mine", Some("5")),
            "unchanged since we saw it"
        );
        l.instance = Some("mine".into());
        assert!(!clashes(Some(&l), "mine", Some("4")));
        assert!(!clashes(None, "mine", None));
    }

    #[test]
    fn name_parts_are_dns_safe() {
        assert_eq!(name_part("Host_01.example.com", 63), "host-01.example.com");
        assert_eq!(name_part("--", 63), "x");
        assert_eq!(name_part("abcdef", 3), "abc");
    }
}
