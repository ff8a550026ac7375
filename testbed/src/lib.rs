//! Real Kubernetes control planes on 127.0.0.1 for kube-failover's end-to-end tests and
//! sandbox: etcd, kube-apiserver, kube-controller-manager and kwok built from source
//! (`testbed/build.sh`), the env0-agent-like workload, the daemon's restricted identity,
//! and fault injection (stopped or killed API servers and etcd, unready Pods, scaling
//! behind the daemon's back, a deleted namespace, a switchable TCP fault proxy, an HTTP
//! fault proxy with rules per path, Deployments relabelled, renamed or deleted as a chart
//! upgrade would, and the daemon's RoleBindings deleted and restored), and bearer-token
//! identities that can be revoked and rotated ([`TokenCredentials`]), and a stand-in
//! for env0's API ([`Env0StandIn`]).
//!
//! ```no_run
//! use kube_failover_testbed::{ClusterPair, FaultProxy, ProxyMode};
//!
//! # async fn example() -> Result<(), kube_failover_testbed::TestbedError> {
//! let pair = ClusterPair::start().await?; // primary agent at 1 replica, standby at 0
//! let proxy = FaultProxy::start(pair.primary.api_addr()).await?;
//! let kubeconfig = pair.primary.daemon_kubeconfig_via(proxy.addr())?;
//! // ... run the daemon with `kubeconfig` (context `pair.primary.context()`) ...
//! proxy.set_mode(ProxyMode::Blackhole); // only the daemon's path is cut
//! pair.primary.stop_apiserver().await?; // the real outage
//! # drop(kubeconfig);
//! # Ok(()) }
//! ```
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod binaries;
mod cluster;
mod credentials;
mod env0;
mod error;
mod http_proxy;
mod http_server;
mod objects;
mod pki;
mod process;
mod proxy;
pub mod sandbox;

pub use binaries::{BIN_ENV, Binaries};
pub use cluster::{
    AuditEvent, AuditObject, AuditStatus, AuditUser, Cluster, ClusterPair, ClusterSpec,
    DEFAULT_NAMESPACE, DEFAULT_RELEASE, KEEP_ENV, REPLICATION_DESTINATION, VOLSYNC_GROUP,
    VOLSYNC_VERSION,
};
pub use credentials::TokenCredentials;
pub use env0::{Env0Fault, Env0Request, Env0StandIn, env0_environment};
pub use error::TestbedError;
pub use http_proxy::{HttpAction, HttpFaultProxy, HttpRule, READYZ_FAILED_BODY};
pub use http_server::serve_http;
pub use objects::{AGENT_COMPONENTS, NODE_NAME, deployment_name, rbac_manifest, target_rbac_file};
pub use pki::DAEMON_USER;
pub use proxy::{FaultProxy, ProxyMode};

/// A port on 127.0.0.1 that was free a moment ago, outside the kernel's ephemeral range
/// (so no outgoing connection takes it before its listener binds it), from the same
/// per-process sequence as the control planes' ports: `what` names it in an error.
pub fn free_loopback_port(what: &str) -> error::Result<u16> {
    process::free_port(what)
}
