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

/// Starts a (a master that forks) and b (a lone process) on the package's
/// library at `lib`, then runs `upgrade` under them (narrated as
/// `words.0`) and checks `words.1`: that it put a new file at `lib`.
pub fn upgrade_under_two(
    lab: &mut Lab,
    root: &Path,
    lib: &Path,
    words: (&str, &str),
    upgrade: impl FnOnce(&mut Lab) -> Result<()>,
) -> Result<(Target, Target)> {
    lab.part("processes on the package's library");
    let a = start_on_package(lab, Program::Fork, "a", root)?;
    let b = start_on_package(lab, Program::Plain, "b", root)?;
    let before = crate::harness::lab::inode_of(lib)?;
    lab.part(words.0);
    upgrade(lab)?;
    let after = crate::harness::lab::inode_of(lib)?;
    lab.check(words.1, before != after, format!("inode {before} -> {after}"));
    Ok((a, b))
}

/// `swaplab stale` on the cases' processes with `root`'s package
/// database, without and then with the plan; the report without it.
pub fn ask_swaplab(lab: &mut Lab, cases: &[Case], root: &Path) -> Result<(Vec<i32>, StaleReport)> {
    let pids: Vec<i32> = cases.iter().map(|c| c.pid).collect();
    let roots = [root.to_path_buf()];
    let r = lab.stale_with(&pids, &roots, false)?;
    lab.stale_with(&pids, &roots, true)?;
    Ok((pids, r))
}

/// The package `swaplab stale` named for one of `pid`'s files, if any.
pub fn package_of(r: &StaleReport, pid: i32) -> Option<crate::detector::packages::Package> {
    r.get(pid)
        .and_then(|p| p.files.iter().find_map(|f| f.package.clone()))
}

/// Each process's greeting (its key, what it said) against the build it
/// should run.
pub fn check_greetings(lab: &mut Lab, seen: impl IntoIterator<Item = (&'static str, String, &'static str)>) {
    for (key, got, want) in seen {
        lab.check_eq(format!("{key} runs {want}"), got.as_str(), want);
    }
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
