//! swaplab: shows, on a real Linux machine, what happens to running
//! processes when the code under them is replaced.

pub mod agent;
pub mod bench;
pub mod compare;
pub mod elf;
pub mod experiments;
pub mod findings;
pub mod handover;
pub mod lab;
pub mod load;
pub mod maps;
pub mod matrix;
pub mod netns;
pub mod process;
pub mod procs;
pub mod recipe;
pub mod redact;
pub mod replace;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod sheets;
pub mod stale;
pub mod timeline;
pub mod variants;
