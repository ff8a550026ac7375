//! What env0 answers (the fields the daemon reads) and the pure choice of the
//! environments a promotion stranded: the latest deployment waiting for approval, in
//! progress or queued, started before the promotion, in a project this agent serves.

use crate::config::RedeployMode;
pub use crate::notify::Stranded;
use serde::{Deserialize, Serialize};

/// The deployment statuses a move of the agent strands: the working directory of such a
/// run stayed with the old agent.
pub const STRANDING: [&str; 3] = ["WAITING_FOR_USER", "IN_PROGRESS", "QUEUED"];
/// Waiting for approval.
pub const WAITING_FOR_USER: &str = "WAITING_FOR_USER";

/// An environment as `GET /environments` lists it (only the fields read here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Its id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its project.
    #[serde(default)]
    pub project_id: String,
    /// Archived environments are never deployed.
    #[serde(default)]
    pub is_archived: Option<bool>,
    /// Its latest deployment.
    #[serde(default)]
    pub latest_deployment_log: Option<DeploymentLog>,
}

/// A deployment ("deployment log") as env0 describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentLog {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// `WAITING_FOR_USER`, `IN_PROGRESS`, `QUEUED`, `SUCCESS`, `FAILURE`, …
    #[serde(default)]
    pub status: String,
    /// `deploy`, `destroy`, …
    #[serde(default, rename = "type")]
    pub kind: String,
    /// When it started running (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it was queued.
    #[serde(default)]
    pub queued_at: Option<String>,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<String>,
}

impl DeploymentLog {
    /// When it began, as Unix seconds: started, else queued, else created.
    fn began_unix(&self) -> Option<f64> {
        [&self.started_at, &self.queued_at, &self.created_at]
            .into_iter()
            .flatten()
            .find_map(|at| crate::notify::unix_of(at))
    }

    fn began(&self) -> Option<String> {
        [&self.started_at, &self.queued_at, &self.created_at]
            .into_iter()
            .flatten()
            .find(|at| crate::notify::unix_of(at).is_some())
            .cloned()
    }
}

/// The projects the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These projects.
    Only(Vec<String>),
    /// Every project but these (the agent is the organization's default agent; these
    /// are assigned to other agents).
    AllExcept(Vec<String>),
}

impl Scope {
    fn serves(&self, project: &str) -> bool {
        match self {
            Scope::Only(p) => p.iter().any(|p| p == project),
            Scope::AllExcept(p) => !p.iter().any(|p| p == project),
        }
    }
}

impl Stranded {
    /// True when `mode` asks to redeploy it (its start known to be before the
    /// promotion).
    pub fn to_redeploy(&self, mode: RedeployMode) -> bool {
        self.started_at.is_some()
            && match mode {
                RedeployMode::Off => false,
                RedeployMode::Waiting => self.status == WAITING_FOR_USER,
                RedeployMode::AllStranded => true,
            }
    }
}

/// env0's web UI for an API at `api_url`: `https://api.X` → `https://app.X`,
/// `https://api-X` → `https://X`; any other host is its own UI.
pub fn ui_base(api_url: &str) -> String {
    let trimmed = api_url.trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(mut url) => {
            let host = url.host_str().unwrap_or_default().to_string();
            let ui = if let Some(rest) = host.strip_prefix("api.") {
                Some(format!("app.{rest}"))
            } else {
                host.strip_prefix("api-").map(str::to_string)
            };
            if let Some(ui) = ui {
                let _ = url.set_host(Some(&ui));
            }
            url.set_path("");
            url.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => trimmed.to_string(),
    }
}

/// The environments of `envs` in `scope` whose latest deployment is in a
/// [`STRANDING`] status and began before `promoted_at_unix` (or at an unknown time),
/// sorted by project and name.
pub fn stranded(
    envs: &[Environment],
    scope: &Scope,
    promoted_at_unix: i64,
    ui: &str,
) -> Vec<Stranded> {
    let mut out: Vec<Stranded> = envs
        .iter()
        .filter(|e| e.is_archived != Some(true) && scope.serves(&e.project_id))
        .filter_map(|e| {
            let log = e.latest_deployment_log.as_ref()?;
            if !STRANDING.contains(&log.status.as_str()) || log.id.is_empty() {
                return None;
            }
            if log
                .began_unix()
                .is_some_and(|at| at >= promoted_at_unix as f64)
            {
                return None;
            }
            Some(Stranded {
                environment_id: e.id.clone(),
                environment: e.name.clone(),
                project_id: e.project_id.clone(),
                deployment_id: log.id.clone(),
                status: log.status.clone(),
                started_at: log.began(),
                link: format!(
                    "{ui}/p/{}/environments/{}/deployments/{}",
                    e.project_id, e.id, log.id
                ),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.project_id, &a.environment, &a.environment_id).cmp(&(
            &b.project_id,
            &b.environment,
            &b.environment_id,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str, project: &str, status: &str, started: Option<&str>) -> Environment {
        Environment {
            id: id.into(),
            name: format!("{id}-name"),
            project_id: project.into(),
            is_archived: None,
            latest_deployment_log: Some(DeploymentLog {
                id: format!("d-{id}"),
                status: status.into(),
                kind: "deploy".into(),
                started_at: started.map(str::to_string),
                queued_at: None,
                created_at: None,
            }),
        }
    }

    // 2025-01-02T03:04:05Z
    const PROMOTED: i64 = 1_735_787_045;
    const BEFORE: &str = "2025-01-02T03:00:00Z";
    const AFTER: &str = "2025-01-02T03:10:00Z";

    #[test]
    fn only_stranding_statuses_begun_before_the_promotion_in_scope_are_picked() {
        let mut queued = env("e5", "p1", "QUEUED", None);
        queued.latest_deployment_log.as_mut().unwrap().queued_at = Some(BEFORE.into());
        let mut archived = env("e8", "p1", "WAITING_FOR_USER", Some(BEFORE));
        archived.is_archived = Some(true);
        let envs = vec![
            env("e1", "p1", "WAITING_FOR_USER", Some(BEFORE)),
            env("e2", "p1", "IN_PROGRESS", Some(BEFORE)),
            env("e3", "p1", "SUCCESS", Some(BEFORE)),
            env("e4", "p1", "WAITING_FOR_USER", Some(AFTER)),
            queued,
            env("e6", "p2", "WAITING_FOR_USER", Some(BEFORE)),
            env("e7", "p1", "IN_PROGRESS", None),
            archived,
            Environment {
                latest_deployment_log: None,
                ..env("e9", "p1", "", None)
            },
        ];
        let ui = ui_base("https://api.env0.com/");
        assert_eq!(ui, "https://app.env0.com");
        let picked = stranded(&envs, &Scope::Only(vec!["p1".into()]), PROMOTED, &ui);
        let ids: Vec<&str> = picked.iter().map(|s| s.environment_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e5", "e7"]);
        assert_eq!(
            picked[0].link,
            "https://app.env0.com/p/p1/environments/e1/deployments/d-e1"
        );
        assert_eq!(picked[2].started_at.as_deref(), Some(BEFORE));
        assert_eq!(picked[3].started_at, None);
        assert!(picked[3].describe().contains("start time unknown"));
        // The default agent serves every project not assigned to another one.
        let all = stranded(&envs, &Scope::AllExcept(vec!["p1".into()]), PROMOTED, &ui);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].environment_id, "e6");
    }

    #[test]
    fn the_redeploy_mode_picks_waiting_or_all_and_never_an_unknown_start() {
        let ui = "http://127.0.0.1:1";
        let envs = vec![
            env("e1", "p", "WAITING_FOR_USER", Some(BEFORE)),
            env("e2", "p", "IN_PROGRESS", Some(BEFORE)),
            env("e3", "p", "WAITING_FOR_USER", None),
        ];
        let picked = stranded(&envs, &Scope::Only(vec!["p".into()]), PROMOTED, ui);
        let chosen = |mode| {
            picked
                .iter()
                .filter(|s| s.to_redeploy(mode))
                .map(|s| s.environment_id.as_str())
                .collect::<Vec<_>>()
        };
        assert!(chosen(RedeployMode::Off).is_empty());
        assert_eq!(chosen(RedeployMode::Waiting), ["e1"]);
        assert_eq!(chosen(RedeployMode::AllStranded), ["e1", "e2"]);
        assert_eq!(ui_base("https://api-eu.env0.com"), "https://eu.env0.com");
        assert_eq!(ui_base("http://127.0.0.1:8080/v1"), "http://127.0.0.1:8080");
    }
}
