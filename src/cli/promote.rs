//! `promote`: a manual failover through the daemon's own record and actuator code. The
//! record must be readable and say the primary is active (never skipped); the standby
//! must be fit (skipped with `--force`). The record is written `promoting` with epoch + 1
//! on condition of the resourceVersion read, so of two operators at once one wins and
//! the other is refused.

use super::Failure;
use super::ops::{POLL, Target, refuse};
use kube_failover::error_chain::chain;
use kube_failover::model::{Action, DeploymentRef, ProbeReason, ReasonCode};
use std::time::{Duration, Instant};

/// How long `--wait` waits for the standby to be Ready.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// The flags of `promote`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
    /// Skip the standby's health checks (never the record's).
    #[arg(long)]
    force: bool,
    /// Wait until the standby is Ready, then record `promoted`.
    #[arg(long)]
    wait: bool,
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let (force, wait) = (self.force, self.wait);
        self.target.run(|s| async move {
            let obs = s.observe(&[]).await;
            let record = match &obs.standby.record {
                Ok(r) => r.clone(),
                Err(o) => {
                    return Err(refuse(
                        "record_unreadable",
                        format!(
                            "the failover record cannot be read ({}): {}",
                            o.reason, o.detail
                        ),
                    ));
                }
            };
            if record.effective_phase().standby_active() {
                return Err(refuse(
                    "already_promoted",
                    format!(
                        "the record says phase {} at epoch {}",
                        record.effective_phase(),
                        record.epoch
                    ),
                ));
            }
            if let Some(step) = record.failback_step {
                return Err(refuse(
                    "failback_in_progress",
                    format!("a failback is at step {step}; finish it with `failback` first"),
                ));
            }
            if !force {
                let standby = &obs.standby;
                let unfit = if !standby.api.passed() {
                    Some((
                        standby_check(standby.api.reason, "standby_api_down"),
                        &standby.api,
                    ))
                } else if !standby.workloads.passed() {
                    Some((
                        standby_check(standby.workloads.reason, "standby_workload_missing"),
                        &standby.workloads,
                    ))
                } else {
                    None
                };
                if let Some((check, outcome)) = unfit {
                    return Err(refuse(
                        check,
                        format!(
                            "the standby cannot take over ({}{}{}); --force skips this check",
                            outcome.reason,
                            if outcome.detail.is_empty() { "" } else { ": " },
                            outcome.detail
                        ),
                    ));
                }
            }
            let epoch = record
                .epoch
                .max(obs.standby.annotated_epoch())
                .saturating_add(1);
            let primary_deployments: Vec<DeploymentRef> = obs
                .primary
                .deployments
                .iter()
                .flatten()
                .filter(|d| d.desired > 0)
                .map(|d| DeploymentRef {
                    name: d.name.clone(),
                    uid: d.uid.clone(),
                })
                .collect();
            let names: Vec<String> = primary_deployments.iter().map(|d| d.name.clone()).collect();
            s.say(format_args!(
                "record phase promoting at epoch {epoch}, fence the primary ({}), scale the \
                 standby of group {} up",
                if names.is_empty() {
                    "nothing seen running".to_string()
                } else {
                    names.join(", ")
                },
                s.group.name
            ));
            if s.dry_run {
                return Ok(());
            }
            let promoting = Action::RecordPromoting {
                epoch,
                reason: ReasonCode::OperatorPromotion,
                primary_deployments,
            };
            match s.actuator.execute(&promoting, &obs).await {
                Ok(report) => println!("{report}"),
                Err(e) if e.reason() == "conflict" => {
                    return Err(refuse(
                        "record_changed",
                        format!(
                            "someone else wrote the record first ({}); nothing was scaled",
                            chain(&e)
                        ),
                    ));
                }
                Err(e) => return Err(s.fail("cannot record the promotion", e)),
            }
            s.event(
                "KubeFailoverOperatorPromotion",
                format!("promotion started by hand at epoch {epoch}"),
            )
            .await;
            // Fence before scaling up, when the primary can be reached at all.
            if obs.primary.api.passed() || obs.primary.deployments.is_some() {
                let fence = Action::FencePrimary { epoch, names };
                match s.actuator.execute(&fence, &obs).await {
                    Ok(report) => println!("{report}"),
                    Err(e) => eprintln!(
                        "warning: cannot fence the primary now ({}); the daemon fences it \
                         when it is reachable",
                        chain(&e)
                    ),
                }
            } else {
                eprintln!(
                    "warning: the primary is unreachable; the daemon fences it when it is back"
                );
            }
            let up = Action::ScaleStandbyUp { epoch };
            let report = s.actuator.execute(&up, &obs).await.map_err(|e| {
                s.fail(
                    "cannot scale the standby up (the record says promoting; the daemon retries)",
                    e,
                )
            })?;
            println!("{report}");
            if !wait {
                return Ok(());
            }
            let start = Instant::now();
            loop {
                let obs = s.observe(&[]).await;
                let views = obs.standby.deployments.as_deref().unwrap_or_default();
                let ready = !views.is_empty()
                    && views.iter().all(|d| {
                        d.desired >= 1 && d.available >= d.desired && d.ready_pods >= d.desired
                    });
                if ready {
                    break;
                }
                if start.elapsed() > WAIT_LIMIT {
                    return Err(s.fail(
                        "the standby is not Ready",
                        format!("waited {WAIT_LIMIT:?}; the daemon keeps driving the promotion"),
                    ));
                }
                let seen: Vec<String> = views
                    .iter()
                    .map(|d| format!("{} {}/{}", d.name, d.ready_pods, d.desired))
                    .collect();
                eprintln!("waiting for the standby to be Ready: {}", seen.join(", "));
                tokio::time::sleep(POLL.max(Duration::from_secs(1))).await;
            }
            let report = s
                .actuator
                .execute(&Action::RecordPromoted { epoch }, &obs)
                .await
                .map_err(|e| s.fail("cannot record promoted", e))?;
            println!("{report}");
            println!(
                "group {}: the standby is Ready (epoch {epoch})",
                s.group.name
            );
            Ok(())
        })
    }
}

/// The check's name for a standby that cannot take over, after its cause.
fn standby_check(reason: ProbeReason, otherwise: &'static str) -> &'static str {
    match reason {
        ProbeReason::Unauthorized => "standby_credentials_rejected",
        ProbeReason::Forbidden => "standby_forbidden",
        ProbeReason::Tls => "standby_tls_rejected",
        _ => otherwise,
    }
}
