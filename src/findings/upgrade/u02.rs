//! U02: `execve` runs the new file and keeps pid and open fds.

use anyhow::Result;

use crate::drivers::fleet::{exe_of, install_program};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::Lab;
use crate::harness::process::Program;
use crate::harness::procs;
use crate::harness::replace::Replace;
use crate::targets::protocol::{after_colon, field_i32, Command};
use crate::findings::NGINX_UPGRADE;

use super::common::{check_exe, version};

pub static U02: Finding = Finding {
    id: "U02",
    slug: "execve_runs_the_new_file_and_keeps_pid_and_open_fds",
    claim: "`execve` starts the program now on disk, keeps the pid and every fd not marked close-on-exec, and keeps no memory (flags, state); close-on-exec fds are gone.",
    source: NGINX_UPGRADE,
    steps: &[
        "start A (build 1); it remembers a flag, opens a plain pipe and a close-on-exec pipe; ls -l /proc/A/fd",
        "install build 2 over the program; A calls execve on its own path",
        "A prints ready with the same pid, says build 2, has forgotten the flag; /proc/A/fd still shows stdin/stdout/stderr and the plain pipe (same inodes) and no close-on-exec pipe",
    ],
    experiment: u02,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "What survives execve",
        question: "`execve` replaces the program a process runs. What exactly survives it: the pid? the open files and sockets? the data in memory?",
        exercise: "Compare A's pid, its fds and its flag before and after `execve`. Which fds keep their number and inode, which one is gone, and which build runs afterwards?",
        answer: "The pid and the start time stay: the same process runs build 2, its exe the file on disk. stdin, stdout, stderr and the plain pipe keep their fd numbers and inodes; the close-on-exec pipe is gone; the flag set before the exec is forgotten: nothing in memory survives.",
    },
    ..Finding::DEFAULTS
};

pub fn u02(lab: &mut Lab) -> Result<()> {
    let exe = lab.sandbox.program(Program::App)?;
    let mut a = lab.start_exe(&exe, "A", &[], |_| String::new())?;
    let pid = a.pid();
    let v1 = version(lab, &mut a)?;
    lab.ask(&mut a, Command::Remember("the flag is set".into()))?;
    let keep = lab.ask(&mut a, Command::Pipe { cloexec: false })?;
    let gone = lab.ask(&mut a, Command::Pipe { cloexec: true })?;
    let (kr, kw) = (field_i32(&keep, "r")?, field_i32(&keep, "w")?);
    let (gr, gw) = (field_i32(&gone, "r")?, field_i32(&gone, "w")?);
    let before = lab.fds(pid);
    let started = procs::get(pid).map(|p| p.start);
    lab.note("the program file is replaced, then A calls execve on its own path");
    install_program(lab, Program::App2, Program::App, Replace::Install)?;
    lab.ask(&mut a, Command::Exec)?;
    lab.expect(&mut a, "ready pid=")?;
    let restarted = procs::get(pid).map(|p| p.start);
    let v2 = version(lab, &mut a)?;
    let recall = after_colon(&lab.ask(&mut a, Command::Recall)?);
    let after = lab.fds(pid);
    let (exe_after, deleted) = exe_of(lab, pid)?;
    let at = |fds: &[(i32, String)], fd: i32| -> Option<String> {
        fds.iter().find(|(f, _)| *f == fd).map(|(_, t)| t.clone())
    };
    lab.observe("fds_before", before.len());
    lab.observe("fds_after", after.len());
    lab.check_eq("before: build 1", v1.as_str(), "1");
    lab.check(
        "after execve the same process runs: pid A alive, its start time in /proc/A/stat unchanged",
        started.is_some() && restarted == started,
        format!("start time {started:?} -> {restarted:?} (None: gone)"),
    );
    lab.check_eq(
        "after execve the file now on disk runs: build 2",
        v2.as_str(),
        "2",
    );
    check_exe(
        lab,
        "its exe is the file on disk, not (deleted)",
        &exe,
        (&exe_after, deleted),
        false,
    );
    let kept: Vec<i32> = vec![0, 1, 2, kr, kw];
    let same: Vec<bool> = kept
        .iter()
        .map(|fd| at(&before, *fd).is_some() && at(&before, *fd) == at(&after, *fd))
        .collect();
    lab.check(
        "stdin, stdout, stderr and the plain pipe keep their fd numbers and inodes",
        same.iter().all(|s| *s),
        format!("fds {kept:?} same: {same:?}"),
    );
    lab.check(
        "the close-on-exec pipe is gone",
        at(&before, gr).is_some() && at(&after, gr).is_none() && at(&after, gw).is_none(),
        format!(
            "fd {gr}: {:?} -> {:?}, fd {gw}: {:?}",
            at(&before, gr),
            at(&after, gr),
            at(&after, gw)
        ),
    );
    lab.check_eq(
        "nothing in memory survives: the flag is forgotten",
        recall.as_str(),
        "(nothing)",
    );
    Ok(())
}
