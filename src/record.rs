//! The failover record: one ConfigMap per group in the standby namespace, so that a
//! restarted daemon (or a second one) resumes a promotion instead of forgetting it or
//! starting it twice. Every write carries a resourceVersion precondition (or is a
//! create), so two writers can never both win.
//!
//! The data is plain strings, readable and editable with kubectl (an operator fails
//! back by setting `phase: primary`); anything unreadable in it is reported naming the
//! ConfigMap and key, never guessed at.

use crate::kube::call::{classify, describe};
use crate::model::{
    DeploymentRef, FailbackStep, FailoverRecord, FencedBy, HISTORY_LEN, ProbeReason, ReasonCode,
    RecordPhase, Transition,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// `app.kubernetes.io/name` label value on every record.
pub const APP_LABEL_VALUE: &str = "kube-failover";
/// Label carrying the group name.
pub const GROUP_LABEL: &str = "kube-failover/group";

/// Data keys of the record ConfigMap.
pub mod keys {
    /// `primary`, `promoting`, `promoted` or `failed`; absent means `primary`.
    pub const PHASE: &str = "phase";
    /// Promotion counter, a non-negative integer.
    pub const EPOCH: &str = "epoch";
    /// Reason code of the promotion or of its failure.
    pub const REASON: &str = "reason";
    /// RFC 3339 time the promotion started.
    pub const PROMOTED_AT: &str = "promoted_at";
    /// The same as Unix seconds, for the cooldown.
    pub const PROMOTED_AT_UNIX: &str = "promoted_at_unix";
    /// RFC 3339 time the standby was Ready.
    pub const COMPLETED_AT: &str = "completed_at";
    /// RFC 3339 time the old primary was seen at 0 replicas.
    pub const FENCED_AT: &str = "fenced_at";
    /// What proved it: `scale` (seen at 0) or `guard` (the guards stopped the agents).
    pub const FENCED_BY: &str = "fenced_by";
    /// Identity of the daemon that wrote last.
    pub const HOLDER: &str = "holder";
    /// JSON list of `{name, uid}` of the primary Deployments active at the promotion.
    pub const PRIMARY_DEPLOYMENTS: &str = "primary_deployments";
    /// RFC 3339 time the record was first seen back in phase `primary` (a failback).
    pub const FAILBACK_AT: &str = "failback_at";
    /// The same as Unix seconds, for the cooldown across restarts.
    pub const FAILBACK_AT_UNIX: &str = "failback_at_unix";
    /// RFC 3339 time (milliseconds) `kube-failover failback` took its first step.
    pub const FAILBACK_STARTED_AT: &str = "failback_started_at";
    /// RFC 3339 time (milliseconds) that failback completed (the primary up, and Ready
    /// with `--wait`).
    pub const FAILBACK_COMPLETED_AT: &str = "failback_completed_at";
    /// RFC 3339 time the record was written back after it was found missing.
    pub const RESTORED_AT: &str = "restored_at";
    /// The operator (kubeconfig user name) who paused the group; absent when not paused.
    pub const PAUSED_BY: &str = "paused_by";
    /// RFC 3339 time the pause ends by itself; absent: until resumed.
    pub const PAUSED_UNTIL: &str = "paused_until";
    /// Why the group was paused.
    pub const PAUSE_REASON: &str = "pause_reason";
    /// `standby_down` or `primary_up`: the step of a failback in progress.
    pub const FAILBACK_STEP: &str = "failback_step";
    /// JSON list of the last transitions, oldest first (bounded).
    pub const HISTORY: &str = "history";
    /// Seconds since the state mirror last found the standby in sync, when the
    /// promotion started (`[groups.state.mirror]`).
    pub const MIRROR_AGE_SECONDS: &str = "mirror_age_seconds";
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record changed (or appeared, or vanished) since it was read: re-read it.
    #[error("ConfigMap {namespace}/{name} changed since it was read")]
    Conflict {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
    },
    /// The ConfigMap holds a value this daemon cannot read.
    #[error("ConfigMap {namespace}/{name}: key {key}: {problem}")]
    Invalid {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// The data key whose value is unreadable.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The API call failed.
    #[error("ConfigMap {namespace}/{name}: {op}: {}", describe(error))]
    Api {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
        /// `get`, `create` or `replace`.
        op: &'static str,
        // Boxed: kube's error is large, and this one travels in every `Result` here.
        /// The client's error, shown only as [`describe`] says it: not a source, as
        /// kube's own text may carry the server's message or a URL.
        error: Box<kube::Error>,
    },
}

impl RecordError {
    /// The bounded reason code of this failure.
    pub fn reason(&self) -> ProbeReason {
        match self {
            RecordError::Conflict { .. } => ProbeReason::HttpStatus,
            RecordError::Invalid { .. } => ProbeReason::Decode,
            RecordError::Api { error, .. } => classify(error),
        }
    }

    /// True for a lost optimistic-concurrency race.
    pub fn is_conflict(&self) -> bool {
        matches!(self, RecordError::Conflict { .. })
    }
}

/// Reads the record; `Ok(None)` when the ConfigMap does not exist yet.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<FailoverRecord>, RecordError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|error| RecordError::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        op: "get",
        error: Box::new(error),
    })?;
    found.map(|cm| from_config_map(&cm)).transpose()
}

/// Writes `record` (its `resource_version` is ignored): creates the ConfigMap when
/// `expected_resource_version` is `None`, else replaces it only if it still has that
/// resourceVersion. Returns the record as stored, with its new resourceVersion.
///
/// A lost race is [`RecordError::Conflict`]: the ConfigMap already existed on create,
/// or changed (or was deleted) since `expected_resource_version` was read.
pub async fn write(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    group: &str,
    record: &FailoverRecord,
    expected_resource_version: Option<&str>,
) -> Result<FailoverRecord, RecordError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut record = record.clone();
    append_history(&mut record, &now_stamp());
    let mut cm = to_config_map(namespace, name, group, &record);
    let params = PostParams {
        field_manager: Some(APP_LABEL_VALUE.to_string()),
        ..PostParams::default()
    };
    let (op, result) = match expected_resource_version {
        None => ("create", api.create(&params, &cm).await),
        Some(rv) => {
            cm.metadata.resource_version = Some(rv.to_string());
            ("replace", api.replace(name, &params, &cm).await)
        }
    };
    match result {
        Ok(stored) => from_config_map(&stored),
        Err(kube::Error::Api(status))
            if status.code == 409
                || status.is_conflict()
                || status.is_already_exists()
                || (op == "replace" && (status.code == 404 || status.is_not_found())) =>
        {
            Err(RecordError::Conflict {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
        Err(error) => Err(RecordError::Api {
            namespace: namespace.to_string(),
            name: name.to_string(),
            op,
            error: Box::new(error),
        }),
    }
}

/// What the record says besides its phase, for its history: `fenced`, `paused`,
/// `failback:<step>`, `restored`.
fn what(record: &FailoverRecord) -> String {
    let mut parts: Vec<String> = Vec::new();
    if record.fenced_at.is_some() && record.effective_phase().standby_active() {
        parts.push("fenced".into());
    }
    if record.paused_by.is_some() {
        parts.push("paused".into());
    }
    if let Some(step) = record.failback_step {
        parts.push(format!("failback:{step}"));
    }
    if record.restored_at.is_some() {
        parts.push("restored".into());
    }
    parts.join(" ")
}

/// Adds the transition `record` makes to its own history, unless the last entry already
/// says the same (phase, epoch, what, reason); keeps the last [`HISTORY_LEN`].
pub fn append_history(record: &mut FailoverRecord, now: &Stamp) {
    let entry = Transition {
        at: now.at.clone(),
        phase: record.effective_phase(),
        epoch: record.epoch,
        by: record.holder.clone(),
        what: what(record),
        reason: record.reason.clone(),
    };
    let same = record.history.last().is_some_and(|last| {
        (last.phase, last.epoch, &last.what, &last.reason)
            == (entry.phase, entry.epoch, &entry.what, &entry.reason)
    });
    if !same {
        record.history.push(entry);
    }
    let excess = record.history.len().saturating_sub(HISTORY_LEN);
    record.history.drain(..excess);
}

/// A wall-clock time as the record stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// RFC 3339, to the second.
    pub at: String,
    /// The same as Unix seconds.
    pub unix: i64,
}

/// The current wall-clock time as RFC 3339 (seconds) and as Unix seconds.
pub fn now_stamp() -> Stamp {
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Stamp {
        at: humantime::format_rfc3339_seconds(now).to_string(),
        unix,
    }
}

/// The current wall-clock time as RFC 3339 with milliseconds, for the times a notice
/// computes a duration from.
pub fn now_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A change to the record of the current epoch, after a step of the promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Update {
    /// The standby is Ready: the promotion is complete.
    Promoted,
    /// The promotion did not complete, for this reason.
    Failed(ReasonCode),
    /// The old primary was seen at 0 replicas, or its guards stopped its agents.
    Fenced(FencedBy),
    /// The record was seen back in phase `primary`: stamp the failback time.
    Failback,
}

impl Update {
    fn what(self) -> &'static str {
        match self {
            Update::Promoted => "recording promoted",
            Update::Failed(_) => "recording failed",
            Update::Fenced(_) => "recording fenced",
            Update::Failback => "recording the failback time",
        }
    }
}

/// An update that the record's phase does not allow: someone else moved the record on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("phase {} of epoch {epoch} does not allow {}", .phase.as_str(), .update.what())]
pub(crate) struct PhaseRefuses {
    /// The phase recorded.
    phase: RecordPhase,
    /// The epoch recorded.
    epoch: u64,
    /// The update refused.
    update: Update,
}

/// The record after `update`, decided from the phase of `current` alone: `Ok(None)`
/// when the record already says so (nothing to write), `Err` naming the phase when the
/// phase does not allow the update (someone else moved the record on). The caller
/// checks the epoch and sets the holder.
pub(crate) fn transition(
    current: &FailoverRecord,
    update: Update,
    now: &Stamp,
) -> Result<Option<FailoverRecord>, PhaseRefuses> {
    let phase = current.effective_phase();
    let mut next = current.clone();
    let changed = match (update, phase) {
        (Update::Promoted, RecordPhase::Promoted) => false,
        (Update::Promoted, RecordPhase::Promoting | RecordPhase::Failed) => {
            next.phase = Some(RecordPhase::Promoted);
            next.completed_at = Some(now.at.clone());
            true
        }
        (Update::Failed(reason), RecordPhase::Failed) if reason.as_str() == current.reason => false,
        (Update::Failed(reason), RecordPhase::Promoting | RecordPhase::Failed) => {
            next.phase = Some(RecordPhase::Failed);
            next.reason = reason.as_str().to_string();
            true
        }
        (Update::Fenced(by), p) if p.standby_active() => {
            if current.fenced_at.is_some() {
                false
            } else {
                next.fenced_at = Some(now.at.clone());
                next.fenced_by = Some(by);
                true
            }
        }
        (Update::Failback, RecordPhase::Primary) => {
            if current.failback_at_unix.is_some() {
                false
            } else {
                next.failback_at = Some(now.at.clone());
                next.failback_at_unix = Some(now.unix);
                true
            }
        }
        (update, phase) => {
            return Err(PhaseRefuses {
                phase,
                epoch: current.epoch,
                update,
            });
        }
    };
    Ok(changed.then_some(next))
}

/// Builds the ConfigMap holding `record` (without a resourceVersion).
pub fn to_config_map(
    namespace: &str,
    name: &str,
    group: &str,
    record: &FailoverRecord,
) -> ConfigMap {
    let mut data = BTreeMap::new();
    if let Some(phase) = record.phase {
        data.insert(keys::PHASE.to_string(), phase.as_str().to_string());
    }
    data.insert(keys::EPOCH.to_string(), record.epoch.to_string());
    let fenced_by = record.fenced_by.map(|b| b.as_str().to_string());
    let optional = [
        (keys::REASON, Some(&record.reason).filter(|r| !r.is_empty())),
        (keys::PROMOTED_AT, record.promoted_at.as_ref()),
        (keys::COMPLETED_AT, record.completed_at.as_ref()),
        (keys::FENCED_AT, record.fenced_at.as_ref()),
        (keys::FENCED_BY, fenced_by.as_ref()),
        (keys::HOLDER, Some(&record.holder).filter(|h| !h.is_empty())),
        (keys::FAILBACK_AT, record.failback_at.as_ref()),
        (
            keys::FAILBACK_STARTED_AT,
            record.failback_started_at.as_ref(),
        ),
        (
            keys::FAILBACK_COMPLETED_AT,
            record.failback_completed_at.as_ref(),
        ),
        (keys::RESTORED_AT, record.restored_at.as_ref()),
        (keys::PAUSED_BY, record.paused_by.as_ref()),
        (
            keys::PAUSE_REASON,
            Some(&record.pause_reason).filter(|r| !r.is_empty()),
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            data.insert(key.to_string(), value.clone());
        }
    }
    for (key, unix) in [
        (keys::PROMOTED_AT_UNIX, record.promoted_at_unix),
        (keys::FAILBACK_AT_UNIX, record.failback_at_unix),
    ] {
        if let Some(unix) = unix {
            data.insert(key.to_string(), unix.to_string());
        }
    }
    if let Some(until) = record.paused_until_unix {
        let at = u64::try_from(until)
            .ok()
            .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        data.insert(
            keys::PAUSED_UNTIL.to_string(),
            humantime::format_rfc3339_seconds(at).to_string(),
        );
    }
    if let Some(step) = record.failback_step {
        data.insert(keys::FAILBACK_STEP.to_string(), step.as_str().to_string());
    }
    if let Some(age) = record.mirror_age_seconds {
        data.insert(keys::MIRROR_AGE_SECONDS.to_string(), age.to_string());
    }
    if !record.history.is_empty() {
        let list = serde_json::to_string(&record.history).unwrap_or_default();
        data.insert(keys::HISTORY.to_string(), list);
    }
    if !record.primary_deployments.is_empty() {
        // Serializing plain strings cannot fail; an empty list is the safe fallback.
        let list = serde_json::to_string(&record.primary_deployments).unwrap_or_default();
        data.insert(keys::PRIMARY_DEPLOYMENTS.to_string(), list);
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    APP_LABEL_VALUE.to_string(),
                ),
                (GROUP_LABEL.to_string(), group.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Reads a record from its ConfigMap. Missing keys mean "not set" (a record created
/// by hand with only `phase` is fine); present but unreadable values are errors.
pub fn from_config_map(cm: &ConfigMap) -> Result<FailoverRecord, RecordError> {
    let namespace = cm.metadata.namespace.as_deref().unwrap_or_default();
    let name = cm.metadata.name.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty);
    // Values edited with kubectl often end in a newline; surrounding space never matters.
    let get = |key: &str| data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let invalid = |key: &'static str, problem: String| RecordError::Invalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key,
        problem,
    };

    let phase = match get(keys::PHASE) {
        None => None,
        Some(v) => Some(RecordPhase::parse(v).ok_or_else(|| {
            invalid(
                keys::PHASE,
                format!(
                    "{} is not one of primary, promoting, promoted, failed",
                    quoted(v)
                ),
            )
        })?),
    };
    let epoch = match get(keys::EPOCH) {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            invalid(
                keys::EPOCH,
                format!("{} is not a non-negative integer", quoted(v)),
            )
        })?,
    };
    let unix = |key: &'static str| match get(key) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            invalid(
                key,
                format!("{} is not an integer (seconds since 1970)", quoted(v)),
            )
        }),
    };
    let promoted_at_unix = unix(keys::PROMOTED_AT_UNIX)?;
    let failback_at_unix = unix(keys::FAILBACK_AT_UNIX)?;
    let primary_deployments = match get(keys::PRIMARY_DEPLOYMENTS) {
        None => Vec::new(),
        Some(v) => serde_json::from_str::<Vec<DeploymentRef>>(v).map_err(|e| {
            invalid(
                keys::PRIMARY_DEPLOYMENTS,
                format!(
                    "{} is not a JSON list of {{\"name\": …, \"uid\": …}} ({})",
                    quoted(v),
                    e.classify_text()
                ),
            )
        })?,
    };
    let paused_until_unix = match get(keys::PAUSED_UNTIL) {
        None => None,
        Some(v) => Some(
            humantime::parse_rfc3339_weak(v)
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .ok_or_else(|| {
                    invalid(
                        keys::PAUSED_UNTIL,
                        format!("{} is not an RFC 3339 time", quoted(v)),
                    )
                })?,
        ),
    };
    let failback_step = match get(keys::FAILBACK_STEP) {
        None => None,
        Some(v) => Some(FailbackStep::parse(v).ok_or_else(|| {
            invalid(
                keys::FAILBACK_STEP,
                format!("{} is not one of standby_down, primary_up", quoted(v)),
            )
        })?),
    };
    // The history is for people: an unreadable one is dropped (and starts again),
    // never a reason to stop reading the record.
    let history = get(keys::HISTORY)
        .and_then(|v| serde_json::from_str::<Vec<Transition>>(v).ok())
        .unwrap_or_default();
    let text = |key: &str| get(key).map(str::to_string);
    Ok(FailoverRecord {
        phase,
        epoch,
        reason: text(keys::REASON).unwrap_or_default(),
        // The RFC 3339 times are for people; decisions use `promoted_at_unix`, so they
        // are kept as written rather than rejected when hand-edited.
        promoted_at: text(keys::PROMOTED_AT),
        completed_at: text(keys::COMPLETED_AT),
        fenced_at: text(keys::FENCED_AT),
        // Informational, like the times: a hand-edited value is dropped, not an error.
        fenced_by: get(keys::FENCED_BY).and_then(FencedBy::parse),
        holder: text(keys::HOLDER).unwrap_or_default(),
        promoted_at_unix,
        primary_deployments,
        failback_at: text(keys::FAILBACK_AT),
        failback_at_unix,
        failback_started_at: text(keys::FAILBACK_STARTED_AT),
        failback_completed_at: text(keys::FAILBACK_COMPLETED_AT),
        restored_at: text(keys::RESTORED_AT),
        paused_by: text(keys::PAUSED_BY),
        paused_until_unix,
        pause_reason: text(keys::PAUSE_REASON).unwrap_or_default(),
        failback_step,
        history,
        // For people and notices, like the history: an unreadable value is dropped.
        mirror_age_seconds: get(keys::MIRROR_AGE_SECONDS).and_then(|v| v.parse().ok()),
        resource_version: cm.metadata.resource_version.clone(),
    })
}

/// A short, content-free name for a JSON error.
trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        use serde_json::error::Category;
        match self.classify() {
            Category::Io => "unreadable",
            Category::Syntax => "syntax error",
            Category::Data => "wrong shape",
            Category::Eof => "cut short",
        }
    }
}

/// A bad value, quoted and cut short so a pasted blob cannot flood a log line.
fn quoted(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FailoverRecord {
        FailoverRecord {
            phase: Some(RecordPhase::Promoted),
            epoch: 3,
            reason: "primary_down_quorum".into(),
            promoted_at: Some("2025-01-02T03:04:05Z".into()),
            completed_at: Some("2025-01-02T03:04:35Z".into()),
            fenced_at: None,
            fenced_by: None,
            holder: "watcher-1".into(),
            promoted_at_unix: Some(1_735_787_045),
            primary_deployments: vec![DeploymentRef {
                name: "agent-trigger".into(),
                uid: Some("u-1".into()),
            }],
            failback_at: None,
            failback_at_unix: None,
            failback_started_at: Some("2025-01-02T04:00:00.250Z".into()),
            failback_completed_at: None,
            restored_at: Some("2025-01-02T03:05:00Z".into()),
            paused_by: Some("alice".into()),
            paused_until_unix: Some(1_735_790_000),
            pause_reason: "planned maintenance".into(),
            failback_step: Some(FailbackStep::StandbyDown),
            history: vec![Transition {
                at: "2025-01-02T03:04:05Z".into(),
                phase: RecordPhase::Promoting,
                epoch: 3,
                by: "watcher-1".into(),
                what: String::new(),
                reason: "primary_down_quorum".into(),
            }],
            mirror_age_seconds: Some(12),
            resource_version: None,
        }
    }

    fn cm_with(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("kube-failover-env0".into()),
                namespace: Some("agents".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn round_trip() {
        let rec = sample();
        let mut cm = to_config_map("agents", "kube-failover-env0", "env0", &rec);
        let data = cm.data.as_ref().unwrap();
        assert_eq!(data["phase"], "promoted");
        assert_eq!(data["epoch"], "3");
        assert_eq!(data["promoted_at_unix"], "1735787045");
        assert_eq!(data["holder"], "watcher-1");
        assert_eq!(
            data["primary_deployments"],
            r#"[{"name":"agent-trigger","uid":"u-1"}]"#
        );
        assert!(!data.contains_key("fenced_at"));
        assert!(!data.contains_key("failback_at_unix"));
        let labels = cm.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "kube-failover");
        assert_eq!(labels["kube-failover/group"], "env0");
        assert_eq!(cm.metadata.resource_version, None);

        cm.metadata.resource_version = Some("7".into());
        let back = from_config_map(&cm).unwrap();
        assert_eq!(
            back,
            FailoverRecord {
                resource_version: Some("7".into()),
                ..rec
            }
        );
    }

    #[test]
    fn empty_record_round_trips_to_default() {
        let cm = to_config_map("agents", "r", "env0", &FailoverRecord::default());
        assert_eq!(cm.data.as_ref().unwrap().len(), 1, "only the epoch");
        assert_eq!(from_config_map(&cm).unwrap(), FailoverRecord::default());
    }

    #[test]
    fn hand_written_values_are_read() {
        let rec = from_config_map(&cm_with(&[("phase", "primary\n"), ("epoch", " 4 ")])).unwrap();
        assert_eq!(rec.phase, Some(RecordPhase::Primary));
        assert_eq!(rec.epoch, 4);
        assert_eq!(rec.resource_version.as_deref(), Some("42"));
        let rec = from_config_map(&cm_with(&[])).unwrap();
        assert_eq!(rec.phase, None);
        assert_eq!(rec.epoch, 0);
    }

    #[test]
    fn unknown_phase_names_configmap_and_key() {
        let err = from_config_map(&cm_with(&[("phase", "active")])).unwrap_err();
        assert_eq!(err.reason(), ProbeReason::Decode);
        assert_eq!(
            err.to_string(),
            "ConfigMap agents/kube-failover-env0: key phase: \"active\" is not one of \
             primary, promoting, promoted, failed"
        );
    }

    #[test]
    fn bad_numbers_are_errors() {
        let err = from_config_map(&cm_with(&[("epoch", "three")])).unwrap_err();
        assert!(
            matches!(err, RecordError::Invalid { key: "epoch", .. }),
            "{err}"
        );
        let err = from_config_map(&cm_with(&[("epoch", "-1")])).unwrap_err();
        assert!(
            matches!(err, RecordError::Invalid { key: "epoch", .. }),
            "{err}"
        );
        let err = from_config_map(&cm_with(&[("promoted_at_unix", "yesterday")])).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::Invalid {
                    key: "promoted_at_unix",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_deployment_list_names_the_key_and_not_the_whole_value() {
        let err =
            from_config_map(&cm_with(&[("primary_deployments", "[{\"nom\": 1}]")])).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::Invalid {
                    key: "primary_deployments",
                    ..
                }
            ),
            "{err}"
        );
        let rec = from_config_map(&cm_with(&[("failback_at_unix", "17")])).unwrap();
        assert_eq!(rec.failback_at_unix, Some(17));
        assert_eq!(rec.cooldown_from_unix(), Some(17));
    }

    #[test]
    fn long_bad_values_are_cut() {
        let long = "x".repeat(500);
        let err = from_config_map(&cm_with(&[("phase", &long)])).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn stamp_is_rfc3339_seconds() {
        let Stamp { at: text, unix } = now_stamp();
        assert!(text.ends_with('Z') && text.len() == 20, "{text}");
        let parsed = humantime::parse_rfc3339(&text).unwrap();
        let parsed_unix = parsed
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(parsed_unix, unix);
    }

    fn at_phase(phase: Option<RecordPhase>) -> FailoverRecord {
        FailoverRecord {
            phase,
            epoch: 3,
            reason: "primary_down_quorum".into(),
            holder: "watcher-1".into(),
            resource_version: Some("9".into()),
            ..FailoverRecord::default()
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            at: "2025-01-02T03:04:05Z".into(),
            unix: 1_735_787_045,
        }
    }

    /// The record written when `update` meets a record in `phase`.
    fn written(phase: RecordPhase, update: Update) -> FailoverRecord {
        transition(&at_phase(Some(phase)), update, &stamp())
            .expect("allowed")
            .expect("a change")
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Writes,
        Unchanged,
        Refused,
    }

    #[test]
    fn every_phase_and_update_is_allowed_or_refused() {
        use Outcome::{Refused, Unchanged, Writes};
        use RecordPhase::{Failed, Primary, Promoted, Promoting};
        let failed = Update::Failed(ReasonCode::PromotionTimeout);
        // The record starts without fenced_at or failback_at and with reason
        // primary_down_quorum, so `failed` is a new reason.
        let updates = [
            Update::Promoted,
            failed,
            Update::Fenced(FencedBy::Scale),
            Update::Failback,
        ];
        // Per phase, the outcome of each of `updates`, in that order.
        let table = [
            (None, [Refused, Refused, Refused, Writes]),
            (Some(Primary), [Refused, Refused, Refused, Writes]),
            (Some(Promoting), [Writes, Writes, Writes, Refused]),
            (Some(Promoted), [Unchanged, Refused, Writes, Refused]),
            (Some(Failed), [Writes, Writes, Writes, Refused]),
        ];
        let cases = table.into_iter().flat_map(|(phase, wants)| {
            updates
                .into_iter()
                .zip(wants)
                .map(move |(u, w)| (phase, u, w))
        });
        for (phase, update, want) in cases {
            let current = at_phase(phase);
            let got = match transition(&current, update, &stamp()) {
                Ok(Some(next)) => {
                    // What is written only changes the phase's own fields...
                    assert_eq!(next.epoch, current.epoch, "{phase:?} {update:?}");
                    assert_eq!(next.holder, current.holder, "{phase:?} {update:?}");
                    assert_eq!(next.resource_version, current.resource_version);
                    // ...and writing it again changes nothing.
                    assert_eq!(
                        transition(&next, update, &stamp()),
                        Ok(None),
                        "{phase:?} {update:?} twice"
                    );
                    Writes
                }
                Ok(None) => Unchanged,
                Err(refused) => {
                    let detail = refused.to_string();
                    let shown = phase.unwrap_or(Primary).as_str();
                    assert!(
                        detail.starts_with(&format!("phase {shown} of epoch 3 does not allow")),
                        "{detail}"
                    );
                    Refused
                }
            };
            assert_eq!(got, want, "{phase:?} {update:?}");
        }
    }

    #[test]
    fn promoted_stamps_completion() {
        for phase in [RecordPhase::Promoting, RecordPhase::Failed] {
            let next = written(phase, Update::Promoted);
            assert_eq!(next.phase, Some(RecordPhase::Promoted));
            assert_eq!(next.completed_at.as_deref(), Some("2025-01-02T03:04:05Z"));
            assert_eq!(next.reason, "primary_down_quorum");
        }
    }

    #[test]
    fn failed_records_its_reason_once() {
        let update = Update::Failed(ReasonCode::PromotionTimeout);
        let next = written(RecordPhase::Promoting, update);
        assert_eq!(next.phase, Some(RecordPhase::Failed));
        assert_eq!(next.reason, "promotion_timeout");
        assert_eq!(next.completed_at, None);
        // Failed again for the reason already recorded: nothing to write.
        let same = Update::Failed(ReasonCode::PrimaryDownQuorum);
        assert_eq!(
            transition(&at_phase(Some(RecordPhase::Failed)), same, &stamp()),
            Ok(None)
        );
    }

    #[test]
    fn fenced_is_stamped_once() {
        let next = written(RecordPhase::Promoted, Update::Fenced(FencedBy::Guard));
        assert_eq!(next.phase, Some(RecordPhase::Promoted));
        assert_eq!(next.fenced_at.as_deref(), Some("2025-01-02T03:04:05Z"));
        assert_eq!(next.fenced_by, Some(FencedBy::Guard));
        // It survives the ConfigMap; a hand-edited value is dropped, not an error.
        let mut cm = to_config_map("ns", "rec", "g", &next);
        let back = from_config_map(&cm).expect("readable");
        assert_eq!(back.fenced_by, Some(FencedBy::Guard));
        cm.data
            .get_or_insert_default()
            .insert(keys::FENCED_BY.into(), "someone".into());
        assert_eq!(from_config_map(&cm).expect("readable").fenced_by, None);
        let fenced = FailoverRecord {
            fenced_at: Some("earlier".into()),
            ..at_phase(Some(RecordPhase::Promoting))
        };
        assert_eq!(
            transition(&fenced, Update::Fenced(FencedBy::Scale), &stamp()),
            Ok(None)
        );
    }

    #[test]
    fn failback_is_stamped_once_and_keeps_the_cooldown() {
        let next = written(RecordPhase::Primary, Update::Failback);
        assert_eq!(next.phase, Some(RecordPhase::Primary));
        assert_eq!(next.failback_at.as_deref(), Some("2025-01-02T03:04:05Z"));
        assert_eq!(next.failback_at_unix, Some(1_735_787_045));
        assert_eq!(next.cooldown_from_unix(), Some(1_735_787_045));
        let seen = FailoverRecord {
            failback_at_unix: Some(17),
            ..at_phase(None)
        };
        assert_eq!(transition(&seen, Update::Failback, &stamp()), Ok(None));
    }

    #[test]
    fn pause_keys_are_written_and_read() {
        let cm = to_config_map("agents", "r", "env0", &sample());
        let data = cm.data.as_ref().unwrap();
        assert_eq!(data["paused_by"], "alice");
        assert_eq!(data["paused_until"], "2025-01-02T03:53:20Z");
        assert_eq!(data["pause_reason"], "planned maintenance");
        assert_eq!(data["failback_step"], "standby_down");
        let err = from_config_map(&cm_with(&[("paused_until", "tomorrow")])).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::Invalid {
                    key: "paused_until",
                    ..
                }
            ),
            "{err}"
        );
        let err = from_config_map(&cm_with(&[("failback_step", "halfway")])).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::Invalid {
                    key: "failback_step",
                    ..
                }
            ),
            "{err}"
        );
        // A hand-mangled history is dropped, never a reason the record cannot be read.
        let rec = from_config_map(&cm_with(&[("phase", "primary"), ("history", "[oops")])).unwrap();
        assert!(rec.history.is_empty());
    }

    #[test]
    fn history_keeps_changes_only_and_is_bounded() {
        let mut rec = at_phase(Some(RecordPhase::Promoting));
        append_history(&mut rec, &stamp());
        append_history(&mut rec, &stamp());
        assert_eq!(rec.history.len(), 1, "the same state twice is one entry");
        rec.phase = Some(RecordPhase::Promoted);
        rec.fenced_at = Some("t".into());
        append_history(&mut rec, &stamp());
        assert_eq!(rec.history.len(), 2);
        assert_eq!(rec.history[1].what, "fenced");
        assert_eq!(rec.history[1].by, "watcher-1");
        for epoch in 0..(2 * HISTORY_LEN as u64) {
            rec.epoch = epoch;
            append_history(&mut rec, &stamp());
        }
        assert_eq!(rec.history.len(), HISTORY_LEN);
        assert_eq!(
            rec.history.last().unwrap().epoch,
            2 * HISTORY_LEN as u64 - 1
        );
    }

    #[test]
    fn refusal_names_phase_epoch_and_update() {
        let refusal = |phase, update| {
            transition(&at_phase(Some(phase)), update, &stamp()).map_err(|e| e.to_string())
        };
        assert_eq!(
            refusal(RecordPhase::Primary, Update::Fenced(FencedBy::Scale)),
            Err("phase primary of epoch 3 does not allow recording fenced".to_string())
        );
        assert_eq!(
            refusal(RecordPhase::Promoted, Update::Failback),
            Err("phase promoted of epoch 3 does not allow recording the failback time".to_string())
        );
    }
}
