//! `check-config`: load and validate the configuration file and print it resolved. Every
//! command that reads the configuration takes its `--config` flag and loads it from here,
//! so that they accept exactly what `check-config` accepts.

use super::Failure;
use kube_failover::config::{Config, ConfigError};
use std::path::{Path, PathBuf};

const DEFAULT_CONFIG: &str = "/etc/kube-failover/config.toml";

/// The flags of `check-config`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: ConfigFile,
}

/// The `--config` flag.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigFile {
    /// Configuration file (TOML).
    #[arg(long, short, env = "KUBE_FAILOVER_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// The configuration is not valid. Its message names the file and every problem; the
/// parser's error under it would only repeat it, so it is not a source here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidConfig(ConfigError);

/// The resolved configuration could not be written as TOML.
#[derive(Debug, thiserror::Error)]
#[error("cannot print the configuration: {0}")]
struct Unprintable(toml::ser::Error);

impl ConfigFile {
    /// The file, as given.
    pub(crate) fn path(&self) -> &Path {
        &self.config
    }

    /// Loads and fully validates the file, attaching it to validation problems.
    pub(crate) fn load(&self) -> Result<Config, Failure> {
        load(&self.config).map_err(|e| Failure::invalid(InvalidConfig(e)))
    }

    /// [`ConfigFile::load`], and the files only the daemon reads (the webhooks' secret
    /// files): for `check-config` and `run`.
    pub(crate) fn load_for_daemon(&self) -> Result<Config, Failure> {
        let config = self.load()?;
        config
            .check_secret_files()
            .map_err(|e| Failure::invalid(InvalidConfig(e.with_file(&self.config))))?;
        Ok(config)
    }
}

fn load(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    config.validate().map_err(|e| e.with_file(path))?;
    Ok(config)
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let config = self.config.load_for_daemon()?;
        let text = config
            .resolved()
            .to_toml()
            .map_err(|e| Failure::runtime(Unprintable(e)))?;
        println!(
            "# {}: valid. Resolved configuration (defaults filled in):\n",
            self.config.path().display()
        );
        print!("{text}");
        Ok(())
    }
}
