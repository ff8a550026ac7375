//! A promotion notice and env0 (`[env0]`): the hand-over of a promotion's Event and
//! notice to the task that looks up the deployments the promotion stranded (src/env0),
//! so that this module never waits for env0. The document's `env0` types are those of
//! `/status` (crate::status).

use super::{Notice, Notifier};
pub use crate::status::{Env0Report, Redeploy, Stranded};

/// A promotion's notice and Event, handed over instead of being sent.
pub struct PendingPromotion {
    /// The notice, as built without env0.
    pub notice: Notice,
    /// True when stale lock Leases were left (the Event is then a Warning).
    pub locks_left: bool,
    /// When the promotion started (Unix seconds), from the record.
    pub promoted_at_unix: Option<i64>,
    /// Where the notice goes.
    pub notifier: Option<Notifier>,
    /// The promotion Event's message without a sentence about env0's deployments.
    pub event_message: String,
}

/// Takes a promotion's notice and Event over (the env0 task), completes them and sends
/// them; never blocks.
pub trait PromotionHandoff: Send + Sync {
    /// Takes `pending`, or gives it back when it cannot (then it is sent as it is).
    fn hand_over(&self, pending: PendingPromotion) -> Result<(), Box<PendingPromotion>>;
}
