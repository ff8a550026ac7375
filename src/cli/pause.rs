//! `pause` and `resume`: the maintenance mode, stored in the failover record so every
//! daemon instance obeys it. While paused the daemons probe, report and detect
//! dual-active, and act on nothing.

use super::Failure;
use super::ops::{Target, now_unix};
use std::time::Duration;

/// The flags of `pause`.
#[derive(Debug, clap::Args)]
pub(crate) struct PauseArgs {
    #[command(flatten)]
    target: Target,
    /// Why (shown in the record, the Event and `history`).
    #[arg(long, default_value = "")]
    reason: String,
    /// End the pause by itself after this long (e.g. `2h`); default: until `resume`.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// The flags of `resume`.
#[derive(Debug, clap::Args)]
pub(crate) struct ResumeArgs {
    #[command(flatten)]
    target: Target,
}

impl PauseArgs {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let reason = self.reason.clone();
        let duration = self.duration;
        self.target.run(|s| async move {
            let until = duration
                .map(|d| now_unix().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
            let stored = s
                .modify(|current| {
                    let mut next = current.clone();
                    next.paused_by = Some(s.operator.clone());
                    next.paused_until_unix = until;
                    next.pause_reason = reason.clone();
                    Ok(Some(next))
                })
                .await?;
            let how_long = match duration {
                Some(d) => format!("for {}", humantime::format_duration(d)),
                None => "until resumed".to_string(),
            };
            s.say(format_args!(
                "group {} paused {how_long} by {} (record phase {}, epoch {})",
                s.group.name,
                s.operator,
                stored.effective_phase(),
                stored.epoch
            ));
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            s.event("KubeFailoverPaused", format!("paused {how_long}{why}"))
                .await;
            Ok(())
        })
    }
}

impl ResumeArgs {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        self.target.run(|s| async move {
            let mut was_paused = false;
            s.modify(|current| {
                was_paused = current.paused_by.is_some();
                if !was_paused {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.paused_by = None;
                next.paused_until_unix = None;
                next.pause_reason.clear();
                Ok(Some(next))
            })
            .await?;
            if !was_paused {
                println!("group {} is not paused: nothing to do", s.group.name);
                return Ok(());
            }
            s.say(format_args!(
                "group {} resumed by {}",
                s.group.name, s.operator
            ));
            s.event("KubeFailoverResumed", "resumed".to_string()).await;
            Ok(())
        })
    }
}
