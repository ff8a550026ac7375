//! `kube-failover`: the daemon (`run`) and the operator's commands (`check-config`,
//! `status`, `pause`, `resume`, `promote`, `failback`, `fence`, `history`). This file
//! owns the process: it parses the arguments, runs the command (each in `cli/`), tells
//! the operator why one failed and picks the exit code.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod cli;

use clap::Parser;
use cli::{Command, Failure, FailureKind, Report};
use std::process::ExitCode;

/// Success.
const EXIT_OK: u8 = 0;
/// The daemon (or a command) failed at run time.
const EXIT_RUNTIME: u8 = 1;
/// Invalid configuration or command line (clap also exits 2 on usage errors).
const EXIT_INVALID: u8 = 2;
/// `status` could not reach the daemon.
const EXIT_UNREACHABLE: u8 = 3;
/// An operator's command was refused by a safety check (named on stderr).
const EXIT_REFUSED: u8 = 4;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (check-config: the configuration is valid)
  1  runtime error (the daemon failed; status got an unusable answer)
  2  invalid configuration or command line
  3  the daemon could not be reached (status)
  4  refused by a safety check, named in the message (pause, resume, promote,
     failback, fence)

Configuration keys can be overridden from the environment as
KUBE_FAILOVER__<SECTION>__<KEY>, e.g. KUBE_FAILOVER__DAEMON__MODE=observe or
KUBE_FAILOVER__GROUPS__0__POLICY__FAILURE_THRESHOLD=5. Log level: RUST_LOG (default info;
the Kubernetes client's per-request error lines only when it names kube_client).";

/// What `--version` prints after the name: the crate's version, the git revision it was
/// built from and the build date (build.rs; `unknown` revision outside a git work tree).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("KUBE_FAILOVER_REVISION"),
    ", built ",
    env!("KUBE_FAILOVER_BUILD_DATE"),
    ")"
);

/// Keeps an active/passive Kubernetes workload alive across two clusters: probes the
/// primary, promotes the standby when the primary is down, fences the old primary.
#[derive(Debug, Parser)]
#[command(name = "kube-failover", version = VERSION, after_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    kube_failover::tls::install_provider();
    let cli = Cli::parse();
    let code = match cli.command.execute() {
        Ok(()) => EXIT_OK,
        Err(failure) => report(failure),
    };
    ExitCode::from(code)
}

/// Tells the operator why the command failed: the error and its sources, joined by
/// `: `. Returns the exit code.
fn report(failure: Failure) -> u8 {
    let Failure {
        kind,
        report,
        error,
    } = failure;
    let error = anyhow::Error::from_boxed(error);
    let text = kube_failover::error_chain::chain(error.as_ref()).to_string();
    match report {
        Report::Stderr => eprintln!("kube-failover: {text}"),
        Report::Log(message) => tracing::error!(error = text, "{message}"),
    }
    match kind {
        FailureKind::Invalid => EXIT_INVALID,
        FailureKind::Runtime => EXIT_RUNTIME,
        FailureKind::Unreachable => EXIT_UNREACHABLE,
        FailureKind::Refused => EXIT_REFUSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// build.rs watches the git files the revision comes from; a watched path that does
    /// not exist makes cargo rerun it, and recompile the crate, at every cargo command.
    #[test]
    fn build_script_watches_only_paths_that_exist() {
        let output = std::path::Path::new(env!("OUT_DIR")).with_file_name("output");
        let text = std::fs::read_to_string(&output)
            .unwrap_or_else(|e| panic!("build.rs output {}: {e}", output.display()));
        let watched: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("cargo:rerun-if-changed=")
                    .or_else(|| l.strip_prefix("cargo::rerun-if-changed="))
            })
            .collect();
        assert!(watched.contains(&"build.rs"), "{text}");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for path in watched {
            assert!(
                root.join(path).exists(),
                "build.rs watches {path}, which does not exist: cargo reruns it at every command"
            );
        }
    }

    #[test]
    fn cli_parses_and_documents_exit_codes() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("3  the daemon could not be reached"),
            "{help}"
        );
        let cli = Cli::try_parse_from(["kube-failover", "status", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(ref args) if args.addr == "127.0.0.1:9464" && args.json
        ));
    }
}
