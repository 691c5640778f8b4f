//! L03: old and new run side by side and grep finds both.

use anyhow::Result;

use crate::detector::maps::{self, Mapping};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_current, check_old_deleted};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;

pub static L03: Finding = Finding {
    id: "L03",
    slug: "old_and_new_run_side_by_side_and_grep_finds_both",
    claim: "Old and new run side by side: `grep libexample /proc/*/maps` (the article's detection command) finds both processes; only the old one's lines carry `(deleted)`, and the two inodes differ.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start A; call the library",
        "install v2; start B; call the library",
        "grep libexample /proc/*/maps",
    ],
    experiment: l03,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "The article's detection command",
        question: "The article detects processes that need a restart with `grep libssl /proc/*/maps`. Does that find a process on the old library and one on the new, and tell them apart?",
        exercise: "In the output of `grep libexample /proc/*/maps`, which pid token is A's and which is B's (their `ready pid=` lines say)? Which of the two does `swaplab stale` flag, and by what?",
        answer: "A is `[PID-1]`, B is `[PID-2]`. `[PID-1]`'s lines map `[INODE-1]` and end in `(deleted)`; `[PID-2]`'s map `[INODE-2]`, the file on disk. `swaplab stale` flags only `[PID-1]` (mapped `[INODE-1]`, the path names `[INODE-2]`, another build-id) and leaves `[PID-2]` alone.",
    },
    ..Finding::DEFAULTS
};

pub fn l03(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let mut a = lab.start(Program::Plain, "A")?;
    let ga = lab.call(&mut a)?;
    lab.note("the library is updated while A runs; B starts afterwards");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let mut b = lab.start(Program::Plain, "B")?;
    let gb = lab.call(&mut b)?;
    let found = lab.grep_all()?;
    let pids: Vec<i32> = found.iter().map(|(p, _)| *p).collect();
    let mut want = vec![a.pid(), b.pid()];
    want.sort();
    let of = |pid: i32| -> Vec<Mapping> {
        found
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    };
    let (ma, mb) = (of(a.pid()), of(b.pid()));
    lab.observe("processes_found", &pids);
    lab.check_eq("A greets with v1", ga.as_str(), OLD);
    lab.check_eq("B greets with v2", gb.as_str(), NEW);
    lab.check_eq("grep finds exactly the two processes, A and B", pids, want);
    check_old_deleted(lab, "A", &ma, ino1);
    check_current(lab, "B", &mb, ino2);
    lab.check(
        "the two processes map different inodes",
        ino1 != ino2 && maps::inodes(&ma) != maps::inodes(&mb),
        format!("A {:?}, B {:?}", maps::inodes(&ma), maps::inodes(&mb)),
    );
    lab.note("grep finds both; which must be restarted?");
    let r = lab.stale(&[a.pid(), b.pid()])?;
    lab.check_stale(&r, "A", a.pid(), Stale::replaced(lab.sandbox.lib_file()));
    lab.check_stale(&r, "B", b.pid(), Stale::Clean);
    Ok(())
}
