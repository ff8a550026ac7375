//! The commands of `kube-failover` and what a failed one hands back to `main`.
//!
//! Each command is a file of its own with an `Args` struct (its flags, a `clap::Args`)
//! and an `execute` method. Adding one is that file (and its `mod` line) and a variant of
//! [`Command`]; the compiler then asks for its arm in [`Command::execute`].

mod check_config;
mod completions;
mod failback;
mod fence;
mod guard;
mod history;
mod logging;
mod man;
mod ops;
mod pause;
mod promote;
mod render;
mod run;
mod simulate;
mod status;

use std::error::Error;

/// The commands. A variant's doc comment is the command's summary in `--help`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run the daemon until SIGTERM/SIGINT.
    Run(run::Args),
    /// Load and validate the configuration (including kubeconfig files and contexts and
    /// the webhooks' secret files, without contacting any cluster) and print it resolved:
    /// defaults filled in, durations normalised. Exits 0 if valid, 2 with every problem if not.
    CheckConfig(check_config::Args),
    /// Ask a running daemon for its view of every group and print it.
    Status(status::Args),
    /// Pause a group: every daemon instance keeps probing and reporting but acts on
    /// nothing (maintenance mode), until `resume` or the `--for` expiry.
    Pause(pause::PauseArgs),
    /// End a pause.
    Resume(pause::ResumeArgs),
    /// Fail over by hand: record the promotion (epoch + 1), fence the primary when
    /// reachable, scale the standby up.
    Promote(promote::Args),
    /// Fail back by hand, in order and resumably: standby to 0, its Pods gone, record
    /// `primary`, primary up.
    Failback(failback::Args),
    /// Scale the old primary to 0 now (the record must say the standby is active).
    Fence(fence::Args),
    /// Print the failover record's last transitions.
    History(history::Args),
    /// Run the agent as a child process beside it and keep it running only while the
    /// failover record (read from the standby cluster) says this side is active:
    /// `kube-failover guard --config guard.toml -- /path/to/agent args…`.
    Guard(guard::Args),
    /// Replay a daemon's trace or a synthetic scenario through the decision engine with
    /// the configuration's policy (or `--set` overrides) and print the timeline.
    Simulate(simulate::Args),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell.
    Completions(completions::Args),
    /// Print the manual page (roff), or write every page into a folder with `--dir`.
    Man(man::Args),
}

impl Command {
    /// Runs the command to its end.
    pub(crate) fn execute(self) -> Result<(), Failure> {
        match self {
            Command::Run(args) => args.execute(),
            Command::CheckConfig(args) => args.execute(),
            Command::Status(args) => args.execute(),
            Command::Pause(args) => args.execute(),
            Command::Resume(args) => args.execute(),
            Command::Promote(args) => args.execute(),
            Command::Failback(args) => args.execute(),
            Command::Fence(args) => args.execute(),
            Command::History(args) => args.execute(),
            Command::Simulate(args) => args.execute(),
            Command::Guard(args) => args.execute(),
            Command::Completions(args) => args.execute(),
            Command::Man(args) => args.execute(),
        }
    }
}

/// What kind of failure, as far as the exit code goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The configuration or the command line is not valid.
    Invalid,
    /// The command (or the daemon) failed at run time.
    Runtime,
    /// The daemon could not be reached.
    Unreachable,
    /// A safety check refused the operator's command.
    Refused,
}

/// Where the operator is told about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// `kube-failover: <error>` on stderr.
    Stderr,
    /// An error line in the log with this message and the error as field: logging is set
    /// up, and the log is where a daemon's operator looks.
    Log(&'static str),
}

/// A command that did not succeed. Its error's message and sources, joined by `: `,
/// are what the operator reads.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) report: Report,
    pub(crate) error: Box<dyn Error + Send + Sync + 'static>,
}

impl Failure {
    fn new(kind: FailureKind, error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Failure {
            kind,
            report: Report::Stderr,
            error: error.into(),
        }
    }

    /// The configuration or the command line is not valid.
    pub(crate) fn invalid(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Failure::new(FailureKind::Invalid, error)
    }

    /// Failed at run time.
    pub(crate) fn runtime(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Failure::new(FailureKind::Runtime, error)
    }

    /// The daemon could not be reached.
    pub(crate) fn unreachable(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Failure::new(FailureKind::Unreachable, error)
    }

    /// A safety check (named in the error) refused the command.
    pub(crate) fn refused(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Failure::new(FailureKind::Refused, error)
    }

    /// Reported as an error line in the log, with `message`.
    pub(crate) fn logged(self, message: &'static str) -> Self {
        Failure {
            report: Report::Log(message),
            ..self
        }
    }
}
