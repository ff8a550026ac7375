//! A `kube::Client` whose credentials follow the files it was built from.
//!
//! The client handed to the rest of the daemon is an ordinary `kube::Client` over a tower
//! service of ours ([`Forward`]) that passes each request to the current inner client.
//! The inner client is rebuilt when the content of a file it depends on changes (the
//! kubeconfig, the token file it names, its certificate files): compared by content hash
//! at most every [`RECHECK_INTERVAL`], and before the next call after any 401.
//!
//! An exec credential plugin is never run by kube here (kube runs it with a blocking
//! `std::process` call while building a client, and again on refresh): [`super::exec`]
//! runs it as a bounded child process in a task of its own, its credential is cached
//! until its `expirationTimestamp` or until the server rejects it, and a call that needs
//! a credential waits at most `credential_wait` for it, then fails as `unauthorized`.

use super::exec::{ExecCredential, ExecError, ExecPlugin};
use super::{ClientOptions, ClusterError, Loaded};
use crate::config::ClusterConfig;
use crate::error_chain::chain;
use crate::model::Side;
use base64::Engine as _;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often, at most, the files a client was built from are compared with disk, unless
/// [`ClientOptions::recheck_interval`] says otherwise. After a 401 they are compared
/// before the next call regardless.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Bound on one run of an exec credential plugin, unless [`ClientOptions::exec_timeout`]
/// says otherwise. Calls do not wait this long (they wait `credential_wait`); a slow
/// plugin keeps running in the background so that a later call finds its credential,
/// and is killed after this.
pub const EXEC_PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An exec credential is renewed in the background this long before it expires (at
/// most half its lifetime), while calls keep using it.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// A plugin run that failed is not repeated sooner than this; calls in between fail
/// with its error at once.
const EXEC_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The files, the client built from them, and the exec credential, if any.
struct State {
    /// kube's configuration as read from the files, without the exec plugin.
    config: kube::Config,
    watched: Vec<PathBuf>,
    fingerprint: u64,
    checked_at: Instant,
    /// A 401 was seen: compare the files before the next call.
    recheck: bool,
    /// `None` while an exec plugin has not produced a credential yet.
    client: Option<kube::Client>,
    /// Bumped whenever `client` is replaced, so a 401 is blamed on the right one.
    generation: u64,
    exec: Option<ExecState>,
}

struct ExecState {
    plugin: ExecPlugin,
    credential: Option<Obtained>,
    /// The server answered 401 to the current credential.
    rejected: bool,
    running: bool,
    /// Bumped when the kubeconfig names another plugin; a run of an older one is ignored.
    epoch: u64,
    /// Runs finished since this plugin was configured.
    completed: u64,
    last_error: Option<(String, Instant)>,
}

struct Obtained {
    credential: ExecCredential,
    at: Timestamp,
}

impl Obtained {
    fn expired(&self, now: Timestamp) -> bool {
        self.credential.expires.is_some_and(|e| now >= e)
    }

    fn due_for_refresh(&self, now: Timestamp) -> bool {
        let Some(expires) = self.credential.expires else {
            return false;
        };
        let lifetime = expires.duration_since(self.at);
        let ahead = SignedDuration::try_from(REFRESH_AHEAD)
            .unwrap_or(SignedDuration::MAX)
            .min(lifetime / 2);
        now + ahead >= expires
    }
}

/// Shared by every clone of one cluster's client.
pub(crate) struct Reloader {
    side: Side,
    cluster: ClusterConfig,
    /// The kubeconfig file, or in-cluster credentials: named in logs.
    source: String,
    /// Set on every request.
    user_agent: http::HeaderValue,
    credential_wait: Duration,
    recheck_interval: Duration,
    exec_timeout: Duration,
    read_timeout: Duration,
    /// HTTP/2 offered to the API server, and its keep-alive (src/kube/client/connect.rs).
    http2: Option<super::connect::Http2>,
    state: Mutex<State>,
    /// One file comparison at a time.
    check: tokio::sync::Mutex<()>,
    /// Counts finished plugin runs, to wake the calls waiting for one.
    exec_done: watch::Sender<u64>,
}

enum Step {
    Ready(Result<(kube::Client, u64), kube::Error>),
    Wait,
}

impl Reloader {
    /// Wraps the first load in a client. Fails only when the inner client cannot be built.
    pub(crate) async fn start(
        cluster: &ClusterConfig,
        side: Side,
        options: ClientOptions,
        loaded: Loaded,
    ) -> Result<kube::Client, ClusterError> {
        let fingerprint = fingerprint(&loaded.watched).await;
        let client = match &loaded.exec {
            Some(_) => None,
            None => Some(
                build(&loaded.config, None, options.http2)
                    .map_err(|source| ClusterError::Client { side, source })?,
            ),
        };
        let namespace = loaded.config.default_namespace.clone();
        let reloader = Reloader {
            side,
            cluster: cluster.clone(),
            source: loaded.source,
            user_agent: options.user_agent,
            credential_wait: options.credential_wait,
            recheck_interval: options.recheck_interval,
            exec_timeout: options.exec_timeout,
            read_timeout: options.read_timeout,
            http2: options.http2,
            state: Mutex::new(State {
                exec: loaded.exec.map(|plugin| ExecState::new(plugin, 0)),
                config: loaded.config,
                watched: loaded.watched,
                fingerprint,
                checked_at: Instant::now(),
                recheck: false,
                client,
                generation: 0,
            }),
            check: tokio::sync::Mutex::new(()),
            exec_done: watch::Sender::new(0),
        };
        Ok(kube::Client::new(Forward(Arc::new(reloader)), namespace))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State stays consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client for the next call and its generation: after a due file comparison, and
    /// once an exec credential is at hand. Waits at most `credential_wait` in all.
    async fn current(self: &Arc<Self>) -> Result<(kube::Client, u64), kube::Error> {
        let deadline = Instant::now() + self.credential_wait;
        if self.check_due() {
            // A file system that hangs must not hold the call: the old client then serves.
            let _ = tokio::time::timeout_at(deadline, self.check_files()).await;
        }
        let mut done = self.exec_done.subscribe();
        let mut seen = None;
        loop {
            done.borrow_and_update();
            match self.step(&mut seen) {
                Step::Ready(result) => return result,
                Step::Wait => {
                    if tokio::time::timeout_at(deadline, done.changed())
                        .await
                        .is_err()
                    {
                        return Err(self.exec_error(format!(
                            "exec credential plugin {} did not answer within {:?}",
                            self.plugin_command(),
                            self.credential_wait
                        )));
                    }
                }
            }
        }
    }

    /// One look at the state: a client to use, an error, or wait for a plugin run.
    /// `seen` is the number of finished runs at the first look of this call.
    fn step(self: &Arc<Self>, seen: &mut Option<u64>) -> Step {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(exec) = state.exec.as_mut() else {
            return Step::Ready(match &state.client {
                Some(client) => Ok((client.clone(), state.generation)),
                // Without a plugin the client always exists; kept total anyway.
                None => Err(self.exec_error("no client could be built".to_string())),
            });
        };
        let now = Timestamp::now();
        if let (Some(obtained), Some(client)) = (&exec.credential, &state.client)
            && !exec.rejected
            && !obtained.expired(now)
        {
            if obtained.due_for_refresh(now) && !exec.running {
                self.spawn_exec(exec);
            }
            return Step::Ready(Ok((client.clone(), state.generation)));
        }
        let first_look = seen.is_none();
        let seen = *seen.get_or_insert(exec.completed);
        if exec.completed > seen {
            // The run this call waited for finished without a usable credential.
            let message = exec
                .last_error
                .as_ref()
                .map(|(m, _)| m.clone())
                .unwrap_or_else(|| "exec credential plugin gave no usable credential".into());
            return Step::Ready(Err(self.exec_error(message)));
        }
        if exec.running {
            return Step::Wait;
        }
        if first_look
            && let Some((message, at)) = &exec.last_error
            && at.elapsed() < EXEC_RETRY_AFTER
        {
            return Step::Ready(Err(self.exec_error(message.clone())));
        }
        self.spawn_exec(exec);
        Step::Wait
    }

    fn spawn_exec(self: &Arc<Self>, exec: &mut ExecState) {
        exec.running = true;
        let plugin = exec.plugin.clone();
        let epoch = exec.epoch;
        let me = Arc::clone(self);
        let timeout = self.exec_timeout;
        debug!(role = %self.side, kubeconfig = %self.source, command = plugin.command(),
            "running exec credential plugin");
        tokio::spawn(async move {
            let result = plugin.run(timeout).await;
            me.exec_finished(epoch, result);
        });
    }

    fn exec_finished(&self, epoch: u64, result: Result<ExecCredential, ExecError>) {
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let Some(exec) = state.exec.as_mut().filter(|e| e.epoch == epoch) else {
                return;
            };
            exec.running = false;
            exec.completed += 1;
            let now = Timestamp::now();
            let command = || exec.plugin.command().to_string();
            let built = result.and_then(|credential| {
                if credential.expires.is_some_and(|e| e <= now) {
                    return Err(ExecError::Expired { command: command() });
                }
                build(&state.config, Some(&credential), self.http2)
                    .map(|client| (client, credential))
                    .map_err(|e| ExecError::Unusable {
                        command: command(),
                        detail: crate::kube::call::describe(&e),
                    })
            });
            match built.map_err(|e| chain(&e).to_string()) {
                Ok((client, credential)) => {
                    debug!(role = %self.side, kubeconfig = %self.source,
                        expires = ?credential.expires, "exec credential obtained");
                    exec.credential = Some(Obtained {
                        credential,
                        at: now,
                    });
                    exec.rejected = false;
                    exec.last_error = None;
                    state.client = Some(client);
                    state.generation += 1;
                }
                Err(message) => {
                    // Once per distinct failure: a plugin failing every second must not
                    // flood the log.
                    if exec.last_error.as_ref().map(|(m, _)| m) != Some(&message) {
                        warn!(role = %self.side, kubeconfig = %self.source, error = %message,
                            "exec credential plugin gave no credential");
                    }
                    exec.last_error = Some((message, Instant::now()));
                }
            }
        }
        self.exec_done.send_modify(|n| *n += 1);
    }

    /// The server rejected the credentials of client `generation`.
    fn unauthorized(&self, generation: u64) {
        let mut state = self.lock();
        state.recheck = true;
        if state.generation == generation
            && let Some(exec) = state.exec.as_mut()
        {
            exec.rejected = true;
        }
        debug!(role = %self.side, kubeconfig = %self.source,
            "401 from the API server: credentials are re-read before the next call");
    }

    fn check_due(&self) -> bool {
        let state = self.lock();
        state.recheck || state.checked_at.elapsed() >= self.recheck_interval
    }

    /// Compares the files with disk and rebuilds the client when they changed.
    async fn check_files(&self) {
        let _one_at_a_time = self.check.lock().await;
        let (watched, old) = {
            let state = self.lock();
            if !(state.recheck || state.checked_at.elapsed() >= self.recheck_interval) {
                return; // another call just did it
            }
            (state.watched.clone(), state.fingerprint)
        };
        let now = fingerprint(&watched).await;
        if now != old {
            self.reload(now, &watched).await;
        }
        let mut state = self.lock();
        state.checked_at = Instant::now();
        state.recheck = false;
    }

    async fn reload(&self, fingerprint_before: u64, watched_before: &[PathBuf]) {
        let loaded = match super::load(&self.cluster, self.side, self.read_timeout).await {
            Ok(loaded) => loaded,
            Err(err) => {
                warn!(role = %self.side, kubeconfig = %self.source, error = %chain(&err),
                    "credentials changed on disk but cannot be used; keeping the previous client");
                // Not retried until the files change again.
                self.lock().fingerprint = fingerprint_before;
                return;
            }
        };
        // The hash taken before loading stands for what was loaded: a change racing the
        // load then shows as a difference at the next comparison. Only a changed set of
        // files (another token file, say) needs hashing anew.
        let fingerprint = if loaded.watched == watched_before {
            fingerprint_before
        } else {
            fingerprint(&loaded.watched).await
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        let exec = match (loaded.exec, state.exec.take()) {
            (Some(plugin), Some(old)) if old.plugin == plugin => Some(old),
            (Some(plugin), old) => Some(ExecState::new(
                plugin,
                old.map(|o| o.epoch + 1).unwrap_or_default(),
            )),
            (None, _) => None,
        };
        let credential = exec
            .as_ref()
            .and_then(|e| e.credential.as_ref())
            .map(|o| &o.credential);
        let client = match (&exec, credential) {
            (Some(_), None) => Ok(None),
            (_, credential) => build(&loaded.config, credential, self.http2).map(Some),
        };
        match client {
            Ok(client) => {
                state.client = client;
                state.config = loaded.config;
                state.exec = exec;
                state.generation += 1;
                info!(role = %self.side, kubeconfig = %self.source,
                    "credentials changed on disk: client rebuilt from them");
            }
            Err(err) => {
                state.exec = exec;
                warn!(role = %self.side, kubeconfig = %self.source,
                    error = %crate::kube::call::describe(&err),
                    "credentials changed on disk but no client can be built from them; keeping the previous client");
            }
        }
        state.watched = loaded.watched;
        state.fingerprint = fingerprint;
    }

    fn plugin_command(&self) -> String {
        self.lock()
            .exec
            .as_ref()
            .map(|e| e.plugin.command().to_string())
            .unwrap_or_default()
    }

    /// A credential failure: `unauthorized` to the probes, never down evidence.
    fn exec_error(&self, message: String) -> kube::Error {
        kube::Error::Auth(kube::client::AuthError::AuthExec(format!(
            "{} cluster: {message}",
            self.side
        )))
    }
}

impl ExecState {
    fn new(plugin: ExecPlugin, epoch: u64) -> ExecState {
        ExecState {
            plugin,
            credential: None,
            rejected: false,
            running: false,
            epoch,
            completed: 0,
            last_error: None,
        }
    }
}

/// Builds kube's client from `config`, with the exec plugin's credential in place of the
/// plugin, offering HTTP/2 when `http2` says so (src/kube/client/connect.rs). Never runs a
/// plugin (the config has none), so it never blocks.
fn build(
    config: &kube::Config,
    credential: Option<&ExecCredential>,
    http2: Option<super::connect::Http2>,
) -> Result<kube::Client, kube::Error> {
    let mut config = config.clone();
    if let Some(credential) = credential {
        let auth = &mut config.auth_info;
        if let Some(token) = &credential.token {
            auth.token = Some(token.clone().into());
            auth.token_file = None;
        }
        if let Some((cert, key)) = &credential.certificate {
            // kube reads `*-data` as base64, as in a kubeconfig; the plugin prints PEM.
            let b64 = base64::engine::general_purpose::STANDARD;
            auth.client_certificate_data = Some(b64.encode(cert));
            auth.client_key_data = Some(b64.encode(key).into());
            auth.client_certificate = None;
            auth.client_key = None;
        }
    }
    super::connect::client(&config, http2)
}

/// A hash of the content of every file in `paths`, an unreadable file counting by its
/// error kind (a file being replaced is then a change, and its return another). The
/// files are small and read in one blocking task: one thread hand-off per check, not
/// one per file.
async fn fingerprint(paths: &[PathBuf]) -> u64 {
    let owned = paths.to_vec();
    match tokio::task::spawn_blocking(move || fingerprint_now(&owned)).await {
        Ok(hash) => hash,
        // The blocking pool is shutting down: read them here.
        Err(_) => fingerprint_now(paths),
    }
}

fn fingerprint_now(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        path.hash(&mut hasher);
        match std::fs::read(path) {
            Ok(bytes) => {
                0u8.hash(&mut hasher);
                bytes.hash(&mut hasher);
            }
            Err(err) => {
                1u8.hash(&mut hasher);
                err.kind().hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

/// The tower service under the client the daemon holds: each request goes to the
/// current inner client; a 401 marks the credentials for re-reading.
#[derive(Clone)]
struct Forward(Arc<Reloader>);

type Request = http::Request<kube::client::Body>;
type Response = http::Response<kube::client::Body>;

impl tower_service::Service<Request> for Forward {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let reloader = Arc::clone(&self.0);
        request
            .headers_mut()
            .insert(http::header::USER_AGENT, reloader.user_agent.clone());
        // kube's client passes this future back to the caller, so the caller's timeout
        // bounds everything in it, waits for credentials included.
        Box::pin(async move {
            let (client, generation) = reloader.current().await?;
            let response = client.send(request).await?;
            if response.status() == http::StatusCode::UNAUTHORIZED {
                reloader.unauthorized(generation);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::model::ProbeReason;
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback API server that answers `GET /readyz` with `ok` to the tokens it is told
    /// to accept and 401 to everything else, and remembers the tokens it saw.
    struct Api {
        url: String,
        accepted: Arc<Mutex<HashSet<String>>>,
        seen: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Api {
        async fn start(accepted: &[&str]) -> Api {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let accepted = Arc::new(Mutex::new(
                accepted
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<HashSet<_>>(),
            ));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (a, s) = (accepted.clone(), seen.clone());
            let task = tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let (a, s) = (a.clone(), s.clone());
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).to_string();
                        let token = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .starts_with("authorization: bearer ")
                                    .then(|| l["authorization: bearer ".len()..].to_string())
                            })
                            .unwrap_or_default();
                        s.lock().unwrap().push(token.clone());
                        let ok = a.lock().unwrap().contains(&token);
                        let (status, body) = if ok {
                            ("200 OK", "ok".to_string())
                        } else {
                            (
                                "401 Unauthorized",
                                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.to_string(),
                            )
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(answer.as_bytes()).await;
                    });
                }
            });
            Api {
                url,
                accepted,
                seen,
                task,
            }
        }

        fn accept_only(&self, tokens: &[&str]) {
            *self.accepted.lock().unwrap() = tokens.iter().map(|t| t.to_string()).collect();
        }

        fn last_seen(&self) -> String {
            self.seen
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    impl Drop for Api {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn kubeconfig(server: &str, user: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
current-context: test
clusters:
- name: test
  cluster:
    server: {server}
contexts:
- name: test
  context:
    cluster: test
    user: test
users:
- name: test
  user:
{user}"
        )
    }

    /// Writes `text` to `path` the way tools that rotate credentials do: a new file
    /// renamed over the old one.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn cluster(path: &Path) -> ClusterConfig {
        ClusterConfig {
            kubeconfig: Some(path.to_path_buf()),
            context: None,
            namespace: "ns".to_string(),
        }
    }

    fn options(recheck_interval: Duration) -> ClientOptions {
        ClientOptions {
            credential_wait: Duration::from_millis(600),
            recheck_interval,
            ..ClientOptions::default()
        }
    }

    /// The primary's client for the kubeconfig at `path`.
    async fn primary_client(path: &Path, recheck_interval: Duration) -> kube::Client {
        super::super::client_for_with(&cluster(path), Side::Primary, options(recheck_interval))
            .await
            .unwrap()
    }

    async fn readyz(client: &kube::Client) -> crate::model::ProbeOutcome {
        crate::probe::api::readyz(client, Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn a_401_rereads_the_kubeconfig_before_the_next_call() {
        let api = Api::start(&["token-a"]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        replace(&path, &kubeconfig(&api.url, "    token: token-a"));
        // Files are compared only after a 401 here.
        let client = primary_client(&path, Duration::from_secs(3600)).await;
        assert!(readyz(&client).await.passed());

        replace(&path, &kubeconfig(&api.url, "    token: token-b"));
        api.accept_only(&["token-b"]);
        let rejected = readyz(&client).await;
        assert_eq!(rejected.reason, ProbeReason::Unauthorized, "{rejected:?}");
        assert_eq!(api.last_seen(), "token-a");

        let clone = client.clone();
        let again = readyz(&clone).await;
        assert!(again.passed(), "{again:?}");
        assert_eq!(api.last_seen(), "token-b");
    }

    #[tokio::test]
    async fn a_changed_kubeconfig_is_used_without_a_401() {
        let api = Api::start(&["token-a", "token-b"]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        replace(&path, &kubeconfig(&api.url, "    token: token-a"));
        let client = primary_client(&path, Duration::ZERO).await;
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "token-a");
        replace(&path, &kubeconfig(&api.url, "    token: token-b"));
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "token-b");
    }

    #[tokio::test]
    async fn an_invalid_kubeconfig_keeps_the_previous_client() {
        let api = Api::start(&["token-a", "token-b"]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        replace(&path, &kubeconfig(&api.url, "    token: token-a"));
        let client = primary_client(&path, Duration::ZERO).await;
        assert!(readyz(&client).await.passed());

        // Half-written, then gone: the client keeps working with what it had.
        replace(&path, "apiVersion: v1\nusers: [\n");
        assert!(readyz(&client).await.passed());
        std::fs::remove_file(&path).unwrap();
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "token-a");

        replace(&path, &kubeconfig(&api.url, "    token: token-b"));
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "token-b");
    }

    #[tokio::test]
    async fn a_changed_token_file_is_used_at_once() {
        let api = Api::start(&["token-a", "token-b"]).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let path = dir.path().join("kubeconfig");
        replace(&token, "token-a");
        replace(
            &path,
            &kubeconfig(&api.url, &format!("    tokenFile: {}", token.display())),
        );
        let client =
            super::super::client_for_with(&cluster(&path), Side::Standby, options(Duration::ZERO))
                .await
                .unwrap();
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "token-a");
        // kube alone would keep the old token for up to a minute.
        replace(&token, "token-b");
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "token-b");
    }

    /// A plugin printing the token in `<dir>/token` (with `<dir>/expiry` as its
    /// expirationTimestamp when that exists), sleeping `<dir>/sleep` seconds first when
    /// that exists, and counting its runs in `<dir>/runs`.
    fn exec_kubeconfig(dir: &Path, server: &str) -> PathBuf {
        let script = dir.join("plugin.sh");
        let d = dir.display();
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
echo run >> {d}/runs
if [ -f {d}/sleep ]; then sleep "$(cat {d}/sleep)"; fi
if [ -f {d}/fail ]; then exit 1; fi
expiry=""
if [ -f {d}/expiry ]; then expiry=",\"expirationTimestamp\":\"$(cat {d}/expiry)\""; fi
printf '{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{{"token":"%s"%s}}}}' "$(cat {d}/token)" "$expiry"
"#
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("kubeconfig");
        replace(
            &path,
            &kubeconfig(
                server,
                &format!(
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
                    script.display()
                ),
            ),
        );
        path
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn an_exec_credential_is_cached_until_the_server_rejects_it() {
        let api = Api::start(&["exec-a"]).await;
        let dir = tempfile::tempdir().unwrap();
        replace(&dir.path().join("token"), "exec-a");
        let path = exec_kubeconfig(dir.path(), &api.url);
        let client = primary_client(&path, RECHECK_INTERVAL).await;
        assert_eq!(runs(dir.path()), 0, "building the client runs no plugin");
        for _ in 0..3 {
            let out = readyz(&client).await;
            assert!(out.passed(), "{out:?}");
        }
        assert_eq!(runs(dir.path()), 1);

        // The plugin's answer changes and the old token is revoked.
        replace(&dir.path().join("token"), "exec-b");
        api.accept_only(&["exec-b"]);
        assert_eq!(readyz(&client).await.reason, ProbeReason::Unauthorized);
        let out = readyz(&client).await;
        assert!(out.passed(), "{out:?}");
        assert_eq!(api.last_seen(), "exec-b");
        assert_eq!(runs(dir.path()), 2);
    }

    #[tokio::test]
    async fn an_expired_exec_credential_is_renewed_before_use() {
        let api = Api::start(&["exec-a", "exec-b"]).await;
        let dir = tempfile::tempdir().unwrap();
        replace(&dir.path().join("token"), "exec-a");
        let expiry = Timestamp::now() + SignedDuration::from_millis(1500);
        replace(&dir.path().join("expiry"), &expiry.to_string());
        let path = exec_kubeconfig(dir.path(), &api.url);
        let client = primary_client(&path, RECHECK_INTERVAL).await;
        assert!(readyz(&client).await.passed());
        assert_eq!(api.last_seen(), "exec-a");

        replace(&dir.path().join("token"), "exec-b");
        std::fs::remove_file(dir.path().join("expiry")).unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let out = readyz(&client).await;
        assert!(out.passed(), "{out:?}");
        assert_eq!(api.last_seen(), "exec-b");
        assert_eq!(runs(dir.path()), 2);
    }

    /// The runtime has one thread: were the plugin run on it, nothing else would run.
    #[tokio::test(flavor = "current_thread")]
    async fn a_hanging_exec_plugin_costs_a_call_the_credential_wait_and_no_thread() {
        let api = Api::start(&["exec-a"]).await;
        let dir = tempfile::tempdir().unwrap();
        replace(&dir.path().join("token"), "exec-a");
        replace(&dir.path().join("sleep"), "60");
        let path = exec_kubeconfig(dir.path(), &api.url);
        let client = primary_client(&path, RECHECK_INTERVAL).await;

        let beats = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let beats = beats.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(50));
                loop {
                    every.tick().await;
                    beats.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let start = std::time::Instant::now();
        let outcomes = futures::future::join_all((0..4).map(|_| readyz(&client))).await;
        let took = start.elapsed();
        ticker.abort();
        for out in &outcomes {
            assert_eq!(out.reason, ProbeReason::Unauthorized, "{out:?}");
            assert!(
                out.detail.contains("did not answer within 600ms"),
                "{}",
                out.detail
            );
        }
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // 600 ms at 50 ms: about 12 beats; a blocked thread would give 1.
        assert!(beats.load(Ordering::Relaxed) >= 6, "{beats:?}");
        assert_eq!(runs(dir.path()), 1, "concurrent calls share one plugin run");
    }

    #[tokio::test]
    async fn a_hung_plugin_run_is_killed_and_the_next_run_serves() {
        let api = Api::start(&["exec-a"]).await;
        let dir = tempfile::tempdir().unwrap();
        replace(&dir.path().join("token"), "exec-a");
        replace(&dir.path().join("sleep"), "60");
        let path = exec_kubeconfig(dir.path(), &api.url);
        let options = ClientOptions {
            exec_timeout: Duration::from_millis(1500),
            ..options(RECHECK_INTERVAL)
        };
        let client = super::super::client_for_with(&cluster(&path), Side::Primary, options)
            .await
            .unwrap();
        assert_eq!(readyz(&client).await.reason, ProbeReason::Unauthorized);
        std::fs::remove_file(dir.path().join("sleep")).unwrap();
        // Until the hung run is cut off, calls wait for it and fail; then a new run serves.
        let start = std::time::Instant::now();
        let mut passed = false;
        while start.elapsed() < Duration::from_secs(10) {
            if readyz(&client).await.passed() {
                passed = true;
                break;
            }
        }
        assert!(passed, "no credential within 10s");
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert_eq!(runs(dir.path()), 2);
    }

    #[tokio::test]
    async fn an_already_expired_exec_credential_is_refused() {
        let api = Api::start(&["exec-a"]).await;
        let dir = tempfile::tempdir().unwrap();
        replace(&dir.path().join("token"), "exec-a");
        replace(&dir.path().join("expiry"), "2001-01-01T00:00:00Z");
        let path = exec_kubeconfig(dir.path(), &api.url);
        let client = primary_client(&path, RECHECK_INTERVAL).await;
        let out = readyz(&client).await;
        assert_eq!(out.reason, ProbeReason::Unauthorized, "{out:?}");
        assert!(out.detail.contains("already expired"), "{}", out.detail);
        assert!(api.seen.lock().unwrap().is_empty(), "no request was sent");
    }

    #[tokio::test]
    async fn a_failing_exec_plugin_is_unauthorized_and_not_rerun_at_every_call() {
        let api = Api::start(&["exec-a"]).await;
        let dir = tempfile::tempdir().unwrap();
        replace(&dir.path().join("token"), "exec-a");
        replace(&dir.path().join("fail"), "");
        let path = exec_kubeconfig(dir.path(), &api.url);
        let client = primary_client(&path, RECHECK_INTERVAL).await;
        for _ in 0..5 {
            let out = readyz(&client).await;
            assert_eq!(out.reason, ProbeReason::Unauthorized, "{out:?}");
            assert!(out.detail.contains("plugin.sh failed"), "{}", out.detail);
        }
        assert_eq!(runs(dir.path()), 1);
        std::fs::remove_file(dir.path().join("fail")).unwrap();
        tokio::time::sleep(EXEC_RETRY_AFTER).await;
        assert!(readyz(&client).await.passed());
        assert_eq!(runs(dir.path()), 2);
    }
}
