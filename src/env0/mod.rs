//! env0: after a promotion, which deployments the move of the agent stranded (their
//! working directory stayed with the old agent), named in the promotion's Event, its
//! notice and `/status`, and on request (`env0.redeploy`) redeployed once per epoch and
//! environment. Optional: nothing here runs without `[env0]`.
//!
//! `client` speaks env0's API, `model` picks the stranded environments (pure),
//! `report` writes what people read (pure), `claims` keeps the redeploys asked in a
//! ConfigMap so that none is asked twice, `worker` is the group's task that ties them
//! together without ever delaying a tick.

mod claims;
mod client;
mod metrics;
mod model;
mod report;
mod worker;

pub use claims::{Claim, ClaimError, Claims};
pub use client::{
    CALLS, CallCounter, Env0Client, Env0Error, MAX_ATTEMPTS, MAX_PAGES, MAX_RETRY_AFTER,
    PAGE_LIMIT, RESULTS, parse_retry_after,
};
pub use metrics::{Env0Metrics, LOOKUP_RESULTS, REDEPLOY_RESULTS};
pub use model::{
    DeploymentLog, Environment, STRANDING, Scope, Stranded, WAITING_FOR_USER, stranded, ui_base,
};
pub use report::{Env0Report, Redeploy};
pub use worker::{Env0Handle, Env0Status, Env0Worker, Job, MayWrite};
