//! Typed configuration: the TOML file plus `KUBE_FAILOVER__…` environment overrides,
//! defaults, and validation that names the offending key before any cluster is touched.

pub use kube_failover_core::policy::{Mode, PolicyConfig};
use kube_failover_core::text::{MAX_QUOTE_CHARS, choose, cut_note, shown};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// One or more failover groups (`[[groups]]` in TOML).
    pub groups: Vec<GroupConfig>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields flattened.
    Json,
}

impl LogFormat {
    /// Every format, in the order the documentation lists them.
    pub const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    /// The config value: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &LogFormat::ALL, |f| f.as_str())
    }
}

/// `[daemon]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// How often every group is probed and decided.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Hard bound on each probe; must be below `probe_interval`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Admin server (`/metrics`, `/healthz`, `/readyz`, `/status`).
    pub listen: SocketAddr,
    /// `text` or `json`; the level comes from `RUST_LOG` (default `info`).
    pub log_format: LogFormat,
    /// `observe` (never write) or `auto` (act).
    pub mode: Mode,
    /// Identity written into the failover record and Events; defaults to the host name.
    pub identity: Option<String>,
    /// Bound on finishing in-flight actions after the first SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `[daemon.leader]`: the leader Lease of every group.
    pub leader: LeaderConfig,
}

/// `[daemon.leader]`: one leader per group on a Lease in the standby namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    /// A leader Lease not renewed for this long may be taken over; default
    /// `max(3 × probe_interval, 3s)`.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Option<Duration>,
    /// The leader stops writing this long after its last successful renewal; must be
    /// below `lease_duration`; default two thirds of it.
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Option<Duration>,
}

impl DaemonConfig {
    /// The leader Lease duration, default applied.
    pub fn lease_duration(&self) -> Duration {
        self.leader.lease_duration.unwrap_or_else(|| {
            self.probe_interval
                .saturating_mul(3)
                .max(Duration::from_secs(3))
        })
    }

    /// The leader's renew deadline, default applied.
    pub fn renew_deadline(&self) -> Duration {
        self.leader
            .renew_deadline
            .unwrap_or_else(|| self.lease_duration().mul_f64(2.0 / 3.0))
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            log_format: LogFormat::Text,
            mode: Mode::Auto,
            identity: None,
            shutdown_timeout: Duration::from_secs(10),
            leader: LeaderConfig::default(),
        }
    }
}

/// `[[groups]]`: one primary/standby pair of workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// A DNS label: names the record ConfigMap and labels metrics.
    pub name: String,
    /// Where the workload normally runs.
    pub primary: ClusterConfig,
    /// Where it is scaled to 0 until a promotion; also holds the failover record.
    pub standby: ClusterConfig,
    /// The Deployments that make up the workload (the same selection in both clusters).
    pub workloads: Vec<WorkloadConfig>,
    /// When the primary counts as down and what may happen then.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Extra HTTP checks against the primary's workload.
    #[serde(default)]
    pub http_checks: Vec<HttpCheckConfig>,
    /// ConfigMap name of the failover record in the standby namespace;
    /// default `kube-failover-<group name>`.
    #[serde(default)]
    pub record_name: Option<String>,
}

impl GroupConfig {
    /// The failover record's ConfigMap name, default applied.
    pub fn record_name(&self) -> String {
        self.record_name
            .clone()
            .unwrap_or_else(|| format!("kube-failover-{}", self.name))
    }
}

/// How to reach one cluster: a kubeconfig (path + optional context), or in-cluster
/// credentials when neither `kubeconfig` nor `context` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Kubeconfig file. With only `context` set, `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig; default its current-context.
    pub context: Option<String>,
    /// Namespace of the workload's Deployments (and, in the standby, of the record).
    pub namespace: String,
}

/// One selected workload: a Deployment by name, or every Deployment matching a label
/// selector. Exactly one of `name` and `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// One Deployment by name.
    pub name: Option<String>,
    /// A Kubernetes label selector, e.g. `env0=agent-trigger`.
    pub selector: Option<String>,
    /// Replicas each selected Deployment gets when the standby is promoted.
    #[serde(default = "default_replicas")]
    pub replicas: i32,
}

fn default_replicas() -> i32 {
    1
}

impl WorkloadConfig {
    /// The signal name of this workload: `workload:<name>` or `workload:<selector>`.
    pub fn signal_name(&self) -> String {
        match (&self.name, &self.selector) {
            (Some(n), _) => format!("workload:{n}"),
            (None, Some(s)) => format!("workload:{s}"),
            (None, None) => "workload:?".to_string(),
        }
    }
}

/// `[[groups.http_checks]]`: an HTTP endpoint that must answer with `expected_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckConfig {
    /// Unique within the group; the signal is `http:<name>`.
    pub name: String,
    /// Absolute http(s) URL.
    pub url: String,
    /// The status that counts as a pass (default 200).
    #[serde(default = "default_status")]
    pub expected_status: u16,
    /// Defaults to the daemon's probe timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

fn default_status() -> u16 {
    200
}

impl HttpCheckConfig {
    /// The signal name of this check: `http:<name>`.
    pub fn signal_name(&self) -> String {
        format!("http:{}", self.name)
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

// Upper bounds of the configured durations. Above them a value is a slip of the unit
// (`5h` for `5s`) rather than a choice, and they keep every deadline computed from a
// duration (`now + freeze_for`) far from the end of the clock.

/// Upper bound of `daemon.probe_interval`, `daemon.probe_timeout` and HTTP check timeouts.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Upper bound of `daemon.shutdown_timeout`.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Upper bound of `daemon.leader.lease_duration` and `policy.observers.ttl`.
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(3600);
/// Upper bound of `policy.cooldown`.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Upper bound of `policy.startup_grace`.
pub const MAX_STARTUP_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound of `policy.promotion_timeout`.
pub const MAX_PROMOTION_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound of `policy.freeze_for`.
pub const MAX_FREEZE_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Upper bound of `daemon.identity`, in characters: the length Kubernetes allows for an
/// Event's `reportingInstance`.
pub const MAX_IDENTITY_CHARS: usize = 128;

/// Prefix of environment overrides: `KUBE_FAILOVER__DAEMON__MODE=observe`.
pub const ENV_PREFIX: &str = "KUBE_FAILOVER";

/// Separates the prefix and each key level in an override's name. Two underscores, so
/// that keys with one underscore (`probe_interval`) stay one level.
pub const ENV_SEPARATOR: &str = "__";

/// Why the configuration could not be used. Every variant names the key path (for
/// example `groups[env0].policy.failure_threshold`) or the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, is not text, or is not TOML.
    #[error("{}: {message}", shown_path(.file))]
    File {
        /// The configuration file, as given.
        file: PathBuf,
        /// What is wrong with it; quotes from the file are escaped and cut.
        message: String,
    },
    /// A `KUBE_FAILOVER__…` variable does not name a place in the configuration.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable, upper-cased as it is usually written.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value could not be read into its typed field: unknown key, wrong type, malformed
    /// duration, missing required key.
    #[error("{}: {key}{}: {message}", shown_path(.file), env_note(.env_var))]
    Value {
        /// The configuration file.
        file: PathBuf,
        /// The key path, with group names in brackets when known.
        key: String,
        /// The override that supplied the value, when it came from the environment.
        env_var: Option<String>,
        /// What is wrong with the value.
        message: String,
        #[source]
        source: Box<config::ConfigError>,
    },
    /// The configuration is well-formed but not acceptable; every problem is listed.
    #[error("{}invalid configuration ({} problem{}):{}", file_prefix(.file), .problems.len(),
        if .problems.len() == 1 { "" } else { "s" }, list_problems(.problems))]
    Invalid {
        /// The configuration file, when known.
        file: Option<PathBuf>,
        /// Every problem found, in key order of the file.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Attaches the file to an [`ConfigError::Invalid`] that lacks one.
    pub fn with_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Invalid {
                file: None,
                problems,
            } => ConfigError::Invalid {
                file: Some(path.to_path_buf()),
                problems,
            },
            other => other,
        }
    }

    /// The problems of an [`ConfigError::Invalid`]; empty for the other variants.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn env_note(var: &Option<String>) -> String {
    var.as_ref()
        .map(|v| format!(" (set by environment variable {v})"))
        .unwrap_or_default()
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", shown_path(f)))
        .unwrap_or_default()
}

/// The path as the user gave it, control characters escaped.
fn shown_path(path: &Path) -> String {
    printable(&path.to_string_lossy(), usize::MAX)
}

fn list_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// One validation problem: the key path it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `groups[env0].policy.quorum`.
    pub key: String,
    /// What is wrong, naming the file and context for kubeconfig problems.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Reads `path` (TOML, whatever its extension) and applies `KUBE_FAILOVER__…`
    /// overrides from the process environment. Does not validate: see
    /// [`Config::validate`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load_from(path, None)
    }

    /// [`Config::load`] with the given variables in place of the process environment
    /// (for tests and tools; the process environment is not read).
    pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map = env
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<config::Map<String, String>>();
        load_from(path, Some(map))
    }

    /// The configuration with every implicit default written out: each group's
    /// `record_name` and each HTTP check's `timeout`. What `check-config` prints.
    pub fn resolved(&self) -> Config {
        let mut resolved = self.clone();
        for group in &mut resolved.groups {
            group.record_name = Some(group.record_name());
            for check in &mut group.http_checks {
                check.timeout.get_or_insert(self.daemon.probe_timeout);
            }
        }
        resolved
    }

    /// The configuration as TOML, durations in humantime form (`5s`, `10m`).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

fn load_from(path: &Path, env: Option<config::Map<String, String>>) -> Result<Config, ConfigError> {
    use config::Source;

    let text = read_text(path)?;
    // The config crate would parse the file too, but its message quotes the offending
    // line raw (control bytes, kilobytes of it) and names the file by a path relative to
    // the working directory rather than as given. Parse errors are reported from here.
    if let Err(err) = toml::from_str::<toml::Table>(&text) {
        return Err(ConfigError::File {
            file: path.to_path_buf(),
            message: toml_error_message(&text, &err),
        });
    }
    let file_error = |source: config::ConfigError| ConfigError::File {
        file: path.to_path_buf(),
        message: format!(
            "cannot load the configuration: {}",
            printable(&source.to_string(), MAX_MESSAGE_CHARS)
        ),
    };
    // From the text read above, so that the file is read once and only at `path` (a file
    // source would also try `<path>.toml` when `path` does not exist).
    let file_source = || config::File::from_str(&text, config::FileFormat::Toml);
    // The file alone, to check override paths against its shape (see below).
    let file_only = config::Config::builder()
        .add_source(file_source())
        .build()
        .map_err(file_error)?;

    // try_parsing stays off: the config crate's deserializer already reads "3" as a
    // number and "true" as a bool where the field wants one, while try_parsing would
    // turn a string field such as `identity = "0123"` into the number 123.
    let env_values = config::Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .source(env)
        .collect()
        .map_err(|e| ConfigError::Env {
            var: format!("{ENV_PREFIX}{ENV_SEPARATOR}*"),
            message: e.to_string(),
        })?;
    let mut env_keys: Vec<(String, config::Value)> = env_values.into_iter().collect();
    env_keys.sort_by(|a, b| a.0.cmp(&b.0));

    // Overrides go in as path expressions rather than as an `Environment` source: the
    // source would read `groups.0.policy.quorum` as a table key "0" and replace the
    // whole `groups` array with a table, whereas `groups[0].policy.quorum` edits it.
    let mut builder = config::Config::builder().add_source(file_source());
    let mut overridden = Vec::new();
    for (key, value) in env_keys {
        let var = env_var_name(&key);
        let expr = override_expression(&file_only, &key).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        builder = builder
            .set_override(expr.as_str(), value)
            .map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: e.to_string(),
            })?;
        overridden.push((expr, var));
    }
    let merged = builder.build().map_err(file_error)?;
    let names = group_names(&merged);

    serde_path_to_error::deserialize::<_, Config>(merged).map_err(|err| {
        let (key, expr) = key_path(err.path(), &names);
        let env_var = overridden
            .iter()
            .find(|(e, _)| *e == expr)
            .map(|(_, var)| var.clone());
        let source = err.into_inner();
        ConfigError::Value {
            file: path.to_path_buf(),
            key,
            env_var,
            message: value_message(&source),
            source: Box::new(source),
        }
    })
}

/// Configuration files larger than this are refused: a configuration is a few KiB, so a
/// bigger file is the wrong file (a log, a binary, a device).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Longest message built from someone else's text (a parser's, a library's).
const MAX_MESSAGE_CHARS: usize = 400;

/// Reads the configuration file as UTF-8 text, refusing directories, files larger than
/// [`MAX_FILE_BYTES`] and bytes that are not UTF-8, each with a message naming the file.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;

    let fail = |message: String| ConfigError::File {
        file: path.to_path_buf(),
        message,
    };
    let cannot_read = |err: std::io::Error| fail(format!("cannot read the configuration: {err}"));
    if std::fs::metadata(path).map_err(cannot_read)?.is_dir() {
        return Err(fail("is a directory, not a configuration file".to_string()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "is larger than {} MiB: not a configuration file (is it the right path?)",
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    // A UTF-8 byte order mark is allowed, as editors on some systems write one.
    let bytes = bytes
        .strip_prefix(b"\xef\xbb\xbf")
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    String::from_utf8(bytes).map_err(|err| {
        let at = err.utf8_error().valid_up_to();
        let byte = err.as_bytes()[at];
        let valid = String::from_utf8_lossy(&err.as_bytes()[..at]);
        let (line, column) = line_and_column(&valid, valid.len());
        fail(format!(
            "is not UTF-8 text (byte 0x{byte:02x} at line {line}, column {column}): not a \
             configuration file (is it the right path?)"
        ))
    })
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_and_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A TOML syntax error as `not valid TOML at line L, column C: <what>`, followed by the
/// line (escaped, and cut around the column when long) and a caret under the column.
fn toml_error_message(text: &str, err: &toml::de::Error) -> String {
    let what = printable(err.message().trim(), MAX_MESSAGE_CHARS).replace('\n', " ");
    let Some(span) = err.span() else {
        return format!("not valid TOML: {what}");
    };
    let at = floor_char_boundary(text, span.start);
    let (line, column) = line_and_column(text, at);
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line_text = text[line_start..line_end]
        .strip_suffix('\r')
        .unwrap_or(&text[line_start..line_end]);
    let (excerpt, caret) = excerpt(line_text, column - 1);
    let number = line.to_string();
    let pad = " ".repeat(number.len());
    format!(
        "not valid TOML at line {line}, column {column}: {what}\n  {number} | {excerpt}\n  {pad} | {}^",
        " ".repeat(caret)
    )
}

/// Up to [`MAX_QUOTE_CHARS`] characters of `line` around character `column` (0-based),
/// escaped, with `…` where the line was cut; and the caret's offset in the excerpt.
fn excerpt(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    let column = column.min(chars.len());
    let start = column
        .saturating_sub(MAX_QUOTE_CHARS / 2)
        .min(chars.len().saturating_sub(MAX_QUOTE_CHARS));
    let end = (start + MAX_QUOTE_CHARS).min(chars.len());
    let mut out = String::new();
    let mut caret = 0;
    if start > 0 {
        out.push('…');
    }
    for (i, c) in chars[start..end].iter().enumerate() {
        if start + i == column {
            caret = out.chars().count();
        }
        push_printable(&mut out, *c);
    }
    if column >= end {
        caret = out.chars().count();
    }
    if end < chars.len() {
        out.push_str(&cut_note(chars.len()));
    }
    (out, caret)
}

/// `text` with control and other invisible characters escaped as Rust does (`\0`,
/// `\u{1b}`, `\n`), and, past `max` characters, cut with a note saying so.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push_str(&cut_note(text.chars().count()));
            break;
        }
        push_printable(&mut out, c);
    }
    out
}

fn push_printable(out: &mut String, c: char) {
    match c {
        // Readable as they are; escape_debug would add a backslash.
        '"' | '\'' | '\\' => out.push(c),
        _ => out.extend(c.escape_debug()),
    }
}

/// What follows a quote that was cut.
/// A library's message about the user's text: control characters escaped everywhere,
/// each `backticked` quote cut to [`MAX_QUOTE_CHARS`] (serde quotes unknown keys and
/// values that way, and lists the valid ones after them), and the whole bounded.
fn tame_message(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        let quoted = i % 2 == 1;
        out.push_str(&printable(
            part,
            if quoted {
                MAX_QUOTE_CHARS
            } else {
                MAX_MESSAGE_CHARS
            },
        ));
    }
    cut(&out, 2 * MAX_MESSAGE_CHARS)
}

/// `text` cut after `max` characters, with a note; no escaping.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… (cut)", &text[..at]),
        None => text.to_string(),
    }
}

/// `daemon.probe_interval` → `KUBE_FAILOVER__DAEMON__PROBE_INTERVAL`.
fn env_var_name(key: &str) -> String {
    let rest = key.split('.').collect::<Vec<_>>().join(ENV_SEPARATOR);
    format!("{ENV_PREFIX}{ENV_SEPARATOR}{}", rest.to_uppercase())
}

/// Turns an override key such as `groups.0.workloads.1.replicas` into the config path
/// `groups[0].workloads[1].replicas`, checking it against the file: a numeric level must
/// index an existing list element, and a list must be indexed (a named key would replace
/// the whole list).
fn override_expression(file: &config::Config, key: &str) -> Result<String, String> {
    let mut expr = String::new();
    for segment in key.split('.') {
        if segment.is_empty() {
            return Err("empty key level (three or more underscores in a row?)".to_string());
        }
        let here = file
            .get::<config::Value>(&expr)
            .ok()
            .filter(|_| !expr.is_empty());
        let list_len = match here.as_ref().map(|v| &v.kind) {
            Some(config::ValueKind::Array(items)) => Some(items.len()),
            _ => None,
        };
        match (segment.parse::<usize>(), list_len) {
            (Ok(index), Some(len)) if index < len => expr.push_str(&format!("[{index}]")),
            (Ok(index), Some(len)) => {
                return Err(format!(
                    "`{expr}` has {len} element(s) in the file; index {index} does not exist \
                     (overrides can change list elements, not add them)"
                ));
            }
            (Ok(_), None) if !expr.is_empty() => {
                return Err(format!("`{expr}` is not a list in the file"));
            }
            (Err(_), Some(_)) => {
                return Err(format!(
                    "`{expr}` is a list: name an element by index, e.g. {}",
                    env_var_name(&format!("{}.0.{segment}", expr.replace(['[', ']'], ".")))
                        .replace("__.", "__")
                ));
            }
            _ => {
                if !expr.is_empty() {
                    expr.push('.');
                }
                expr.push_str(segment);
            }
        }
    }
    Ok(expr)
}

/// Group names by index, for naming `groups[<name>]` in messages.
fn group_names(merged: &config::Config) -> Vec<Option<String>> {
    let len = merged.get_array("groups").map(|a| a.len()).unwrap_or(0);
    (0..len)
        .map(|i| merged.get_string(&format!("groups[{i}].name")).ok())
        .collect()
}

/// `groups[env0]` when the group's name is a DNS label used by no other group,
/// `groups[3]` otherwise (an invalid or duplicate name would make the path ambiguous).
fn group_label(index: usize, names: &[Option<String>]) -> String {
    match names.get(index).and_then(|n| n.as_deref()) {
        Some(name)
            if is_dns_label(name)
                && names.iter().filter(|n| n.as_deref() == Some(name)).count() == 1 =>
        {
            format!("groups[{name}]")
        }
        _ => format!("groups[{index}]"),
    }
}

/// The key path for messages (group names in brackets) and the config crate's path
/// expression (indexes) for the same place.
fn key_path(path: &serde_path_to_error::Path, names: &[Option<String>]) -> (String, String) {
    use serde_path_to_error::Segment;

    let mut key = String::new();
    let mut expr = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                if expr == "groups" {
                    key = group_label(*index, names);
                } else {
                    key.push_str(&format!("[{index}]"));
                }
                expr.push_str(&format!("[{index}]"));
            }
            Segment::Map { key: k } => {
                for (s, k) in [
                    (&mut key, printable(k, MAX_QUOTE_CHARS)),
                    (&mut expr, k.clone()),
                ] {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(&k);
                }
            }
            Segment::Enum { .. } => {}
            Segment::Unknown => {
                key.push_str(".?");
                expr.push_str(".?");
            }
        }
    }
    if key.is_empty() {
        key.push_str("(top level)");
    }
    (key, expr)
}

/// The deserializer's message, without the config crate's own origin/key suffixes (the
/// error already names both) and with a hint for durations.
fn value_message(err: &config::ConfigError) -> String {
    let message = match err {
        // The config crate wraps errors with its own key path (indexes only, and
        // mis-joined for missing fields); ours replaces it.
        config::ConfigError::At { error, .. } => return value_message(error),
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("invalid type: {unexpected}, expected {expected}"),
        config::ConfigError::NotFound(path) => {
            let field = path.rsplit(['.', ']']).next().unwrap_or(path);
            format!("missing field `{field}`")
        }
        other => other.to_string(),
    };
    let message = tame_message(&message);
    if message.ends_with("expected a duration") {
        format!("{message} such as `500ms`, `3s`, `10m` or `1h 30m`")
    } else {
        message
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

impl Config {
    /// Checks everything that can be checked before touching a cluster, including that
    /// each kubeconfig is readable and has the configured context. Every problem is
    /// reported, each naming its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.offline_problems();
        problems.extend(self.kubeconfig_problems(&problems));
        into_result(problems)
    }

    /// [`Config::validate`] without reading kubeconfig files: for checking a
    /// configuration away from the host it will run on.
    pub fn validate_offline(&self) -> Result<(), ConfigError> {
        into_result(self.offline_problems())
    }

    fn group_labels(&self) -> Vec<String> {
        let names: Vec<Option<String>> = self.groups.iter().map(|g| Some(g.name.clone())).collect();
        (0..self.groups.len())
            .map(|i| group_label(i, &names))
            .collect()
    }

    fn offline_problems(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        let d = &self.daemon;
        if d.probe_interval.is_zero() {
            p.add("daemon.probe_interval", "must be greater than 0");
        }
        p.at_most(
            "daemon.probe_interval",
            d.probe_interval,
            MAX_PROBE_INTERVAL,
        );
        if d.probe_timeout.is_zero() {
            p.add("daemon.probe_timeout", "must be greater than 0");
        } else if d.probe_timeout > MAX_PROBE_INTERVAL {
            p.at_most("daemon.probe_timeout", d.probe_timeout, MAX_PROBE_INTERVAL);
        } else if d.probe_timeout >= d.probe_interval {
            p.add(
                "daemon.probe_timeout",
                format!(
                    "must be below daemon.probe_interval ({} is not below {})",
                    fmt_duration(d.probe_timeout),
                    fmt_duration(d.probe_interval)
                ),
            );
        }
        p.at_most(
            "daemon.shutdown_timeout",
            d.shutdown_timeout,
            MAX_SHUTDOWN_TIMEOUT,
        );
        if let Some(identity) = d.identity.as_deref() {
            if identity.trim().is_empty() {
                p.add(
                    "daemon.identity",
                    "must not be empty (leave it out to use the host name)",
                );
            } else if identity.chars().count() > MAX_IDENTITY_CHARS {
                p.add(
                    "daemon.identity",
                    format!(
                        "must be at most {MAX_IDENTITY_CHARS} characters (got {}): it names \
                         this daemon in Kubernetes Events",
                        identity.chars().count()
                    ),
                );
            } else if identity.chars().any(char::is_control) {
                p.add(
                    "daemon.identity",
                    format!(
                        "{} contains control characters: it is written into logs, the \
                         record and Events",
                        shown(identity)
                    ),
                );
            }
        }
        let (lease, deadline) = (d.lease_duration(), d.renew_deadline());
        if d.leader.lease_duration.is_some() && (lease.is_zero() || lease > MAX_LEASE_DURATION) {
            p.add(
                "daemon.leader.lease_duration",
                format!(
                    "must be greater than 0 and at most {}",
                    fmt_duration(MAX_LEASE_DURATION)
                ),
            );
        } else if deadline >= lease {
            p.add(
                "daemon.leader.renew_deadline",
                format!(
                    "must be below daemon.leader.lease_duration ({} is not below {}): the \
                     leader must stop writing before anyone may take its Lease over",
                    fmt_duration(deadline),
                    fmt_duration(lease)
                ),
            );
        } else if deadline <= d.probe_interval {
            p.add(
                "daemon.leader.renew_deadline",
                format!(
                    "must be above daemon.probe_interval ({} is not above {}): the leader \
                     renews once per tick",
                    fmt_duration(deadline),
                    fmt_duration(d.probe_interval)
                ),
            );
        }
        if self.groups.is_empty() {
            p.add("groups", "at least one [[groups]] entry is required");
        }

        let labels = self.group_labels();
        for (i, group) in self.groups.iter().enumerate() {
            let g = &labels[i];
            if !is_dns_label(&group.name) {
                p.add(
                    format!("{g}.name"),
                    format!(
                        "{} is not a DNS label (lower-case letters, digits and '-', starting and \
                         ending with a letter or digit, at most 63 characters): it names the \
                         ConfigMap kube-failover-<name> and metric labels",
                        shown(&group.name)
                    ),
                );
            }
            if let Some(j) = self.groups[..i].iter().position(|o| o.name == group.name) {
                p.add(
                    format!("{g}.name"),
                    format!(
                        "duplicate group name {} (also groups[{j}])",
                        shown(&group.name)
                    ),
                );
            }
            self.group_problems(group, g, &mut p);
        }

        // Two groups sharing a record would overwrite each other's failover state.
        for (i, group) in self.groups.iter().enumerate() {
            if let Some(j) = self.groups[..i].iter().position(|o| {
                same_cluster(&o.standby, &group.standby) && o.record_name() == group.record_name()
            }) {
                p.add(
                    format!("{}.record_name", labels[i]),
                    format!(
                        "record {} in the same standby namespace as {} (each group needs its own)",
                        shown(&group.record_name()),
                        labels[j]
                    ),
                );
            }
        }
        p.0
    }

    fn group_problems(&self, group: &GroupConfig, g: &str, p: &mut Problems) {
        for (role, cluster) in [("primary", &group.primary), ("standby", &group.standby)] {
            if !is_dns_label(&cluster.namespace) {
                p.add(
                    format!("{g}.{role}.namespace"),
                    format!(
                        "{} is not a valid namespace name (a DNS label)",
                        shown(&cluster.namespace)
                    ),
                );
            }
            if cluster
                .kubeconfig
                .as_ref()
                .is_some_and(|k| k.as_os_str().is_empty())
            {
                p.add(
                    format!("{g}.{role}.kubeconfig"),
                    "must not be empty (leave it out, with context, for in-cluster credentials)",
                );
            }
            if cluster.context.as_deref().is_some_and(str::is_empty) {
                p.add(format!("{g}.{role}.context"), "must not be empty");
            }
        }
        if same_cluster(&group.primary, &group.standby) {
            p.add(
                format!("{g}.standby"),
                format!(
                    "is the same cluster and namespace as {g}.primary ({}): a group needs two places",
                    describe_cluster(&group.primary)
                ),
            );
        }
        if let Some(record) = &group.record_name
            && !is_dns_subdomain(record)
        {
            p.add(
                format!("{g}.record_name"),
                format!(
                    "{} is not a valid ConfigMap name (a DNS subdomain)",
                    shown(record)
                ),
            );
        }

        if group.workloads.is_empty() {
            p.add(
                format!("{g}.workloads"),
                "at least one workload is required",
            );
        }
        for (i, w) in group.workloads.iter().enumerate() {
            let key = format!("{g}.workloads[{i}]");
            match (&w.name, &w.selector) {
                (Some(_), Some(_)) => {
                    p.add(&key, "set exactly one of `name` and `selector`, not both")
                }
                (None, None) => p.add(&key, "set exactly one of `name` and `selector`"),
                (Some(name), None) if !is_dns_subdomain(name) => p.add(
                    format!("{key}.name"),
                    format!(
                        "{} is not a valid Deployment name (a DNS subdomain)",
                        shown(name)
                    ),
                ),
                (None, Some(selector)) => {
                    if let Err(why) = check_label_selector(selector) {
                        p.add(
                            format!("{key}.selector"),
                            format!("{} is not a label selector: {why}", shown(selector)),
                        );
                    }
                }
                _ => {}
            }
            if w.replicas < 1 {
                p.add(
                    format!("{key}.replicas"),
                    format!("must be at least 1 (got {})", w.replicas),
                );
            }
            if let Some(j) = group.workloads[..i]
                .iter()
                .position(|o| o.signal_name() == w.signal_name())
            {
                p.add(&key, format!("selects the same as {g}.workloads[{j}]"));
            }
        }

        let interval = self.daemon.probe_interval;
        for (i, check) in group.http_checks.iter().enumerate() {
            let key = format!("{g}.http_checks[{i}]");
            if check.name.trim().is_empty() {
                p.add(format!("{key}.name"), "must not be empty");
            } else if let Some(j) = group.http_checks[..i]
                .iter()
                .position(|o| o.name == check.name)
            {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "duplicate check name {} (also {g}.http_checks[{j}])",
                        shown(&check.name)
                    ),
                );
            }
            if let Err(why) = check_url(&check.url) {
                p.add(
                    format!("{key}.url"),
                    format!("{}: {why}", shown(&check.url)),
                );
            }
            if !(100..=599).contains(&check.expected_status) {
                p.add(
                    format!("{key}.expected_status"),
                    format!(
                        "must be an HTTP status in 100..=599 (got {})",
                        check.expected_status
                    ),
                );
            }
            if let Some(timeout) = check.timeout {
                if timeout.is_zero() {
                    p.add(format!("{key}.timeout"), "must be greater than 0");
                } else if timeout > MAX_PROBE_INTERVAL {
                    p.at_most(format!("{key}.timeout"), timeout, MAX_PROBE_INTERVAL);
                } else if timeout >= interval {
                    p.add(
                        format!("{key}.timeout"),
                        format!(
                            "must be below daemon.probe_interval ({} is not below {})",
                            fmt_duration(timeout),
                            fmt_duration(interval)
                        ),
                    );
                }
            }
        }

        let policy = &group.policy;
        let pk = format!("{g}.policy");
        if policy.failure_threshold < 1 {
            p.add(
                format!("{pk}.failure_threshold"),
                "must be at least 1 (got 0)",
            );
        }
        if policy.success_threshold < 1 {
            p.add(
                format!("{pk}.success_threshold"),
                "must be at least 1 (got 0)",
            );
        }
        // The API signal, one per workload, one per HTTP check.
        let signals = 1 + group.workloads.len() + group.http_checks.len();
        if policy.quorum < 1 {
            p.add(format!("{pk}.quorum"), "must be at least 1 (got 0)");
        } else if policy.quorum as usize > signals {
            p.add(
                format!("{pk}.quorum"),
                format!(
                    "{} is more than the {signals} primary signal(s) (the API, {} workload(s), {} HTTP check(s)): the primary could never be down",
                    policy.quorum,
                    group.workloads.len(),
                    group.http_checks.len()
                ),
            );
        }
        for (name, value, max) in [
            ("cooldown", policy.cooldown, MAX_COOLDOWN),
            (
                "promotion_timeout",
                policy.promotion_timeout,
                MAX_PROMOTION_TIMEOUT,
            ),
            ("freeze_for", policy.freeze_for, MAX_FREEZE_FOR),
        ] {
            if value.is_zero() {
                p.add(format!("{pk}.{name}"), "must be greater than 0");
            }
            p.at_most(format!("{pk}.{name}"), value, max);
        }
        p.at_most(
            format!("{pk}.startup_grace"),
            policy.startup_grace,
            MAX_STARTUP_GRACE,
        );
        let observers = &policy.observers;
        let ok = format!("{pk}.observers");
        if observers.quorum < 1 {
            p.add(format!("{ok}.quorum"), "must be at least 1 (got 0)");
        }
        match observers.expected {
            Some(0) => p.add(format!("{ok}.expected"), "must be at least 1 (got 0)"),
            Some(expected) if observers.quorum > expected => p.add(
                format!("{ok}.quorum"),
                format!(
                    "{} is more than {ok}.expected ({expected}): the instances could never \
                     agree",
                    observers.quorum
                ),
            ),
            _ => {}
        }
        if let Some(ttl) = observers.ttl {
            if ttl <= self.daemon.probe_interval {
                p.add(
                    format!("{ok}.ttl"),
                    format!(
                        "must be above daemon.probe_interval ({} is not above {}): observers \
                         renew their verdict once per tick",
                        fmt_duration(ttl),
                        fmt_duration(self.daemon.probe_interval)
                    ),
                );
            }
            p.at_most(format!("{ok}.ttl"), ttl, MAX_LEASE_DURATION);
        }
    }

    /// Reads each kubeconfig and checks its context; `known` are the offline problems,
    /// so a same-cluster finding is not reported twice.
    fn kubeconfig_problems(&self, known: &[Problem]) -> Vec<Problem> {
        use crate::kubeconfig::{KubeconfigProblem, resolve};

        let mut p = Problems::default();
        for (group, g) in self.groups.iter().zip(self.group_labels()) {
            let mut servers = Vec::new();
            for (role, cluster) in [("primary", &group.primary), ("standby", &group.standby)] {
                match resolve(cluster.kubeconfig.as_deref(), cluster.context.as_deref()) {
                    Ok(resolved) => servers.push(resolved.and_then(|r| r.server)),
                    Err(problem) => {
                        let field = match problem {
                            KubeconfigProblem::Read { .. }
                            | KubeconfigProblem::Parse { .. }
                            | KubeconfigProblem::Load { .. } => "kubeconfig",
                            KubeconfigProblem::ContextNotFound { .. }
                            | KubeconfigProblem::NoCurrentContext { .. }
                            | KubeconfigProblem::ClusterNotFound { .. } => "context",
                        };
                        p.add(format!("{g}.{role}.{field}"), problem.to_string());
                    }
                }
            }
            let standby_key = format!("{g}.standby");
            if let [Some(Some(primary)), Some(Some(standby))] = [servers.first(), servers.get(1)]
                && primary == standby
                && group.primary.namespace == group.standby.namespace
                && !known.iter().any(|k| k.key == standby_key)
            {
                p.add(
                    standby_key,
                    format!(
                        "its kubeconfig points at the same API server ({standby}) and namespace \
                         ({}) as {g}.primary: a group needs two places",
                        group.standby.namespace
                    ),
                );
            }
        }
        p.0
    }
}

fn into_result(problems: Vec<Problem>) -> Result<(), ConfigError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            file: None,
            problems,
        })
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// Adds a problem when `value` is above `max`.
    fn at_most(&mut self, key: impl Into<String>, value: Duration, max: Duration) {
        if value > max {
            self.add(
                key,
                format!(
                    "must be at most {} (got {})",
                    fmt_duration(max),
                    fmt_duration(value)
                ),
            );
        }
    }

    /// Adds a problem; the message is bounded (it may quote the user's text).
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: printable(&message.into(), MAX_MESSAGE_CHARS),
        });
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Same kubeconfig file (by canonical path when it exists) and context, or both
/// in-cluster, and the same namespace.
fn same_cluster(a: &ClusterConfig, b: &ClusterConfig) -> bool {
    let canonical = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
    };
    a.namespace == b.namespace
        && a.context == b.context
        && canonical(&a.kubeconfig) == canonical(&b.kubeconfig)
}

fn describe_cluster(c: &ClusterConfig) -> String {
    match (&c.kubeconfig, &c.context) {
        (None, None) => format!("in-cluster, namespace {}", c.namespace),
        (k, ctx) => format!(
            "kubeconfig {}, context {}, namespace {}",
            k.as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_else(|| "default".to_string()),
            ctx.as_deref().unwrap_or("(current)"),
            c.namespace
        ),
    }
}

/// RFC 1123 label: what Kubernetes requires of namespace names and what group names
/// must be to form ConfigMap names and metric labels.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: Deployment and ConfigMap names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {}",
            shown(parsed.scheme())
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    Ok(())
}

/// Checks a Kubernetes label selector as the API server parses it: comma-separated
/// requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
/// An empty selector would select every Deployment in the namespace, so it is refused.
pub fn check_label_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("empty (it would select every Deployment in the namespace)".to_string());
    }
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut parts = Vec::new();
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_string());
    }
    parts.push(&selector[start..]);
    parts.into_iter().try_for_each(check_requirement)
}

fn check_requirement(req: &str) -> Result<(), String> {
    let req = req.trim();
    if req.is_empty() {
        return Err("empty requirement (stray comma?)".to_string());
    }
    if let Some(key) = req.strip_prefix('!') {
        return check_label_key(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = req.split_once(op) {
            check_label_key(key.trim())?;
            return check_label_value(value.trim());
        }
    }
    let (key, rest) = match req.find(|c: char| c.is_whitespace() || c == '(') {
        Some(at) => (&req[..at], req[at..].trim_start()),
        None => (req, ""),
    };
    check_label_key(key)?;
    if rest.is_empty() {
        return Ok(());
    }
    let values = rest
        .strip_prefix("notin")
        .or_else(|| rest.strip_prefix("in"))
        .map(str::trim_start)
        .ok_or_else(|| {
            format!(
                "expected =, ==, !=, in or notin after {}, found {}",
                shown(key),
                shown(rest)
            )
        })?;
    let inner = values
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            format!(
                "expected a parenthesised value list after {}, found {}",
                shown(key),
                shown(values)
            )
        })?;
    if inner.trim().is_empty() {
        return Err(format!("empty value list for {}", shown(key)));
    }
    inner.split(',').try_for_each(|v| {
        let v = v.trim();
        if v.is_empty() {
            Err(format!("empty value in the list for {}", shown(key)))
        } else {
            check_label_value(v)
        }
    })
}

/// `[prefix/]name`: prefix a DNS subdomain, name as a label value but non-empty.
fn check_label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!(
                    "label key prefix {} is not a DNS subdomain",
                    shown(prefix)
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(format!("missing label key in {}", shown(key)));
    }
    if !is_label_name(name) {
        return Err(format!(
            "invalid label key {} (letters, digits, '-', '_', '.', starting and ending \
             with a letter or digit, at most 63 characters)",
            shown(key)
        ));
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {} (letters, digits, '-', '_', '.', starting and ending \
             with a letter or digit, at most 63 characters)",
            shown(value)
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && ends_ok(s.chars().next())
        && ends_ok(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A valid env0 group in TOML; `{kc}` is a kubeconfig with contexts `primary` and
    /// `standby`.
    const GOOD: &str = r#"
[daemon]
probe_interval = "2s"
probe_timeout = "1s"

[[groups]]
name = "env0"

[groups.primary]
kubeconfig = "{kc}"
context = "primary"
namespace = "env0-agent"

[groups.standby]
kubeconfig = "{kc}"
context = "standby"
namespace = "env0-agent"

[[groups.workloads]]
selector = "env0=agent-trigger"

[[groups.workloads]]
selector = "env0=agent-proxy"
replicas = 2

[groups.policy]
failure_threshold = 3
quorum = 2

[[groups.http_checks]]
name = "proxy"
url = "http://agent-proxy.example:8080/healthz"
"#;

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: primary
clusters:
- name: p
  cluster: {server: 'https://127.0.0.1:6443'}
- name: s
  cluster: {server: 'https://127.0.0.1:7443'}
contexts:
- name: primary
  context: {cluster: p, user: u}
- name: standby
  context: {cluster: s, user: u}
- name: standby-alias
  context: {cluster: p, user: u}
users:
- name: u
  user: {token: abc}
";

    struct Fixture {
        dir: tempfile::TempDir,
        kubeconfig: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let kubeconfig = dir.path().join("clusters.kubeconfig");
            std::fs::write(&kubeconfig, KUBECONFIG).expect("write kubeconfig");
            Fixture { dir, kubeconfig }
        }

        /// Writes `text` (with `{kc}` replaced) as the config file.
        fn file(&self, text: &str) -> PathBuf {
            let path = self.dir.path().join("config.toml");
            let text = text.replace("{kc}", &self.kubeconfig.display().to_string());
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write config");
            path
        }

        fn load(&self, text: &str) -> Result<Config, ConfigError> {
            self.load_env(text, &[])
        }

        fn load_env(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
            Config::load_with_env(&self.file(text), env.iter().copied())
        }

        fn good(&self) -> Config {
            self.load(GOOD).expect("GOOD loads")
        }
    }

    fn load_error(f: &Fixture, text: &str) -> String {
        f.load(text).expect_err("must not load").to_string()
    }

    /// The problems of `cfg`, each as `key: message`.
    fn problems(cfg: &Config) -> Vec<String> {
        match cfg.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Asserts that exactly one problem is reported, on `key`, and returns its message.
    #[track_caller]
    fn only_problem(cfg: &Config, key: &str) -> String {
        let all = cfg.validate().expect_err("must be invalid");
        let problems = all.problems();
        assert_eq!(problems.len(), 1, "{all}");
        assert_eq!(problems[0].key, key, "{all}");
        problems[0].message.clone()
    }

    // --- loading ------------------------------------------------------------------

    #[test]
    fn good_config_loads_validates_and_fills_defaults() {
        let f = Fixture::new();
        let cfg = f.good();
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert_eq!(cfg.daemon.probe_interval, Duration::from_secs(2));
        assert_eq!(cfg.daemon.mode, Mode::Auto);
        let g = &cfg.groups[0];
        assert_eq!(g.workloads[0].replicas, 1);
        assert_eq!(g.workloads[1].replicas, 2);
        assert_eq!(g.policy.success_threshold, 1);
        assert_eq!(g.policy.cooldown, Duration::from_secs(600));
        assert_eq!(g.http_checks[0].expected_status, 200);
    }

    #[test]
    fn environment_overrides_daemon_keys() {
        let f = Fixture::new();
        let cfg = f
            .load_env(
                GOOD,
                &[
                    ("KUBE_FAILOVER__DAEMON__MODE", "observe"),
                    ("KUBE_FAILOVER__DAEMON__PROBE_INTERVAL", "4s"),
                    ("KUBE_FAILOVER__DAEMON__IDENTITY", "0123"),
                    ("OTHER__DAEMON__MODE", "auto"),
                ],
            )
            .unwrap();
        assert_eq!(cfg.daemon.mode, Mode::Observe);
        assert_eq!(cfg.daemon.probe_interval, Duration::from_secs(4));
        // A numeric-looking string stays a string (try_parsing is off on purpose).
        assert_eq!(cfg.daemon.identity.as_deref(), Some("0123"));
    }

    #[test]
    fn environment_overrides_group_keys_by_index_keeping_the_rest() {
        let f = Fixture::new();
        let cfg = f
            .load_env(
                GOOD,
                &[
                    ("KUBE_FAILOVER__GROUPS__0__POLICY__FAILURE_THRESHOLD", "5"),
                    ("KUBE_FAILOVER__GROUPS__0__WORKLOADS__1__REPLICAS", "3"),
                ],
            )
            .unwrap();
        let g = &cfg.groups[0];
        assert_eq!(g.policy.failure_threshold, 5);
        assert_eq!(g.policy.quorum, 2);
        assert_eq!(g.workloads[1].replicas, 3);
        assert_eq!(
            g.workloads[0].selector.as_deref(),
            Some("env0=agent-trigger")
        );
        assert_eq!(g.name, "env0");
    }

    #[test]
    fn environment_override_of_a_missing_list_element_is_rejected() {
        let f = Fixture::new();
        let err = f
            .load_env(GOOD, &[("KUBE_FAILOVER__GROUPS__1__NAME", "second")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable KUBE_FAILOVER__GROUPS__1__NAME: "),
            "{err}"
        );
        assert!(err.contains("index 1 does not exist"), "{err}");
    }

    #[test]
    fn environment_override_of_a_list_without_index_is_rejected() {
        let f = Fixture::new();
        let err = f
            .load_env(GOOD, &[("KUBE_FAILOVER__GROUPS__NAME", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KUBE_FAILOVER__GROUPS__NAME"), "{err}");
        assert!(err.contains("KUBE_FAILOVER__GROUPS__0__NAME"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_naming_its_path_and_file() {
        let f = Fixture::new();
        let text = GOOD.replace("failure_threshold = 3", "failure_treshold = 3");
        let err = load_error(&f, &text);
        let file = f.dir.path().join("config.toml").display().to_string();
        assert!(
            err.starts_with(&format!("{file}: groups[env0].policy.failure_treshold: ")),
            "{err}"
        );
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn unknown_top_level_and_daemon_keys_are_rejected() {
        let f = Fixture::new();
        let err = load_error(&f, &format!("colour = \"blue\"\n{GOOD}"));
        assert!(err.contains(": colour: unknown field"), "{err}");
        let err = load_error(
            &f,
            &GOOD.replace("[daemon]", "[daemon]\nprobe_intervall = \"1s\""),
        );
        assert!(
            err.contains(": daemon.probe_intervall: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_from_the_environment_names_the_variable() {
        let f = Fixture::new();
        let err = f
            .load_env(GOOD, &[("KUBE_FAILOVER__DAEMON__PROBE_INTERVALL", "2s")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(": daemon.probe_intervall (set by environment variable KUBE_FAILOVER__DAEMON__PROBE_INTERVALL): unknown field"), "{err}");
    }

    #[test]
    fn malformed_duration_names_the_key() {
        let f = Fixture::new();
        let err = load_error(
            &f,
            &GOOD.replace("probe_interval = \"2s\"", "probe_interval = \"2 parsecs\""),
        );
        assert!(err.contains(": daemon.probe_interval: invalid value: string \"2 parsecs\", expected a duration such as"), "{err}");
        let err = load_error(&f, &GOOD.replace("quorum = 2", "quorum = 2\ncooldown = 10"));
        assert!(err.contains(": groups[env0].policy.cooldown: "), "{err}");
        assert!(err.contains("expected a duration"), "{err}");
    }

    #[test]
    fn malformed_duration_from_the_environment_names_key_and_variable() {
        let f = Fixture::new();
        let err = f
            .load_env(GOOD, &[("KUBE_FAILOVER__DAEMON__PROBE_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(": daemon.probe_timeout (set by environment variable KUBE_FAILOVER__DAEMON__PROBE_TIMEOUT): invalid value"), "{err}");
    }

    #[test]
    fn wrong_types_and_negative_thresholds_name_the_key() {
        let f = Fixture::new();
        let err = load_error(
            &f,
            &GOOD.replace("failure_threshold = 3", "failure_threshold = \"three\""),
        );
        assert!(
            err.contains(": groups[env0].policy.failure_threshold: "),
            "{err}"
        );
        let err = load_error(
            &f,
            &GOOD.replace("failure_threshold = 3", "failure_threshold = -1"),
        );
        assert!(
            err.contains(": groups[env0].policy.failure_threshold: "),
            "{err}"
        );
        let err = load_error(&f, &GOOD.replace("replicas = 2", "replicas = \"two\""));
        assert!(
            err.contains(": groups[env0].workloads[1].replicas: "),
            "{err}"
        );
        let err = load_error(&f, &GOOD.replace("[daemon]", "[daemon]\nmode = \"yolo\""));
        assert!(err.contains(": daemon.mode: "), "{err}");
        assert!(err.contains("yolo"), "{err}");
    }

    #[test]
    fn missing_required_key_names_the_table() {
        let f = Fixture::new();
        let text = GOOD.replacen("namespace = \"env0-agent\"", "", 1);
        let err = load_error(&f, &text);
        assert!(
            err.contains(": groups[env0].primary: missing field `namespace`"),
            "{err}"
        );
    }

    #[test]
    fn group_index_is_used_when_the_name_is_not_known() {
        let f = Fixture::new();
        let text = GOOD
            .replace("name = \"env0\"", "")
            .replace("failure_threshold = 3", "failure_threshold = \"x\"");
        let err = load_error(&f, &text);
        assert!(err.contains(": groups[0]"), "{err}");
    }

    #[test]
    fn missing_or_malformed_file_names_the_file() {
        let f = Fixture::new();
        let absent = f.dir.path().join("absent.toml");
        let err = Config::load(&absent).unwrap_err().to_string();
        assert!(err.starts_with(&absent.display().to_string()), "{err}");
        let err = load_error(&f, "[daemon\nprobe_interval = 1");
        let file = f.dir.path().join("config.toml").display().to_string();
        assert_eq!(
            err,
            format!(
                "{file}: not valid TOML at line 1, column 8: unclosed table, expected `]`\n  \
                 1 | [daemon\n    |        ^"
            )
        );
    }

    /// Writes raw bytes as the config file and returns the load error's message.
    fn bytes_error(f: &Fixture, bytes: &[u8]) -> String {
        let path = f.dir.path().join("config.toml");
        std::fs::write(&path, bytes).expect("write config");
        Config::load(&path).expect_err("must not load").to_string()
    }

    /// Every character of a message is printable: no control byte reaches a terminal.
    #[track_caller]
    fn assert_printable(message: &str) {
        assert!(
            message.chars().all(|c| c == '\n' || !c.is_control()),
            "control character in {message:?}"
        );
    }

    #[test]
    fn binary_file_is_refused_without_echoing_it() {
        let f = Fixture::new();
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let err = bytes_error(&f, &garbage);
        assert!(err.contains(": is not UTF-8 text (byte 0x"), "{err}");
        assert!(err.contains("not a configuration file"), "{err}");
        assert_printable(&err);
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn control_bytes_in_a_toml_error_are_escaped() {
        let f = Fixture::new();
        let err = bytes_error(&f, b"[daemon]\nmode = \"a\0b\x1b[31m\"\n");
        assert!(
            err.contains("not valid TOML at line 2, column 10: "),
            "{err}"
        );
        assert!(err.contains("\n  2 | mode = \"a\\0b"), "{err}");
        assert!(err.ends_with("\n    |          ^"), "{err}");
        assert_printable(&err);
    }

    #[test]
    fn a_long_line_is_cut_around_the_error() {
        let f = Fixture::new();
        let mut text = "x".repeat(100_000);
        text.push_str(" = ");
        let err = bytes_error(&f, text.as_bytes());
        assert!(
            err.contains("not valid TOML at line 1, column 100004: "),
            "{err}"
        );
        let excerpt = err.lines().nth(1).expect("excerpt line");
        assert!(excerpt.starts_with("  1 | …x"), "{err}");
        assert!(excerpt.len() < 120, "{err}");
        // The caret sits under the column, just past the end of the line.
        let caret = err.lines().nth(2).expect("caret line");
        assert_eq!(
            caret.chars().count(),
            excerpt.chars().count() + 1,
            "{excerpt}\n{caret}"
        );

        let text = format!("[daemon]\nprobe_interval = 5{}\n", " y".repeat(50_000));
        let err = bytes_error(&f, text.as_bytes());
        assert!(
            err.contains("not valid TOML at line 2, column 18: "),
            "{err}"
        );
        let excerpt = err.lines().nth(1).expect("excerpt line");
        assert!(
            excerpt.starts_with("  2 | probe_interval = 5 y y")
                && excerpt.ends_with(" y… (cut, 100018 characters in all)"),
            "{err}"
        );
        assert!(
            err.ends_with(&format!("\n    | {}^", " ".repeat(17))),
            "{err}"
        );
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn oversized_file_and_directory_are_refused() {
        let f = Fixture::new();
        let big = vec![b'#'; MAX_FILE_BYTES as usize + 1];
        let err = bytes_error(&f, &big);
        assert!(
            err.ends_with(
                ": is larger than 1 MiB: not a configuration file (is it the right path?)"
            ),
            "{err}"
        );
        let err = Config::load(f.dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: is a directory, not a configuration file",
                f.dir.path().display()
            )
        );
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let f = Fixture::new();
        let path = f.file(GOOD);
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend(std::fs::read(&path).unwrap());
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(Config::load(&path).expect("loads"), f.good());
    }

    #[test]
    fn unknown_enum_values_list_the_valid_ones() {
        let f = Fixture::new();
        let err = load_error(&f, &GOOD.replace("[daemon]", "[daemon]\nmode = \"yolo\""));
        assert!(
            err.ends_with(
                ": daemon.mode: unknown value \"yolo\": use one of \"observe\", \"auto\""
            ),
            "{err}"
        );
        let err = load_error(
            &f,
            &GOOD.replace("[daemon]", "[daemon]\nlog_format = \"xml\""),
        );
        assert!(
            err.ends_with(
                ": daemon.log_format: unknown value \"xml\": use one of \"text\", \"json\""
            ),
            "{err}"
        );
        let err = f
            .load_env(GOOD, &[("KUBE_FAILOVER__DAEMON__MODE", "\u{1b}[2J")])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                ": daemon.mode (set by environment variable KUBE_FAILOVER__DAEMON__MODE): \
                 unknown value \"\\u{1b}[2J\": use one of \"observe\", \"auto\""
            ),
            "{err}"
        );
        let cfg = f
            .load(&GOOD.replace(
                "[daemon]",
                "[daemon]\nmode = \"observe\"\nlog_format = \"json\"",
            ))
            .expect("valid values load");
        assert_eq!(cfg.daemon.mode, Mode::Observe);
        assert_eq!(cfg.daemon.log_format, LogFormat::Json);
    }

    #[test]
    fn long_or_unprintable_keys_and_values_are_escaped_and_cut() {
        let f = Fixture::new();
        let key = "k\\u001b".repeat(10_000);
        let err = load_error(
            &f,
            &GOOD.replace("[daemon]", &format!("[daemon]\n\"{key}\" = 1")),
        );
        assert!(err.contains(": daemon.k\\u{1b}k"), "{err}");
        assert!(err.contains("(cut, 20000 characters in all)"), "{err}");
        assert!(err.contains("expected one of `probe_interval`"), "{err}");
        assert!(err.len() < 2000, "{}", err.len());
        assert_printable(&err);

        let mut cfg = f.good();
        cfg.groups[0].name = format!("{}\u{7}", "n".repeat(100_000));
        let msg = only_problem(&cfg, "groups[0].name");
        assert!(
            msg.starts_with(&format!(
                "\"{}\"… (cut, 100001 characters in all) is not a DNS label",
                "n".repeat(60)
            )),
            "{msg}"
        );
        assert!(msg.ends_with("metric labels"), "{msg}");
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(
            printable("a\0b\u{1b}c\u{202e}\"'\\é", 100),
            "a\\0b\\u{1b}c\\u{202e}\"'\\é"
        );
        assert_eq!(printable("abcdef", 3), "abc… (cut, 6 characters in all)");
        assert_eq!(printable("abc", 3), "abc");
    }

    #[test]
    fn resolved_config_prints_normalised_durations_and_defaults() {
        let f = Fixture::new();
        let text = GOOD.replace("probe_interval = \"2s\"", "probe_interval = \"2000ms\"");
        let cfg = f.load(&text).unwrap().resolved();
        assert_eq!(
            cfg.groups[0].record_name.as_deref(),
            Some("kube-failover-env0")
        );
        assert_eq!(
            cfg.groups[0].http_checks[0].timeout,
            Some(Duration::from_secs(1))
        );
        let toml = cfg.to_toml().unwrap();
        assert!(toml.contains("probe_interval = \"2s\""), "{toml}");
        assert!(toml.contains("cooldown = \"10m\""), "{toml}");
        assert!(
            toml.contains("record_name = \"kube-failover-env0\""),
            "{toml}"
        );
        // What it prints loads back to the same configuration.
        let again = f.load(&toml).unwrap();
        assert_eq!(again, cfg);
    }

    // --- validation ---------------------------------------------------------------

    #[test]
    fn at_least_one_group() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups.clear();
        only_problem(&cfg, "groups");
    }

    #[test]
    fn duplicate_group_names() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let mut second = cfg.groups[0].clone();
        second.record_name = Some("other-record".into());
        cfg.groups.push(second);
        let msg = only_problem(&cfg, "groups[1].name");
        assert!(msg.contains("duplicate group name \"env0\""), "{msg}");
    }

    #[test]
    fn group_name_must_be_a_dns_label() {
        let f = Fixture::new();
        for bad in ["Env0", "env_0", "-env0", "", &"a".repeat(64)] {
            let mut cfg = f.good();
            cfg.groups[0].name = bad.to_string();
            let msg = only_problem(&cfg, "groups[0].name");
            assert!(msg.contains("not a DNS label"), "{msg}");
        }
    }

    #[test]
    fn thresholds_must_be_at_least_one() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].policy.failure_threshold = 0;
        only_problem(&cfg, "groups[env0].policy.failure_threshold");
        let mut cfg = f.good();
        cfg.groups[0].policy.success_threshold = 0;
        only_problem(&cfg, "groups[env0].policy.success_threshold");
    }

    #[test]
    fn quorum_between_one_and_the_number_of_signals() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].policy.quorum = 0;
        only_problem(&cfg, "groups[env0].policy.quorum");
        // API + 2 workloads + 1 HTTP check = 4 signals.
        let mut cfg = f.good();
        cfg.groups[0].policy.quorum = 4;
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.groups[0].policy.quorum = 5;
        let msg = only_problem(&cfg, "groups[env0].policy.quorum");
        assert!(msg.contains("more than the 4 primary signal(s)"), "{msg}");
    }

    #[test]
    fn observer_quorum_and_leader_timing_are_checked_naming_the_key() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let obs = &mut cfg.groups[0].policy.observers;
        obs.quorum = 2;
        obs.expected = Some(3);
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.groups[0].policy.observers.quorum = 4;
        let msg = only_problem(&cfg, "groups[env0].policy.observers.quorum");
        assert!(
            msg.contains("more than groups[env0].policy.observers.expected (3)"),
            "{msg}"
        );
        cfg.groups[0].policy.observers.quorum = 0;
        only_problem(&cfg, "groups[env0].policy.observers.quorum");
        cfg.groups[0].policy.observers.quorum = 1;
        cfg.groups[0].policy.observers.expected = Some(0);
        only_problem(&cfg, "groups[env0].policy.observers.expected");
        cfg.groups[0].policy.observers.expected = None;
        cfg.groups[0].policy.observers.ttl = Some(cfg.daemon.probe_interval);
        only_problem(&cfg, "groups[env0].policy.observers.ttl");
        cfg.groups[0].policy.observers.ttl = None;

        // Defaults: 3 intervals (at least 3s), deadline two thirds of it.
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.daemon.leader.lease_duration = Some(Duration::from_secs(30));
        cfg.daemon.leader.renew_deadline = Some(Duration::from_secs(30));
        let msg = only_problem(&cfg, "daemon.leader.renew_deadline");
        assert!(
            msg.starts_with("must be below daemon.leader.lease_duration"),
            "{msg}"
        );
        cfg.daemon.leader.renew_deadline = Some(cfg.daemon.probe_interval);
        let msg = only_problem(&cfg, "daemon.leader.renew_deadline");
        assert!(
            msg.starts_with("must be above daemon.probe_interval"),
            "{msg}"
        );
        cfg.daemon.leader.renew_deadline = None;
        cfg.daemon.leader.lease_duration = Some(Duration::ZERO);
        only_problem(&cfg, "daemon.leader.lease_duration");
    }

    #[test]
    fn probe_interval_positive_and_timeout_below_it() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.probe_timeout = Duration::from_secs(2);
        let msg = only_problem(&cfg, "daemon.probe_timeout");
        assert!(msg.contains("2s is not below 2s"), "{msg}");
        let mut cfg = f.good();
        cfg.daemon.probe_timeout = Duration::ZERO;
        only_problem(&cfg, "daemon.probe_timeout");
        let mut cfg = f.good();
        cfg.daemon.probe_interval = Duration::ZERO;
        let all = problems(&cfg);
        assert!(
            all.iter()
                .any(|p| p.starts_with("daemon.probe_interval: must be greater than 0")),
            "{all:?}"
        );
    }

    #[test]
    fn identity_is_short_and_printable() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.identity = Some("w".repeat(MAX_IDENTITY_CHARS));
        assert_eq!(problems(&cfg), Vec::<String>::new());
        cfg.daemon.identity = Some("w".repeat(MAX_IDENTITY_CHARS + 1));
        let msg = only_problem(&cfg, "daemon.identity");
        assert!(
            msg.starts_with("must be at most 128 characters (got 129)"),
            "{msg}"
        );
        cfg.daemon.identity = Some("watcher\n1".into());
        let msg = only_problem(&cfg, "daemon.identity");
        assert!(
            msg.starts_with("\"watcher\\n1\" contains control characters"),
            "{msg}"
        );
        cfg.daemon.identity = Some(" ".into());
        only_problem(&cfg, "daemon.identity");
    }

    #[test]
    fn durations_have_upper_bounds_naming_the_key() {
        let f = Fixture::new();
        let over = |max: Duration| max + Duration::from_secs(1);
        type Set = fn(&mut Config, Duration);
        let cases: [(&str, Set, Duration); 8] = [
            (
                "daemon.probe_interval",
                |c, d| c.daemon.probe_interval = d,
                MAX_PROBE_INTERVAL,
            ),
            (
                "daemon.probe_timeout",
                |c, d| c.daemon.probe_timeout = d,
                MAX_PROBE_INTERVAL,
            ),
            (
                "daemon.shutdown_timeout",
                |c, d| c.daemon.shutdown_timeout = d,
                MAX_SHUTDOWN_TIMEOUT,
            ),
            (
                "groups[env0].policy.cooldown",
                |c, d| c.groups[0].policy.cooldown = d,
                MAX_COOLDOWN,
            ),
            (
                "groups[env0].policy.startup_grace",
                |c, d| c.groups[0].policy.startup_grace = d,
                MAX_STARTUP_GRACE,
            ),
            (
                "groups[env0].policy.promotion_timeout",
                |c, d| c.groups[0].policy.promotion_timeout = d,
                MAX_PROMOTION_TIMEOUT,
            ),
            (
                "groups[env0].policy.freeze_for",
                |c, d| c.groups[0].policy.freeze_for = d,
                MAX_FREEZE_FOR,
            ),
            (
                "groups[env0].http_checks[0].timeout",
                |c, d| c.groups[0].http_checks[0].timeout = Some(d),
                MAX_PROBE_INTERVAL,
            ),
        ];
        for (key, set, max) in cases {
            let mut cfg = f.good();
            // The largest value a duration can hold is refused, not overflowed.
            for value in [over(max), Duration::MAX] {
                set(&mut cfg, value);
                let problems = problems(&cfg);
                let expected = format!(
                    "{key}: must be at most {} (got {})",
                    fmt_duration(max),
                    fmt_duration(value)
                );
                assert!(problems.contains(&expected), "{expected} in {problems:?}");
            }
            // The bound itself is allowed (the probe timeout must also stay below the
            // interval, so raise the interval with it).
            let mut cfg = f.good();
            cfg.daemon.probe_interval = MAX_PROBE_INTERVAL;
            set(&mut cfg, max);
            if key != "daemon.probe_interval" && max == MAX_PROBE_INTERVAL {
                set(&mut cfg, max - Duration::from_secs(1));
            }
            assert_eq!(problems(&cfg), Vec::<String>::new(), "{key}");
        }
    }

    #[test]
    fn cooldown_promotion_timeout_and_freeze_must_be_positive() {
        let f = Fixture::new();
        for (field, set) in [
            (
                "cooldown",
                (|p: &mut PolicyConfig| p.cooldown = Duration::ZERO) as fn(&mut PolicyConfig),
            ),
            ("promotion_timeout", |p| {
                p.promotion_timeout = Duration::ZERO
            }),
            ("freeze_for", |p| p.freeze_for = Duration::ZERO),
        ] {
            let mut cfg = f.good();
            set(&mut cfg.groups[0].policy);
            only_problem(&cfg, &format!("groups[env0].policy.{field}"));
        }
    }

    #[test]
    fn workloads_need_exactly_one_of_name_and_selector() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].workloads[0].name = Some("env0-agent-trigger-deployment".into());
        let msg = only_problem(&cfg, "groups[env0].workloads[0]");
        assert!(msg.contains("not both"), "{msg}");
        let mut cfg = f.good();
        cfg.groups[0].workloads[0].selector = None;
        only_problem(&cfg, "groups[env0].workloads[0]");
        let mut cfg = f.good();
        cfg.groups[0].workloads[0].selector = None;
        cfg.groups[0].workloads[0].name = Some("Not_A_Name".into());
        only_problem(&cfg, "groups[env0].workloads[0].name");
    }

    #[test]
    fn at_least_one_workload_and_no_duplicates() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].workloads.clear();
        cfg.groups[0].policy.quorum = 1;
        only_problem(&cfg, "groups[env0].workloads");
        let mut cfg = f.good();
        cfg.groups[0].workloads[1].selector = cfg.groups[0].workloads[0].selector.clone();
        only_problem(&cfg, "groups[env0].workloads[1]");
    }

    #[test]
    fn selector_garbage_is_rejected() {
        let f = Fixture::new();
        for bad in [
            "",
            "env0=agent trigger",
            "env0 is agent",
            "=x",
            "env0 in (a",
            "env0 in ()",
            "a=b,,c=d",
            "env0=-x",
            "-k=v",
        ] {
            let mut cfg = f.good();
            cfg.groups[0].workloads[0].selector = Some(bad.to_string());
            let msg = only_problem(&cfg, "groups[env0].workloads[0].selector");
            assert!(msg.contains("is not a label selector"), "{bad}: {msg}");
        }
    }

    #[test]
    fn selector_forms_the_api_server_accepts() {
        for good in [
            "env0=agent-trigger",
            "env0==agent-trigger",
            "env0!=agent-proxy",
            "app.kubernetes.io/name=env0-agent,env0=agent-trigger",
            "env0 in (agent-trigger, agent-proxy)",
            "env0 notin (agent-proxy)",
            "env0",
            "!legacy",
            "tier=",
            " env0 = agent-trigger ",
        ] {
            assert_eq!(check_label_selector(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn replicas_must_be_at_least_one() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].workloads[1].replicas = 0;
        only_problem(&cfg, "groups[env0].workloads[1].replicas");
    }

    #[test]
    fn http_check_url_must_be_absolute_http() {
        let f = Fixture::new();
        for bad in ["/healthz", "ftp://example/x", "http://", "not a url"] {
            let mut cfg = f.good();
            cfg.groups[0].http_checks[0].url = bad.to_string();
            only_problem(&cfg, "groups[env0].http_checks[0].url");
        }
    }

    #[test]
    fn http_check_status_names_and_timeout() {
        let f = Fixture::new();
        for status in [0, 99, 600] {
            let mut cfg = f.good();
            cfg.groups[0].http_checks[0].expected_status = status;
            only_problem(&cfg, "groups[env0].http_checks[0].expected_status");
        }
        let mut cfg = f.good();
        let dup = cfg.groups[0].http_checks[0].clone();
        cfg.groups[0].http_checks.push(dup);
        let msg = only_problem(&cfg, "groups[env0].http_checks[1].name");
        assert!(msg.contains("duplicate"), "{msg}");
        let mut cfg = f.good();
        cfg.groups[0].http_checks[0].timeout = Some(Duration::from_secs(2));
        only_problem(&cfg, "groups[env0].http_checks[0].timeout");
    }

    #[test]
    fn same_cluster_and_namespace_on_both_sides() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("primary".into());
        let msg = only_problem(&cfg, "groups[env0].standby");
        assert!(msg.contains("same cluster and namespace"), "{msg}");
        // Both in-cluster in one namespace.
        let mut cfg = f.good();
        let group = &mut cfg.groups[0];
        for c in [&mut group.primary, &mut group.standby] {
            c.kubeconfig = None;
            c.context = None;
        }
        let all = cfg.validate_offline().unwrap_err();
        assert_eq!(all.problems().len(), 1, "{all}");
        assert_eq!(all.problems()[0].key, "groups[env0].standby");
        // Same cluster, other namespace: allowed.
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("primary".into());
        cfg.groups[0].standby.namespace = "env0-agent-standby".into();
        assert_eq!(problems(&cfg), Vec::<String>::new());
    }

    #[test]
    fn another_context_for_the_same_server_is_the_same_cluster() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("standby-alias".into());
        let msg = only_problem(&cfg, "groups[env0].standby");
        assert!(msg.contains("https://127.0.0.1:6443"), "{msg}");
    }

    #[test]
    fn namespace_must_be_a_dns_label() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].primary.namespace = "Env0_Agent".into();
        only_problem(&cfg, "groups[env0].primary.namespace");
    }

    #[test]
    fn unreadable_kubeconfig_names_the_file() {
        let f = Fixture::new();
        let mut cfg = f.good();
        let absent = f.dir.path().join("absent.kubeconfig");
        cfg.groups[0].standby.kubeconfig = Some(absent.clone());
        let msg = only_problem(&cfg, "groups[env0].standby.kubeconfig");
        assert!(msg.contains(&absent.display().to_string()), "{msg}");
        // Offline validation does not read it.
        assert!(cfg.validate_offline().is_ok());
    }

    #[test]
    fn missing_context_names_the_context_and_the_file() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.groups[0].standby.context = Some("dr".into());
        let msg = only_problem(&cfg, "groups[env0].standby.context");
        assert!(msg.contains("\"dr\""), "{msg}");
        assert!(msg.contains(&f.kubeconfig.display().to_string()), "{msg}");
    }

    #[test]
    fn without_context_the_current_context_must_exist() {
        let f = Fixture::new();
        let no_current = f.dir.path().join("no-current.kubeconfig");
        std::fs::write(
            &no_current,
            KUBECONFIG.replace("current-context: primary\n", ""),
        )
        .unwrap();
        let mut cfg = f.good();
        cfg.groups[0].standby.kubeconfig = Some(no_current);
        cfg.groups[0].standby.context = None;
        let msg = only_problem(&cfg, "groups[env0].standby.context");
        assert!(msg.contains("current-context"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.daemon.probe_timeout = Duration::from_secs(9);
        cfg.groups[0].policy.failure_threshold = 0;
        cfg.groups[0].workloads[0].replicas = 0;
        cfg.groups[0].standby.context = Some("dr".into());
        let err = cfg
            .validate()
            .unwrap_err()
            .with_file(Path::new("config.toml"));
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "daemon.probe_timeout",
                "groups[env0].workloads[0].replicas",
                "groups[env0].policy.failure_threshold",
                "groups[env0].standby.context",
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "config.toml: invalid configuration (4 problems):\n  daemon.probe_timeout: "
            ),
            "{text}"
        );
    }

    #[test]
    fn example_config_parses_and_validates_with_its_kubeconfigs_in_place() {
        let f = Fixture::new();
        let example = include_str!("../config.example.toml");
        // Point the example's kubeconfig paths at a real file with its contexts.
        let kc = f.dir.path().join("example.kubeconfig");
        let cfg = Config::load_with_env(&f.file(example), [("X", "y")]).expect("example loads");
        let mut contexts = Vec::new();
        for g in &cfg.groups {
            contexts.push(g.primary.context.clone().expect("primary context"));
            contexts.push(g.standby.context.clone().expect("standby context"));
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{}contexts:\n{}users:\n- name: u\n  user: {{token: t}}\n",
            contexts
                .iter()
                .enumerate()
                .map(|(i, _)| format!(
                    "- name: c{i}\n  cluster: {{server: 'https://127.0.0.{}:6443'}}\n",
                    i + 1
                ))
                .collect::<String>(),
            contexts
                .iter()
                .enumerate()
                .map(|(i, c)| format!("- name: {c}\n  context: {{cluster: c{i}, user: u}}\n"))
                .collect::<String>(),
        );
        std::fs::write(&kc, yaml).unwrap();
        let mut text = example.to_string();
        for g in &cfg.groups {
            for k in [&g.primary.kubeconfig, &g.standby.kubeconfig]
                .into_iter()
                .flatten()
            {
                text = text.replace(
                    &format!("\"{}\"", k.display()),
                    &format!("\"{}\"", kc.display()),
                );
            }
        }
        let cfg =
            Config::load_with_env(&f.file(&text), [("X", "y")]).expect("rewritten example loads");
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert_eq!(cfg.groups.len(), 1);
        assert_eq!(cfg.groups[0].name, "env0");
        let selectors: Vec<_> = cfg.groups[0]
            .workloads
            .iter()
            .filter_map(|w| w.selector.as_deref())
            .collect();
        assert_eq!(selectors, ["env0=agent-trigger", "env0=agent-proxy"]);
        // Every key shown in the example has its default value: the example loaded
        // equals the defaults for everything it does not have to set.
        assert_eq!(cfg.daemon, DaemonConfig::default());
        assert_eq!(cfg.groups[0].policy, PolicyConfig::default());
    }
}
