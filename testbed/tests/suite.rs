//! The test bed's integration tests, in one test binary (one link instead of one per
//! file). Run one file's tests with its module name as the filter, e.g.
//! `cargo test -p kube-failover-testbed --test suite faults::`.

mod api_faults;
mod cluster;
mod credentials;
mod faults;
mod orphans;
