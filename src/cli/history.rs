//! `history`: the failover record's last transitions, as a table or JSON.

use super::Failure;
use super::ops::Target;

/// The flags of `history`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
    /// Print the transitions as a JSON list.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let json = self.json;
        self.target.run(|s| async move {
            let record = s.read_record().await?;
            if json {
                let text =
                    serde_json::to_string_pretty(&record.history).map_err(Failure::runtime)?;
                println!("{text}");
                return Ok(());
            }
            if record.history.is_empty() {
                println!("group {}: no transitions recorded", s.group.name);
                return Ok(());
            }
            println!(
                "{:<20}  {:<9}  {:>5}  {:<24}  {:<28}  REASON",
                "AT", "PHASE", "EPOCH", "BY", "WHAT"
            );
            for t in &record.history {
                println!(
                    "{:<20}  {:<9}  {:>5}  {:<24}  {:<28}  {}",
                    t.at,
                    t.phase.as_str(),
                    t.epoch,
                    t.by,
                    t.what,
                    t.reason
                );
            }
            Ok(())
        })
    }
}
