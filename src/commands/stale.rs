//! `swaplab stale`: the detector's own command, from the `swaplab-stale`
//! package (crates/stale), which also builds it as a binary of its own.

pub use swaplab_stale::cli::{derived_schema, Args, Output, SCHEMA};
