//! `[groups.state]`: what the daemon does about the Terraform state of the group's
//! workload around a failover.

use serde::{Deserialize, Serialize};

/// `[groups.state]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// After a promotion, delete the Terraform lock Leases (`lock-tfstate-*`) of the
    /// standby namespace that were locked before the promotion started. Off: they are
    /// only named in the promotion's Event and notice.
    pub clear_stale_locks: bool,
}
