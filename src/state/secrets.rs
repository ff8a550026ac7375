//! Hashes of the Secrets a side's Deployments read, for drift: each referenced Secret
//! read by name (GET) at most once a minute, only its hash kept. The daemon's Role does
//! not grant Secrets unless mirroring is configured; a 403 says so, the data is then
//! "not compared", and reading is tried again only every ten minutes.

use super::facts::secret_hash;
use crate::kube::call::bounded;
use crate::model::{ProbeReason, Side};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the hashes are read again while Secrets can be read.
pub const SECRET_REFRESH: Duration = Duration::from_secs(60);
/// How often reading is tried again after the daemon was refused.
pub const SECRET_RETRY_FORBIDDEN: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Inner {
    /// Hash of each Secret read (`None`: it does not exist).
    hashes: BTreeMap<String, Option<String>>,
    /// The names asked for at the last read.
    names: BTreeSet<String>,
    /// Why the data is not known, when it is not (refused, never read yet, …).
    unread: Option<String>,
    /// The last read was refused (401/403).
    refused: bool,
    fetched: Option<Instant>,
    /// Bumped whenever `hashes` or `unread` change.
    version: u64,
}

/// The Secret hashes of one side (cluster and namespace).
#[derive(Debug)]
pub struct SecretHashes {
    side: Side,
    inner: Mutex<Inner>,
}

impl SecretHashes {
    /// Hashes of the Secrets of the `side`, none read yet.
    pub fn new(side: Side) -> Self {
        SecretHashes {
            side,
            inner: Mutex::new(Inner {
                unread: Some(format!("the {side}'s Secrets have not been read yet")),
                ..Inner::default()
            }),
        }
    }

    fn due(&self, names: &BTreeSet<String>, now: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let every = if inner.refused {
            SECRET_RETRY_FORBIDDEN
        } else {
            SECRET_REFRESH
        };
        inner.names != *names
            || inner
                .fetched
                .is_none_or(|at| now.saturating_duration_since(at) >= every)
    }

    /// Reads `names` in `ns` when due (names changed, or the refresh period passed),
    /// each GET bounded by `timeout`.
    pub async fn refresh(
        &self,
        client: &kube::Client,
        ns: &str,
        names: &BTreeSet<String>,
        timeout: Duration,
    ) {
        let now = Instant::now();
        if names.is_empty() || !self.due(names, now) {
            if names.is_empty() {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                if !inner.hashes.is_empty() || inner.unread.is_some() {
                    inner.version += 1;
                }
                inner.hashes.clear();
                inner.names.clear();
                inner.unread = None;
            }
            return;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let reads = names.iter().map(|name| bounded(timeout, api.get_opt(name)));
        let results = futures::future::join_all(reads).await;
        let mut hashes = BTreeMap::new();
        let mut unread = None;
        let mut refused = false;
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(found) => {
                    hashes.insert(name.clone(), found.as_ref().map(secret_hash));
                }
                Err(err) => {
                    let reason = err.reason();
                    refused = matches!(reason, ProbeReason::Forbidden | ProbeReason::Unauthorized);
                    unread = Some(if refused {
                        format!(
                            "the daemon may not read Secrets in the {} ({})",
                            self.side,
                            reason.as_str()
                        )
                    } else {
                        format!(
                            "Secret {ns}/{name} in the {} could not be read ({err})",
                            self.side
                        )
                    });
                    break;
                }
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.names.clone_from(names);
        inner.fetched = Some(now);
        inner.refused = refused;
        if unread.is_some() {
            hashes.clear();
        }
        if inner.hashes != hashes || inner.unread != unread {
            inner.hashes = hashes;
            inner.unread = unread;
            inner.version += 1;
        }
    }

    /// A number that grows whenever the hashes or the reason they are unknown change.
    pub fn version(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).version
    }

    /// The hashes last read, or why there are none.
    pub fn current(&self) -> (BTreeMap<String, Option<String>>, Option<String>) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.hashes.clone(), inner.unread.clone())
    }
}
