//! `failback`: the ordered procedure as one resumable command. Each step is recorded in
//! the record's `failback_step` before it is carried out, so a failback interrupted
//! anywhere (Ctrl-C, crash, lost connection) resumes where it stopped when run again,
//! and the daemons neither fence, correct nor promote in the middle of it:
//!
//! 1. `standby_down`: the standby goes to 0, then its Pods are waited for until gone
//!    (the record still says the standby is active, so nothing else starts it);
//! 2. the record says `primary` with `failback_at`, the epoch kept, step `primary_up`;
//! 3. the primary goes up (and with `--wait` is waited for until Ready);
//! 4. `failback_step` is removed and `failback_completed_at` stamped: the daemons act
//!    again, the cooldown running from `failback_at`.
//!
//! `failback_started_at` (step 1) and `failback_completed_at` (step 4, after the primary
//! is Ready with `--wait`) are the times of the daemons' failback notice.

use super::Failure;
use super::ops::{POLL, Session, Target, refuse};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube_failover::kube::call::bounded;
use kube_failover::model::{FailbackStep, ProbeReason, RecordPhase};
use kube_failover::record;
use kube_failover::selection::select;
use std::time::{Duration, Instant};

/// How long each wait (standby Pods gone, primary Ready) lasts at most.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// Test hook: with this set to `standby_down`, the command stops (exit 1) right after
/// that step completed, as an interrupted failback would.
const STOP_AFTER_ENV: &str = "KUBE_FAILOVER_FAILBACK_STOP_AFTER";

/// The flags of `failback`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
    /// Wait until the primary is Ready before handing the group back to the daemons.
    #[arg(long)]
    wait: bool,
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let wait = self.wait;
        self.target.run(|s| async move { failback(&s, wait).await })
    }
}

async fn failback(s: &Session, wait: bool) -> Result<(), Failure> {
    let record = s.read_record().await?;
    let phase = record.effective_phase();
    let epoch = record.epoch;
    match (phase.standby_active(), record.failback_step) {
        (false, None) => {
            println!(
                "group {}: the record says phase {phase} (epoch {epoch}): nothing to fail back",
                s.group.name
            );
            return Ok(());
        }
        (true, Some(FailbackStep::PrimaryUp)) | (false, Some(FailbackStep::StandbyDown)) => {
            return Err(refuse(
                "failback_step_inconsistent",
                format!(
                    "the record says phase {phase} with failback_step {}; fix the record by hand",
                    record.failback_step.map_or("", FailbackStep::as_str)
                ),
            ));
        }
        _ => {}
    }
    primary_fit(s).await?;
    if s.dry_run {
        s.say("scale the standby to 0 and wait until its Pods are gone (step standby_down)");
        s.say(format_args!(
            "record phase primary with failback_at, epoch {epoch} kept (step primary_up)"
        ));
        s.say("scale the primary up, then release the record (failback_step removed)");
        return Ok(());
    }

    if phase.standby_active() {
        if record.failback_step.is_none() {
            let started = record::now_millis();
            s.modify(|current| {
                ensure_at(current, epoch, true, None)?;
                let mut next = current.clone();
                next.failback_step = Some(FailbackStep::StandbyDown);
                next.failback_started_at = Some(started.clone());
                next.failback_completed_at = None;
                Ok(Some(next))
            })
            .await?;
            s.event(
                "KubeFailoverFailbackStarted",
                format!("failback started by hand at epoch {epoch}"),
            )
            .await;
        } else {
            eprintln!("resuming the failback at step standby_down");
        }
        eprintln!("step standby_down: scaling the standby to 0");
        let report = s
            .actuator
            .failback_scale(FailbackStep::StandbyDown, epoch)
            .await
            .map_err(|e| s.fail("cannot scale the standby to 0", e))?;
        println!("{report}");
        wait_standby_pods_gone(s).await?;
        if std::env::var(STOP_AFTER_ENV).as_deref() == Ok(FailbackStep::StandbyDown.as_str()) {
            return Err(s.fail(
                "stopped after step standby_down",
                format!("{STOP_AFTER_ENV} is set"),
            ));
        }
        let now = record::now_stamp();
        s.modify(|current| {
            if current.effective_phase() == RecordPhase::Primary
                && current.failback_step == Some(FailbackStep::PrimaryUp)
                && current.epoch == epoch
            {
                return Ok(None);
            }
            ensure_at(current, epoch, true, Some(FailbackStep::StandbyDown))?;
            let mut next = current.clone();
            next.phase = Some(RecordPhase::Primary);
            next.failback_at = Some(now.at.clone());
            next.failback_at_unix = Some(now.unix);
            next.failback_step = Some(FailbackStep::PrimaryUp);
            Ok(Some(next))
        })
        .await?;
        eprintln!("recorded phase primary at epoch {epoch} (step primary_up)");
    } else {
        eprintln!("resuming the failback at step primary_up");
    }

    eprintln!("step primary_up: scaling the primary up");
    let report = s
        .actuator
        .failback_scale(FailbackStep::PrimaryUp, epoch)
        .await
        .map_err(|e| s.fail("cannot scale the primary up", e))?;
    println!("{report}");
    if wait {
        wait_primary_ready(s).await?;
    }
    // Completed now: the primary is up (and Ready, with --wait). The daemons' failback
    // notice runs from `failback_started_at` to this.
    let completed = record::now_millis();
    s.modify(|current| {
        if current.failback_step.is_none() {
            return Ok(None);
        }
        ensure_at(current, epoch, false, Some(FailbackStep::PrimaryUp))?;
        let mut next = current.clone();
        next.failback_step = None;
        next.failback_completed_at = Some(completed.clone());
        Ok(Some(next))
    })
    .await?;
    s.event(
        "KubeFailoverFailbackCompleted",
        format!("failback completed by hand; the primary is active at epoch {epoch}"),
    )
    .await;
    println!(
        "group {}: failed back to the primary (epoch {epoch})",
        s.group.name
    );
    Ok(())
}

/// The record is still where this failback left it: someone else moving it on stops
/// the failback.
fn ensure_at(
    current: &kube_failover::model::FailoverRecord,
    epoch: u64,
    standby_active: bool,
    step: Option<FailbackStep>,
) -> Result<(), Failure> {
    let phase = current.effective_phase();
    if current.epoch == epoch
        && phase.standby_active() == standby_active
        && current.failback_step == step
    {
        return Ok(());
    }
    Err(refuse(
        "record_changed",
        format!(
            "the record moved on during the failback: phase {phase}, epoch {}, failback_step {}",
            current.epoch,
            current.failback_step.map_or("none", FailbackStep::as_str)
        ),
    ))
}

/// The primary must be able to take the workload back: its API answers and every
/// workload's Deployments exist.
async fn primary_fit(s: &Session) -> Result<(), Failure> {
    let obs = s.observe(&[]).await;
    if !obs.primary.api.passed() {
        return Err(refuse(
            "primary_api_down",
            format!(
                "the primary's API server does not answer ({}); failing back now would leave \
                 no side running",
                obs.primary.api.reason
            ),
        ));
    }
    for (id, outcome) in &obs.primary.workloads {
        if outcome.reason == ProbeReason::NotFound || outcome.reason == ProbeReason::Forbidden {
            return Err(refuse(
                "primary_workload_missing",
                format!("{id}: {} ({})", outcome.reason, outcome.detail),
            ));
        }
    }
    if obs
        .primary
        .deployments
        .as_deref()
        .is_none_or(<[_]>::is_empty)
    {
        return Err(refuse(
            "primary_workload_missing",
            "the primary's Deployments cannot be read or none is selected",
        ));
    }
    Ok(())
}

/// Waits until no Pod of a selected standby Deployment is left (terminating included).
async fn wait_standby_pods_gone(s: &Session) -> Result<(), Failure> {
    let ns = s.group.standby.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(s.standby.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(s.standby.clone(), ns);
    let start = Instant::now();
    loop {
        let mut left = 0usize;
        for workload in &s.group.workloads {
            let selected = bounded(super::ops::CALL_TIMEOUT, select(&deployments, workload))
                .await
                .map_err(|e| s.fail("cannot list the standby's Deployments", e))?;
            for d in selected {
                let labels = d
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.selector.match_labels.clone())
                    .unwrap_or_default();
                if labels.is_empty() {
                    continue;
                }
                let selector: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let params = ListParams::default().labels(&selector.join(","));
                let list = bounded(super::ops::CALL_TIMEOUT, pods.list(&params))
                    .await
                    .map_err(|e| s.fail("cannot list the standby's Pods", e))?;
                left += list.items.len();
            }
        }
        if left == 0 {
            eprintln!("the standby's Pods are gone");
            return Ok(());
        }
        if start.elapsed() > WAIT_LIMIT {
            return Err(s.fail(
                "the standby's Pods are not gone",
                format!("{left} left after {WAIT_LIMIT:?}; run failback again to resume"),
            ));
        }
        eprintln!("waiting for the standby's Pods to be gone: {left} left");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every selected primary Deployment has all its replicas Ready.
async fn wait_primary_ready(s: &Session) -> Result<(), Failure> {
    let start = Instant::now();
    loop {
        let obs = s.observe(&[]).await;
        let views = obs.primary.deployments.unwrap_or_default();
        let ready = !views.is_empty()
            && views
                .iter()
                .all(|d| d.desired >= 1 && d.available >= d.desired && d.ready_pods >= d.desired);
        if ready {
            eprintln!("the primary is Ready");
            return Ok(());
        }
        if start.elapsed() > WAIT_LIMIT {
            return Err(s.fail(
                "the primary is not Ready",
                format!("waited {WAIT_LIMIT:?}; run failback again to resume"),
            ));
        }
        let seen: Vec<String> = views
            .iter()
            .map(|d| format!("{} {}/{}", d.name, d.ready_pods, d.desired))
            .collect();
        eprintln!("waiting for the primary to be Ready: {}", seen.join(", "));
        tokio::time::sleep(POLL.max(Duration::from_secs(1))).await;
    }
}
