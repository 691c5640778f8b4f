//! What D02 and D03 share: the tools run in the sandbox, processes started
//! on the package's library, and the restart plan judged.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::detector::stale::{GroupKind, StaleReport};
use crate::drivers::restart_tools::Case;
use crate::harness::lab::{pidt, Lab, Stale};
use crate::harness::process::{Program, Target};
use crate::drivers::restart_tools::Truth;

/// One process of the experiment, as the tools' table lists it.
pub fn case(key: &'static str, title: &'static str, truth: Truth, expect: Stale, pid: i32) -> Case {
    Case {
        key,
        title,
        truth,
        expect,
        pid,
    }
}

/// Runs `cmd` in the sandbox; its stdout, with its lines shown when `show`.
pub fn run(lab: &mut Lab, cmd: &mut Command, show: bool) -> Result<String> {
    cmd.current_dir(lab.sandbox.root())
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    let out = crate::harness::process::output_within(cmd, 3 * crate::harness::process::deadline())
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if show {
        for line in text.lines() {
            lab.proof(line.to_string());
        }
    }
    Ok(text)
}

/// Starts `program` on the library folder of the package root `root`.
pub fn start_on_package(lab: &mut Lab, program: Program, label: &str, root: &Path) -> Result<Target> {
    let libs = root.join("usr/lib");
    let shown = format!("LD_LIBRARY_PATH={}", lab.sandbox.rel(&libs));
    let t = lab.start_with(program, label, &[], move |cmd| {
        cmd.env("LD_LIBRARY_PATH", &libs);
        shown
    })?;
    Ok(t)
}

/// The master and its worker are one entry that needs an exec; each lone
/// process (its key, its pid) is another; nothing else.
pub fn check_groups(lab: &mut Lab, r: &StaleReport, master: i32, worker: i32, lones: &[(&str, i32)]) {
    let shown: Vec<String> = r
        .groups
        .iter()
        .map(|g| {
            let pids: Vec<String> = g.pids.iter().map(|&p| pidt(p)).collect();
            format!("{:?} top {} [{}] exec_needed={}", g.kind, pidt(g.top), pids.join(" "), g.exec_needed)
        })
        .collect();
    let tree = |top: i32, mut want: Vec<i32>, exec: bool| {
        want.sort();
        r.groups.iter().any(|g| {
            let mut got = g.pids.clone();
            got.sort();
            g.top == top && got == want && g.exec_needed == exec
        })
    };
    let keys: Vec<&str> = lones.iter().map(|(k, _)| *k).collect();
    let alone = match keys.as_slice() {
        [one] => format!("{one} alone"),
        many => format!("{} each alone", many.join(", ")),
    };
    lab.check(
        format!("the plan lists a and its worker c once, as a tree a fork-only reload cannot fix, and {alone}"),
        r.groups.len() == 1 + lones.len()
            && r.groups.iter().all(|g| g.kind == GroupKind::ProcessTree)
            && tree(master, vec![master, worker], true)
            && lones.iter().all(|&(_, p)| tree(p, vec![p], false)),
        shown.join("; "),
    );
}
