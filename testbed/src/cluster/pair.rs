//! Two clusters started side by side: a primary and a standby ([`ClusterPair`]).

use super::{Cluster, ClusterSpec};
use crate::error::Result;

/// A primary (agent at 1 replica) and a standby (agent at 0), started side by side.
#[derive(Debug)]
pub struct ClusterPair {
    /// Where the agent runs (1 replica each by default).
    pub primary: Cluster,
    /// Where the agent waits at 0 replicas.
    pub standby: Cluster,
}

impl ClusterPair {
    /// Starts clusters `primary` and `standby` concurrently.
    pub async fn start() -> Result<ClusterPair> {
        ClusterPair::start_with(
            ClusterSpec::new("primary").replicas(1),
            ClusterSpec::new("standby").replicas(0),
        )
        .await
    }

    /// As [`ClusterPair::start`], both API servers writing audit logs
    /// ([`ClusterSpec::audit`]).
    pub async fn start_audited() -> Result<ClusterPair> {
        ClusterPair::start_with(
            ClusterSpec::new("primary").replicas(1).audit(true),
            ClusterSpec::new("standby").replicas(0).audit(true),
        )
        .await
    }

    /// Starts two clusters with these specs, concurrently.
    pub async fn start_with(primary: ClusterSpec, standby: ClusterSpec) -> Result<ClusterPair> {
        let (primary, standby) =
            tokio::try_join!(Cluster::start_with(primary), Cluster::start_with(standby))?;
        Ok(ClusterPair { primary, standby })
    }
}
