//! `kube_failover_notices_total`, registered with the daemon's other metrics.

use super::NoticeEvent;
use crate::metric_registry::IntCounterFamily;
use prometheus::Opts;

/// How a notice to one webhook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeResult {
    /// The webhook answered 2xx.
    Sent,
    /// Every attempt failed, or the webhook refused it for good (a 4xx).
    Failed,
    /// Never sent: the queue was full (the oldest notice goes), or the daemon stopped
    /// before it could be.
    Dropped,
}

impl NoticeResult {
    /// Every result, as the metric's `result` label lists them.
    pub const ALL: [NoticeResult; 3] = [
        NoticeResult::Sent,
        NoticeResult::Failed,
        NoticeResult::Dropped,
    ];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeResult::Sent => "sent",
            NoticeResult::Failed => "failed",
            NoticeResult::Dropped => "dropped",
        }
    }
}

/// Notices by webhook, event and result.
#[derive(Clone)]
pub struct NoticeMetrics {
    notices: IntCounterFamily,
}

impl NoticeMetrics {
    /// Creates and registers it.
    pub fn new(
        registry: &crate::metric_registry::MetricRegistry,
    ) -> Result<Self, prometheus::Error> {
        let notices = IntCounterFamily::new(
            Opts::new(
                "notices_total",
                "Notices to webhooks by webhook, event (promotion, failback, failed) and \
                 result (sent, failed, dropped).",
            )
            .namespace("kube_failover"),
            &["webhook", "event", "result"],
        )?;
        registry.register(notices.clone())?;
        Ok(NoticeMetrics { notices })
    }

    /// Every series of a webhook at 0 from the start, for the events it gets.
    pub fn init_webhook(&self, webhook: &str, events: &[NoticeEvent]) {
        for event in events {
            for result in NoticeResult::ALL {
                self.notices
                    .with_label_values(&[webhook, event.as_str(), result.as_str()]);
            }
        }
    }

    /// Counts one notice's end.
    pub fn count(&self, webhook: &str, event: NoticeEvent, result: NoticeResult) {
        self.notices
            .with_label_values(&[webhook, event.as_str(), result.as_str()])
            .inc();
    }

    /// The current count, for tests.
    pub fn get(&self, webhook: &str, event: NoticeEvent, result: NoticeResult) -> u64 {
        self.notices
            .with_label_values(&[webhook, event.as_str(), result.as_str()])
            .get()
    }
}
