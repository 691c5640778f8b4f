//! A tight loop of process starts while another loop replaces what they
//! need (a library file, a link to it), counting the starts that fail by
//! kind: how L11 measures `install`'s window and L15 `ln`'s.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::harness::lab::Lab;
use crate::harness::process::{hermetic, spawn_retrying, Program};

/// Counts of a tight start loop run while a replacer loop runs.
#[derive(Default, serde::Serialize)]
pub struct StartLoop {
    pub starts: usize,
    pub failed: usize,
    pub replacements: usize,
    pub reasons: BTreeMap<String, usize>,
    /// The first failed start's stderr for each reason (its first line:
    /// musl goes on with the symbols it then could not bind).
    pub samples: BTreeMap<String, String>,
    pub millis: u128,
}

/// The failure kinds L11's claim names for a start during `install`'s
/// window: the name points at nothing, at a file not written yet, or at a
/// file still being written.
pub const NO_FILE: &str = "ENOENT";
pub const TOO_SHORT: &str = "file too short";
pub const SIGBUS: &str = "killed by SIGBUS";

/// What a failed start died of, by its stderr and status.
fn failure_reason(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        NO_FILE.into()
    } else if err.contains("file too short") || err.contains("Exec format error") {
        // glibc says "file too short"; musl "Exec format error" (and then
        // that the symbol it needed is missing).
        TOO_SHORT.into()
    } else if out.status.signal().is_some() {
        crate::harness::process::describe_status(&out.status)
    } else {
        let last = err.trim().rsplit(": ").next().unwrap_or("").to_string();
        if last.is_empty() {
            format!("exit {}", out.status.code().unwrap_or(-1))
        } else {
            last
        }
    }
}

/// When a start loop stops (besides its `max` starts and its time budget).
#[derive(Clone, Copy)]
pub enum Until {
    /// Run all `max` starts.
    Max,
    /// Run all `max` starts, and on until the replacer has made at least
    /// this many replacements: a slower replacer gets as many chances to
    /// open a window as the loop it is compared with.
    MaxAndReplacements(usize),
    /// Stop once every one of these failure kinds has been seen, and at
    /// least this many starts have failed in all.
    Seen(&'static [&'static str], usize),
}

/// How long a start loop may run: `time`, or longer on a machine that
/// makes fewer than `starts` starts in that time, but never beyond `cap`.
#[derive(Clone, Copy)]
pub struct Budget {
    pub time: Duration,
    pub starts: usize,
    pub cap: Duration,
}

impl Budget {
    fn allows(&self, elapsed: Duration, starts: usize) -> bool {
        elapsed < self.time || (starts < self.starts && elapsed < self.cap)
    }
}

/// What a replacer loop does on its `i`-th turn (from 0): run the real
/// tool once, in the sandbox.
pub type Replacer = Box<dyn FnMut(usize) -> Result<()> + Send>;

/// Starts `bin/PROGRAM --once` again and again while another thread runs
/// `replace` in a loop. Stops as `until` says (after `max` starts at
/// most, except for [`Until::MaxAndReplacements`]), or when `budget` is
/// spent.
pub fn start_loop(
    lab: &Lab,
    program: Program,
    mut replace: Replacer,
    max: usize,
    budget: Budget,
    until: Until,
) -> Result<StartLoop> {
    let exe = lab.sandbox.program(program)?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let replacer = {
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
        std::thread::spawn(move || -> Result<()> {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                replace(i)?;
                i += 1;
                count.store(i, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let mut r = StartLoop::default();
    let t0 = Instant::now();
    let result = (|| -> Result<()> {
        while budget.allows(t0.elapsed(), r.starts) {
            let done = match until {
                Until::Max => r.starts >= max,
                Until::MaxAndReplacements(n) => {
                    r.starts >= max && count.load(Ordering::Relaxed) >= n
                }
                Until::Seen(kinds, failures) => {
                    r.starts >= max
                        || (r.failed >= failures
                            && kinds.iter().all(|k| r.reasons.contains_key(*k)))
                }
            };
            if done {
                break;
            }
            let mut cmd = hermetic(&exe, &lab.sandbox.lib_dir());
            cmd.arg("--once").stdin(std::process::Stdio::null());
            let child = spawn_retrying(&mut cmd)?;
            let out = wait_bounded(child)?;
            r.starts += 1;
            let ok = out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("greeting pid=");
            if !ok {
                r.failed += 1;
                let reason = failure_reason(&out);
                let err = String::from_utf8_lossy(&out.stderr);
                let first = err.trim().lines().next().unwrap_or("").to_string();
                r.samples.entry(reason.clone()).or_insert(first);
                *r.reasons.entry(reason).or_default() += 1;
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let replaced = replacer
        .join()
        .map_err(|_| anyhow::anyhow!("the replacer thread panicked"))?;
    result?;
    replaced.context("the replacer loop failed")?;
    r.replacements = count.load(Ordering::Relaxed);
    r.millis = t0.elapsed().as_millis();
    Ok(r)
}

/// Waits for a short-lived child with the harness deadline; kills it (and
/// its group) if it overstays.
fn wait_bounded(mut child: std::process::Child) -> Result<std::process::Output> {
    let limit = crate::harness::process::deadline();
    if crate::harness::process::wait_or_kill(&mut child, limit)?.is_none() {
        anyhow::bail!("a --once start did not exit within the deadline");
    }
    Ok(child.wait_with_output()?)
}

pub fn reasons_text(r: &StartLoop) -> String {
    if r.reasons.is_empty() {
        return "none".into();
    }
    r.reasons
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
