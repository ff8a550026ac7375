//! The commands of `kube-failover`, one file each.

pub(crate) mod logging;
pub(crate) mod render;
