//! L05: exec after the replacement loads the new library.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::check_current;
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;
use crate::targets::protocol::Command;

pub static L05: Finding = Finding {
    id: "L05",
    slug: "exec_after_the_replacement_loads_the_new_library",
    claim: "A fork + execve (or an execve in place) after the replacement loads the new version: exec runs the dynamic loader again.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start A; call the library",
        "install v2; A still calls v1",
        "A forks a child that execs A's program: the child calls the library; show its maps",
        "A execs its own program in place (same pid): call the library; show its maps",
    ],
    experiment: l05,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "exec after a library update",
        question: "Both fork and exec start \"new\" processes. Which one picks up the updated library?",
        exercise: "Which pid token does A have before `exec`, and after it (the `exec pid=` and `ready pid=` lines)? Which inode does each of the two maps blocks show, and what did `swaplab stale` say of A before and after?",
        answer: "A is `[PID-1]` throughout: `execve` keeps the pid. The child A spawned is `[PID-2]`. Both maps blocks show `[INODE-2]`, the file on disk, without `(deleted)`, and both greet `Hello World`. Before the exec `swaplab stale` flags `[PID-1]` (restart required); after it, it flags neither (it only notes it could not judge one file written just after its birth).",
    },
    ..Finding::DEFAULTS
};

pub fn l05(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let mut a = lab.start(Program::Plain, "A")?;
    let g1 = lab.call(&mut a)?;
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let g2 = lab.call(&mut a)?;
    let r1 = lab.stale(&[a.pid()])?;
    lab.note("fork + execve: A forks a child that execs A's program");
    let (s, gs) = lab.spawn_child(&mut a)?;
    let ms = lab.maps(s)?;
    lab.note("execve in place: A execs its own program; the pid stays");
    let pid_before = a.pid();
    let started = start_time(pid_before)?;
    lab.ask(&mut a, Command::Exec)?;
    let ready = lab.expect(&mut a, &format!("ready pid={pid_before}"))?;
    let g3 = lab.call(&mut a)?;
    let m3 = lab.maps(a.pid())?;
    let r2 = lab.stale(&[a.pid(), s])?;
    lab.observe("greeting_forked_exec", &gs);
    lab.observe("greeting_exec_in_place", &g3);
    lab.check_eq(
        "A greets with v1, before and after the update",
        (g1.as_str(), g2.as_str()),
        (OLD, OLD),
    );
    lab.check_eq(
        "the forked and exec'ed child greets with v2",
        gs.as_str(),
        NEW,
    );
    check_current(lab, "the exec'ed child", &ms, ino2);
    // /proc, not A's own words: the process at A's pid is still the
    // harness's child, born when A was (an exec keeps the start time; a
    // new process would have its own).
    let after = start_time(pid_before)?;
    lab.check(
        "after execve in place the same process (A's pid, parent and start time) runs v2",
        after == started && after.1 == std::process::id() as i32,
        format!("before (start, ppid) {started:?}, after {after:?}; A said {ready}"),
    );
    lab.check_eq("after execve in place A greets with v2", g3.as_str(), NEW);
    check_current(lab, "A after execve", &m3, ino2);
    lab.check_stale(
        &r1,
        "A, before the exec",
        pid_before,
        Stale::replaced(lab.sandbox.lib_file()),
    );
    lab.check_stale(&r2, "A, after execve in place", pid_before, Stale::Clean);
    lab.check_stale(&r2, "the forked and exec'ed child", s, Stale::Clean);
    Ok(())
}

/// The start time (clock ticks since boot) and parent of process `pid`.
fn start_time(pid: i32) -> Result<(u64, i32)> {
    let st = procfs::process::Process::new(pid)?.stat()?;
    Ok((st.starttime, st.ppid))
}
