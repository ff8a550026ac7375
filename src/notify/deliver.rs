//! Delivery: one background task per webhook takes notices from that webhook's bounded
//! queue, oldest first, and POSTs each with the daemon's shared HTTP client, retrying
//! with exponential backoff. Queuing never waits: a full queue drops its oldest notice
//! (counted), so a tick never blocks on a receiver. A webhook that is down delays only
//! its own notices.

use super::metrics::NoticeResult;
use super::{Notice, NoticeEvent, NoticeMetrics, render};
use crate::config::{NotifyConfig, WebhookConfig, read_secret_file};
use crate::error_chain::chain;
use crate::kube::call::describe_reqwest;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Attempts per notice and webhook.
pub const MAX_ATTEMPTS: u32 = 6;
/// The wait after the first failed attempt; each further wait doubles, up to
/// [`MAX_BACKOFF`].
pub const BACKOFF: Duration = Duration::from_secs(4);
/// The longest wait between two attempts (a `Retry-After` longer than this is cut).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The waits between the attempts of one notice: 4 s, 8 s, 16 s, 32 s, 60 s (two
/// minutes in all, plus the attempts themselves), for a first wait of `first` (tests).
#[cfg(test)]
pub fn backoff_schedule(first: Duration) -> Vec<Duration> {
    (1..MAX_ATTEMPTS).map(|n| backoff(first, n)).collect()
}

/// The wait after failed attempt `n` (1-based).
fn backoff(first: Duration, n: u32) -> Duration {
    first
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(MAX_BACKOFF)
}

/// One notice rendered for one webhook.
struct Pending {
    id: String,
    event: NoticeEvent,
    body: bytes::Bytes,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// A notice is being delivered (taken from `waiting`, not finished).
    delivering: Option<NoticeEvent>,
}

/// One webhook: its settings, queue and wake-up.
struct Hook {
    cfg: WebhookConfig,
    capacity: usize,
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Hook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(&self) -> bool {
        let q = self.lock();
        q.waiting.is_empty() && q.delivering.is_none()
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx.
    Sent(u16),
    /// Worth another attempt (connection failure, timeout, 408, 429, 5xx, a secret file
    /// that cannot be read), after at least the given wait when the receiver said so.
    Retry(String, Option<Duration>),
    /// Another attempt would be refused the same way (a 3xx or another 4xx).
    GiveUp(String),
}

struct Shared {
    hooks: Vec<Arc<Hook>>,
    http: reqwest::Client,
    metrics: NoticeMetrics,
    first_backoff: Duration,
    closing: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The daemon's notice sender, shared by every group; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

impl Notifier {
    /// A sender for the webhooks of `config`; nothing is sent before [`Notifier::start`].
    /// `http` is the daemon's shared client (each request has the webhook's own timeout).
    pub fn new(config: &NotifyConfig, http: reqwest::Client, metrics: NoticeMetrics) -> Self {
        Self::with_backoff(config, http, metrics, BACKOFF)
    }

    /// [`Notifier::new`] with another first backoff (tests).
    pub fn with_backoff(
        config: &NotifyConfig,
        http: reqwest::Client,
        metrics: NoticeMetrics,
        first_backoff: Duration,
    ) -> Self {
        let hooks = config
            .webhooks
            .iter()
            .map(|cfg| {
                metrics.init_webhook(&cfg.name, &cfg.events);
                Arc::new(Hook {
                    cfg: cfg.clone(),
                    capacity: config.queue.max(1),
                    queue: Mutex::new(Queue::default()),
                    wake: Notify::new(),
                })
            })
            .collect();
        Notifier {
            shared: Arc::new(Shared {
                hooks,
                http,
                metrics,
                first_backoff,
                closing: watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// True when at least one webhook is configured.
    pub fn is_enabled(&self) -> bool {
        !self.shared.hooks.is_empty()
    }

    /// Starts one delivery task per webhook (on the current runtime).
    pub fn start(&self) {
        let mut tasks = self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for hook in &self.shared.hooks {
            let worker = Worker {
                hook: hook.clone(),
                shared: self.shared.clone(),
                closing: self.shared.closing.subscribe(),
            };
            tasks.push(tokio::spawn(worker.run()));
        }
    }

    /// Queues `notice` for every webhook that wants its event. Never waits: a full queue
    /// drops its oldest notice (counted as `dropped`).
    pub fn send(&self, notice: &Notice) {
        for hook in &self.shared.hooks {
            if !hook.cfg.wants(notice.event) {
                continue;
            }
            let pending = Pending {
                id: notice.id.clone(),
                event: notice.event,
                body: render(notice, hook.cfg.format).into(),
            };
            let dropped = {
                let mut q = hook.lock();
                let dropped = if q.waiting.len() >= hook.capacity {
                    q.waiting.pop_front()
                } else {
                    None
                };
                q.waiting.push_back(pending);
                dropped
            };
            if let Some(old) = dropped {
                self.shared
                    .metrics
                    .count(&hook.cfg.name, old.event, NoticeResult::Dropped);
                warn!(
                    webhook = %hook.cfg.name,
                    notice = %old.id,
                    queue = hook.capacity,
                    "notice queue full: the oldest notice was dropped"
                );
            }
            hook.wake.notify_one();
        }
    }

    /// Stops waiting between attempts (each notice left gets one more attempt; one in
    /// flight ends with that attempt) and resolves once every queue is empty and nothing
    /// is being sent. For the drain at shutdown, bounded by the caller.
    pub async fn flush(self) {
        let _ = self.shared.closing.send(true);
        for hook in &self.shared.hooks {
            hook.wake.notify_one();
        }
        while !self.shared.hooks.iter().all(|h| h.idle()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the delivery tasks; notices not sent by now count as `dropped`.
    pub fn abandon(&self) {
        for task in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        for hook in &self.shared.hooks {
            let mut q = hook.lock();
            let delivering = q.delivering.take();
            let lost: Vec<NoticeEvent> = q
                .waiting
                .drain(..)
                .map(|p| p.event)
                .chain(delivering)
                .collect();
            drop(q);
            if !lost.is_empty() {
                warn!(
                    webhook = %hook.cfg.name,
                    notices = lost.len(),
                    "stopping: notices not sent"
                );
            }
            for event in lost {
                self.shared
                    .metrics
                    .count(&hook.cfg.name, event, NoticeResult::Dropped);
            }
        }
    }

    /// The ids waiting for the webhook `name`, oldest first (tests).
    pub fn queued(&self, name: &str) -> Vec<String> {
        self.shared
            .hooks
            .iter()
            .filter(|h| h.cfg.name == name)
            .flat_map(|h| {
                h.lock()
                    .waiting
                    .iter()
                    .map(|p| p.id.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The delivery task of one webhook.
struct Worker {
    hook: Arc<Hook>,
    shared: Arc<Shared>,
    closing: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let next = {
                let mut q = self.hook.lock();
                let next = q.waiting.pop_front();
                q.delivering = next.as_ref().map(|p| p.event);
                next
            };
            match next {
                Some(pending) => {
                    let result = self.deliver(&pending).await;
                    // Whoever takes `delivering` counts the notice: this task, or
                    // `abandon` at shutdown.
                    if self.hook.lock().delivering.take().is_some() {
                        self.shared
                            .metrics
                            .count(&self.hook.cfg.name, pending.event, result);
                    }
                }
                // A notify_one() before this wait leaves a permit: no wake-up is lost.
                None => self.hook.wake.notified().await,
            }
        }
    }

    async fn deliver(&mut self, p: &Pending) -> NoticeResult {
        let name = self.hook.cfg.name.as_str();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(p).await {
                DeliveryOutcome::Sent(status) => {
                    info!(webhook = name, notice = %p.id, attempt, status, "notice sent");
                    return NoticeResult::Sent;
                }
                DeliveryOutcome::GiveUp(why) => {
                    error!(webhook = name, notice = %p.id, attempt, error = %why,
                        "notice refused by the webhook; not retried");
                    return NoticeResult::Failed;
                }
                DeliveryOutcome::Retry(why, after) => {
                    if attempt == MAX_ATTEMPTS || *self.closing.borrow() {
                        error!(webhook = name, notice = %p.id, attempts = attempt, error = %why,
                            "notice not delivered; giving up");
                        return NoticeResult::Failed;
                    }
                    let mut wait = backoff(self.shared.first_backoff, attempt);
                    if let Some(after) = after {
                        wait = wait.max(after).min(MAX_BACKOFF);
                    }
                    warn!(webhook = name, notice = %p.id, attempt, error = %why,
                        retry_in = %humantime::format_duration(wait), "notice attempt failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.closing.wait_for(|c| *c) => {}
                    }
                }
            }
        }
        NoticeResult::Failed
    }

    /// One POST. Errors name the webhook's problem, never its URL or secret.
    async fn attempt(&self, p: &Pending) -> DeliveryOutcome {
        let cfg = &self.hook.cfg;
        let mut request = self
            .shared
            .http
            .post(&cfg.url)
            .timeout(cfg.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("kube-failover/", env!("CARGO_PKG_VERSION")),
            )
            .header("Idempotency-Key", p.id.as_str())
            .body(p.body.clone());
        if let (Some(header), Some(file)) = (&cfg.secret_header, &cfg.secret_file) {
            match read_secret_file(file) {
                Ok(value) => request = request.header(header.as_str(), value),
                Err(why) => {
                    return DeliveryOutcome::Retry(format!("secret_file: {}", chain(&why)), None);
                }
            }
        }
        // reqwest's timeout starts after name resolution; the outer bound covers it too.
        match tokio::time::timeout(cfg.timeout, request.send()).await {
            Err(_) => DeliveryOutcome::Retry(
                format!(
                    "no answer within {}",
                    humantime::format_duration(cfg.timeout)
                ),
                None,
            ),
            Ok(Err(err)) => DeliveryOutcome::Retry(describe_reqwest(&err), None),
            Ok(Ok(response)) => classify(response.status().as_u16(), retry_after(&response)),
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(http::header::RETRY_AFTER)?;
    value
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// What an answer means for the notice.
fn classify(status: u16, retry_after: Option<Duration>) -> DeliveryOutcome {
    match status {
        200..=299 => DeliveryOutcome::Sent(status),
        408 | 429 | 500..=599 => DeliveryOutcome::Retry(format!("HTTP {status}"), retry_after),
        300..=399 => DeliveryOutcome::GiveUp(format!(
            "HTTP {status}: redirects are not followed (configure the final URL)"
        )),
        _ => DeliveryOutcome::GiveUp(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoticeFormat;
    use crate::notify::content::tests::promotion_notice;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn backoff_doubles_from_four_seconds_to_a_minute_over_six_attempts() {
        let secs: Vec<u64> = backoff_schedule(BACKOFF)
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(secs, [4, 8, 16, 32, 60]);
        assert_eq!(secs.iter().sum::<u64>(), 120, "about two minutes in all");
        assert_eq!(backoff(BACKOFF, 40), MAX_BACKOFF);
    }

    #[test]
    fn answers_are_sent_retried_or_given_up() {
        assert_eq!(classify(204, None), DeliveryOutcome::Sent(204));
        for status in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(status, None), DeliveryOutcome::Retry(..)));
        }
        assert_eq!(
            classify(503, Some(Duration::from_secs(7))),
            DeliveryOutcome::Retry("HTTP 503".into(), Some(Duration::from_secs(7)))
        );
        for status in [301, 400, 401, 403, 404, 410] {
            assert!(matches!(classify(status, None), DeliveryOutcome::GiveUp(_)));
        }
    }

    fn metrics() -> NoticeMetrics {
        NoticeMetrics::new(&crate::metric_registry::MetricRegistry::default()).unwrap()
    }

    fn hook(name: &str, url: String) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url,
            format: NoticeFormat::Json,
            secret_header: None,
            secret_file: None,
            timeout: Duration::from_secs(2),
            events: NoticeEvent::ALL.to_vec(),
        }
    }

    fn notice(epoch: u64) -> Notice {
        let mut n = promotion_notice();
        n.epoch = epoch;
        n.id = format!("env0/{epoch}/promotion");
        n
    }

    #[test]
    fn a_full_queue_drops_its_oldest_notice_and_counts_it() {
        let m = metrics();
        let config = NotifyConfig {
            queue: 3,
            webhooks: vec![
                hook("a", "http://127.0.0.1:9/".into()),
                WebhookConfig {
                    events: vec![NoticeEvent::Failed],
                    ..hook("only-failed", "http://127.0.0.1:9/".into())
                },
            ],
        };
        // Not started: nothing is taken from the queues.
        let n = Notifier::new(&config, reqwest::Client::new(), m.clone());
        for epoch in 1..=5 {
            n.send(&notice(epoch));
        }
        assert_eq!(
            n.queued("a"),
            ["env0/3/promotion", "env0/4/promotion", "env0/5/promotion"]
        );
        assert_eq!(m.get("a", NoticeEvent::Promotion, NoticeResult::Dropped), 2);
        // A webhook that does not want the event gets nothing.
        assert!(n.queued("only-failed").is_empty());
        n.abandon();
        assert!(n.queued("a").is_empty());
        assert_eq!(m.get("a", NoticeEvent::Promotion, NoticeResult::Dropped), 5);
        assert_eq!(m.get("a", NoticeEvent::Promotion, NoticeResult::Sent), 0);
    }

    /// A receiver on 127.0.0.1 answering each request with the next status of `statuses`
    /// (the last one repeats); every request's head and body are sent on the channel.
    async fn receiver(
        statuses: Vec<u16>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for i in 0.. {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let status = statuses[i.min(statuses.len() - 1)];
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as many body bytes as Content-Length says.
                let request = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break String::from_utf8_lossy(&buf).to_string();
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break text;
                        }
                    }
                };
                let _ = tx.send(request);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_failing_receiver_gets_the_notice_after_retries_with_the_secret_header() {
        let (url, mut requests) = receiver(vec![500, 503, 200]).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "Bearer first\n").unwrap();
        let m = metrics();
        let config = NotifyConfig {
            queue: 10,
            webhooks: vec![WebhookConfig {
                secret_header: Some("Authorization".into()),
                secret_file: Some(token.clone()),
                ..hook("oncall", url)
            }],
        };
        let n = Notifier::with_backoff(
            &config,
            reqwest::Client::new(),
            m.clone(),
            Duration::from_millis(20),
        );
        n.start();
        n.send(&notice(3));
        let first = requests.recv().await.unwrap();
        // Rotated between two attempts: the next attempt reads the new value.
        std::fs::write(&token, "Bearer second\n").unwrap();
        let second = requests.recv().await.unwrap();
        let third = requests.recv().await.unwrap();
        assert!(first.starts_with("POST /hook HTTP/1.1"), "{first}");
        let lower = first.to_ascii_lowercase();
        assert!(lower.contains("authorization: bearer first"), "{first}");
        assert!(
            lower.contains("idempotency-key: env0/3/promotion"),
            "{first}"
        );
        assert!(lower.contains("content-type: application/json"), "{first}");
        assert!(
            third
                .to_ascii_lowercase()
                .contains("authorization: bearer second")
        );
        let body = |r: &str| r.split_once("\r\n\r\n").unwrap().1.to_string();
        assert_eq!(
            body(&first),
            body(&third),
            "every attempt sends the same notice"
        );
        let sent: Notice = serde_json::from_str(&body(&second)).unwrap();
        assert_eq!(sent.id, "env0/3/promotion");
        tokio::time::timeout(Duration::from_secs(5), n.clone().flush())
            .await
            .expect("idle after the notice was sent");
        assert_eq!(
            m.get("oncall", NoticeEvent::Promotion, NoticeResult::Sent),
            1
        );
        assert_eq!(
            m.get("oncall", NoticeEvent::Promotion, NoticeResult::Failed),
            0
        );
        assert!(requests.try_recv().is_err(), "no attempt after the 200");
        n.abandon();
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_and_attempts_are_bounded() {
        let (refusing, mut refused) = receiver(vec![403]).await;
        let (failing, mut failed) = receiver(vec![500]).await;
        let m = metrics();
        let config = NotifyConfig {
            queue: 10,
            webhooks: vec![hook("refusing", refusing), hook("failing", failing)],
        };
        let n = Notifier::with_backoff(
            &config,
            reqwest::Client::new(),
            m.clone(),
            Duration::from_millis(5),
        );
        n.start();
        n.send(&notice(1));
        let settled = async {
            while m.get("refusing", NoticeEvent::Promotion, NoticeResult::Failed) == 0
                || m.get("failing", NoticeEvent::Promotion, NoticeResult::Failed) == 0
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), settled)
            .await
            .expect("both webhooks give up");
        let count = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
            let mut n = 0;
            while rx.try_recv().is_ok() {
                n += 1;
            }
            n
        };
        assert_eq!(count(&mut refused), 1, "a 403 is final");
        assert_eq!(
            count(&mut failed),
            MAX_ATTEMPTS,
            "a 500 is retried, boundedly"
        );
        n.abandon();
    }

    #[tokio::test]
    async fn flush_cuts_the_backoff_short_and_gives_each_notice_one_more_attempt() {
        let (url, mut requests) = receiver(vec![500]).await;
        let m = metrics();
        let config = NotifyConfig {
            queue: 10,
            webhooks: vec![hook("down", url)],
        };
        // A first wait of an hour: only the flush can end it.
        let n = Notifier::with_backoff(
            &config,
            reqwest::Client::new(),
            m.clone(),
            Duration::from_secs(3600),
        );
        n.start();
        n.send(&notice(1));
        requests.recv().await.unwrap();
        // Let the 500 arrive: the worker is waiting before its second attempt. (An attempt
        // still in flight when the flush begins is that notice's last.)
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::time::timeout(Duration::from_secs(5), n.clone().flush())
            .await
            .expect("flush ends the wait");
        requests.recv().await.expect("one more attempt");
        assert_eq!(
            m.get("down", NoticeEvent::Promotion, NoticeResult::Failed),
            1
        );
        n.abandon();
        assert_eq!(
            m.get("down", NoticeEvent::Promotion, NoticeResult::Dropped),
            0
        );
    }
}
