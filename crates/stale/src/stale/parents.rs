//! The restart plan's parents that the scan was not asked for.

use std::collections::HashMap;

use crate::plan;
use crate::report::{StaleReport, Urgency};

use super::scanner::{Scanner, Seen};
use super::ScanOptions;

/// The parents of flagged processes that the scan did not report because
/// they were not asked for (`--pid`, `--user`, `--match`) or were left out
/// (`--exclude`): read now, so
/// that the restart plan sees whether a process was forked from one that
/// runs the same old code. Each is [`plan::Parent::Stale`], `Clean` or
/// `Unread` (with its command name, which `/proc/PID/stat` gives anyone).
pub(super) fn parents_outside(report: &StaleReport, opts: &ScanOptions) -> plan::Parents {
    // Its own scanner: what it reads counts nowhere in the report.
    let mut s = Scanner::new();
    let filtered = !opts.pids.is_empty()
        || opts.user.is_some()
        || opts.pattern.is_some()
        || !opts.exclude.is_empty();
    let mut known: HashMap<i32, plan::Parent> = HashMap::new();
    for u in &report.unreadable {
        known.insert(u.pid, plan::Parent::Unjudged(u.command.clone()));
    }
    for u in &report.unchecked {
        known.insert(u.pid, plan::Parent::Unjudged(u.command.clone()));
    }
    let reported: std::collections::HashSet<i32> = report.processes.iter().map(|p| p.pid).collect();
    let mut todo: Vec<i32> = report
        .processes
        .iter()
        .filter(|p| p.need == Urgency::Required)
        .map(|p| p.ppid)
        .collect();
    let everyone = ScanOptions::default();
    // Each parent is read once (`known`), so the walk ends; it must not
    // stop early: a cap counted the 300 identical parents of 300 workers
    // and never reached the master of another.
    while let Some(ppid) = todo.pop() {
        if ppid <= 1 || reported.contains(&ppid) || known.contains_key(&ppid) {
            continue;
        }
        if !filtered {
            // Every process was read: one that is not reported is clean.
            known.insert(ppid, plan::Parent::Clean);
            continue;
        }
        let parent = match s.one(ppid, &everyone) {
            Seen::Scanned { stale: Some(p), .. } => {
                todo.push(p.ppid);
                plan::Parent::Stale(p)
            }
            Seen::Unreadable(u) => plan::Parent::Unjudged(u.command),
            Seen::Scanned {
                unchecked: Some(u), ..
            } => plan::Parent::Unjudged(u.command),
            _ => plan::Parent::Clean,
        };
        known.insert(ppid, parent);
    }
    known
}
