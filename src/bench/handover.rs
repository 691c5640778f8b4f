//! `swaplab bench handover`: every hand-over strategy through repeated
//! switches under the same constant-rate download load.

use serde::Serialize;

use crate::drivers::comparison::{self, Comparison, Pace};
use crate::drivers::handover::{Setup, Strategy};
use crate::harness::lab::Lab;

#[derive(Clone, Debug)]
pub struct HandoverOptions {
    pub setup: Setup,
    pub pace: Pace,
    pub strategies: Vec<Strategy>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HandoverRun {
    pub strategy: Strategy,
    /// A harness failure (a deadline passed): no figures.
    pub error: Option<String>,
    pub result: Option<Comparison>,
}

/// Runs each strategy through its switches under the same load, one
/// sandbox each.
pub fn handover_runs(o: &HandoverOptions, mut progress: impl FnMut(&str)) -> Vec<HandoverRun> {
    o.strategies
        .iter()
        .map(|&s| {
            progress(&format!(
                "{}: {} switches at {} connections/s",
                s.name(),
                o.pace.switches,
                o.pace.rate
            ));
            let result = Lab::new("bench-handover", None)
                .and_then(|mut lab| comparison::run_strategy(&mut lab, s, o.setup, o.pace));
            match result {
                Ok(c) => HandoverRun {
                    strategy: s,
                    error: None,
                    result: Some(c),
                },
                Err(e) => HandoverRun {
                    strategy: s,
                    error: Some(format!("{e:#}")),
                    result: None,
                },
            }
        })
        .collect()
}
