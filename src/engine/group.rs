//! The per-group state machine (under construction).

use super::Decision;
use crate::config::{Mode, PolicyConfig};
use crate::model::Observation;
use std::time::{Duration, Instant};

/// What the engine needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub interval: Duration,
    pub policy: PolicyConfig,
    pub mode: Mode,
    /// Names of the primary's signals, in the order of the observation:
    /// `api`, then the workloads, then the HTTP checks.
    pub signal_names: Vec<String>,
}

/// One group's engine.
#[derive(Debug)]
pub struct Engine {
    settings: EngineSettings,
}

impl Engine {
    pub fn new(settings: EngineSettings, _now: Instant) -> Self {
        Engine { settings }
    }

    pub fn step(&mut self, _now: Instant, _obs: &Observation) -> Decision {
        let _ = &self.settings;
        unimplemented!()
    }
}
