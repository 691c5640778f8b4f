//! The targets' answer lines (`greeting pid=N: TEXT`, `ready pid=N gen=G`):
//! how a field is read from one, by the programs and by the experiments.

use anyhow::{Context, Result};

/// The text after `": "` in an answer line.
pub fn after_colon(line: &str) -> String {
    line.split_once(": ")
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

/// The value of `key=value` in an answer line.
pub fn field(line: &str, key: &str) -> Result<String> {
    let want = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&want))
        .map(|v| v.trim_end_matches(':').to_string())
        .ok_or_else(|| anyhow::anyhow!("no `{key}=` in `{line}`"))
}

/// The number `key=N` in an answer line.
pub fn field_u32(line: &str, key: &str) -> Result<u32> {
    field(line, key)?
        .parse()
        .with_context(|| format!("`{key}` in `{line}` is not a number"))
}

/// The signed number `key=N` in an answer line.
pub fn field_i32(line: &str, key: &str) -> Result<i32> {
    field(line, key)?
        .parse()
        .with_context(|| format!("`{key}` in `{line}` is not a number"))
}
