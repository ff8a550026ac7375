//! kube-failover: keeps an active/passive Kubernetes workload alive across two clusters.
//!
//! The shape: probes produce an [`model::Observation`] per group and tick; the pure
//! [`engine::Engine`] turns it into a [`engine::Decision`]; the actuator carries out its
//! actions; metrics, `/status`, logs and Kubernetes Events explain every step.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![deny(missing_docs)]

pub use kube_failover_core::{engine, model, world};

pub mod actuate;
pub(crate) mod admin;
pub mod config;
pub mod coord;
pub mod daemon;
pub mod env0;
pub mod error_chain;
pub mod guard;
pub mod kube;
pub mod liveness;
pub(crate) mod metric_registry;
pub(crate) mod metrics;
pub(crate) mod mirror;
pub(crate) mod notify;
pub mod probe;
pub mod record;
pub mod selection;
pub(crate) mod state;
pub mod status;
pub(crate) mod systemd;
pub mod tls;
pub mod trace;
pub mod user_agent;
