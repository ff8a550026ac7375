//! Every integration test of the crate, in one test binary: the end-to-end scenarios on
//! the test bed (`e2e*`), the CLI, the deploy manifests and charts, the layering rule.
//! One binary links the crate and compiles `support` once instead of once per file, and
//! one `cargo test` run reports every failure instead of stopping at the first failing
//! binary. Run one file's tests with its module name as the filter, e.g.
//! `cargo test --test suite e2e_guard::`.

mod support;

// The fault campaign's check of leader-only writes against the audit logs: pure, so its
// unit tests run here (the campaign is a bench without a test harness).
#[path = "../benches/chaos/audit.rs"]
mod chaos_audit;

mod cli;
mod credentials;
mod deploy_manifests;
mod e2e;
mod e2e_coord_scale;
mod e2e_credentials;
mod e2e_env0;
mod e2e_event;
mod e2e_guard;
mod e2e_guard_sidecar;
mod e2e_http2;
mod e2e_image;
mod e2e_leader_pause;
mod e2e_lease_load;
mod e2e_mirror;
mod e2e_notify;
mod e2e_observers;
mod e2e_ops;
mod e2e_overload;
mod e2e_safety;
mod e2e_simulate;
mod e2e_state;
mod e2e_watch;
mod e2e_watch_scope;
mod helm_chart;
mod kube_io;
mod layers;
mod prometheus_alerts;
mod sandbox;
mod systemd_notify;
