//! The daemon's logging: lines on stderr, text or JSON, coloured only on a terminal,
//! filtered by `RUST_LOG` with the Kubernetes client's per-request error lines off.

use kube_failover::config::LogFormat;

/// kube's client logs every failed request itself, at error level, without naming the
/// cluster: several lines per tick during an outage. The daemon reports the same failure
/// once per change, with group and cluster, so these stay out unless `RUST_LOG` names
/// `kube_client`.
const QUIET_KUBE_CLIENT: &str = "kube_client::client::builder=off";

/// Logging could not be installed (a global subscriber was already set).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up logging")]
pub(crate) struct LoggingError(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

/// The log filter: `RUST_LOG` (default `info`) with kube's per-request error lines off,
/// unless `RUST_LOG` names `kube_client` itself.
fn log_filter(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) if spec.contains("kube_client") => spec.to_string(),
        Some(spec) => format!("{spec},{QUIET_KUBE_CLIENT}"),
        None => format!("info,{QUIET_KUBE_CLIENT}"),
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` is set (no-color.org): a log file,
/// pipe or journal gets plain text.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. Logs go to stderr, so that stdout stays free for
/// anything a command prints.
pub(crate) fn init(format: LogFormat) -> Result<(), LoggingError> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;

    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(log_filter(rust_log.as_deref())).unwrap_or_else(|err| {
        eprintln!("kube-failover: RUST_LOG is not a valid filter ({err}); logging at info");
        EnvFilter::new(log_filter(None))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(LoggingError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_client_request_errors_are_off_unless_rust_log_names_kube_client() {
        let quiet = "kube_client::client::builder=off";
        assert_eq!(log_filter(None), format!("info,{quiet}"));
        assert_eq!(log_filter(Some("  ")), format!("info,{quiet}"));
        assert_eq!(
            log_filter(Some("info,kube_failover=debug")),
            format!("info,kube_failover=debug,{quiet}")
        );
        assert_eq!(
            log_filter(Some("debug,kube_client=error")),
            "debug,kube_client=error"
        );
        for spec in [None, Some("debug"), Some("warn,kube_failover=debug")] {
            let filter = log_filter(spec);
            assert!(
                tracing_subscriber::EnvFilter::try_new(&filter).is_ok(),
                "{filter}"
            );
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
