//! `[env0]`: where the daemon asks env0 which deployments a promotion stranded (and,
//! on request, redeploys them), and the checks of its keys. Without `[env0]` nothing of
//! this runs.

use super::names::check_url;
use super::notify::read_secret_file;
use super::validate::{Problems, fmt_duration};
use super::{Config, ConfigError, Problem};
use crate::error_chain::chain;
use kube_failover_core::text::{choose, shown};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// env0's public API.
pub const DEFAULT_ENV0_API_URL: &str = "https://api.env0.com";
/// Upper bound of `env0.timeout`.
pub const MAX_ENV0_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of `env0.lookup_timeout`.
pub const MAX_ENV0_LOOKUP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Which stranded environments the daemon redeploys after a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum RedeployMode {
    /// None: the notice names them, people redeploy.
    Off,
    /// Those whose latest deployment was waiting for approval (`WAITING_FOR_USER`).
    Waiting,
    /// Every stranded one: waiting for approval, in progress or queued.
    AllStranded,
}

impl RedeployMode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [RedeployMode; 3] = [
        RedeployMode::Off,
        RedeployMode::Waiting,
        RedeployMode::AllStranded,
    ];

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            RedeployMode::Off => "off",
            RedeployMode::Waiting => "waiting",
            RedeployMode::AllStranded => "all_stranded",
        }
    }
}

impl TryFrom<String> for RedeployMode {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &RedeployMode::ALL, |m| m.as_str())
    }
}

/// `[env0]`: env0's API, the key, and what to do about stranded deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Env0Config {
    /// Base URL of env0's API.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// File holding the API key's id (HTTP basic user name); read before every lookup.
    pub key_id_file: PathBuf,
    /// File holding the API key's secret (HTTP basic password); read before every
    /// lookup, never logged.
    pub key_secret_file: PathBuf,
    /// The env0 organization the agent belongs to.
    pub organization_id: String,
    /// The projects this agent serves; empty: read the agent's project assignment
    /// from the API (`agent_id` is then required).
    #[serde(default)]
    pub project_ids: Vec<String>,
    /// The agent (env0 "agent pool") id, to read its project assignment.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// `off` (default), `waiting` or `all_stranded`.
    #[serde(default = "default_redeploy")]
    pub redeploy: RedeployMode,
    /// Bound on each call to env0.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a promotion's notice waits for env0's answer (retries included) before
    /// it is sent without the names; the lookup goes on in the background after that.
    #[serde(default = "default_lookup_timeout", with = "humantime_serde")]
    pub lookup_timeout: Duration,
}

fn default_api_url() -> String {
    DEFAULT_ENV0_API_URL.to_string()
}

fn default_redeploy() -> RedeployMode {
    RedeployMode::Off
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_lookup_timeout() -> Duration {
    Duration::from_secs(60)
}

/// True for an env0 id as it may appear in a URL path or query: letters, digits, `-`
/// and `_`, at most 128 characters (env0's ids are UUIDs).
pub fn is_env0_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl Env0Config {
    /// The checks that need no file.
    pub(super) fn problems(&self, p: &mut Problems) {
        if let Err(why) = check_url(&self.api_url) {
            p.add("env0.api_url", why);
        }
        if !is_env0_id(&self.organization_id) {
            p.add(
                "env0.organization_id",
                format!(
                    "{} is not an env0 id (letters, digits, '-' and '_'; env0 shows it under \
                     Organization Settings)",
                    shown(&self.organization_id)
                ),
            );
        }
        for (i, project) in self.project_ids.iter().enumerate() {
            if !is_env0_id(project) {
                p.add(
                    format!("env0.project_ids[{i}]"),
                    format!("{} is not an env0 id", shown(project)),
                );
            } else if self.project_ids[..i].contains(project) {
                p.add(
                    format!("env0.project_ids[{i}]"),
                    format!("{} is listed twice", shown(project)),
                );
            }
        }
        match &self.agent_id {
            Some(agent) if !is_env0_id(agent) => p.add(
                "env0.agent_id",
                format!("{} is not an env0 id", shown(agent)),
            ),
            None if self.project_ids.is_empty() => p.add(
                "env0.agent_id",
                "is required when env0.project_ids is empty: the projects are then read from \
                 the agent's project assignment",
            ),
            _ => {}
        }
        for (key, path) in [
            ("env0.key_id_file", &self.key_id_file),
            ("env0.key_secret_file", &self.key_secret_file),
        ] {
            if path.as_os_str().is_empty() {
                p.add(key, "must not be empty");
            }
        }
        if self.timeout.is_zero() {
            p.add("env0.timeout", "must be greater than 0");
        } else {
            p.at_most("env0.timeout", self.timeout, MAX_ENV0_TIMEOUT);
        }
        if self.lookup_timeout < self.timeout {
            p.add(
                "env0.lookup_timeout",
                format!(
                    "must be at least env0.timeout ({} is below {})",
                    fmt_duration(self.lookup_timeout),
                    fmt_duration(self.timeout)
                ),
            );
        } else {
            p.at_most(
                "env0.lookup_timeout",
                self.lookup_timeout,
                MAX_ENV0_LOOKUP_TIMEOUT,
            );
        }
    }

    /// The problems of the key files: readable, not empty, one line (the webhooks'
    /// secret-file rules). Never quotes their content.
    pub fn key_file_problems(&self) -> Vec<Problem> {
        [
            ("env0.key_id_file", &self.key_id_file),
            ("env0.key_secret_file", &self.key_secret_file),
        ]
        .into_iter()
        .filter(|(_, path)| !path.as_os_str().is_empty())
        .filter_map(|(key, path)| {
            read_secret_file(path).err().map(|why| Problem {
                key: key.to_string(),
                message: chain(&why).to_string(),
            })
        })
        .collect()
    }
}

impl Config {
    /// [`Env0Config::key_file_problems`] as a configuration error, for `check-config`
    /// and `run`.
    pub(super) fn env0_key_problems(&self) -> Vec<Problem> {
        self.env0
            .as_ref()
            .map(Env0Config::key_file_problems)
            .unwrap_or_default()
    }
}

/// Reads the key's id and secret; the error names the key and the file.
pub fn read_env0_key(config: &Env0Config) -> Result<(String, String), ConfigError> {
    let problems = config.key_file_problems();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: None,
            problems,
        });
    }
    let read = |path: &PathBuf| {
        read_secret_file(path)
            .ok()
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    };
    Ok((read(&config.key_id_file), read(&config.key_secret_file)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{Fixture, GOOD, load_error, only_problem, problems};

    fn env0(extra: &str) -> String {
        format!(
            "{}\n[env0]\nkey_id_file = \"/run/secrets/env0/id\"\nkey_secret_file = \
             \"/run/secrets/env0/secret\"\norganization_id = \"org-1\"\n{extra}\n",
            *GOOD
        )
    }

    #[test]
    fn env0_loads_with_its_defaults_and_is_optional() {
        let f = Fixture::new();
        assert_eq!(f.good().env0, None);
        let cfg = f.load(&env0("project_ids = [\"p-1\"]")).expect("loads");
        assert_eq!(problems(&cfg), Vec::<String>::new());
        let e = cfg.env0.expect("[env0]");
        assert_eq!(e.api_url, DEFAULT_ENV0_API_URL);
        assert_eq!(e.redeploy, RedeployMode::Off);
        assert_eq!(e.timeout, Duration::from_secs(10));
        assert_eq!(e.lookup_timeout, Duration::from_secs(60));
        let cfg = f
            .load(&env0("agent_id = \"agent-7\"\nredeploy = \"all_stranded\""))
            .expect("loads");
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert_eq!(cfg.env0.unwrap().redeploy, RedeployMode::AllStranded);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let f = Fixture::new();
        let msg = load_error(&f, &env0("agent_id = \"a\"\nredeploy = \"always\""));
        assert!(msg.contains("env0.redeploy"), "{msg}");
        assert!(
            msg.contains("waiting") && msg.contains("all_stranded"),
            "{msg}"
        );
        let cfg = f.load(&env0("")).unwrap();
        let msg = only_problem(&cfg, "env0.agent_id");
        assert!(msg.contains("env0.project_ids"), "{msg}");
        let cfg = f
            .load(&env0("agent_id = \"a\"\napi_url = \"ftp://env0\""))
            .unwrap();
        only_problem(&cfg, "env0.api_url");
        let text = env0("agent_id = \"a\"").replace("\"org-1\"", "\"org/../1\"");
        let cfg = f.load(&text).unwrap();
        only_problem(&cfg, "env0.organization_id");
        let cfg = f
            .load(&env0("project_ids = [\"p\", \"p\"]\ntimeout = \"2m\""))
            .unwrap();
        let all = problems(&cfg);
        assert!(
            all.iter().any(|p| p.starts_with("env0.project_ids[1]")),
            "{all:?}"
        );
        assert!(all.iter().any(|p| p.starts_with("env0.timeout")), "{all:?}");
        let msg = load_error(&f, &env0("agent_id = \"a\"\nsecret = \"x\""));
        assert!(msg.contains("secret"), "{msg}");
    }

    #[test]
    fn key_files_follow_the_secret_file_rules_naming_the_key() {
        let f = Fixture::new();
        let id = f.dir.path().join("id");
        let secret = f.dir.path().join("secret");
        std::fs::write(&id, "key-id\n").unwrap();
        std::fs::write(&secret, "s3cr3t-one\ns3cr3t-two\n").unwrap();
        let text = format!(
            "{}\n[env0]\nkey_id_file = \"{}\"\nkey_secret_file = \"{}\"\norganization_id = \
             \"org-1\"\nagent_id = \"a\"\n",
            *GOOD,
            id.display(),
            secret.display()
        );
        let cfg = f.load(&text).unwrap();
        let err = cfg.check_secret_files().expect_err("two lines");
        let [problem] = err.problems() else {
            panic!("{err}")
        };
        assert_eq!(problem.key, "env0.key_secret_file");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        cfg.check_secret_files().expect("readable");
        assert_eq!(
            read_env0_key(cfg.env0.as_ref().unwrap()).unwrap(),
            ("key-id".to_string(), "s3cr3t".to_string())
        );
        std::fs::remove_file(&id).unwrap();
        let err = cfg.check_secret_files().expect_err("missing");
        assert_eq!(err.problems()[0].key, "env0.key_id_file");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
