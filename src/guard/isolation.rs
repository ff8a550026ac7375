//! `on_isolation = "stop"`: when the record could not be read for `isolation_ttl`, the
//! guard asks every daemon instance (`daemons`) for `GET <url>/status?group=<group>`,
//! all at once and each bounded by `timeout`, and counts the vouches: a daemon vouches
//! when it answers, is ready, decided on the group within `isolation_ttl` and says
//! `primary_active` (every primary signal up and the record saying `primary`). A
//! daemon that says anything else (`primary_suspect`, `primary_down`, `blocked`,
//! `promoting`, …), cannot be reached, or answers something unreadable does not.

use std::time::Duration;

/// The largest `/status` answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// One daemon's answer, as a bounded label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It says the group is `primary_active`.
    Vouch,
    /// It says another state (the primary failing, down, or a promotion).
    NotActive,
    /// It is not ready (first tick not done, shutting down), or has not ticked the group.
    NotReady,
    /// It does not know the group.
    UnknownGroup,
    /// Its last decision on the group is older than `isolation_ttl` (a stalled loop).
    Stale,
    /// No answer within the timeout (refused, unreachable, too slow).
    Unreachable,
    /// An answer that is not a daemon's `/status`.
    BadAnswer,
}

impl Answer {
    /// Every answer, for pre-registering metric labels.
    pub const ALL: [Answer; 7] = [
        Answer::Vouch,
        Answer::NotActive,
        Answer::NotReady,
        Answer::UnknownGroup,
        Answer::Stale,
        Answer::Unreachable,
        Answer::BadAnswer,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Vouch => "vouch",
            Answer::NotActive => "not_active",
            Answer::NotReady => "not_ready",
            Answer::UnknownGroup => "unknown_group",
            Answer::Stale => "stale",
            Answer::Unreachable => "unreachable",
            Answer::BadAnswer => "bad_answer",
        }
    }
}

/// What a daemon's `/status?group=<group>` answer (HTTP `status`, `body`) says, read at
/// `now_unix`; a decision older than `max_age` is stale. Read as plain JSON, so a
/// daemon of another version answers as long as it names the group's state.
pub fn judge(status: u16, body: &[u8], group: &str, now_unix: f64, max_age: Duration) -> Answer {
    match status {
        200 => {}
        404 => return Answer::UnknownGroup,
        503 => return Answer::NotReady,
        _ => return Answer::BadAnswer,
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Answer::BadAnswer;
    };
    if doc.get("ready").and_then(serde_json::Value::as_bool) != Some(true) {
        return Answer::NotReady;
    }
    let Some(groups) = doc.get("groups").and_then(serde_json::Value::as_array) else {
        return Answer::BadAnswer;
    };
    let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(serde_json::Value::as_str) == Some(group))
    else {
        return Answer::UnknownGroup;
    };
    let decided = g
        .get("last_decision")
        .and_then(|d| d.get("at_unix"))
        .and_then(serde_json::Value::as_f64);
    match decided {
        Some(at) if now_unix - at <= max_age.as_secs_f64() => {}
        Some(_) => return Answer::Stale,
        None => return Answer::BadAnswer,
    }
    match g.get("state").and_then(serde_json::Value::as_str) {
        Some("primary_active") => Answer::Vouch,
        Some(_) => Answer::NotActive,
        None => Answer::BadAnswer,
    }
}

/// Asks the daemons.
#[derive(Clone)]
pub struct Asker {
    client: reqwest::Client,
    urls: Vec<String>,
    group: String,
    timeout: Duration,
    max_age: Duration,
}

impl Asker {
    /// Asks `daemons` (base URLs) about `group`, each bounded by `timeout`; a decision
    /// older than `max_age` does not vouch.
    pub fn new(
        daemons: &[String],
        group: &str,
        timeout: Duration,
        max_age: Duration,
    ) -> reqwest::Result<Asker> {
        crate::tls::install_provider();
        let client = reqwest::Client::builder()
            .user_agent(format!("kube-failover-guard/{}", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let urls = daemons
            .iter()
            .map(|d| format!("{}/status?group={group}", d.trim_end_matches('/')))
            .collect();
        Ok(Asker {
            client,
            urls,
            group: group.to_string(),
            timeout,
            max_age,
        })
    }

    /// Every daemon's answer, in the order of `daemons`, asked at once.
    pub async fn ask(&self) -> Vec<Answer> {
        futures::future::join_all(self.urls.iter().map(|url| self.ask_one(url))).await
    }

    async fn ask_one(&self, url: &str) -> Answer {
        let request = async {
            let mut response = self.client.get(url).send().await.ok()?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.ok()? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Some((status, None));
                }
                body.extend_from_slice(&chunk);
            }
            Some((status, Some(body)))
        };
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Some((status, Some(body)))) => judge(
                status,
                &body,
                &self.group,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                self.max_age,
            ),
            Ok(Some((_, None))) => Answer::BadAnswer,
            Ok(None) | Err(_) => Answer::Unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;
    const TTL: Duration = Duration::from_secs(10);

    fn status(ready: bool, group: &str, state: &str, at: f64) -> Vec<u8> {
        serde_json::json!({
            "version": "x",
            "ready": ready,
            "groups": [
                {"name": "other", "state": "primary_active", "last_decision": {"at_unix": NOW}},
                {"name": group, "state": state, "last_decision": {"at_unix": at}, "extra": 1}
            ]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_a_ready_fresh_primary_active_answer_vouches() {
        let j = |body: &[u8]| judge(200, body, "env0", NOW, TTL);
        assert_eq!(
            j(&status(true, "env0", "primary_active", NOW - 2.0)),
            Answer::Vouch
        );
        // A daemon clock ahead of the guard's: still fresh.
        assert_eq!(
            j(&status(true, "env0", "primary_active", NOW + 3.0)),
            Answer::Vouch
        );
        for state in [
            "primary_suspect",
            "primary_down",
            "blocked",
            "promoting",
            "promoted",
            "failed",
            "frozen",
            "starting",
            "primary_unobservable",
            "paused",
            "a_state_of_a_later_version",
        ] {
            assert_eq!(
                j(&status(true, "env0", state, NOW)),
                Answer::NotActive,
                "{state}"
            );
        }
        assert_eq!(
            j(&status(false, "env0", "primary_active", NOW)),
            Answer::NotReady
        );
        assert_eq!(
            j(&status(true, "env0", "primary_active", NOW - 11.0)),
            Answer::Stale,
            "a stalled daemon's last word"
        );
        assert_eq!(
            j(&status(true, "env1", "primary_active", NOW)),
            Answer::UnknownGroup,
            "another group's state is no vouch"
        );
        assert_eq!(j(b"<html>proxy error</html>"), Answer::BadAnswer);
        assert_eq!(j(br#"{"ready": true}"#), Answer::BadAnswer);
        let ok = status(true, "env0", "primary_active", NOW);
        assert_eq!(judge(404, &ok, "env0", NOW, TTL), Answer::UnknownGroup);
        assert_eq!(judge(503, &ok, "env0", NOW, TTL), Answer::NotReady);
        assert_eq!(judge(302, &ok, "env0", NOW, TTL), Answer::BadAnswer);
    }

    #[tokio::test]
    async fn unreachable_daemons_do_not_vouch() {
        // A port nobody listens on, and one that accepts and never answers.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}/", silent.local_addr().unwrap());
        let asker = Asker::new(
            &[closed_url, silent_url],
            "env0",
            Duration::from_millis(300),
            TTL,
        )
        .unwrap();
        let answers = asker.ask().await;
        assert_eq!(answers, vec![Answer::Unreachable, Answer::Unreachable]);
        drop(silent);
    }
}
