//! A notice as a request body: the JSON document itself, or a Slack-compatible message
//! (`text` for notifications and clients without blocks, `blocks` of mrkdwn sections)
//! with the same content.

use super::{Notice, NoticeFormat};
use serde_json::{Value, json};

/// Slack's limit on a section's text.
const MAX_SECTION_CHARS: usize = 3000;
/// Slack's limit on one field of a section.
const MAX_FIELD_CHARS: usize = 2000;

/// The request body of `notice` in `format` (always JSON).
pub fn render(notice: &Notice, format: NoticeFormat) -> Vec<u8> {
    // The document is written field by field, in the order of the schema.
    match format {
        NoticeFormat::Json => serde_json::to_vec(notice),
        NoticeFormat::Slack => serde_json::to_vec(&slack(notice)),
    }
    .unwrap_or_default()
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        text
    } else {
        let mut out: String = text.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(text, MAX_SECTION_CHARS)}})
}

fn field(title: &str, value: String) -> Value {
    json!({"type": "mrkdwn", "text": cut(format!("*{title}*\n{value}"), MAX_FIELD_CHARS)})
}

/// The Slack message of `notice`: the same content as the JSON document.
pub fn slack(notice: &Notice) -> Value {
    let side = |s: &super::SideInfo| {
        esc(&format!(
            "{}: cluster {}, namespace {}",
            s.side, s.cluster, s.namespace
        ))
    };
    let mut fields = vec![
        field("From", side(&notice.from)),
        field("To", side(&notice.to)),
        field("Epoch", notice.epoch.to_string()),
        field(
            "Time taken",
            notice
                .duration_seconds
                .map(|d| format!("{d:.1} s"))
                .unwrap_or_else(|| "unknown".into()),
        ),
    ];
    if let Some(age) = notice.mirror_age_seconds {
        fields.push(field("Mirror age at promotion", format!("{age:.0} s")));
    }
    let mut blocks = vec![
        section(format!(
            "*kube-failover: {}* — {}",
            notice.event,
            esc(&notice.summary)
        )),
        json!({"type": "section", "fields": fields}),
    ];
    let reasons: Vec<String> = notice
        .reasons
        .iter()
        .map(|r| match &r.signal {
            Some(signal) => format!(
                "• `{}` on `{}`: {}",
                esc(&r.code),
                esc(signal),
                esc(&r.text)
            ),
            None => format!("• `{}`: {}", esc(&r.code), esc(&r.text)),
        })
        .collect();
    blocks.push(section(format!("*Why*\n{}", reasons.join("\n"))));
    if let Some(checks) = &notice.state_checks {
        let lines: Vec<String> = checks
            .iter()
            .map(|c| {
                format!(
                    "• {} `{}` ({}): {} — {}",
                    if c.passed { "pass" } else { "FAIL" },
                    esc(&c.name),
                    match c.gate {
                        super::StateCheckGate::Block => "block",
                        super::StateCheckGate::Warn => "warn",
                    },
                    esc(&c.reason),
                    esc(&c.detail)
                )
            })
            .collect();
        let body = if lines.is_empty() {
            "none configured".to_string()
        } else {
            lines.join("\n")
        };
        blocks.push(section(format!("*State checks*\n{body}")));
    }
    match (&notice.stale_locks, &notice.stale_locks_error) {
        (Some(locks), _) if !locks.is_empty() => {
            let lines: Vec<String> = locks
                .iter()
                .map(|l| {
                    format!(
                        "• `{}` held by `{}`{}{}{}",
                        esc(&l.name),
                        esc(&l.lock_id),
                        l.operation
                            .as_deref()
                            .map(|o| format!(" ({})", esc(o)))
                            .unwrap_or_default(),
                        l.locked_at
                            .as_deref()
                            .map(|t| format!(", locked {}", esc(t)))
                            .unwrap_or_default(),
                        if l.deleted { " — deleted" } else { "" }
                    )
                })
                .collect();
            blocks.push(section(format!(
                "*Stale Terraform locks*\n{}",
                lines.join("\n")
            )));
        }
        (None, Some(why)) => blocks.push(section(format!(
            "*Stale Terraform locks*\ncould not be listed: {}",
            esc(why)
        ))),
        _ => {}
    }
    let steps: Vec<String> = notice
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}. {}", i + 1, esc(&a.text)))
        .collect();
    blocks.push(section(format!("*What to do now*\n{}", steps.join("\n"))));
    blocks.push(
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": esc(&format!(
            "id {} · sent by {} · {}",
            notice.id, notice.sent_by, notice.created_at
        ))}]}),
    );
    json!({"text": notice.summary, "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::content::tests::promotion_notice;

    #[test]
    fn json_is_the_notice_document() {
        let n = promotion_notice();
        let body = render(&n, NoticeFormat::Json);
        assert!(
            body.starts_with(br#"{"version":1,"id":"env0/3/promotion","event":"promotion""#),
            "fields in the schema's order: {}",
            String::from_utf8_lossy(&body)
        );
        let back: Notice = serde_json::from_slice(&body).expect("parses as a Notice");
        assert_eq!(back, n);
        let v: Value = serde_json::from_slice(&body).unwrap();
        // Every field is there, null when absent: receivers see a fixed shape.
        for key in [
            "version",
            "id",
            "event",
            "group",
            "epoch",
            "summary",
            "sent_by",
            "created_at",
            "from",
            "to",
            "reasons",
            "started_at",
            "finished_at",
            "duration_seconds",
            "recorded_by",
            "state_checks",
            "mirror_age_seconds",
            "stale_locks",
            "stale_locks_error",
            "actions",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["event"], "promotion");
        assert_eq!(v["from"]["side"], "primary");
        assert_eq!(v["state_checks"], Value::Null);
        assert_eq!(v["stale_locks"][0]["name"], "lock-tfstate-default-state");
    }

    #[test]
    fn slack_has_text_and_mrkdwn_sections_with_the_same_content() {
        let mut n = promotion_notice();
        n.actions[0].text = "redeploy <runs> & more".into();
        let v: Value = serde_json::from_slice(&render(&n, NoticeFormat::Slack)).unwrap();
        assert_eq!(v["text"], n.summary.as_str());
        let blocks = v["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 50);
        let all = serde_json::to_string(blocks).unwrap();
        for section in blocks.iter().filter(|b| b["type"] == "section") {
            match section.get("text") {
                Some(t) => {
                    assert_eq!(t["type"], "mrkdwn");
                    assert!(t["text"].as_str().unwrap().chars().count() <= MAX_SECTION_CHARS);
                }
                None => assert!(section["fields"].as_array().unwrap().len() <= 10),
            }
        }
        for needle in [
            "prod-a",
            "prod-b",
            "primary_down_quorum",
            "lock-tfstate-default-state",
            "5f1c-lock-id",
            "What to do now",
            "1. redeploy &lt;runs&gt; &amp; more",
            "env0/3/promotion",
            "12.0 s",
        ] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
        assert!(!all.contains("<runs>"), "mrkdwn must be escaped: {all}");
    }

    #[test]
    fn long_texts_are_cut_to_slacks_limits() {
        let mut n = promotion_notice();
        n.actions[0].text = "x".repeat(5000);
        let v = slack(&n);
        for b in v["blocks"].as_array().unwrap() {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= MAX_SECTION_CHARS);
            }
        }
        assert!(serde_json::to_string(&v).unwrap().contains('…'));
    }
}
