//! env0's public API, the few calls the daemon makes (the same endpoints and shapes as
//! env0's Terraform provider's Go client): the organizations of the key, the agents'
//! project assignment, the environments (paged by `limit`/`offset`) and a redeploy.
//! Each call is bounded; 429 waits for `Retry-After`, other transient failures back
//! off (`backon`); the key (HTTP basic: id and secret) is read from its files before
//! every lookup and never logged.

use super::model::{Environment, Scope};
use crate::config::{Env0Config, read_env0_key};
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The page size env0's provider uses (and the API's maximum).
pub const PAGE_LIMIT: usize = 100;
/// Pages read at most per listing (10 000 environments).
pub const MAX_PAGES: usize = 100;
/// The longest `Retry-After` honoured; a longer one is waited in steps of this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why an env0 call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Env0Error {
    /// The key files could not be read.
    #[error("{0}")]
    Key(String),
    /// env0 rejected the key.
    #[error(
        "{call}: env0 rejected the API key (HTTP 401): check env0.key_id_file and \
         env0.key_secret_file"
    )]
    Unauthorized {
        /// The call.
        call: &'static str,
    },
    /// The key may not do this.
    #[error(
        "{call}: the API key may not do this (HTTP 403): it needs the permissions listed in \
         the README (env0 section)"
    )]
    Forbidden {
        /// The call.
        call: &'static str,
    },
    /// The key is not assigned to `env0.organization_id`.
    #[error(
        "env0.organization_id: the API key is not assigned to organization {organization} \
         (it is assigned to: {assigned})"
    )]
    WrongOrganization {
        /// The configured organization.
        organization: String,
        /// The organizations the key sees.
        assigned: String,
    },
    /// Rate limited (HTTP 429).
    #[error("{call}: rate limited by env0 (HTTP 429)")]
    RateLimited {
        /// The call.
        call: &'static str,
        /// What `Retry-After` asked for.
        retry_after: Option<Duration>,
    },
    /// Another unexpected status.
    #[error("{call}: env0 answered HTTP {status}")]
    Status {
        /// The call.
        call: &'static str,
        /// The status.
        status: u16,
    },
    /// No answer within `env0.timeout`.
    #[error("{call}: no answer within env0.timeout")]
    Timeout {
        /// The call.
        call: &'static str,
    },
    /// The connection failed.
    #[error("{call}: cannot reach env0 ({why})")]
    Connect {
        /// The call.
        call: &'static str,
        /// What failed.
        why: String,
        /// True when no connection was made: env0 never saw the request.
        unsent: bool,
    },
    /// The answer is not what env0 documents.
    #[error("{call}: unreadable answer ({why})")]
    Decode {
        /// The call.
        call: &'static str,
        /// What is wrong.
        why: String,
    },
    /// More environments than [`MAX_PAGES`] pages.
    #[error("list environments: more than {MAX_PAGES} pages of {PAGE_LIMIT}")]
    TooManyPages,
}

impl Env0Error {
    /// The bounded reason code (logs, `kube_failover_env0_requests_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            Env0Error::Key(_) => "env0_key_file",
            Env0Error::Unauthorized { .. } => "env0_unauthorized",
            Env0Error::Forbidden { .. } => "env0_forbidden",
            Env0Error::WrongOrganization { .. } => "env0_wrong_organization",
            Env0Error::RateLimited { .. } => "env0_rate_limited",
            Env0Error::Status { .. } => "env0_http_status",
            Env0Error::Timeout { .. } => "env0_timeout",
            Env0Error::Connect { .. } => "env0_unreachable",
            Env0Error::Decode { .. } | Env0Error::TooManyPages => "env0_undecodable",
        }
    }

    /// True when the same call may succeed later (reading only: a write is retried
    /// only when env0 cannot have done it, see [`Env0Error::not_done`]).
    pub fn transient(&self) -> bool {
        match self {
            Env0Error::RateLimited { .. }
            | Env0Error::Timeout { .. }
            | Env0Error::Connect { .. } => true,
            Env0Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// True when env0 certainly did not carry the request out: refused before any work
    /// (401, 403, 429) or never reached. A timeout or a 5xx may have done it.
    pub fn not_done(&self) -> bool {
        matches!(
            self,
            Env0Error::Key(_)
                | Env0Error::Unauthorized { .. }
                | Env0Error::Forbidden { .. }
                | Env0Error::RateLimited { .. }
        ) || matches!(self, Env0Error::Connect { unsent: true, .. })
    }
}

/// Every reason code [`Env0Error::reason`] gives, plus `ok`.
pub const RESULTS: [&str; 10] = [
    "ok",
    "env0_key_file",
    "env0_unauthorized",
    "env0_forbidden",
    "env0_wrong_organization",
    "env0_rate_limited",
    "env0_http_status",
    "env0_timeout",
    "env0_unreachable",
    "env0_undecodable",
];

/// The calls, as `kube_failover_env0_requests_total` labels them.
pub const CALLS: [&str; 4] = [
    "list_organizations",
    "projects_assignments",
    "list_environments",
    "redeploy",
];

/// Counts each call's result (`call`, `result`).
pub type CallCounter = std::sync::Arc<dyn Fn(&'static str, &'static str) + Send + Sync>;

/// A client of env0's API.
#[derive(Clone)]
pub struct Env0Client {
    http: reqwest::Client,
    config: Env0Config,
    base: String,
    count: CallCounter,
}

#[derive(Deserialize)]
struct Organization {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Assignments {
    #[serde(default)]
    default_agent: Option<String>,
    #[serde(default)]
    projects_agents: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct DeployResponse {
    id: String,
}

impl Env0Client {
    /// A client for `config`, sending through `http` (which carries the daemon's
    /// User-Agent); `count` is told of every call's end.
    pub fn new(config: &Env0Config, http: reqwest::Client, count: CallCounter) -> Self {
        Env0Client {
            http,
            base: config.api_url.trim_end_matches('/').to_string(),
            config: config.clone(),
            count,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Env0Config {
        &self.config
    }

    fn key(&self) -> Result<(String, String), Env0Error> {
        read_env0_key(&self.config).map_err(|e| Env0Error::Key(e.to_string()))
    }

    /// One request, bounded; its status mapped to [`Env0Error`].
    async fn send(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, Env0Error> {
        let result = self.send_once(call, request).await;
        (self.count)(
            call,
            match &result {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            },
        );
        result
    }

    async fn send_once(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, Env0Error> {
        let (id, secret) = self.key()?;
        let request = request
            .basic_auth(id, Some(secret))
            .header(http::header::ACCEPT, "application/json")
            .timeout(self.config.timeout);
        let timed = tokio::time::timeout(self.config.timeout, async {
            let response = request.send().await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, body))
        })
        .await;
        let (status, retry_after, body) = match timed {
            Err(_) => return Err(Env0Error::Timeout { call }),
            Ok(Err(e)) if e.is_timeout() => return Err(Env0Error::Timeout { call }),
            Ok(Err(e)) => {
                let why = if e.is_connect() {
                    "connect failed"
                } else if e.is_decode() || e.is_body() {
                    "the answer broke off"
                } else {
                    "request failed"
                };
                return Err(Env0Error::Connect {
                    call,
                    why: why.to_string(),
                    unsent: e.is_connect(),
                });
            }
            Ok(Ok(answer)) => answer,
        };
        match status.as_u16() {
            200..=299 => Ok(body),
            401 => Err(Env0Error::Unauthorized { call }),
            403 => Err(Env0Error::Forbidden { call }),
            429 => Err(Env0Error::RateLimited { call, retry_after }),
            other => Err(Env0Error::Status {
                call,
                status: other,
            }),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Env0Error> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            Env0Error::Connect {
                call,
                why: format!("env0.api_url: {e}"),
                unsent: true,
            }
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let body = retrying(|| self.send(call, self.http.get(url.clone()))).await?;
        serde_json::from_slice(&body).map_err(|e| Env0Error::Decode {
            call,
            why: e.to_string(),
        })
    }

    /// Checks that the key is assigned to `env0.organization_id` (`GET /organizations`).
    pub async fn check_organization(&self) -> Result<(), Env0Error> {
        let orgs: Vec<Organization> = self
            .get_json("list_organizations", "/organizations", &[])
            .await?;
        let org = &self.config.organization_id;
        if orgs.iter().any(|o| &o.id == org) {
            return Ok(());
        }
        let assigned: Vec<&str> = orgs.iter().map(|o| o.id.as_str()).collect();
        Err(Env0Error::WrongOrganization {
            organization: org.clone(),
            assigned: if assigned.is_empty() {
                "none".to_string()
            } else {
                assigned.join(", ")
            },
        })
    }

    /// The projects whose environments this agent runs: `env0.project_ids`, else the
    /// agent's project assignment (`GET /agents/projects-assignments`).
    pub async fn scope(&self) -> Result<Scope, Env0Error> {
        if !self.config.project_ids.is_empty() {
            return Ok(Scope::Only(self.config.project_ids.clone()));
        }
        let agent = self.config.agent_id.clone().unwrap_or_default();
        let a: Assignments = self
            .get_json(
                "projects_assignments",
                "/agents/projects-assignments",
                &[("organizationId", &self.config.organization_id)],
            )
            .await?;
        let assigned = |want: bool| -> Vec<String> {
            a.projects_agents
                .iter()
                .filter(|(_, v)| (v.as_str() == Some(agent.as_str())) == want)
                .map(|(p, _)| p.clone())
                .collect()
        };
        Ok(if a.default_agent.as_deref() == Some(agent.as_str()) {
            Scope::AllExcept(assigned(false))
        } else {
            Scope::Only(assigned(true))
        })
    }

    /// Every environment of `scope` (`GET /environments`, by project or by
    /// organization, `limit`/`offset` pages).
    pub async fn environments(&self, scope: &Scope) -> Result<Vec<Environment>, Env0Error> {
        let org = self.config.organization_id.as_str();
        let mut out = Vec::new();
        match scope {
            Scope::Only(projects) => {
                for project in projects {
                    out.extend(self.pages(("projectId", project)).await?);
                }
            }
            Scope::AllExcept(_) => out.extend(self.pages(("organizationId", org)).await?),
        }
        Ok(out)
    }

    async fn pages(&self, by: (&str, &str)) -> Result<Vec<Environment>, Env0Error> {
        let mut out = Vec::new();
        for page in 0..MAX_PAGES {
            let offset = (page * PAGE_LIMIT).to_string();
            let limit = PAGE_LIMIT.to_string();
            let found: Vec<Environment> = self
                .get_json(
                    "list_environments",
                    "/environments",
                    &[by, ("limit", &limit), ("offset", &offset)],
                )
                .await?;
            let n = found.len();
            out.extend(found);
            if n < PAGE_LIMIT {
                return Ok(out);
            }
        }
        Err(Env0Error::TooManyPages)
    }

    /// Asks env0 to redeploy `environment` (`POST /environments/{id}/deployments`, an
    /// empty deploy request: the environment's own template revision and variables).
    /// Retried only when env0 certainly did not take it (429, connection refused);
    /// returns the new deployment's id.
    pub async fn redeploy(&self, environment: &str) -> Result<String, Env0Error> {
        let url = format!("{}/environments/{environment}/deployments", self.base);
        let call = "redeploy";
        let body = retrying_when(
            || self.send(call, self.http.post(&url).json(&serde_json::json!({}))),
            |e| e.not_done() && e.transient(),
        )
        .await?;
        let answer: DeployResponse =
            serde_json::from_slice(&body).map_err(|e| Env0Error::Decode {
                call,
                why: e.to_string(),
            })?;
        Ok(answer.id)
    }
}

/// `Retry-After` as seconds (HTTP dates are not worth a parser here: env0 sends
/// seconds; a date counts as absent and the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Attempts per call, at most.
pub const MAX_ATTEMPTS: usize = 4;

/// The waits between attempts: exponential from 500 ms with jitter.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(MAX_ATTEMPTS - 1)
        .build()
}

async fn retrying<T, F, Fut>(call: F) -> Result<T, Env0Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Env0Error>>,
{
    retrying_when(call, Env0Error::transient).await
}

/// Runs `call` until it succeeds, fails for good, or [`MAX_ATTEMPTS`] are spent;
/// a 429 waits what its `Retry-After` asks (bounded by [`MAX_RETRY_AFTER`]).
async fn retrying_when<T, F, Fut>(
    mut call: F,
    retry: impl Fn(&Env0Error) -> bool,
) -> Result<T, Env0Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Env0Error>>,
{
    let mut waits = backoff();
    loop {
        let err = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(backoff) = waits.next().filter(|_| retry(&err)) else {
            return Err(err);
        };
        let wait = match &err {
            Env0Error::RateLimited {
                retry_after: Some(after),
                ..
            } => (*after).min(MAX_RETRY_AFTER),
            _ => backoff,
        };
        tracing::debug!(reason = err.reason(), error = %err, wait = ?wait, "env0 call retried");
        let until = Instant::now() + wait;
        tokio::time::sleep_until(until.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedeployMode;
    use kube_failover_testbed::{Env0Fault, Env0StandIn, env0_environment};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Setup {
        _dir: tempfile::TempDir,
        config: Env0Config,
        calls: Arc<AtomicUsize>,
    }

    fn setup(url: &str, secret: &str, org: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("id");
        let sec = dir.path().join("secret");
        std::fs::write(&id, "key-id\n").unwrap();
        std::fs::write(&sec, format!("{secret}\n")).unwrap();
        Setup {
            config: Env0Config {
                api_url: url.to_string(),
                key_id_file: id,
                key_secret_file: sec,
                organization_id: org.to_string(),
                project_ids: Vec::new(),
                agent_id: Some("agent-a".into()),
                redeploy: RedeployMode::Waiting,
                timeout: Duration::from_millis(800),
                lookup_timeout: Duration::from_secs(30),
            },
            _dir: dir,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    use std::sync::Arc;

    fn client(s: &Setup) -> Env0Client {
        crate::tls::install_provider();
        let calls = s.calls.clone();
        Env0Client::new(
            &s.config,
            reqwest::Client::new(),
            Arc::new(move |_, _| {
                calls.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    fn envs(n: usize, project: &str) -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| {
                env0_environment(
                    &format!("{project}-e{i}"),
                    &format!("env {i}"),
                    project,
                    &format!("d{i}"),
                    "SUCCESS",
                    "2025-01-01T00:00:00Z",
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn environments_are_read_page_by_page_in_the_agents_projects() {
        let env0 = Env0StandIn::start("key-id", "s3cr3t", "org-1").await;
        let mut all = envs(230, "p-default");
        all.extend(envs(3, "p-other"));
        env0.set_environments(all);
        // The default agent: every project but those assigned to another agent.
        env0.set_assignments(Some("agent-a"), &[("p-other", "agent-b")]);
        let s = setup(&env0.url(), "s3cr3t", "org-1");
        let c = client(&s);
        c.check_organization().await.expect("org");
        let scope = c.scope().await.expect("scope");
        assert_eq!(scope, Scope::AllExcept(vec!["p-other".into()]));
        let found = c.environments(&scope).await.expect("list");
        assert_eq!(found.len(), 233);
        let offsets: Vec<String> = env0
            .requests()
            .iter()
            .filter(|r| r.path == "/environments")
            .map(|r| format!("{}+{}", r.query["offset"], r.query["limit"]))
            .collect();
        assert_eq!(offsets, ["0+100", "100+100", "200+100"]);
        // Assigned by project: only those.
        env0.set_assignments(Some("agent-b"), &[("p-other", "agent-a")]);
        let scope = c.scope().await.expect("scope");
        assert_eq!(scope, Scope::Only(vec!["p-other".into()]));
        let found = c.environments(&scope).await.expect("list");
        assert_eq!(found.len(), 3);
        assert!(
            env0.requests()
                .iter()
                .any(|r| r.query.get("projectId").map(String::as_str) == Some("p-other"))
        );
    }

    #[tokio::test]
    async fn rate_limits_wait_for_retry_after_and_server_errors_are_retried() {
        let env0 = Env0StandIn::start("key-id", "s3cr3t", "org-1").await;
        env0.script(
            "/organizations",
            &[Env0Fault::RateLimited(1), Env0Fault::Status(500)],
        );
        let s = setup(&env0.url(), "s3cr3t", "org-1");
        let c = client(&s);
        let started = Instant::now();
        c.check_organization()
            .await
            .expect("third attempt succeeds");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After: 1 was waited"
        );
        let statuses: Vec<u16> = env0.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 500, 200]);
        assert_eq!(s.calls.load(Ordering::SeqCst), 3, "each call counted");
        // Always failing: bounded attempts, the last error.
        env0.script("/organizations", &[Env0Fault::Status(503); MAX_ATTEMPTS]);
        let err = c.check_organization().await.expect_err("503s");
        assert_eq!(err.reason(), "env0_http_status");
        assert_eq!(env0.requests().len(), 3 + MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_rejected_key_or_a_wrong_organization_is_named_and_not_retried() {
        let env0 = Env0StandIn::start("key-id", "s3cr3t", "org-1").await;
        let s = setup(&env0.url(), "wrong-secret", "org-1");
        let err = client(&s).check_organization().await.expect_err("401");
        assert_eq!(err.reason(), "env0_unauthorized");
        assert!(err.to_string().contains("env0.key_secret_file"), "{err}");
        assert!(!err.to_string().contains("wrong-secret"), "{err}");
        assert_eq!(env0.requests().len(), 1, "a 401 is not retried");

        let s = setup(&env0.url(), "s3cr3t", "org-2");
        let err = client(&s).check_organization().await.expect_err("org");
        assert_eq!(err.reason(), "env0_wrong_organization");
        let text = err.to_string();
        assert!(
            text.starts_with("env0.organization_id:") && text.contains("org-2"),
            "{text}"
        );
        assert!(text.contains("org-1"), "{text}");

        let mut s = setup(&env0.url(), "s3cr3t", "org-1");
        s.config.key_id_file = s._dir.path().join("missing");
        let err = client(&s).check_organization().await.expect_err("key file");
        assert_eq!(err.reason(), "env0_key_file");
        assert!(err.to_string().contains("env0.key_id_file"), "{err}");
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_and_a_redeploy_is_retried_only_when_not_done() {
        let env0 = Env0StandIn::start("key-id", "s3cr3t", "org-1").await;
        let s = setup(&env0.url(), "s3cr3t", "org-1");
        let c = client(&s);
        env0.script(
            "/organizations",
            &[Env0Fault::Slow(Duration::from_secs(3)); MAX_ATTEMPTS],
        );
        let err = c.check_organization().await.expect_err("slow");
        assert_eq!(err.reason(), "env0_timeout");

        let path = "/environments/e1/deployments";
        env0.script(path, &[Env0Fault::RateLimited(0)]);
        assert_eq!(c.redeploy("e1").await.expect("after a 429"), "redeploy-1");
        env0.script(path, &[Env0Fault::Status(500)]);
        let err = c.redeploy("e1").await.expect_err("500");
        assert_eq!(err.reason(), "env0_http_status");
        let posts: Vec<u16> = env0
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.status)
            .collect();
        assert_eq!(
            posts,
            [429, 200, 500],
            "a 500 may have redeployed: not retried"
        );
        assert_eq!(env0.redeploys(), ["e1"]);
    }
}
