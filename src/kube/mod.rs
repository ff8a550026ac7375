//! Everything that talks to Kubernetes API servers: building one client per cluster from
//! its kubeconfig or in-cluster credentials ([`client`]), reading a kubeconfig without
//! contacting anyone (`kubeconfig`), bounding and classifying each call ([`call`]), the
//! watch-backed object caches ([`watch_cache`]) and what the daemon shares per cluster
//! ([`cluster`]). For unit tests, `fake_api` is an in-memory API server behind a
//! `kube::Client`. What the caches keep of a Deployment or a Pod is [`kept`].
//!
//! Below the crate root, `kube` still names the external crate (`use kube::Api`); this
//! module is reached as `crate::kube`.

pub mod call;
pub mod client;
pub mod cluster;
#[cfg(test)]
pub(crate) mod fake_api;
pub mod kept;
pub(crate) mod kubeconfig;
pub mod watch_cache;
