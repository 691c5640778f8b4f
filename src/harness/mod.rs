//! What every experiment stands on: the `Lab` notebook, sandboxes, target
//! processes, C library runtimes, /proc views, replacement tools, network
//! namespaces, redaction, lab sheets and the report.

pub mod ci;
pub mod finding;
pub mod lab;
pub mod listeners;
pub mod map_checks;
pub mod netns;
pub mod platform;
pub mod process;
pub mod procs;
pub mod programs;
pub mod prove;
pub mod recipe;
pub mod redact;
pub mod replace;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod sheets;
pub mod variants;
