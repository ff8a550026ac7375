//! `[groups.state]`: what the daemon does about the Terraform state of a group.

use super::mirror::MirrorConfig;
use serde::{Deserialize, Serialize};

/// `[groups.state]`: the Terraform state that must travel with a failover.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `[groups.state.mirror]`: copies the Terraform `kubernetes` backend's state
    /// Secrets from the primary namespace to the standby namespace.
    pub mirror: Option<MirrorConfig>,
}
