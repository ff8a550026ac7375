//! `[notify]`: the webhooks that get a notice when a promotion completes or fails and
//! when the group is failed back, and the checks of their keys.

use super::names::check_url;
use super::validate::{Problems, fmt_duration};
use super::{Config, ConfigError, Problem, printable};
use crate::error_chain::chain;
use kube_failover_core::text::{choose, shown};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Upper bound of `notify.webhooks[].timeout`: a receiver slower than this is down.
pub const MAX_NOTICE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of `notify.queue`.
pub const MAX_NOTICE_QUEUE: usize = 10_000;
/// Upper bound of a `secret_file`'s size: a header value, not a document.
pub const MAX_SECRET_FILE_BYTES: u64 = 8 * 1024;

/// `[notify]`: where notices go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Notices waiting for each webhook, at most; when full, the oldest is dropped (and
    /// counted).
    pub queue: usize,
    /// `[[notify.webhooks]]`.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            queue: 100,
            webhooks: Vec::new(),
        }
    }
}

/// The events a notice is sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NoticeEvent {
    /// A promotion completed: the standby is active and Ready.
    Promotion,
    /// The failover record is back at `primary` after a promotion.
    Failback,
    /// A promotion did not complete in time (record phase `failed`).
    Failed,
}

impl NoticeEvent {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [NoticeEvent; 3] = [
        NoticeEvent::Promotion,
        NoticeEvent::Failback,
        NoticeEvent::Failed,
    ];

    /// The config value and metric label: `promotion`, `failback`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Promotion => "promotion",
            NoticeEvent::Failback => "failback",
            NoticeEvent::Failed => "failed",
        }
    }
}

impl TryFrom<String> for NoticeEvent {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &NoticeEvent::ALL, |e| e.as_str())
    }
}

impl std::fmt::Display for NoticeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a notice is written in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NoticeFormat {
    /// The notice document (schema in the README).
    Json,
    /// A Slack-compatible message (`text` and `blocks`) with the same content.
    Slack,
}

impl NoticeFormat {
    /// Every format, in the order the documentation lists them.
    pub const ALL: [NoticeFormat; 2] = [NoticeFormat::Json, NoticeFormat::Slack];

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeFormat::Json => "json",
            NoticeFormat::Slack => "slack",
        }
    }
}

impl TryFrom<String> for NoticeFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &NoticeFormat::ALL, |f| f.as_str())
    }
}

/// `[[notify.webhooks]]`: one receiver of notices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; labels the metric and names the webhook in logs (its URL never is: it
    /// may carry a token).
    pub name: String,
    /// Absolute http(s) URL the notice is POSTed to.
    pub url: String,
    /// `json` (default) or `slack`.
    #[serde(default = "default_format")]
    pub format: NoticeFormat,
    /// A header whose value is the content of `secret_file` (e.g. `Authorization`).
    #[serde(default)]
    pub secret_header: Option<String>,
    /// The file holding that header's value; read before every attempt, so a rotated
    /// secret is used at once. Its content is never logged.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Bound on each attempt (connect, send, answer).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The events this webhook gets; default all.
    #[serde(default = "default_events")]
    pub events: Vec<NoticeEvent>,
}

fn default_format() -> NoticeFormat {
    NoticeFormat::Json
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_events() -> Vec<NoticeEvent> {
    NoticeEvent::ALL.to_vec()
}

impl WebhookConfig {
    /// True when this webhook gets notices of `event`.
    pub fn wants(&self, event: NoticeEvent) -> bool {
        self.events.contains(&event)
    }
}

/// Headers the daemon sets itself: a secret may not replace them.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// True for a webhook name usable as a metric label and in key paths: letters, digits,
/// `.`, `_` and `-`, at most 63 characters.
fn is_webhook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `notify.webhooks[<name>]` when the name is valid and unique, `notify.webhooks[<i>]`
/// otherwise.
fn webhook_label(webhooks: &[WebhookConfig], i: usize) -> String {
    let name = &webhooks[i].name;
    if is_webhook_name(name) && webhooks.iter().filter(|w| &w.name == name).count() == 1 {
        format!("notify.webhooks[{name}]")
    } else {
        format!("notify.webhooks[{i}]")
    }
}

impl NotifyConfig {
    /// The checks that need no file: bounds, names, URLs, header names, pairs of keys.
    pub(super) fn problems(&self, p: &mut Problems) {
        if !(1..=MAX_NOTICE_QUEUE).contains(&self.queue) {
            p.add(
                "notify.queue",
                format!(
                    "must be between 1 and {MAX_NOTICE_QUEUE} (got {})",
                    self.queue
                ),
            );
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = webhook_label(&self.webhooks, i);
            if !is_webhook_name(&hook.name) {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "{} is not a webhook name (letters, digits, '.', '_' and '-', at most \
                         63 characters): it labels kube_failover_notices_total",
                        shown(&hook.name)
                    ),
                );
            } else if let Some(j) = self.webhooks[..i].iter().position(|o| o.name == hook.name) {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "duplicate webhook name {} (also notify.webhooks[{j}])",
                        shown(&hook.name)
                    ),
                );
            }
            // The URL may carry a token (Slack's do): say what is wrong, never quote it.
            if let Err(why) = check_url(&hook.url) {
                let why = if why.starts_with("not an absolute URL") {
                    "not an absolute URL".to_string()
                } else {
                    why
                };
                p.add(format!("{key}.url"), why);
            }
            match (&hook.secret_header, &hook.secret_file) {
                (Some(_), None) => p.add(
                    format!("{key}.secret_file"),
                    "is required with secret_header: it holds the header's value",
                ),
                (None, Some(_)) => p.add(
                    format!("{key}.secret_header"),
                    "is required with secret_file: it names the header the file's content \
                     is sent in",
                ),
                _ => {}
            }
            if let Some(header) = &hook.secret_header {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    p.add(
                        format!("{key}.secret_header"),
                        format!("{} is not an HTTP header name", shown(header)),
                    );
                } else if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                    p.add(
                        format!("{key}.secret_header"),
                        format!(
                            "{} is set by the daemon itself (choose e.g. Authorization)",
                            shown(header)
                        ),
                    );
                }
            }
            if hook
                .secret_file
                .as_ref()
                .is_some_and(|f| f.as_os_str().is_empty())
            {
                p.add(format!("{key}.secret_file"), "must not be empty");
            }
            if hook.timeout.is_zero() {
                p.add(format!("{key}.timeout"), "must be greater than 0");
            } else if hook.timeout > MAX_NOTICE_TIMEOUT {
                p.add(
                    format!("{key}.timeout"),
                    format!(
                        "must be at most {} (got {})",
                        fmt_duration(MAX_NOTICE_TIMEOUT),
                        fmt_duration(hook.timeout)
                    ),
                );
            }
            if hook.events.is_empty() {
                p.add(
                    format!("{key}.events"),
                    "must name at least one event (leave it out for all: promotion, failback, \
                     failed)",
                );
            }
            for (e, event) in hook.events.iter().enumerate() {
                if hook.events[..e].contains(event) {
                    p.add(
                        format!("{key}.events"),
                        format!("{} is listed twice", event.as_str()),
                    );
                }
            }
        }
    }
}

/// Why a secret file cannot be used. Names the file (as [`printable`] shows it) and
/// what is wrong, never the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be opened or read.
    #[error("cannot read {file}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than [`MAX_SECRET_FILE_BYTES`].
    #[error("{file} is larger than {MAX_SECRET_FILE_BYTES} bytes: not a header value")]
    TooLarge {
        /// The file.
        file: String,
    },
    /// Nothing but whitespace.
    #[error("{file} is empty")]
    Empty {
        /// The file.
        file: String,
    },
    /// Bytes an HTTP header value cannot carry.
    #[error(
        "{file} holds characters a header value cannot carry (control characters or line \
         breaks inside the value)"
    )]
    NotAHeaderValue {
        /// The file.
        file: String,
    },
}

/// Reads a webhook's secret file: the header value, surrounding whitespace (the file's
/// final newline) removed.
pub fn read_secret_file(path: &Path) -> Result<http::HeaderValue, SecretFileError> {
    use std::io::Read;

    let file = || printable(&path.display().to_string(), usize::MAX);
    let read = |source| SecretFileError::Read {
        file: file(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge { file: file() });
    }
    let value = bytes.trim_ascii();
    if value.is_empty() {
        return Err(SecretFileError::Empty { file: file() });
    }
    let mut header = http::HeaderValue::from_bytes(value)
        .map_err(|_| SecretFileError::NotAHeaderValue { file: file() })?;
    header.set_sensitive(true);
    Ok(header)
}

impl Config {
    /// Reads every webhook's `secret_file` as a notice would, and `[env0]`'s key files:
    /// readable, not empty, a valid header value. `check-config` and `run` report these; the operator's commands,
    /// which send no notice, do not read the files.
    pub fn check_secret_files(&self) -> Result<(), ConfigError> {
        let mut problems: Vec<Problem> = self
            .notify
            .webhooks
            .iter()
            .enumerate()
            .filter_map(|(i, hook)| {
                let path = hook.secret_file.as_deref()?;
                if path.as_os_str().is_empty() {
                    return None;
                }
                let why = read_secret_file(path).err()?;
                Some(Problem {
                    key: format!("{}.secret_file", webhook_label(&self.notify.webhooks, i)),
                    message: chain(&why).to_string(),
                })
            })
            .collect();
        problems.extend(self.env0_key_problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                file: None,
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{Fixture, GOOD, load_error, only_problem, problems};

    fn hook(name: &str) -> WebhookConfig {
        WebhookConfig {
            name: name.to_string(),
            url: "https://hooks.example.com/kube-failover".to_string(),
            format: NoticeFormat::Json,
            secret_header: None,
            secret_file: None,
            timeout: Duration::from_secs(5),
            events: default_events(),
        }
    }

    #[test]
    fn webhooks_load_with_their_defaults() {
        let f = Fixture::new();
        let text = format!(
            "{}\n[notify]\nqueue = 7\n[[notify.webhooks]]\nname = \"oncall\"\nurl = \
             \"https://hooks.example.com/x\"\n[[notify.webhooks]]\nname = \"chat\"\nurl = \
             \"http://127.0.0.1:9/x\"\nformat = \"slack\"\ntimeout = \"2s\"\nevents = \
             [\"promotion\"]\n",
            *GOOD
        );
        let cfg = f.load(&text).expect("loads");
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert_eq!(cfg.notify.queue, 7);
        let [oncall, chat] = &cfg.notify.webhooks[..] else {
            panic!("two webhooks: {:?}", cfg.notify.webhooks)
        };
        assert_eq!(oncall.format, NoticeFormat::Json);
        assert_eq!(oncall.timeout, Duration::from_secs(5));
        assert_eq!(oncall.events, NoticeEvent::ALL);
        assert_eq!(chat.format, NoticeFormat::Slack);
        assert!(chat.wants(NoticeEvent::Promotion) && !chat.wants(NoticeEvent::Failed));
        // No [notify] at all: no webhooks, the default queue.
        assert_eq!(f.good().notify, NotifyConfig::default());
    }

    #[test]
    fn unknown_format_event_and_key_are_refused_naming_the_key() {
        let f = Fixture::new();
        let base = format!(
            "{}\n[[notify.webhooks]]\nname = \"a\"\nurl = \"https://h.example/x\"\n",
            *GOOD
        );
        let msg = load_error(&f, &format!("{base}format = \"teams\"\n"));
        assert!(msg.contains("notify.webhooks[0].format"), "{msg}");
        assert!(msg.contains("json") && msg.contains("slack"), "{msg}");
        let msg = load_error(&f, &format!("{base}events = [\"promoted\"]\n"));
        assert!(msg.contains("notify.webhooks[0].events"), "{msg}");
        assert!(msg.contains("promotion"), "{msg}");
        let msg = load_error(&f, &format!("{base}secret = \"x\"\n"));
        assert!(msg.contains("secret"), "{msg}");
    }

    #[test]
    fn names_urls_and_pairs_are_checked_with_key_paths() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.notify.webhooks = vec![hook("oncall"), hook("oncall")];
        let msg = only_problem(&cfg, "notify.webhooks[1].name");
        assert!(msg.contains("duplicate webhook name \"oncall\""), "{msg}");

        let mut cfg = f.good();
        let mut bad = hook("has space");
        bad.url = "ftp://hooks.example.com/T0/B0/secret-token".to_string();
        cfg.notify.webhooks = vec![bad];
        let all = problems(&cfg);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].starts_with("notify.webhooks[0].name: "), "{all:?}");
        assert!(
            all[1].starts_with("notify.webhooks[0].url: scheme must be http or https"),
            "{all:?}"
        );
        assert!(!all.iter().any(|p| p.contains("secret-token")), "{all:?}");

        let mut cfg = f.good();
        let mut bad = hook("oncall");
        bad.url = "hooks.example.com/secret-token".to_string();
        cfg.notify.webhooks = vec![bad];
        let msg = only_problem(&cfg, "notify.webhooks[oncall].url");
        assert!(!msg.contains("secret-token"), "{msg}");

        let mut cfg = f.good();
        let mut bad = hook("oncall");
        bad.secret_header = Some("Authorization".into());
        cfg.notify.webhooks = vec![bad];
        only_problem(&cfg, "notify.webhooks[oncall].secret_file");

        let mut cfg = f.good();
        let mut bad = hook("oncall");
        bad.secret_file = Some("/etc/token".into());
        cfg.notify.webhooks = vec![bad];
        only_problem(&cfg, "notify.webhooks[oncall].secret_header");

        for header in ["Bad Header", "Content-Type"] {
            let mut cfg = f.good();
            let mut bad = hook("oncall");
            bad.secret_header = Some(header.into());
            bad.secret_file = Some("/etc/token".into());
            cfg.notify.webhooks = vec![bad];
            only_problem(&cfg, "notify.webhooks[oncall].secret_header");
        }
    }

    #[test]
    fn queue_timeout_and_events_are_bounded() {
        let f = Fixture::new();
        let mut cfg = f.good();
        cfg.notify.queue = 0;
        only_problem(&cfg, "notify.queue");
        cfg.notify.queue = MAX_NOTICE_QUEUE + 1;
        only_problem(&cfg, "notify.queue");

        for (timeout, want) in [(0, "greater than 0"), (61, "at most 1m")] {
            let mut cfg = f.good();
            let mut bad = hook("oncall");
            bad.timeout = Duration::from_secs(timeout);
            cfg.notify.webhooks = vec![bad];
            let msg = only_problem(&cfg, "notify.webhooks[oncall].timeout");
            assert!(msg.contains(want), "{msg}");
        }

        let mut cfg = f.good();
        let mut bad = hook("oncall");
        bad.events = vec![];
        cfg.notify.webhooks = vec![bad];
        only_problem(&cfg, "notify.webhooks[oncall].events");
        let mut cfg = f.good();
        let mut bad = hook("oncall");
        bad.events = vec![NoticeEvent::Failed, NoticeEvent::Failed];
        cfg.notify.webhooks = vec![bad];
        let msg = only_problem(&cfg, "notify.webhooks[oncall].events");
        assert!(msg.contains("failed is listed twice"), "{msg}");
    }

    #[test]
    fn secret_files_are_read_without_showing_their_content() {
        let f = Fixture::new();
        let token = f.dir.path().join("token");
        std::fs::write(&token, "Bearer s3cr3t-value\n").unwrap();
        let value = read_secret_file(&token).expect("readable");
        assert_eq!(value.as_bytes(), b"Bearer s3cr3t-value");
        assert!(value.is_sensitive());

        let mut cfg = f.good();
        let mut with_file = |path: PathBuf| {
            let mut h = hook("oncall");
            h.secret_header = Some("Authorization".into());
            h.secret_file = Some(path);
            cfg.notify.webhooks = vec![h];
            cfg.check_secret_files()
        };
        assert!(with_file(token.clone()).is_ok());

        let missing = with_file(f.dir.path().join("missing")).expect_err("missing file");
        let [problem] = missing.problems() else {
            panic!("{missing}")
        };
        assert_eq!(problem.key, "notify.webhooks[oncall].secret_file");
        assert!(problem.message.contains("cannot read"), "{problem}");
        // The cause, from the error's source.
        assert!(
            problem
                .message
                .ends_with(": No such file or directory (os error 2)"),
            "{problem}"
        );

        let empty = f.dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = with_file(empty).expect_err("empty file");
        assert!(err.to_string().contains("is empty"), "{err}");

        let inner = f.dir.path().join("inner");
        std::fs::write(&inner, "line-one-s3cr3t\nline-two\n").unwrap();
        let err = with_file(inner).expect_err("line break inside");
        assert!(err.to_string().contains("line breaks"), "{err}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");

        let big = f.dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        assert!(with_file(big).is_err());
    }
}
