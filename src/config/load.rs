//! Loading: reads the file (bounded, UTF-8, TOML errors quoted safely), applies
//! `KUBE_FAILOVER__…` environment overrides, and names the key path of a value that does
//! not fit its typed field.

use super::quote::{MAX_MESSAGE_CHARS, push_printable, tame_message};
use super::{Config, ConfigError, is_dns_label, printable};
use kube_failover_core::text::{MAX_QUOTE_CHARS, cut_note};
use std::path::Path;

/// Prefix of environment overrides: `KUBE_FAILOVER__DAEMON__MODE=observe`.
pub const ENV_PREFIX: &str = "KUBE_FAILOVER";

/// Separates the prefix and each key level in an override's name. Two underscores, so
/// that keys with one underscore (`probe_interval`) stay one level.
pub const ENV_SEPARATOR: &str = "__";

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
pub(super) fn group_label(index: usize, names: &[Option<String>]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{Fixture, GOOD, load_error, only_problem, problems};
    use crate::config::{LogFormat, Mode, WatchScope};
    use std::time::Duration;

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
                &GOOD,
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
                &GOOD,
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
            .load_env(&GOOD, &[("KUBE_FAILOVER__GROUPS__1__NAME", "second")])
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
            .load_env(&GOOD, &[("KUBE_FAILOVER__GROUPS__NAME", "x")])
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
        let err = load_error(&f, &format!("colour = \"blue\"\n{}", *GOOD));
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
            .load_env(&GOOD, &[("KUBE_FAILOVER__DAEMON__PROBE_INTERVALL", "2s")])
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
            .load_env(&GOOD, &[("KUBE_FAILOVER__DAEMON__PROBE_TIMEOUT", "soon")])
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
        let path = f.file(&GOOD);
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
        let err = load_error(
            &f,
            &GOOD.replace("[daemon]", "[daemon]\nwatch_scope = \"everywhere\""),
        );
        assert!(
            err.ends_with(
                ": daemon.watch_scope: unknown value \"everywhere\": use one of \"namespaces\", \"cluster\""
            ),
            "{err}"
        );
        let f2 = f.file(&GOOD.replace("[daemon]", "[daemon]\nwatch_scope = \"cluster\""));
        assert_eq!(
            Config::load(&f2).expect("loads").daemon.watch_scope,
            WatchScope::Cluster
        );
        let err = f
            .load_env(&GOOD, &[("KUBE_FAILOVER__DAEMON__MODE", "\u{1b}[2J")])
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
}
