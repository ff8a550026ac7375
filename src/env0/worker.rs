//! One group's env0 task: after a promotion, looks up the stranded deployments (with
//! a bound for the notice, then in the background with backoff), redeploys on request,
//! and only then writes the promotion's Event and queues its notice. It runs beside the
//! group's ticks and never delays one; env0 being down only delays the notice, by
//! `env0.lookup_timeout` at most.

use super::claims::{Claim, Claims};
use super::client::{Env0Client, Env0Error};
use super::metrics::Env0Metrics;
use super::model::{Stranded, stranded, ui_base};
use super::report::{Env0Report, Redeploy};
use crate::actuate::Actuator;
use crate::model::FailoverRecord;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// A promotion's notice, handed over by the group's notices instead of being sent.
pub use crate::notify::PendingPromotion as Job;

pub use crate::status::Env0Status;

/// The group's side of its env0 task: hands jobs over, reads its status.
#[derive(Clone)]
pub struct Env0Handle {
    tx: mpsc::Sender<Job>,
    status: Arc<Mutex<Env0Status>>,
}

impl Env0Handle {
    /// The latest status.
    pub fn status(&self) -> Env0Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl crate::notify::PromotionHandoff for Env0Handle {
    fn hand_over(&self, job: Job) -> Result<(), Box<Job>> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                Box::new(j)
            }
        })
    }
}

/// What allows a redeploy now: this instance leads in `auto` mode.
pub type MayWrite = Arc<dyn Fn() -> bool + Send + Sync>;

/// The task.
pub struct Env0Worker {
    group: String,
    identity: String,
    client: Env0Client,
    claims: Claims,
    actuator: Actuator,
    may_write: MayWrite,
    record: watch::Receiver<Option<FailoverRecord>>,
    rx: mpsc::Receiver<Job>,
    status: Arc<Mutex<Env0Status>>,
    metrics: Env0Metrics,
    /// Waits between background lookups.
    retry_min: Duration,
    /// The promotion epoch this task looked into last.
    handled: Option<u64>,
    /// A job taken from the queue while retrying an older lookup.
    next: Option<Job>,
}

/// What the task does next.
enum Work {
    /// A promotion's notice to complete.
    Job(Box<Job>),
    /// A promotion (epoch, start) whose lookup no leader finished.
    Resume((u64, Option<i64>)),
    /// This instance started leading: is there such a promotion?
    Check,
}

/// The claims key (after `<epoch>.`) of a finished lookup.
const LOOKUP_KEY: &str = "_lookup";

/// Jobs waiting, at most (one promotion at a time is the rule).
const QUEUE: usize = 4;
/// Longest wait between background lookups.
const RETRY_MAX: Duration = Duration::from_secs(300);

#[allow(clippy::too_many_arguments)]
impl Env0Worker {
    /// The task and its handle; `record` follows the group's failover record (the
    /// runner sends every tick's), `may_write` says whether this instance may act now.
    pub fn new(
        group: &str,
        identity: &str,
        client: Env0Client,
        claims: Claims,
        actuator: Actuator,
        may_write: MayWrite,
        record: watch::Receiver<Option<FailoverRecord>>,
        metrics: Env0Metrics,
    ) -> (Env0Worker, Env0Handle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let status = Arc::new(Mutex::new(Env0Status {
            state: "idle".into(),
            ..Env0Status::default()
        }));
        metrics.init_group(group);
        (
            Env0Worker {
                group: group.to_string(),
                identity: identity.to_string(),
                client,
                claims,
                actuator,
                may_write,
                record,
                rx,
                status: status.clone(),
                metrics,
                retry_min: Duration::from_secs(2),
                handled: None,
                next: None,
            },
            Env0Handle { tx, status },
        )
    }

    /// Runs until `stop`: a promotion's job as it comes; and when this instance starts
    /// leading (a start, a change of leader) while a promotion stands whose lookup no
    /// leader finished, that lookup (and its redeploys, which the claims keep single).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut was_leading = false;
        loop {
            if let Some(job) = self.next.take() {
                tokio::select! {
                    () = self.handle(Work::Job(Box::new(job))) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            let work = tokio::select! {
                job = self.rx.recv() => match job {
                    Some(job) => Some(Work::Job(Box::new(job))),
                    None => return,
                },
                changed = self.record.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let leading = (self.may_write)();
                    let gained = leading && !was_leading;
                    was_leading = leading;
                    gained.then_some(Work::Check)
                }
                _ = stop.wait_for(|s| *s) => return,
            };
            let work = match work {
                Some(Work::Check) => self.resumable().await.map(Work::Resume),
                other => other,
            };
            let Some(work) = work else { continue };
            tokio::select! {
                () = self.handle(work) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The promotion (epoch, start) whose lookup is to be resumed, if any: the record
    /// says `promoted`, no failback, no pause, and the claims hold no finished lookup
    /// of that epoch.
    async fn resumable(&mut self) -> Option<(u64, Option<i64>)> {
        let record = self.record.borrow().clone()?;
        let epoch = record.epoch;
        if record.effective_phase() != crate::model::RecordPhase::Promoted
            || epoch == 0
            || self.handled == Some(epoch)
            || self.allowed(epoch).is_err()
        {
            return None;
        }
        match self.claims.get(epoch, LOOKUP_KEY).await {
            Ok(Some(done)) => {
                self.handled = Some(epoch);
                info!(group = %self.group, epoch, by = %done.by, at = %done.at,
                    "env0: the promotion's lookup was done before; not repeated");
                None
            }
            Ok(None) => {
                info!(group = %self.group, epoch,
                    "env0: now leading a promotion whose lookup no leader finished; resuming it");
                Some((epoch, record.promoted_at_unix))
            }
            Err(e) => {
                warn!(group = %self.group, epoch, reason = "env0_claim_failed", error = %e,
                    "env0: cannot tell whether the promotion's lookup was done; not resumed");
                None
            }
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut Env0Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// True while the promotion of `epoch` stands, this instance may write, and the
    /// group is neither paused nor failing back: redeploys are allowed.
    fn allowed(&self, epoch: u64) -> Result<(), &'static str> {
        if !(self.may_write)() {
            return Err("this instance no longer leads (or runs in observe mode)");
        }
        let record = self.record.borrow().clone();
        let Some(r) = record else {
            return Err("the failover record is unknown");
        };
        if r.epoch != epoch || !r.effective_phase().standby_active() {
            return Err("the promotion is over (another epoch, or failed back)");
        }
        if r.failback_step.is_some() {
            return Err("a failback is in progress");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if r.paused_at(now) {
            return Err("the group is paused");
        }
        Ok(())
    }

    async fn lookup(&self, promoted_at_unix: i64) -> Result<Vec<Stranded>, Env0Error> {
        self.client.check_organization().await?;
        let scope = self.client.scope().await?;
        let envs = self.client.environments(&scope).await?;
        let ui = ui_base(&self.client.config().api_url);
        Ok(stranded(&envs, &scope, promoted_at_unix, &ui))
    }

    async fn handle(&mut self, work: Work) {
        let (epoch, promoted_at, job) = match work {
            Work::Job(job) => (job.notice.epoch, job.promoted_at_unix, Some(*job)),
            Work::Resume((epoch, at)) => (epoch, at, None),
            Work::Check => return,
        };
        self.handled = Some(epoch);
        let promoted_at = promoted_at.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        self.set_status(|s| {
            *s = Env0Status {
                state: "looking".into(),
                epoch: Some(epoch),
                ..Env0Status::default()
            }
        });
        let deadline = Instant::now() + self.client.config().lookup_timeout;
        let mut job = job;
        let mut waits = ExponentialBuilder::default()
            .with_min_delay(self.retry_min)
            .with_max_delay(RETRY_MAX)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let mut last_reason = None;
        loop {
            let result = if job.is_some() {
                match tokio::time::timeout_at(deadline.into(), self.lookup(promoted_at)).await {
                    Ok(r) => r,
                    Err(_) => Err(Env0Error::Timeout {
                        call: "lookup (env0.lookup_timeout)",
                    }),
                }
            } else {
                self.lookup(promoted_at).await
            };
            let at = crate::record::now_stamp().at;
            match result {
                Ok(found) => {
                    self.metrics.lookup(&self.group, true);
                    self.metrics.set_stranded(&self.group, &found);
                    info!(group = %self.group, epoch, stranded = found.len(),
                        names = %found.iter().map(|s| s.environment.as_str()).collect::<Vec<_>>().join(", "),
                        "env0: deployments stranded by the promotion looked up");
                    let redeploys = self.redeploy(epoch, &found).await;
                    let report = Env0Report {
                        stranded: found,
                        redeploys,
                        error: None,
                    };
                    let marker = Claim {
                        deployment_id: String::new(),
                        by: self.identity.clone(),
                        at: at.clone(),
                        outcome: "looked_up".into(),
                        new_deployment_id: None,
                        error: None,
                    };
                    if let Err(e) = self.claims.put(epoch, LOOKUP_KEY, &marker, false).await {
                        warn!(group = %self.group, epoch, reason = "env0_claim_failed", error = %e,
                            "env0: the finished lookup could not be recorded (a new leader repeats it; its redeploys stay single)");
                    }
                    self.set_status(|s| {
                        s.state = "done".into();
                        s.checked_at = Some(at);
                        s.reason = None;
                        s.report = report.clone();
                    });
                    match job.take() {
                        Some(job) => self.deliver(job, &report).await,
                        None => {
                            self.actuator
                                .record_event(
                                    "KubeFailoverEnv0Stranded",
                                    format!(
                                        "group {} epoch {epoch}: {}",
                                        self.group,
                                        report.event_text()
                                    ),
                                )
                                .await
                        }
                    }
                    return;
                }
                Err(e) => {
                    self.metrics.lookup(&self.group, false);
                    let reason = e.reason();
                    if last_reason != Some(reason) {
                        warn!(group = %self.group, epoch, reason, error = %e,
                            "env0: cannot look up the deployments stranded by the promotion; retrying");
                        last_reason = Some(reason);
                    }
                    let message = e.to_string();
                    self.set_status(|s| {
                        s.state = "failed".into();
                        s.checked_at = Some(at);
                        s.reason = Some(reason.to_string());
                        s.report = Env0Report {
                            error: Some(message.clone()),
                            ..Env0Report::default()
                        };
                    });
                    // The notice waits no longer than env0.lookup_timeout, and not at
                    // all for what retrying will not fix soon (a rejected key).
                    if job.is_some() && (Instant::now() >= deadline || !e.transient()) {
                        let report = Env0Report {
                            error: Some(message),
                            ..Env0Report::default()
                        };
                        if let Some(job) = job.take() {
                            self.deliver(job, &report).await;
                        }
                    }
                }
            }
            // A newer promotion, or this one over: stop retrying this one.
            if !self.rx.is_empty() || self.allowed(epoch).is_err() {
                if let Some(job) = job.take() {
                    let report = Env0Report {
                        error: Some("the lookup was given up".into()),
                        ..Env0Report::default()
                    };
                    self.deliver(job, &report).await;
                }
                return;
            }
            let wait = waits.next().unwrap_or(RETRY_MAX);
            let wait = if job.is_some() {
                wait.min(deadline.saturating_duration_since(Instant::now()))
            } else {
                wait
            };
            // A newer promotion's job ends the wait (and this lookup) at once.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                newer = self.rx.recv() => {
                    if let Some(job) = job.take() {
                        let report = Env0Report {
                            error: Some("the lookup was given up for a newer promotion".into()),
                            ..Env0Report::default()
                        };
                        self.deliver(job, &report).await;
                    }
                    self.next = newer;
                    return;
                }
            }
        }
    }

    /// The promotion's Event and notice, with env0's names.
    async fn deliver(&self, job: Job, report: &Env0Report) {
        let Job {
            mut notice,
            locks_left,
            notifier,
            event_message,
            ..
        } = job;
        report.apply(&mut notice);
        let message = format!("{event_message}. {}.", report.event_text());
        self.actuator
            .promotion_complete_event(message, locks_left || report.error.is_some())
            .await;
        if let Some(n) = notifier.filter(|n| n.is_enabled()) {
            n.send(&notice);
            info!(group = %self.group, epoch = notice.epoch, notice = %notice.id,
                "notice queued (with env0's stranded deployments)");
        }
    }

    /// Redeploys what `env0.redeploy` asks, each once per epoch and environment.
    async fn redeploy(&self, epoch: u64, found: &[Stranded]) -> Vec<Redeploy> {
        let mode = self.client.config().redeploy;
        let mut out = Vec::new();
        for s in found.iter().filter(|s| s.to_redeploy(mode)) {
            let mut r = Redeploy {
                environment_id: s.environment_id.clone(),
                environment: s.environment.clone(),
                deployment_id: s.deployment_id.clone(),
                result: String::new(),
                new_deployment_id: None,
                by: self.identity.clone(),
                error: None,
            };
            if let Err(why) = self.allowed(epoch) {
                r.result = "skipped".into();
                r.error = Some(why.into());
            } else {
                self.redeploy_one(epoch, s, &mut r).await;
            }
            self.metrics.redeploy(&self.group, &r.result);
            out.push(r);
        }
        out
    }

    async fn redeploy_one(&self, epoch: u64, s: &Stranded, r: &mut Redeploy) {
        let env = s.environment_id.as_str();
        let now = crate::record::now_stamp().at;
        let claim = Claim {
            deployment_id: s.deployment_id.clone(),
            by: self.identity.clone(),
            at: now.clone(),
            outcome: "claimed".into(),
            new_deployment_id: None,
            error: None,
        };
        let earlier = match self.claims.get(epoch, env).await {
            Ok(c) => c,
            Err(e) => {
                r.result = "failed".into();
                r.error = Some(format!("not asked: the claim could not be read: {e}"));
                warn!(group = %self.group, epoch, environment = %s.environment, reason = "env0_claim_failed",
                    error = %e, "env0: redeploy not asked");
                return;
            }
        };
        let won = match earlier {
            Some(_) => Ok(false),
            None => self.claims.put(epoch, env, &claim, true).await,
        };
        match won {
            Ok(true) => {}
            Ok(false) => {
                let c = match self.claims.get(epoch, env).await {
                    Ok(Some(c)) => c,
                    _ => claim.clone(),
                };
                r.result = if c.outcome == "claimed" {
                    "claimed".into()
                } else {
                    c.outcome.clone()
                };
                r.by = c.by;
                r.new_deployment_id = c.new_deployment_id;
                r.error = c.error;
                info!(group = %self.group, epoch, environment = %s.environment, by = %r.by,
                    "env0: redeploy asked before; not asked again");
                return;
            }
            Err(e) => {
                r.result = "failed".into();
                r.error = Some(format!("not asked: the claim could not be written: {e}"));
                warn!(group = %self.group, epoch, environment = %s.environment, reason = "env0_claim_failed",
                    error = %e, "env0: redeploy not asked");
                return;
            }
        }
        let mut settled = claim;
        match self.client.redeploy(env).await {
            Ok(id) => {
                r.result = "done".into();
                r.new_deployment_id = Some(id.clone());
                settled.outcome = "done".into();
                settled.new_deployment_id = Some(id);
                info!(group = %self.group, epoch, environment = %s.environment,
                    deployment = %s.deployment_id, new_deployment = ?r.new_deployment_id,
                    "env0: stranded environment redeployed");
                self.actuator
                    .record_event_of_type(
                        "Normal",
                        "KubeFailoverEnv0Redeployed",
                        format!("group {} epoch {epoch}: {}", self.group, r.describe()),
                    )
                    .await;
            }
            Err(e) => {
                r.result = "failed".into();
                r.error = Some(e.to_string());
                settled.outcome = "failed".into();
                settled.error = Some(e.to_string());
                warn!(group = %self.group, epoch, environment = %s.environment, reason = e.reason(),
                    error = %e, "env0: redeploy failed; redeploy it by hand");
                self.actuator
                    .record_event(
                        "KubeFailoverEnv0RedeployFailed",
                        format!("group {} epoch {epoch}: {}", self.group, r.describe()),
                    )
                    .await;
            }
        }
        if let Err(e) = self.claims.put(epoch, env, &settled, false).await {
            warn!(group = %self.group, epoch, environment = %s.environment, error = %e,
                "env0: the redeploy's outcome could not be recorded (it stays claimed)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env0Config, GroupConfig, RedeployMode};
    use crate::model::{FailbackStep, RecordPhase};
    use kube_failover_testbed::Env0StandIn;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn stranded(id: &str) -> Stranded {
        Stranded {
            environment_id: id.into(),
            environment: format!("{id}-name"),
            project_id: "p".into(),
            deployment_id: format!("d-{id}"),
            status: super::super::WAITING_FOR_USER.into(),
            started_at: Some("2025-01-02T03:00:00Z".into()),
            link: String::new(),
        }
    }

    fn promoted(epoch: u64) -> FailoverRecord {
        FailoverRecord {
            phase: Some(RecordPhase::Promoted),
            epoch,
            resource_version: Some("1".into()),
            ..FailoverRecord::default()
        }
    }

    type Setup = (
        Env0Worker,
        Env0Handle,
        watch::Sender<Option<FailoverRecord>>,
        Arc<AtomicBool>,
    );

    /// A worker asking `env0`, its claims and Events going to a closed port (no
    /// cluster), not leading until told.
    fn setup(env0: &Env0StandIn, dir: &std::path::Path) -> Setup {
        crate::tls::install_provider();
        std::fs::write(dir.join("id"), "id").unwrap();
        std::fs::write(dir.join("secret"), "secret").unwrap();
        let config = Env0Config {
            api_url: env0.url(),
            key_id_file: dir.join("id"),
            key_secret_file: dir.join("secret"),
            organization_id: "org".into(),
            project_ids: vec!["p".into()],
            agent_id: None,
            redeploy: RedeployMode::Waiting,
            timeout: Duration::from_secs(1),
            lookup_timeout: Duration::from_secs(1),
        };
        let closed =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let group = GroupConfig::for_test("env0", "a", "b");
        let leading = Arc::new(AtomicBool::new(false));
        let may = leading.clone();
        let (record_tx, record) = watch::channel(None);
        let (worker, handle) = Env0Worker::new(
            "env0",
            "w",
            Env0Client::new(&config, reqwest::Client::new(), Arc::new(|_, _| {})),
            Claims::new(
                closed.clone(),
                "b",
                "kube-failover-env0",
                "env0",
                Duration::from_secs(1),
            ),
            Actuator::new(&group, closed.clone(), closed, "w".into()),
            Arc::new(move || may.load(Ordering::SeqCst)),
            record,
            Env0Metrics::new(&crate::metric_registry::MetricRegistry::default()).unwrap(),
        );
        (worker, handle, record_tx, leading)
    }

    fn job(epoch: u64) -> Job {
        let mut notice = crate::notify::tests_support::promotion_notice();
        notice.epoch = epoch;
        Job {
            notice,
            locks_left: false,
            promoted_at_unix: Some(1_735_787_045),
            notifier: None,
            event_message: String::new(),
        }
    }

    /// A lookup retried in the background (env0 failing) gives way at once to a newer
    /// promotion: its notice is not held for the older lookup's backoff.
    #[tokio::test]
    async fn a_newer_promotion_is_not_held_by_an_older_lookups_retries() {
        let env0 = Env0StandIn::start("id", "secret", "org").await;
        env0.script(
            "/organizations",
            &[kube_failover_testbed::Env0Fault::Status(500); 64],
        );
        let dir = tempfile::tempdir().unwrap();
        let (mut worker, handle, record_tx, leading) = setup(&env0, dir.path());
        // The background retry of epoch 1 would wait an hour.
        worker.retry_min = Duration::from_secs(3600);
        leading.store(true, Ordering::SeqCst);
        record_tx.send_replace(Some(promoted(1)));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(worker.run(stop));
        use crate::notify::PromotionHandoff;
        assert!(handle.hand_over(job(1)).is_ok());
        // Epoch 1's notice went without names (env0 failing past lookup_timeout).
        let failed = async {
            while !(handle.status().epoch == Some(1) && handle.status().state == "failed") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), failed)
            .await
            .expect("epoch 1 fails");
        record_tx.send_replace(Some(promoted(2)));
        assert!(handle.hand_over(job(2)).is_ok());
        let taken = async {
            while handle.status().epoch != Some(2) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), taken)
            .await
            .expect("epoch 2 taken up within a minute, not after the hour of backoff");
        let _ = stop_tx.send(true);
        let _ = task.await;
    }

    /// Redeploys `e1` at epoch 3: must be skipped; returns why.
    async fn skipped(worker: &Env0Worker, what: &str) -> String {
        let r = worker.redeploy(3, &[stranded("e1")]).await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].result, "skipped", "{what}: {r:?}");
        r[0].error.clone().unwrap_or_default()
    }

    /// Every condition that forbids a redeploy skips it without a call to env0 (nor to
    /// the cluster: the claims' client points at a closed port).
    #[tokio::test]
    async fn redeploys_are_skipped_unless_leading_in_auto_mode_at_the_promotions_epoch() {
        let env0 = Env0StandIn::start("id", "secret", "org").await;
        let dir = tempfile::tempdir().unwrap();
        let (worker, _handle, record_tx, leading) = setup(&env0, dir.path());
        // Observe mode or another leader: may_write is false.
        record_tx.send_replace(Some(promoted(3)));
        assert!(
            skipped(&worker, "not leading")
                .await
                .contains("no longer leads")
        );
        leading.store(true, Ordering::SeqCst);
        assert_eq!(worker.allowed(3), Ok(()), "the control: allowed");
        // Another epoch, or failed back.
        record_tx.send_replace(Some(promoted(4)));
        assert!(
            skipped(&worker, "other epoch")
                .await
                .contains("promotion is over")
        );
        let mut back = promoted(3);
        back.phase = Some(RecordPhase::Primary);
        record_tx.send_replace(Some(back));
        assert!(
            skipped(&worker, "failed back")
                .await
                .contains("promotion is over")
        );
        // A failback in progress.
        let mut stepping = promoted(3);
        stepping.failback_step = Some(FailbackStep::StandbyDown);
        record_tx.send_replace(Some(stepping));
        assert!(skipped(&worker, "failback").await.contains("failback"));
        // Paused (until resumed).
        let mut paused = promoted(3);
        paused.paused_by = Some("alice".into());
        record_tx.send_replace(Some(paused));
        assert!(skipped(&worker, "paused").await.contains("paused"));
        assert!(env0.requests().is_empty(), "{:?}", env0.requests());
    }
}
