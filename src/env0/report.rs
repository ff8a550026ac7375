//! What a promotion's notice, Event and `/status` say of env0: the stranded
//! deployments by name, the redeploys, or why env0 could not be asked. Pure functions.

use super::model::WAITING_FOR_USER;
pub use crate::notify::{Env0Report, Redeploy};
use crate::notify::{Notice, Stranded};

fn names(list: &[&Stranded]) -> String {
    list.iter()
        .map(|s| s.describe())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Env0Report {
    fn redeployed(&self, s: &Stranded) -> bool {
        self.redeploys
            .iter()
            .any(|r| r.environment_id == s.environment_id && r.result == "done")
    }

    /// The sentence of the promotion's Event (replacing the general one).
    pub fn event_text(&self) -> String {
        if let Some(why) = &self.error {
            return format!(
                "env0 could not be asked which deployments the failover stranded ({why}): \
                 redeploy the env0 deployments that waited for approval and check the runs \
                 that were in flight"
            );
        }
        if self.stranded.is_empty() {
            return "env0 lists no deployment waiting for approval, in progress or queued \
                    from before the promotion"
                .to_string();
        }
        let all: Vec<&Stranded> = self.stranded.iter().collect();
        let mut out = format!(
            "env0 deployments the failover stranded (redeploy them): {}",
            names(&all)
        );
        for r in &self.redeploys {
            out.push_str(&format!(". {}", r.describe()));
        }
        out
    }

    /// Rewrites the notice's `redeploy_waiting_runs` and `check_in_flight_runs` items
    /// with the names, adds one `env0_redeploy` item per redeploy, and attaches the
    /// report.
    pub fn apply(&self, notice: &mut Notice) {
        if self.error.is_none() {
            let waiting: Vec<&Stranded> = self
                .stranded
                .iter()
                .filter(|s| s.status == WAITING_FOR_USER && !self.redeployed(s))
                .collect();
            let running: Vec<&Stranded> = self
                .stranded
                .iter()
                .filter(|s| s.status != WAITING_FOR_USER && !self.redeployed(s))
                .collect();
            for item in &mut notice.actions {
                match item.id.as_str() {
                    "redeploy_waiting_runs" => {
                        item.text = if waiting.is_empty() {
                            "No env0 deployment from before the failover is left waiting for \
                             approval (env0's environments list)."
                                .to_string()
                        } else {
                            format!(
                                "Redeploy these env0 deployments, which were waiting for \
                                 approval: their working directory stayed with the old agent. \
                                 {}.",
                                names(&waiting)
                            )
                        };
                    }
                    "check_in_flight_runs" => {
                        item.text = if running.is_empty() {
                            "No env0 deployment from before the failover is left in progress \
                             or queued (env0's environments list)."
                                .to_string()
                        } else {
                            format!(
                                "Check these env0 deployments, which were in progress or queued \
                                 when the old agent stopped, and run them again: {}.",
                                names(&running)
                            )
                        };
                    }
                    _ => {}
                }
            }
        } else if let Some(item) = notice
            .actions
            .iter_mut()
            .find(|a| a.id == "redeploy_waiting_runs")
        {
            item.text.push_str(&format!(
                " (env0 could not be asked which ones: {})",
                self.error.as_deref().unwrap_or_default()
            ));
        }
        let at = notice
            .actions
            .iter()
            .position(|a| a.id == "check_in_flight_runs")
            .map_or(notice.actions.len(), |i| i + 1);
        for (i, r) in self.redeploys.iter().enumerate() {
            notice.actions.insert(
                at + i,
                crate::notify::ActionItem {
                    id: "env0_redeploy".to_string(),
                    text: r.describe(),
                },
            );
        }
        notice.env0 = Some(self.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stranded(id: &str, status: &str) -> Stranded {
        Stranded {
            environment_id: id.into(),
            environment: format!("{id}-name"),
            project_id: "p".into(),
            deployment_id: format!("d-{id}"),
            status: status.into(),
            started_at: Some("2025-01-02T03:00:00Z".into()),
            link: format!("https://app.env0.com/p/p/environments/{id}/deployments/d-{id}"),
        }
    }

    #[test]
    fn the_notice_names_the_stranded_deployments_instead_of_the_general_sentence() {
        let mut notice = crate::notify::tests_support::promotion_notice();
        let report = Env0Report {
            stranded: vec![
                stranded("e1", "WAITING_FOR_USER"),
                stranded("e2", "IN_PROGRESS"),
                stranded("e3", "WAITING_FOR_USER"),
            ],
            redeploys: vec![Redeploy {
                environment_id: "e3".into(),
                environment: "e3-name".into(),
                deployment_id: "d-e3".into(),
                result: "done".into(),
                new_deployment_id: Some("d-new".into()),
                by: "watcher-1".into(),
                error: None,
            }],
            error: None,
        };
        report.apply(&mut notice);
        let text = |id: &str| {
            notice
                .actions
                .iter()
                .filter(|a| a.id == id)
                .map(|a| a.text.clone())
                .collect::<Vec<_>>()
        };
        let waiting = &text("redeploy_waiting_runs")[0];
        assert!(waiting.contains("e1-name (project p, deployment d-e1, WAITING_FOR_USER"));
        assert!(waiting.contains("/deployments/d-e1"), "{waiting}");
        assert!(!waiting.contains("e2-name") && !waiting.contains("e3-name"));
        let running = &text("check_in_flight_runs")[0];
        assert!(running.contains("e2-name") && !running.contains("e1-name"));
        assert_eq!(
            text("env0_redeploy"),
            ["e3-name (deployment d-e3): redeploy done by watcher-1, new deployment d-new"]
        );
        assert_eq!(notice.env0.as_ref().unwrap().stranded.len(), 3);
        let event = report.event_text();
        assert!(
            event.contains("e1-name") && event.contains("e2-name"),
            "{event}"
        );
        assert!(!event.contains("that waited for approval"), "{event}");
    }

    #[test]
    fn an_unreachable_env0_keeps_the_general_sentence_and_says_why() {
        let mut notice = crate::notify::tests_support::promotion_notice();
        let before = notice.actions[0].text.clone();
        let report = Env0Report {
            error: Some("list environments: env0 answered HTTP 500".into()),
            ..Env0Report::default()
        };
        report.apply(&mut notice);
        assert!(notice.actions[0].text.starts_with(&before));
        assert!(notice.actions[0].text.contains("HTTP 500"));
        assert!(report.event_text().contains("waited for approval"));
        let none = Env0Report::default();
        assert!(none.event_text().contains("no deployment"));
    }
}
