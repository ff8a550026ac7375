//! What the admin server shows: kept up to date by the group loops, read by the routes.

use super::routes::Text;
use super::*;
use crate::coord::{Role, RoleNow};
use crate::liveness::Heartbeat;
use crate::metrics::Metrics;
use crate::status::{GroupStatus, StatusReport};
use bytes::Bytes;
use hyper::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// What the admin server shows; updated by the daemon's group loops.
pub struct AdminState {
    pub(super) metrics: Metrics,
    pub(super) metrics_cache: MetricsCache,
    pub(super) stall_limit: Duration,
    pub(super) started: Instant,
    pub(super) status: RwLock<StatusReport>,
    /// `status`, serialized when first asked for after it changed (`None`: changed).
    /// Not at every tick: with many groups, serializing the whole document at each
    /// group's tick would cost more than the ticks.
    /// Kept with the roles it shows (see [`live_roles`]): a change of role serializes
    /// it again too.
    pub(super) status_json: RwLock<Option<(Vec<Role>, Bytes)>>,
    /// Where each group that has ticked sits in `status.groups`: a tick's status takes
    /// its place by one lookup, not a walk through every group's name (taken with
    /// `status` written, so the two agree).
    pub(super) slots: Mutex<HashMap<String, usize>>,
    pub(super) heartbeats: RwLock<HashMap<String, Heartbeat>>,
    pub(super) groups: usize,
    pub(super) ready: AtomicBool,
    pub(super) shutting_down: AtomicBool,
}

impl AdminState {
    /// `status` is the initial document; its groups come with their first ticks (any it
    /// has are dropped).
    pub fn new(
        metrics: Metrics,
        interval: Duration,
        groups: usize,
        mut status: StatusReport,
    ) -> Self {
        status.groups.clear();
        AdminState {
            metrics,
            metrics_cache: MetricsCache::default(),
            stall_limit: stall_limit(interval),
            started: Instant::now(),
            status: RwLock::new(status),
            status_json: RwLock::new(None),
            slots: Mutex::new(HashMap::new()),
            heartbeats: RwLock::new(HashMap::new()),
            groups,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Replaces the bound of [`stall_limit`] (tests).
    #[cfg(test)]
    pub fn with_stall_limit(mut self, limit: Duration) -> Self {
        self.stall_limit = limit;
        self
    }

    /// The heartbeat of `group`, registered (and beating) on first use. Give it to
    /// [`crate::liveness::beating_client`] so that each of the group's Kubernetes calls
    /// counts as progress.
    pub fn heartbeat(&self, group: &str) -> Heartbeat {
        if let Some(h) = self
            .heartbeats
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
        {
            return h.clone();
        }
        self.heartbeats
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(group.to_string())
            .or_default()
            .clone()
    }

    /// The loop of `group` made progress (a tick started, probes or an action ended).
    pub fn progress(&self, group: &str) {
        self.heartbeat(group).beat();
    }

    /// Records a finished tick of `group` and its status.
    pub fn tick_done(&self, group: GroupStatus, wall_unix: f64) {
        self.progress(&group.name);
        let all_ticked = {
            let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(group.name.as_str()) {
                Some(&i) => status.groups[i] = group,
                None => {
                    slots.insert(group.name.clone(), status.groups.len());
                    status.groups.push(group);
                }
            }
            let all_ticked = slots.len() >= self.groups;
            status.last_tick_unix = Some(wall_unix);
            status.ready = all_ticked && !self.shutting_down.load(Ordering::SeqCst);
            *self.status_json.write().unwrap_or_else(|e| e.into_inner()) = None;
            all_ticked
        };
        if all_ticked {
            self.ready.store(true, Ordering::SeqCst);
        }
    }

    /// True once every group has finished a tick.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// `/readyz` goes 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.ready = false;
        *self.status_json.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The whole `/status` document, serialized at most once per change (of a tick's
    /// status, or of a role).
    pub(super) fn status_document(&self) -> Bytes {
        let now = Instant::now();
        let shown_now = self.metrics.coord.roles.roles(now);
        if let Some((shown, json)) = self
            .status_json
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && *shown == shown_now
        {
            return json.clone();
        }
        let roles = self.metrics.coord.roles.all(now);
        let mut status = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        live_roles(&mut status.groups, &roles);
        let json = encode_status(&status);
        *self.status_json.write().unwrap_or_else(|e| e.into_inner()) =
            Some((shown_now, json.clone()));
        json
    }

    /// `/status?group=NAME`: the document with that group only; `Err` with the status
    /// code and message when there is no such group or it has not ticked yet.
    pub(super) fn group_document(&self, name: &str) -> Result<Bytes, (StatusCode, String)> {
        let status = self.status.read().unwrap_or_else(|e| e.into_inner());
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied();
        if let Some(g) = slot.map(|i| &status.groups[i]) {
            let mut one = StatusReport {
                version: status.version.clone(),
                mode: status.mode.clone(),
                identity: status.identity.clone(),
                ready: status.ready,
                last_tick_unix: status.last_tick_unix,
                groups: vec![g.clone()],
            };
            drop(status);
            if let Some(role) = self.metrics.coord.roles.of(name, Instant::now()) {
                live_roles(&mut one.groups, &[(name.to_string(), role)]);
            }
            return Ok(encode_status(&one));
        }
        drop(status);
        // Echo at most a short, printable name.
        let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        let known = self
            .heartbeats
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name);
        Err(if known {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("group {shown:?} has not finished a tick yet\n"),
            )
        } else {
            (StatusCode::NOT_FOUND, format!("no group named {shown:?}\n"))
        })
    }

    /// True while every group's loop has made progress within [`stall_limit`] (see
    /// [`crate::liveness`]), or, before every loop has started, while the daemon is
    /// younger than that.
    pub fn is_healthy(&self) -> bool {
        self.stalled().is_none()
    }

    /// The first group found without progress within the limit, and for how long.
    pub(super) fn stalled(&self) -> Option<(String, Duration)> {
        let beats = self.heartbeats.read().unwrap_or_else(|e| e.into_inner());
        if beats.len() < self.groups {
            let age = self.started.elapsed();
            return (age > self.stall_limit).then(|| ("(not started)".to_string(), age));
        }
        beats
            .iter()
            .map(|(name, h)| (name, h.age()))
            .find(|(_, age)| *age > self.stall_limit)
            .map(|(name, age)| (name.clone(), age))
    }
}

/// Sets each group's coordination role and leader to what they are now (`roles`), not
/// what they were when its last tick ended: a leader whose tick waits on an unreachable
/// standby stops saying `leader` at its renew deadline, when it stops writing.
pub(super) fn live_roles(groups: &mut [GroupStatus], roles: &[(String, RoleNow)]) {
    let roles: HashMap<&str, &RoleNow> = roles.iter().map(|(g, r)| (g.as_str(), r)).collect();
    for g in groups {
        if let (Some(c), Some(now)) = (g.coordination.as_mut(), roles.get(g.name.as_str())) {
            c.role = now.role.as_str().to_string();
            c.leader.clone_from(&now.leader);
        }
    }
}

pub(super) fn encode_status(status: &StatusReport) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(status).unwrap_or_else(|_| b"{}".to_vec()))
}

/// The last `/metrics` text and when it was encoded.
#[derive(Default)]
pub(super) struct MetricsCache {
    pub(super) latest: Mutex<Option<(Instant, Bytes)>>,
    /// The live part of the answer last served, with the stored text it followed and
    /// the roles it showed. Served again while both are the same, so a flood of
    /// requests costs a comparison each, not an encoding.
    pub(super) served: Mutex<Option<(Bytes, Vec<Role>, Bytes)>>,
    /// Held while encoding, so that one request encodes and the others do not wait.
    pub(super) refresh: tokio::sync::Mutex<()>,
}

impl MetricsCache {
    pub(super) fn fresh(&self) -> Result<Bytes, Option<Bytes>> {
        match &*self.latest.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, text)) if at.elapsed() < METRICS_MAX_AGE => Ok(text.clone()),
            Some((_, text)) => Err(Some(text.clone())),
            None => Err(None),
        }
    }

    /// The stored metrics (encoded at most once per [`METRICS_MAX_AGE`]) followed by the
    /// live ones, read now: two parts of one answer, never copied into one.
    pub(super) async fn get(&self, metrics: &Metrics) -> Text {
        let stored = self.stored(metrics).await;
        let roles = metrics.coord.roles.roles(Instant::now());
        let same = |(text, shown, _): &(Bytes, Vec<Role>, Bytes)| {
            text.as_ptr() == stored.as_ptr() && text.len() == stored.len() && *shown == roles
        };
        if let Some(served) = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|s| same(s))
        {
            return Text::parts([stored, served.2.clone()]);
        }
        let live = Bytes::from(metrics.encode_live());
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((stored.clone(), roles, live.clone()));
        Text::parts([stored, live])
    }

    pub(super) async fn stored(&self, metrics: &Metrics) -> Bytes {
        let stale = match self.fresh() {
            Ok(text) => return text,
            Err(stale) => stale,
        };
        let _refreshing = match (stale, self.refresh.try_lock()) {
            (_, Ok(guard)) => guard,
            // Another request is encoding: the copy from a moment ago will do.
            (Some(stale), Err(_)) => return stale,
            (None, Err(_)) => self.refresh.lock().await,
        };
        if let Ok(text) = self.fresh() {
            return text;
        }
        let m = metrics.clone();
        // Off the server's thread: health answers never wait behind an encoding.
        let text = match tokio::task::spawn_blocking(move || m.encode_stored()).await {
            Ok(text) => Bytes::from(text),
            Err(e) => {
                tracing::error!(error = %e, "encoding metrics failed");
                Bytes::new()
            }
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), text.clone()));
        text
    }
}
