//! What several of U01–U08 share: a target's version and executable, and
//! when a master has handled a signal, seen from /proc.

use std::path::Path;

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::harness::lab::{pidt, Lab};
use crate::harness::process::Target;
use crate::targets::protocol::{after_colon, Command};

// ---- U01, U02: fork and execve on a small target --------------------------

pub(super) fn version(lab: &mut Lab, t: &mut Target) -> Result<String> {
    Ok(after_colon(&lab.ask(t, Command::Version)?))
}

/// Checks that an exe (as `exe_of` returned it) is `path`, deleted or not.
pub(super) fn check_exe(lab: &mut Lab, what: &str, path: &Path, seen: (&Path, bool), deleted: bool) {
    let (exe, d) = seen;
    lab.check(
        what,
        exe == path && d == deleted,
        format!("{} deleted={d}", exe.display()),
    );
}

// ---- when a master has handled a signal, seen from /proc -------------------

/// Where `pid` sleeps, if it sleeps in a call that waits for events or
/// signals (`rt_sigsuspend` for nginx, `poll` for swaplab's server):
/// `/proc/PID/syscall` (which needs ptrace access), or else
/// `/proc/PID/wchan`. `None` while it runs or sleeps elsewhere.
pub(super) fn waiting_in(pid: i32) -> Option<String> {
    let waits: &[i64] = &[
        libc::SYS_rt_sigsuspend,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_pwait,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait,
    ];
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
        let first = s.split_whitespace().next().unwrap_or_default();
        return first
            .parse::<i64>()
            .ok()
            .filter(|n| waits.contains(n))
            .map(|n| format!("syscall {n}"));
    }
    let w = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    ["sigsuspend", "poll", "select", "epoll"]
        .iter()
        .any(|k| w.contains(k))
        .then(|| format!("wchan {w}"))
}

/// The signals pending for `pid` (thread and process), as a mask.
pub(super) fn pending(pid: i32) -> Option<u64> {
    let st = procfs::process::Process::new(pid).ok()?.status().ok()?;
    Some(st.sigpnd | st.shdpnd)
}

pub(super) fn bit(sig: Signal) -> u64 {
    1u64 << (sig as i32 - 1)
}

/// The children of `pid` that have exited and wait to be reaped.
pub(super) fn zombies(pid: i32) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter_map(|p| p.stat().ok())
        .filter(|st| st.ppid == pid && st.state == 'Z')
        .map(|st| st.pid)
        .collect()
}

/// Whether `master` has handled every signal sent to it so far: no USR2 or
/// CHLD pending (`/proc/PID/status`), no child left unreaped, and it waits
/// again in its event loop. Read in that order, "nothing pending" then
/// "waiting" means a new wait, begun after the signal was taken: whatever
/// the master does for a signal (a fork, a rename), it has done. `more` is a
/// further condition; `Err` says what is not there yet.
pub(super) fn at_rest(master: i32, more: &dyn Fn() -> Result<(), String>) -> Result<(), String> {
    let p = pending(master).ok_or_else(|| format!("master {master} is gone"))?;
    let sigs = bit(Signal::SIGUSR2) | bit(Signal::SIGCHLD);
    if p & sigs != 0 {
        return Err(format!("signals pending: {p:#x}"));
    }
    let z = zombies(master);
    if !z.is_empty() {
        return Err(format!("unreaped children {z:?}"));
    }
    more()?;
    if waiting_in(master).is_none() {
        return Err(format!(
            "master {master} is not waiting in its event loop (/proc/{master}/syscall, wchan)"
        ));
    }
    Ok(())
}

/// Shows the lines of a server's log that contain each of `words`, one
/// `grep` per word (so the order does not depend on which process wrote
/// first), without the time stamp; pids are marked.
pub(super) fn show_log(lab: &mut Lab, log: &Path, words: &[&str]) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for w in words {
        lab.shell(format!(
            "grep -F '{w}' {} | cut -d' ' -f3-",
            lab.sandbox.rel(log)
        ));
        for line in text.lines().filter(|l| l.contains(w)) {
            let rest = line.splitn(3, ' ').nth(2).unwrap_or(line);
            lab.say(mark_pids(rest));
        }
    }
}

/// Marks the numbers in an nginx log line that are pids (`N#N:`, `from N`,
/// `process N`) so they redact as process ids.
pub(super) fn mark_pids(line: &str) -> String {
    let mut out = Vec::new();
    let words: Vec<&str> = line.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let prev = if i > 0 { words[i - 1] } else { "" };
        let shown = if let Some((a, b)) = w.trim_end_matches(':').split_once('#') {
            match (a.parse::<i32>(), b.parse::<i32>()) {
                (Ok(a), Ok(b)) => format!(
                    "{}#{}{}",
                    pidt(a),
                    pidt(b),
                    if w.ends_with(':') { ":" } else { "" }
                ),
                _ => w.to_string(),
            }
        } else if matches!(prev, "from" | "process") {
            match w.trim_end_matches(',').parse::<i32>() {
                Ok(p) => format!("{}{}", pidt(p), if w.ends_with(',') { "," } else { "" }),
                Err(_) => w.to_string(),
            }
        } else {
            w.to_string()
        };
        out.push(shown);
    }
    out.join(" ")
}
