//! The redeploys asked of env0, kept in a ConfigMap beside the failover record
//! (`<record>-env0`, standby namespace): one key `<epoch>.<environment id>` per
//! redeploy, written (create, or replace with the resourceVersion read) *before* env0
//! is called. Whoever wins that write makes the call; a restarted daemon or a new
//! leader finds the key and never calls again. The failover record itself is not
//! touched: its writes never race with these.

use crate::kube::call::bounded;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Epochs whose keys are kept (older ones are dropped on the next claim).
const KEPT_EPOCHS: u64 = 4;

/// One redeploy, as the ConfigMap keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The stranded deployment the redeploy replaces.
    pub deployment_id: String,
    /// Who claimed it (`daemon.identity`).
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// `claimed` (the call is being made, or its outcome was lost), `done` or `failed`.
    pub outcome: String,
    /// The new deployment's id, once env0 gave it.
    #[serde(default)]
    pub new_deployment_id: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// The claims ConfigMap of one group.
#[derive(Clone)]
pub struct Claims {
    client: kube::Client,
    namespace: String,
    name: String,
    group: String,
    timeout: Duration,
}

/// Why the claims could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("ConfigMap {namespace}/{name}: {why}")]
pub struct ClaimError {
    namespace: String,
    name: String,
    why: String,
}

fn key(epoch: u64, environment: &str) -> String {
    format!("{epoch}.{environment}")
}

impl Claims {
    /// The ConfigMap `<record_name>-env0` in `namespace`, through `client`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        record_name: &str,
        group: &str,
        timeout: Duration,
    ) -> Self {
        Claims {
            client,
            namespace: namespace.to_string(),
            name: format!("{record_name}-env0"),
            group: group.to_string(),
            timeout,
        }
    }

    fn error(&self, why: impl std::fmt::Display) -> ClaimError {
        ClaimError {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            why: why.to_string(),
        }
    }

    fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn read(&self) -> Result<Option<ConfigMap>, ClaimError> {
        bounded(self.timeout, self.api().get_opt(&self.name))
            .await
            .map_err(|e| self.error(format!("get: {e}")))
    }

    /// The claim of `environment` at `epoch`, if any.
    pub async fn get(&self, epoch: u64, environment: &str) -> Result<Option<Claim>, ClaimError> {
        let cm = self.read().await?;
        Ok(cm
            .and_then(|cm| cm.data)
            .and_then(|d| d.get(&key(epoch, environment)).cloned())
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Writes `claim` for (`epoch`, `environment`). With `only_new`, only when no
    /// claim is there yet: `Ok(false)` when another writer was first.
    pub async fn put(
        &self,
        epoch: u64,
        environment: &str,
        claim: &Claim,
        only_new: bool,
    ) -> Result<bool, ClaimError> {
        let k = key(epoch, environment);
        let value = serde_json::to_string(claim).map_err(|e| self.error(e))?;
        // A lost race re-reads; a few rounds settle it (one writer per group leads).
        for _ in 0..5 {
            let current = self.read().await?;
            let mut data: BTreeMap<String, String> = current
                .as_ref()
                .and_then(|cm| cm.data.clone())
                .unwrap_or_default();
            if only_new && data.contains_key(&k) {
                return Ok(false);
            }
            data.retain(|key, _| {
                key.split_once('.')
                    .and_then(|(e, _)| e.parse::<u64>().ok())
                    .is_some_and(|e| e + KEPT_EPOCHS > epoch)
            });
            data.insert(k.clone(), value.clone());
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    resource_version: current
                        .as_ref()
                        .and_then(|c| c.metadata.resource_version.clone()),
                    labels: Some(BTreeMap::from([
                        (
                            "app.kubernetes.io/name".to_string(),
                            crate::record::APP_LABEL_VALUE.to_string(),
                        ),
                        (crate::record::GROUP_LABEL.to_string(), self.group.clone()),
                    ])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            let params = PostParams {
                field_manager: Some(crate::record::APP_LABEL_VALUE.to_string()),
                ..PostParams::default()
            };
            let result = match current {
                None => bounded(self.timeout, self.api().create(&params, &cm)).await,
                Some(_) => {
                    bounded(self.timeout, self.api().replace(&self.name, &params, &cm)).await
                }
            };
            match result {
                Ok(_) => return Ok(true),
                Err(crate::kube::call::CallError::Kube(kube::Error::Api(s)))
                    if s.code == 409 || s.is_conflict() || s.is_already_exists() =>
                {
                    continue;
                }
                Err(e) => return Err(self.error(format!("write: {e}"))),
            }
        }
        Err(self.error("write: changed by another writer five times in a row"))
    }
}
