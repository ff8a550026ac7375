//! The Terraform state mirror (`[groups.state.mirror]`): while the primary is the active
//! side, copies the state Secrets of Terraform's `kubernetes` backend (label
//! `tfstate=true`, named `tfstate-<workspace>-<suffix>`, large states split into
//! `…-part-N`) from the primary namespace to the standby namespace, so that the agent
//! finds its state there after a promotion.
//!
//! - **Continuous.** The Secrets of the selector are watched on both sides (one watch
//!   cache each, shared like every other, see [`crate::kube::cluster`]); a pass compares
//!   them in memory and writes only what differs, after every change seen (once the
//!   backend's writes of a split state have settled) and every `sync_interval`.
//! - **Byte for byte.** `type`, `data`, every label and the annotations the backend
//!   reads, names unchanged ([`plan`]). Leases (the backend's lock
//!   `lock-tfstate-…`) are never read, so never copied.
//! - **Never overwrites a change made in the standby.** Each copy carries the SHA-256 of
//!   what was copied; a standby Secret whose content no longer matches it, or that the
//!   mirror never copied, is a conflict: left alone, reported in `/status`, metrics, a
//!   warning and an Event. Writes carry the standby object's resourceVersion (or are
//!   creates); nothing is deleted unless `prune = true`.
//! - **Stops at the promotion** and resumes only when the record says `primary` again
//!   ([`gate`]); it never copies from the standby to the primary.
//! - **Only the leader writes, in `auto` mode.** Every instance compares (so every
//!   instance can say how far behind the standby is); only the one that leads the group
//!   writes, and none in `observe` mode.

mod gate;
mod metrics;
mod plan;

pub use gate::{EngineView, Gate, RecordView, StopReason};
pub use metrics::MirrorMetrics;
pub use plan::{ConflictKind, Step, plan};

use crate::actuate::{Actuator, BeforePromotion};
use crate::config::{GroupConfig, MirrorConfig};
use crate::engine::Decision;
use crate::error_chain::chain;
use crate::kube::call::{CallError, bounded};
use crate::kube::cluster::ClusterHandle;
use crate::kube::watch_cache::WatchStore;
use crate::model::FailoverRecord;
use crate::status::{MirrorConflictStatus, MirrorStatus};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

/// A write of the state mirror that failed; shown in `/status` with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{op} Secret {namespace}/{name} in the standby")]
struct WriteFailed {
    /// `create`, `replace` or `delete`.
    op: &'static str,
    /// The standby namespace.
    namespace: String,
    /// The Secret.
    name: String,
    /// Why.
    source: CallError,
}

/// After a change is seen, how long the mirror waits for more before it copies: the
/// backend writes a split state one Secret after the other, and a copy taken between
/// two of them would mix two versions.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Bound on each write to the standby (a part may hold a mebibyte).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a promotion waits for a pass in flight to finish its current write.
const HALT_WAIT: Duration = Duration::from_secs(2);

/// At most this many names in each list of `/status`.
const MAX_LISTED: usize = 50;

/// The field manager of the mirror's writes.
const FIELD_MANAGER: &str = "kube-failover";

/// The mirror's age written into the record when its promotion started: the notice of
/// a promotion reports it ("the standby's state was N s behind the primary").
pub fn mirror_age_at_promotion(record: &FailoverRecord) -> Option<u64> {
    record.mirror_age_seconds
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the last pass found.
#[derive(Debug, Default)]
struct Found {
    secrets: u64,
    bytes: u64,
    conflicts: BTreeMap<String, ConflictKind>,
    pending: Vec<String>,
    kept: Vec<String>,
    error: Option<String>,
}

struct Inner {
    gate: Gate,
    /// The gate's answer at the last pass (`None` before the first).
    state: Option<Result<(), StopReason>>,
    writer: bool,
    last_sync_unix: Option<f64>,
    found: Found,
    /// Conflicts an Event was recorded for (by this instance, as leader).
    announced: BTreeSet<(String, ConflictKind)>,
    /// The engine's view and the leadership at the last tick.
    last_view: Option<(EngineView, bool)>,
    /// Stopped by a promotion and not resumed since.
    stopped_by_promotion: bool,
}

struct Shared {
    group: String,
    cfg: MirrorConfig,
    primary_ns: String,
    standby_ns: String,
    inner: Mutex<Inner>,
    /// Held by a pass while it runs, so a promotion can wait for the write in flight.
    pass: tokio::sync::Mutex<()>,
    /// Wakes the mirror's task for a pass now (the gate may have changed).
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The group's view of its mirror: fed with each tick's decision, asked for `/status`
/// and the mirror's age, and stopping the mirror before a promotion's record is written.
#[derive(Clone)]
pub struct MirrorHandle(Arc<Shared>);

impl MirrorHandle {
    /// The handle of the mirror of `group` configured as `cfg`.
    pub fn new(group: &GroupConfig, cfg: &MirrorConfig) -> Self {
        let ns = cfg.namespace.as_ref();
        MirrorHandle(Arc::new(Shared {
            group: group.name.clone(),
            cfg: cfg.clone(),
            primary_ns: ns.unwrap_or(&group.primary.namespace).clone(),
            standby_ns: ns.unwrap_or(&group.standby.namespace).clone(),
            inner: Mutex::new(Inner {
                gate: Gate::new(),
                state: None,
                writer: false,
                last_sync_unix: None,
                found: Found::default(),
                announced: BTreeSet::new(),
                last_view: None,
                stopped_by_promotion: false,
            }),
            pass: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        }))
    }

    /// The group's decision of a tick, after its actions ran, and whether this
    /// instance leads the group: a change of either (a promotion decided or over, the
    /// leadership won) is acted on at once.
    pub fn on_tick(&self, decision: &Decision, leading: bool) {
        let view = EngineView::of(decision);
        let mut inner = self.0.lock();
        let changed = inner.last_view != Some((view, leading));
        inner.last_view = Some((view, leading));
        inner.gate.on_tick(view);
        drop(inner);
        if changed {
            self.0.wake.notify_one();
        }
    }

    /// Seconds since the mirror last found the standby in sync with the primary, at
    /// `now_unix`; `None` when it never did (or is off).
    pub fn age_seconds(&self, now_unix: f64) -> Option<f64> {
        if !self.0.cfg.enabled {
            return None;
        }
        self.0
            .lock()
            .last_sync_unix
            .map(|t| (now_unix - t).max(0.0))
    }

    /// The `/status` part at `now_unix`.
    pub fn status(&self, now_unix: f64) -> MirrorStatus {
        let s = &self.0;
        let inner = s.lock();
        let (active, stopped) = match (s.cfg.enabled, inner.state) {
            (false, _) => (false, None),
            (true, Some(Ok(()))) => (true, None),
            (true, Some(Err(reason))) => (false, Some(reason)),
            (true, None) => (false, Some(StopReason::Starting)),
        };
        let list = |names: &[String]| names.iter().take(MAX_LISTED).cloned().collect();
        MirrorStatus {
            enabled: s.cfg.enabled,
            active,
            stopped_reason: if s.cfg.enabled {
                stopped.map(|r| r.as_str().to_string())
            } else {
                Some("disabled".to_string())
            },
            stopped_detail: stopped.map(|r| r.explain().to_string()),
            writer: inner.writer && active,
            selector: s.cfg.selector.clone(),
            primary_namespace: s.primary_ns.clone(),
            standby_namespace: s.standby_ns.clone(),
            prune: s.cfg.prune,
            secrets: inner.found.secrets,
            bytes: inner.found.bytes,
            conflicts: inner
                .found
                .conflicts
                .iter()
                .take(MAX_LISTED)
                .map(|(name, kind)| MirrorConflictStatus {
                    name: name.clone(),
                    kind: kind.as_str().to_string(),
                    detail: kind.explain().to_string(),
                })
                .collect(),
            conflict_count: inner.found.conflicts.len(),
            pending: list(&inner.found.pending),
            kept: list(&inner.found.kept),
            last_sync_unix: inner.last_sync_unix,
            lag_seconds: inner.last_sync_unix.map(|t| (now_unix - t).max(0.0)),
            max_lag_seconds: s.cfg.max_lag.as_secs_f64(),
            last_error: inner.found.error.clone(),
        }
    }
}

impl BeforePromotion for MirrorHandle {
    fn before_promotion(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async move {
            self.0.lock().gate.halt();
            // A pass in flight stops before its next write; wait for the one under way.
            let _ = tokio::time::timeout(HALT_WAIT, self.0.pass.lock()).await;
            let age = self.age_seconds(now_unix()).map(|a| a.round() as u64);
            warn!(
                group = %self.0.group,
                mirror_age_seconds = age,
                "state mirror stopped: a promotion is being recorded"
            );
            age
        })
    }
}

/// Whether this instance may write now (it leads the group, in `auto` mode).
pub type MayWrite = Arc<dyn Fn() -> bool + Send + Sync>;

/// The mirror's task: watches, passes, writes.
pub struct Mirror {
    shared: Arc<Shared>,
    record_name: String,
    records: Arc<WatchStore<ConfigMap>>,
    primary: Arc<WatchStore<Secret>>,
    standby: Arc<WatchStore<Secret>>,
    api: Api<Secret>,
    events: Actuator,
    may_write: MayWrite,
    metrics: MirrorMetrics,
}

impl Mirror {
    /// The task of `handle`'s mirror for `group`: reads the selected Secrets from
    /// watches of `primary` and `standby`, the record from the standby's ConfigMap
    /// cache, writes with `standby_client` and records Events with `events`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        handle: &MirrorHandle,
        group: &GroupConfig,
        primary: &ClusterHandle,
        standby: &ClusterHandle,
        standby_client: kube::Client,
        events: Actuator,
        may_write: MayWrite,
        metrics: MirrorMetrics,
    ) -> Mirror {
        let shared = handle.0.clone();
        metrics.init_group(&shared.group, shared.cfg.max_lag.as_secs_f64());
        Mirror {
            record_name: group.record_name(),
            records: standby.configmaps(&group.standby.namespace),
            primary: primary.secrets(&shared.primary_ns, &shared.cfg.selector),
            standby: standby.secrets(&shared.standby_ns, &shared.cfg.selector),
            api: Api::namespaced(standby_client, &shared.standby_ns),
            shared,
            events,
            may_write,
            metrics,
        }
    }

    /// Runs until `stop` says so: a pass after every change seen (settled for
    /// [`SETTLE`]), every tick that changes the gate, and every `sync_interval`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = self.shared.cfg.sync_interval;
        let mut primary_rx = self.primary.subscribe();
        let mut standby_rx = self.standby.subscribe();
        let mut records_rx = self.records.subscribe();
        let mut next = tokio::time::Instant::now() + interval;
        info!(
            group = %self.shared.group,
            selector = %self.shared.cfg.selector,
            from = %self.shared.primary_ns,
            to = %self.shared.standby_ns,
            interval = %humantime::format_duration(interval),
            prune = self.shared.cfg.prune,
            "state mirror started"
        );
        loop {
            let settle = tokio::select! {
                _ = tokio::time::sleep_until(next) => false,
                r = primary_rx.changed() => r.is_ok(),
                r = standby_rx.changed() => r.is_ok(),
                r = records_rx.changed() => { let _ = r; false }
                _ = self.shared.wake.notified() => false,
                _ = stop.wait_for(|s| *s) => break,
            };
            if settle {
                // More changes within the settle time are part of the same write; a
                // stream of changes waits at most one sync interval.
                let until = tokio::time::Instant::now() + interval;
                while tokio::time::Instant::now() < until {
                    tokio::select! {
                        _ = tokio::time::sleep(SETTLE) => break,
                        r = primary_rx.changed() => if r.is_err() { break },
                        r = standby_rx.changed() => if r.is_err() { break },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
            primary_rx.borrow_and_update();
            standby_rx.borrow_and_update();
            records_rx.borrow_and_update();
            self.pass().await;
            next = tokio::time::Instant::now() + interval;
        }
        debug!(group = %self.shared.group, "state mirror stopped: shutting down");
    }

    fn read_record(&self) -> Option<FailoverRecord> {
        let found = self
            .records
            .read(|m| m.get(&self.record_name).cloned())
            .ok()?;
        match found {
            None => Some(FailoverRecord::default()),
            Some(cm) => crate::record::from_config_map(&cm).ok(),
        }
    }

    /// One pass: the gate, then the comparison, then (as leader) the writes.
    pub async fn pass(&self) {
        let _running = self.shared.pass.lock().await;
        let wall = now_unix();
        let group = self.shared.group.as_str();
        let record = self.read_record();
        let view = record
            .as_ref()
            .map_or(RecordView::Unknown, RecordView::Read);
        let leading = (self.may_write)();
        let gate = self.shared.lock().gate.check(view, wall);
        self.gate_changed(gate, leading).await;
        if gate.is_err() {
            return;
        }
        let read = |store: &WatchStore<Secret>| store.read(|m| m.clone());
        let (primary, standby) = match (read(&self.primary), read(&self.standby)) {
            (Ok(p), Ok(s)) => (p, s),
            (Err((reason, detail)), _) | (_, Err((reason, detail))) => {
                self.metrics.error(group, reason.as_str());
                self.failed(detail);
                return;
            }
        };
        let steps = plan(
            &primary,
            &standby,
            &self.shared.standby_ns,
            self.shared.cfg.prune,
        );
        let mut found = Found::default();
        for step in steps {
            let name = step.name().to_string();
            match step {
                Step::InSync { bytes, .. } => {
                    found.secrets += 1;
                    found.bytes += bytes;
                }
                Step::Conflict { kind, .. } => {
                    found.conflicts.insert(name, kind);
                }
                Step::Kept { .. } => found.kept.push(name),
                Step::Skipped { .. } => {
                    debug!(group, secret = %name, "not copied: a service account token");
                }
                write => {
                    let allowed = leading && (self.may_write)() && !self.halted();
                    if !allowed {
                        found.pending.push(name);
                        continue;
                    }
                    match self.write(&write).await {
                        Ok(()) => {
                            if let Step::Create { bytes, .. } | Step::Replace { bytes, .. } = write
                            {
                                found.secrets += 1;
                                found.bytes += bytes;
                            }
                        }
                        Err(failed) => {
                            found.pending.push(name);
                            found
                                .error
                                .get_or_insert_with(|| chain(&failed).to_string());
                        }
                    }
                }
            }
        }
        self.finish(found, wall, leading).await;
    }

    /// A promotion began since the pass started (its writes stop at once).
    fn halted(&self) -> bool {
        self.shared.lock().gate.interrupted()
    }

    /// Carries out one write.
    async fn write(&self, step: &Step) -> Result<(), WriteFailed> {
        let group = self.shared.group.as_str();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let name = step.name().to_string();
        let (op, result): (&'static str, Result<(), CallError>) = match step {
            Step::Create { secret, .. } => (
                "create",
                bounded(WRITE_TIMEOUT, self.api.create(&params, secret))
                    .await
                    .map(|_| ()),
            ),
            Step::Replace { secret, .. } => (
                "replace",
                bounded(WRITE_TIMEOUT, self.api.replace(&name, &params, secret))
                    .await
                    .map(|_| ()),
            ),
            Step::Delete {
                resource_version, ..
            } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                (
                    "delete",
                    bounded(WRITE_TIMEOUT, self.api.delete(&name, &params))
                        .await
                        .map(|_| ()),
                )
            }
            _ => return Ok(()),
        };
        self.metrics.write(group, op, result.is_ok());
        match result {
            Ok(()) => {
                let bytes = match step {
                    Step::Create { bytes, .. } | Step::Replace { bytes, .. } => *bytes,
                    _ => 0,
                };
                let what = match step {
                    Step::Replace {
                        annotations_only: true,
                        ..
                    } => "taken over (content already equal)",
                    Step::Create { .. } => "copied",
                    Step::Replace { .. } => "updated",
                    _ => "deleted (prune: gone from the primary)",
                };
                info!(group, secret = %name, op, bytes, namespace = %self.shared.standby_ns, "state mirror: {what}");
                Ok(())
            }
            Err(e) => {
                // A lost race (409) is retried at the next pass with what the watch shows.
                let reason = if e.status_code() == Some(409) {
                    "conflict"
                } else {
                    e.reason().as_str()
                };
                self.metrics.error(group, reason);
                warn!(group, secret = %name, op, reason, error = %e, "state mirror: write failed");
                Err(WriteFailed {
                    op,
                    namespace: self.shared.standby_ns.clone(),
                    name,
                    source: e,
                })
            }
        }
    }

    fn failed(&self, detail: String) {
        let group = self.shared.group.as_str();
        let mut inner = self.shared.lock();
        if inner.found.error.as_deref() != Some(detail.as_str()) {
            warn!(group, error = %detail, "state mirror: cannot compare the two sides");
        }
        inner.found.error = Some(detail);
    }

    /// Publishes a pass's findings: metrics, status, and a warning and an Event for
    /// each new conflict.
    async fn finish(&self, found: Found, wall: f64, leading: bool) {
        let group = self.shared.group.as_str();
        let in_sync = found.pending.is_empty() && found.error.is_none();
        self.metrics
            .set_pass(group, found.secrets, found.bytes, found.conflicts.len());
        if in_sync {
            self.metrics.synced(group, wall);
        }
        let (new, resolved, announce) = {
            let mut inner = self.shared.lock();
            let new: Vec<(String, ConflictKind)> = found
                .conflicts
                .iter()
                .filter(|(n, k)| inner.found.conflicts.get(*n) != Some(k))
                .map(|(n, k)| (n.clone(), *k))
                .collect();
            let resolved: Vec<String> = inner
                .found
                .conflicts
                .keys()
                .filter(|n| !found.conflicts.contains_key(*n))
                .cloned()
                .collect();
            inner
                .announced
                .retain(|(n, k)| found.conflicts.get(n) == Some(k));
            let announce: Vec<(String, ConflictKind)> = if leading {
                found
                    .conflicts
                    .iter()
                    .map(|(n, k)| (n.clone(), *k))
                    .filter(|c| !inner.announced.contains(c))
                    .collect()
            } else {
                Vec::new()
            };
            inner.announced.extend(announce.iter().cloned());
            if in_sync {
                inner.last_sync_unix = Some(wall);
            }
            if let (Some(e), false) = (&found.error, inner.found.error == found.error) {
                debug!(group, error = %e, "state mirror pass failed");
            }
            inner.found = found;
            (new, resolved, announce)
        };
        for (name, kind) in &new {
            warn!(
                group,
                secret = %name,
                conflict = kind.as_str(),
                namespace = %self.shared.standby_ns,
                "state mirror conflict: {}",
                kind.explain()
            );
        }
        for name in &resolved {
            info!(group, secret = %name, "state mirror conflict resolved");
        }
        for (name, kind) in announce {
            let message = format!(
                "group {group}: state Secret {}/{name} in the standby: {} ({})",
                self.shared.standby_ns,
                kind.explain(),
                kind.as_str()
            );
            self.events
                .record_event("KubeFailoverMirrorConflict", message)
                .await;
        }
    }

    /// Logs, counts and (as leader) records an Event when the gate's answer changes.
    async fn gate_changed(&self, gate: Result<(), StopReason>, leading: bool) {
        let group = self.shared.group.as_str();
        let (before, age, was_stopped_by_promotion) = {
            let mut inner = self.shared.lock();
            inner.writer = leading;
            let before = inner.state.replace(gate);
            let age = inner
                .last_sync_unix
                .map(|t| (now_unix() - t).max(0.0).round());
            // Through the failback's steps (paused, failback_in_progress) until resumed.
            if matches!(gate, Err(StopReason::Promoted | StopReason::RecordLost)) {
                inner.stopped_by_promotion = true;
            }
            let was = gate.is_ok() && std::mem::take(&mut inner.stopped_by_promotion);
            (before, age, was)
        };
        self.metrics.set_active(group, gate.is_ok());
        if before == Some(gate) {
            return;
        }
        match gate {
            Ok(()) => {
                info!(group, "state mirror active: copying from the primary");
                if was_stopped_by_promotion && leading {
                    let message = format!(
                        "group {group}: the Terraform state mirror resumed: the record says \
                         primary again; state Secrets changed in the standby meanwhile are \
                         conflicts and are not overwritten"
                    );
                    self.events
                        .record_event("KubeFailoverMirrorResumed", message)
                        .await;
                }
            }
            Err(StopReason::Starting) => {
                debug!(group, "state mirror waits for the group's first tick");
            }
            Err(reason) => {
                warn!(
                    group,
                    reason = reason.as_str(),
                    mirror_age_seconds = age,
                    "state mirror stopped: {}",
                    reason.explain()
                );
                if reason == StopReason::Promoted && leading {
                    let age = age.map_or("never".to_string(), |a| format!("{a} s before"));
                    let message = format!(
                        "group {group}: the Terraform state mirror stopped at the promotion; \
                         the standby's state Secrets were last in sync with the primary {age}"
                    );
                    self.events
                        .record_event("KubeFailoverMirrorStopped", message)
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;

    fn group() -> GroupConfig {
        GroupConfig::for_test("env0", "agents", "agents-dr")
    }

    #[test]
    fn status_says_why_it_does_not_copy_and_how_old_the_copy_is() {
        let h = MirrorHandle::new(&group(), &MirrorConfig::default());
        let s = h.status(100.0);
        assert!(s.enabled && !s.active);
        assert_eq!(s.stopped_reason.as_deref(), Some("starting"));
        assert_eq!(s.primary_namespace, "agents");
        assert_eq!(s.standby_namespace, "agents-dr");
        assert_eq!(s.selector, "tfstate=true");
        assert_eq!(s.max_lag_seconds, 300.0);
        assert_eq!(h.age_seconds(100.0), None, "never synced");
        {
            let mut inner = h.0.lock();
            inner.state = Some(Ok(()));
            inner.last_sync_unix = Some(90.0);
            inner.found.conflicts.insert(
                "tfstate-default-state".into(),
                ConflictKind::ChangedSinceCopy,
            );
        }
        let s = h.status(100.0);
        assert!(s.active);
        assert_eq!(s.lag_seconds, Some(10.0));
        assert_eq!(s.conflict_count, 1);
        assert_eq!(s.conflicts[0].kind, "changed_since_copy");
        assert_eq!(h.age_seconds(100.0), Some(10.0));

        let one_namespace = MirrorConfig {
            namespace: Some("tf".into()),
            enabled: false,
            ..MirrorConfig::default()
        };
        let h = MirrorHandle::new(&group(), &one_namespace);
        let s = h.status(0.0);
        assert_eq!(
            (s.primary_namespace.as_str(), s.standby_namespace.as_str()),
            ("tf", "tf")
        );
        assert_eq!(s.stopped_reason.as_deref(), Some("disabled"));
    }

    #[tokio::test]
    async fn a_promotion_stops_the_mirror_first_and_reports_its_age() {
        let h = MirrorHandle::new(&group(), &MirrorConfig::default());
        {
            let mut inner = h.0.lock();
            inner.gate.on_tick(EngineView {
                standby_active: false,
            });
            inner.last_sync_unix = Some(now_unix() - 42.0);
        }
        let record = FailoverRecord::default();
        assert_eq!(
            h.0.lock().gate.check(RecordView::Read(&record), 0.0),
            Ok(())
        );
        let age = h.before_promotion().await;
        assert!(matches!(age, Some(41..=43)), "{age:?}");
        assert_eq!(
            h.0.lock().gate.check(RecordView::Read(&record), 0.0),
            Err(StopReason::Promoted)
        );
        let promoted = FailoverRecord {
            mirror_age_seconds: age,
            ..record
        };
        assert_eq!(mirror_age_at_promotion(&promoted), age);
    }
}
