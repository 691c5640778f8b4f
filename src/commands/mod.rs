//! What the `swaplab` command does, and how it prints it: one module per
//! command. A command prints its answer and returns [`Done`]; `main` turns
//! an [`Exit`] into the exit status, in one place.

pub mod bench;
pub mod compare;
pub mod completions;
pub mod guest;
pub mod list;
pub mod man;
pub mod matrix;
pub mod run;
pub mod stale;

use serde_json::Value;

use crate::harness::platform::{Header, Platform};

pub use swaplab_stale::command::{judged, pretty, Done, Exit};

/// The CPUs this process may run on, as the benches report them.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A bench's JSON: the head every swaplab report starts with (swaplab's
/// version and the machine, as in `harness::report::RunReport`) and the cores
/// the figures were measured on, then `body`'s fields.
pub fn bench_json(platform: &Platform, cores: usize, body: Value) -> Value {
    let mut json = serde_json::to_value(Header::here(platform.clone())).expect("plain data");
    json["cores"] = cores.into();
    if let (Some(head), Value::Object(fields)) = (json.as_object_mut(), body) {
        head.extend(fields);
    }
    json
}

/// The first sentence of `s`, cut to `n` characters: a claim on one line
/// of a table.
pub fn first_sentence(s: &str, n: usize) -> String {
    let first = s.split(". ").next().unwrap_or(s);
    if first.chars().count() <= n {
        first.trim_end_matches('.').to_string()
    } else {
        format!("{}…", first.chars().take(n - 1).collect::<String>())
    }
}
