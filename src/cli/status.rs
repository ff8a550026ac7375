//! `status`: ask a running daemon for its `/status` document over HTTP and print it, as
//! a table or as the JSON it served.

use super::{Failure, render};
use kube_failover::status::StatusReport;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long `status` waits for the daemon: it is local and answers from memory.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(5);

/// The flags of `status`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The daemon's admin address (`daemon.listen`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub(crate) addr: String,
    /// Print the daemon's /status JSON as it was served.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Why `status` printed nothing.
#[derive(Debug, thiserror::Error)]
enum StatusError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// No connection, or no answer in time.
    #[error("cannot reach the daemon at {addr}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the daemon at {addr} ({url}) cannot build the HTTP client")]
    Client {
        addr: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Something answered, but its answer could not be read.
    #[error("the daemon at {addr} ({url}) gave an unreadable answer")]
    Unreadable {
        addr: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Something answered, but not with a status document.
    #[error("the daemon at {addr} ({url}) answered HTTP {code} to GET /status")]
    Refused {
        addr: String,
        url: String,
        code: reqwest::StatusCode,
    },
    /// A document this version's [`StatusReport`] cannot read.
    #[error(
        "the daemon at {addr} answered with a status this version cannot read ({error}); try --json"
    )]
    Unknown {
        addr: String,
        error: serde_json::Error,
    },
}

impl From<StatusError> for Failure {
    fn from(err: StatusError) -> Self {
        match err {
            StatusError::Unreachable { .. } => Failure::unreachable(err),
            _ => Failure::runtime(err),
        }
    }
}

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StatusError::Runtime)?;
        let body = runtime.block_on(fetch(&self.addr))?;
        if self.json {
            println!("{}", body.trim_end());
            return Ok(());
        }
        let report =
            serde_json::from_str::<StatusReport>(&body).map_err(|error| StatusError::Unknown {
                addr: self.addr.clone(),
                error,
            })?;
        print!("{}", render::status(&report, unix_now()));
        Ok(())
    }
}

/// `HOST:PORT` → `http://HOST:PORT/status`; a full `http(s)://…` base is kept.
fn status_url(addr: &str) -> String {
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    };
    format!("{base}/status")
}

/// The body of `GET /status` from the daemon at `addr`.
async fn fetch(addr: &str) -> Result<String, StatusError> {
    let url = status_url(addr);
    let client = reqwest::Client::builder()
        .user_agent(kube_failover::user_agent::cli())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        // The admin port is local; a proxy from the environment has no business here.
        .no_proxy()
        .build()
        .map_err(|source| StatusError::Client {
            addr: addr.to_string(),
            url: url.clone(),
            source,
        })?;
    let classify = |source: reqwest::Error| {
        if source.is_connect() || source.is_timeout() || source.is_request() {
            StatusError::Unreachable {
                addr: addr.to_string(),
                source,
            }
        } else {
            StatusError::Unreadable {
                addr: addr.to_string(),
                url: url.clone(),
                source,
            }
        }
    };
    let response = client.get(&url).send().await.map_err(classify)?;
    let code = response.status();
    if !code.is_success() {
        return Err(StatusError::Refused {
            addr: addr.to_string(),
            url: url.clone(),
            code,
        });
    }
    response.text().await.map_err(classify)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_url_forms() {
        assert_eq!(status_url("127.0.0.1:9464"), "http://127.0.0.1:9464/status");
        assert_eq!(
            status_url("http://watcher:9464/"),
            "http://watcher:9464/status"
        );
    }
}
