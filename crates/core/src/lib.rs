//! kube-failover's decision core, without I/O: the vocabulary of observations and
//! actions ([`model`]), the policy a group is decided by ([`policy`]) and the pure
//! decision [`engine`]. Time and observations go in, actions and reasons come out; the
//! daemon crate does every Kubernetes call, clock read and network operation. This
//! crate depends on no Kubernetes client, async runtime or HTTP library, so the
//! compiler keeps it that way.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![deny(missing_docs)]

pub mod checks;
pub mod engine;
pub mod model;
pub mod policy;
pub mod text;
pub mod world;
