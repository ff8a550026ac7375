//! `completions`: the shell completion script, generated from the same command-line
//! definition as `--help` (clap_complete), on standard output.

use super::Failure;
use clap::CommandFactory;
use std::io::Write;

/// The flags of `completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The shell to complete for. Install e.g. with
    /// `kube-failover completions bash > /etc/bash_completion.d/kube-failover`, or
    /// `kube-failover completions zsh > "${fpath[1]}/_kube-failover"`.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let mut command = crate::Cli::command();
        let name = command.get_name().to_string();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, &name, &mut script);
        if self.shell == clap_complete::Shell::Bash {
            script = bash_fix(&script, &name);
        }
        std::io::stdout()
            .write_all(&script)
            .map_err(Failure::runtime)
    }
}

/// clap_complete's bash script names a command's case `kube__subcmd__failover__subcmd__status`
/// (the `-` of the program's name replaced like a separator) where the loop over the
/// words sets `kube__failover__subcmd__status`: no command's flags would ever complete.
/// Spells the cases the way the loop does.
fn bash_fix(script: &[u8], name: &str) -> Vec<u8> {
    const SEP: &str = "__subcmd__";
    let wrong = format!("{}{SEP}", name.replace('-', SEP));
    let right = format!("{}{SEP}", name.replace('-', "__"));
    String::from_utf8_lossy(script)
        .replace(&wrong, &right)
        .into_bytes()
}
