//! Which Deployments a workload selects (by name or label selector), how a selection
//! reads in messages, and the facts read from a Deployment object. Shared by the probes
//! and the actuator, so both select and describe a workload the same way.

use crate::config::WorkloadConfig;
use crate::kube::kept::KeptDeployment;
use crate::model::{DeploymentView, EPOCH_ANNOTATION};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, ObjectMeta};

/// Fetches the Deployments a workload selects: by name (`get`) or by label selector
/// (`list`). An empty result means nothing matched; the caller decides what that means.
pub async fn select(
    api: &Api<Deployment>,
    workload: &WorkloadConfig,
) -> Result<Vec<Deployment>, kube::Error> {
    match (&workload.name, &workload.selector) {
        (Some(name), _) => Ok(api.get_opt(name).await?.into_iter().collect()),
        (None, Some(selector)) => Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items),
        // Validation rejects this; selecting nothing is the safe reading.
        (None, None) => Ok(Vec::new()),
    }
}

/// Parses a label selector as the API server does (`k=v`, `k==v`, `k!=v`,
/// `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-separated), for matching cached
/// objects locally. `None` when it does not parse (validation refuses such selectors).
pub fn parse_label_selector(text: &str) -> Option<kube::core::Selector> {
    use kube::core::Expression;
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    let mut exprs = Vec::new();
    for part in parts {
        let req = part.trim();
        if req.is_empty() {
            return None;
        }
        if let Some(key) = req.strip_prefix('!') {
            exprs.push(Expression::DoesNotExist(key.trim().to_string()));
            continue;
        }
        type Make = fn(String, String) -> Expression;
        let ops: [(&str, Make); 3] = [
            ("!=", Expression::NotEqual),
            ("==", Expression::Equal),
            ("=", Expression::Equal),
        ];
        if let Some(e) = ops.iter().find_map(|(op, make)| {
            req.split_once(op)
                .map(|(k, v)| make(k.trim().to_string(), v.trim().to_string()))
        }) {
            exprs.push(e);
            continue;
        }
        let (key, rest) = match req.find(|c: char| c.is_whitespace() || c == '(') {
            Some(at) => (&req[..at], req[at..].trim_start()),
            None => (req, ""),
        };
        if rest.is_empty() {
            exprs.push(Expression::Exists(key.to_string()));
            continue;
        }
        let (negated, values) = match rest.strip_prefix("notin") {
            Some(v) => (true, v),
            None => (false, rest.strip_prefix("in")?),
        };
        let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
        let set = inner.split(',').map(|v| v.trim().to_string()).collect();
        exprs.push(if negated {
            Expression::NotIn(key.to_string(), set)
        } else {
            Expression::In(key.to_string(), set)
        });
    }
    Some(exprs.into_iter().collect())
}

/// How a workload's selection reads in a message: `Deployment ns/name` or
/// `Deployments in ns matching sel`.
pub fn selection_text(namespace: &str, workload: &WorkloadConfig) -> String {
    match (&workload.name, &workload.selector) {
        (Some(name), _) => format!("Deployment {namespace}/{name}"),
        (None, Some(sel)) => format!("Deployments in {namespace} matching {sel}"),
        (None, None) => format!("Deployments in {namespace} (no selection)"),
    }
}

/// The message for a selection that matched nothing.
pub fn nothing_selected(namespace: &str, workload: &WorkloadConfig) -> String {
    match (&workload.name, &workload.selector) {
        (Some(name), _) => format!("Deployment {namespace}/{name} not found"),
        (None, Some(sel)) => format!("no Deployment in {namespace} matches {sel}"),
        (None, None) => format!("no Deployment selected in {namespace}"),
    }
}

/// What a probe needs from a Deployment object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentFacts {
    /// `metadata.name`.
    pub name: String,
    /// `spec.replicas`; the API server defaults a missing value to 1.
    pub desired: i32,
    /// `status.availableReplicas`, 0 when unset.
    pub available: i32,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`: the precondition of a scale write.
    pub resource_version: Option<String>,
    /// The promotion epoch annotation, when present and readable.
    pub epoch: Option<u64>,
}

impl DeploymentFacts {
    /// Reads the facts from a Deployment object as the API server answered it.
    pub fn of(deployment: &Deployment) -> Self {
        Self::read(
            &deployment.metadata,
            deployment.spec.as_ref().and_then(|s| s.replicas),
            deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas),
        )
    }

    /// Reads the facts from a Deployment as a cache keeps it.
    pub fn of_kept(deployment: &KeptDeployment) -> Self {
        Self::read(
            &deployment.metadata,
            deployment.spec.as_ref().and_then(|s| s.replicas),
            deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas),
        )
    }

    fn read(meta: &ObjectMeta, replicas: Option<i32>, available: Option<i32>) -> Self {
        DeploymentFacts {
            name: meta.name.clone().unwrap_or_default(),
            desired: replicas.unwrap_or(1),
            available: available.unwrap_or(0),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            epoch: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(EPOCH_ANNOTATION))
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// The view the engine sees, given how many of its Pods are Ready.
    pub fn view(&self, ready_pods: i32) -> DeploymentView {
        DeploymentView {
            name: self.name.clone(),
            uid: self.uid.clone(),
            desired: self.desired,
            available: self.available,
            ready_pods,
            epoch: self.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::SelectorExt;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let l = labels(&[("env0", "agent-proxy"), ("tier", "b")]);
        let yes = [
            "env0=agent-proxy",
            "env0==agent-proxy",
            "env0!=agent-trigger",
            "env0 in (agent-proxy, x)",
            "tier notin (a,c)",
            "env0",
            "!missing",
            "env0=agent-proxy,tier in (b)",
        ];
        for text in yes {
            let sel = parse_label_selector(text).unwrap_or_else(|| panic!("{text}"));
            assert!(sel.matches(&l), "{text} must match");
        }
        let no = [
            "env0=agent-trigger",
            "env0!=agent-proxy",
            "tier in (a)",
            "tier notin (b)",
            "missing",
            "!env0",
            "env0=agent-proxy,tier=c",
        ];
        for text in no {
            let sel = parse_label_selector(text).unwrap_or_else(|| panic!("{text}"));
            assert!(!sel.matches(&l), "{text} must not match");
        }
        assert!(parse_label_selector("a=b,").is_none());
        assert!(parse_label_selector("a in b").is_none());
    }
}
