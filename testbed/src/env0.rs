//! A local stand-in for env0's public API on 127.0.0.1, for tests of the daemon's env0
//! lookups and redeploys (this machine cannot reach env0). It serves the endpoints and
//! shapes env0's Terraform provider uses — `GET /organizations`,
//! `GET /agents/projects-assignments`, `GET /environments` paged by `limit`/`offset`,
//! `POST /environments/{id}/deployments` — behind HTTP basic auth (API key id and
//! secret), and answers with scripted faults: a status (401, 500, …), 429 with
//! `Retry-After`, or a slow answer. Every request is recorded.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A scripted answer, used once, before the normal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env0Fault {
    /// This status, with a JSON error body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RateLimited(u64),
    /// The normal answer, after this delay.
    Slow(Duration),
}

/// One request the stand-in got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env0Request {
    /// `GET` or `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query parameters.
    pub query: BTreeMap<String, String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    key: (String, String),
    organizations: Vec<String>,
    default_agent: Option<String>,
    assignments: BTreeMap<String, String>,
    environments: Vec<Value>,
    faults: BTreeMap<String, VecDeque<Env0Fault>>,
    requests: Vec<Env0Request>,
    redeploys: u64,
}

/// The stand-in; stops when dropped.
pub struct Env0StandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

/// An environment as `GET /environments` lists it, its latest deployment `status`
/// started at `started_at` (RFC 3339).
pub fn env0_environment(
    id: &str,
    name: &str,
    project: &str,
    deployment: &str,
    status: &str,
    started_at: &str,
) -> Value {
    json!({
        "id": id, "name": name, "projectId": project, "status": "ACTIVE",
        "isArchived": false, "latestDeploymentLogId": deployment,
        "latestDeploymentLog": {
            "id": deployment, "type": "deploy", "status": status,
            "startedAt": started_at, "queuedAt": started_at, "createdAt": started_at,
            "blueprintId": "tpl-1", "blueprintRevision": "main"
        }
    })
}

impl Env0StandIn {
    /// A stand-in accepting the key (`key_id`, `key_secret`), assigned to
    /// `organization`.
    pub async fn start(key_id: &str, key_secret: &str, organization: &str) -> Env0StandIn {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the env0 stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let state = Arc::new(Mutex::new(State {
            key: (key_id.to_string(), key_secret.to_string()),
            organizations: vec![organization.to_string()],
            ..State::default()
        }));
        let task = crate::serve_http(listener, state.clone(), |state, req| async move {
            answer(&state, req).await
        });
        Env0StandIn { addr, state, task }
    }

    /// Its base URL (`env0.api_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("stand-in state"))
    }

    /// The environments it lists.
    pub fn set_environments(&self, environments: Vec<Value>) {
        self.with(|s| s.environments = environments);
    }

    /// The agents' project assignment: the default agent, and project → agent.
    pub fn set_assignments(&self, default_agent: Option<&str>, projects: &[(&str, &str)]) {
        self.with(|s| {
            s.default_agent = default_agent.map(str::to_string);
            s.assignments = projects
                .iter()
                .map(|(p, a)| (p.to_string(), a.to_string()))
                .collect();
        });
    }

    /// Answers the next requests to `path` (e.g. `/environments`) with `faults`, in
    /// order, then normally.
    pub fn script(&self, path: &str, faults: &[Env0Fault]) {
        self.with(|s| {
            s.faults
                .insert(path.to_string(), faults.iter().cloned().collect())
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Env0Request> {
        self.with(|s| s.requests.clone())
    }

    /// The redeploy requests answered 2xx, by environment id, in order.
    pub fn redeploys(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && (200..300).contains(&r.status))
            .filter_map(|r| {
                r.path
                    .strip_prefix("/environments/")?
                    .strip_suffix("/deployments")
                    .map(str::to_string)
            })
            .collect()
    }
}

impl Drop for Env0StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: u16, body: Value, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .expect("stand-in answer")
}

fn basic(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let text = String::from_utf8(base64_decode(encoded)?).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Standard base64 (what HTTP basic auth uses), without a crate for it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&full[..chunk.len().saturating_sub(1)]);
    }
    Some(out)
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let auth = basic(&req);
    let _ = req.into_body().collect().await;
    let fault = {
        let mut s = state.lock().expect("stand-in state");
        s.faults.get_mut(&path).and_then(|f| f.pop_front())
    };
    let scripted = match fault {
        Some(Env0Fault::Status(code)) => Some(reply(code, json!({"message": "scripted"}), None)),
        Some(Env0Fault::RateLimited(after)) => Some(reply(
            429,
            json!({"message": "Too Many Requests"}),
            Some(after),
        )),
        Some(Env0Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        None => None,
    };
    let mut s = state.lock().expect("stand-in state");
    let response = scripted.unwrap_or_else(|| normal(&mut s, &method, &path, &query, auth));
    s.requests.push(Env0Request {
        method,
        path,
        query,
        status: response.status().as_u16(),
    });
    response
}

fn normal(
    s: &mut State,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    auth: Option<(String, String)>,
) -> Response<Full<Bytes>> {
    if auth.as_ref() != Some(&s.key) {
        return reply(401, json!({"message": "Unauthorized"}), None);
    }
    let org_ok = |q: &BTreeMap<String, String>| {
        q.get("organizationId")
            .is_some_and(|o| s.organizations.contains(o))
    };
    match (method, path) {
        ("GET", "/organizations") => reply(
            200,
            Value::Array(
                s.organizations
                    .iter()
                    .map(|o| json!({"id": o, "name": format!("org {o}")}))
                    .collect(),
            ),
            None,
        ),
        ("GET", "/agents/projects-assignments") if org_ok(query) => reply(
            200,
            json!({"defaultAgent": s.default_agent, "projectsAgents": s.assignments}),
            None,
        ),
        ("GET", "/environments") => {
            let by_project = query.get("projectId");
            if by_project.is_none() && !org_ok(query) {
                return reply(403, json!({"message": "Forbidden"}), None);
            }
            let num = |k: &str, d: usize| {
                query
                    .get(k)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(d)
            };
            let (limit, offset) = (num("limit", 100).min(100), num("offset", 0));
            let page: Vec<Value> = s
                .environments
                .iter()
                .filter(|e| by_project.is_none_or(|p| e["projectId"].as_str() == Some(p)))
                .skip(offset)
                .take(limit)
                .cloned()
                .collect();
            reply(200, Value::Array(page), None)
        }
        ("POST", p) if p.starts_with("/environments/") && p.ends_with("/deployments") => {
            s.redeploys += 1;
            reply(
                200,
                json!({"id": format!("redeploy-{}", s.redeploys)}),
                None,
            )
        }
        _ if path == "/agents/projects-assignments" => {
            reply(403, json!({"message": "Forbidden"}), None)
        }
        _ => reply(404, json!({"message": "Not Found"}), None),
    }
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(
            base64_decode("a2V5LWlkOnMzY3IzdA==").unwrap(),
            b"key-id:s3cr3t"
        );
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("a*").is_none());
    }
}
