//! `fence`: scale the old primary to 0 now, through the actuator's own fencing (which
//! re-reads the record first). Refused while the record says the primary is active: that
//! would leave no side running.

use super::Failure;
use super::ops::{Target, refuse};
use kube_failover::model::Action;

/// The flags of `fence`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        self.target.run(|s| async move {
            let record = s.read_record().await?;
            if !record.effective_phase().standby_active() {
                return Err(refuse(
                    "record_says_primary_active",
                    format!(
                        "the record says phase {} (epoch {}): the primary is the active side; \
                         fencing it would leave no side running",
                        record.effective_phase(),
                        record.epoch
                    ),
                ));
            }
            let names: Vec<String> = record
                .primary_deployments
                .iter()
                .map(|d| d.name.clone())
                .collect();
            s.say(format_args!(
                "scale the primary's Deployments of group {} to 0 (epoch {})",
                s.group.name, record.epoch
            ));
            if s.dry_run {
                return Ok(());
            }
            let action = Action::FencePrimary {
                epoch: record.epoch,
                names,
            };
            let obs = s.observe(&[]).await;
            let report = s
                .actuator
                .execute(&action, &obs)
                .await
                .map_err(|e| s.fail("cannot fence the primary", e))?;
            println!("{report}");
            s.event(
                "KubeFailoverOperatorFenced",
                format!("fenced the primary by hand at epoch {}", record.epoch),
            )
            .await;
            Ok(())
        })
    }
}
