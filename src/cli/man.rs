//! `man`: the manual pages, generated from the same command-line definition as `--help`
//! (clap_mangen): the main page on standard output, or every page (the main one and one
//! per command, `kube-failover-status.1`, …) written into a folder.

use super::Failure;
use clap::CommandFactory;
use std::path::PathBuf;

/// The flags of `man`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Write `kube-failover.1` and a page per command into this folder (created when
    /// missing) instead of printing the main page, e.g.
    /// `kube-failover man --dir /usr/local/share/man/man1`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A page could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the manual pages into {}", .0.display())]
struct WriteFailed(PathBuf, #[source] std::io::Error);

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let command = crate::Cli::command();
        match self.dir {
            None => clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .map_err(Failure::runtime),
            Some(dir) => std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(command, &dir))
                .map_err(|e| Failure::runtime(WriteFailed(dir, e))),
        }
    }
}
