//! `swaplab stale`: the running processes whose code is no longer on disk.

use regex::Regex;

use crate::commands::{judged, pretty, Done, Exit};
use crate::detector::stale::{self, Options};

/// Scans the processes `pids`, `user` and `pattern` select and prints the
/// report (or JSON); fails when a process needs a restart.
pub fn command(pids: Vec<i32>, user: Option<String>, pattern: Option<String>, json: bool) -> Done {
    let bad = |msg: String| Exit::BadInput(format!("swaplab stale: {msg}"));
    let user = user
        .as_deref()
        .map(stale::parse_user)
        .transpose()
        .map_err(bad)?;
    let pattern = pattern
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| bad(format!("--match: not a valid regular expression: {e}")))?;
    if let Some(pid) = pids
        .iter()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        return Err(bad(format!("--pid {pid}: no such process")));
    }
    let opts = Options {
        pids,
        user,
        pattern,
    };
    let r = stale::scan(&opts).map_err(|e| bad(format!("{e:#}")))?;
    if json {
        println!("{}", pretty(&r));
    } else {
        for line in stale::render(&r, &stale::PLAIN) {
            println!("{line}");
        }
    }
    judged(r.exit_code() != 0)
}
