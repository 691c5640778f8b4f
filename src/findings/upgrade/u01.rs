//! U01: a child forked after the executable is replaced runs the old program.

use anyhow::Result;

use crate::drivers::fleet::{exe_of, install_program};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::targets::protocol::{after_colon, field_i32, Command};
use crate::findings::NGINX_UPGRADE;

use super::common::{check_exe, version};

pub static U01: Finding = Finding {
    id: "U01",
    slug: "a_child_forked_after_the_executable_is_replaced_runs_the_old_program",
    claim: "`fork` copies the running image: a child forked after the executable file is replaced runs the old program; its `/proc/PID/exe` ends in `(deleted)`.",
    source: NGINX_UPGRADE,
    steps: &[
        "start A (bin/swaplab-app, build 1); ask its build; readlink /proc/A/exe",
        "install build 2 over bin/swaplab-app (install(1): unlink + create)",
        "A forks a child: it says build 1 and its /proc/PID/exe ends in (deleted)",
        "A forks a child that execs the same path: it says build 2, its exe is the file on disk",
    ],
    experiment: u01,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "Forking after the executable is replaced",
        question: "A master process forks its workers long after it started. If the program file was replaced in between (`make install`, a package upgrade), what do the new children run: the program that is on disk now, or the one their parent runs?",
        exercise: "Which pid token is A, which the forked child and which the exec'ed child (the `forked`/`spawned pid=… child=…` lines)? What does `readlink /proc/PID/exe` show for each, and which version does each run?",
        answer: "A is `[PID-1]`, the forked child `[PID-2]`, the exec'ed child `[PID-3]`. A and `[PID-2]` run version 1 and their exe ends in `(deleted)`; `[PID-3]` runs version 2 and its exe is the file on disk. `swaplab stale` flags `[PID-1]` and tells of `[PID-2]` to exec or restart `[PID-1]`; it does not flag `[PID-3]`.",
    },
    ..Finding::DEFAULTS
};

pub fn u01(lab: &mut Lab) -> Result<()> {
    let exe = lab.sandbox.program(Program::App)?;
    let mut a = lab.start_exe(&exe, "A", &[], |_| String::new())?;
    let va = version(lab, &mut a)?;
    let (a_exe_before, a_deleted_before) = exe_of(lab, a.pid())?;
    lab.note("the program file is replaced while A runs (make install)");
    install_program(lab, Program::App2, Program::App, Replace::Install)?;
    let (a_exe, a_deleted) = exe_of(lab, a.pid())?;
    lab.note("fork: A copies itself");
    let line = lab.ask(&mut a, Command::Fork)?;
    let c = field_i32(&line, "child")?;
    let vc = after_colon(&lab.expect(&mut a, &format!("version pid={c}:"))?);
    let (c_exe, c_deleted) = exe_of(lab, c)?;
    lab.note("fork + execve of the same path: A starts its program anew");
    let line = lab.ask(&mut a, Command::Spawn)?;
    let s = field_i32(&line, "child")?;
    lab.expect(&mut a, &format!("ready pid={s}"))?;
    let vs = after_colon(&lab.expect(&mut a, &format!("version pid={s}:"))?);
    let (s_exe, s_deleted) = exe_of(lab, s)?;
    lab.note("which processes must be restarted?");
    let r = lab.stale(&[a.pid(), c, s])?;
    lab.observe("build_forked_child", &vc);
    lab.observe("build_exec_child", &vs);
    lab.check_eq("A runs build 1", va.as_str(), "1");
    check_exe(
        lab,
        "before the replacement A's exe is the file on disk",
        &exe,
        (&a_exe_before, a_deleted_before),
        false,
    );
    check_exe(
        lab,
        "after the replacement A's exe ends in (deleted)",
        &exe,
        (&a_exe, a_deleted),
        true,
    );
    lab.check_eq(
        "the child forked after the replacement still runs build 1",
        vc.as_str(),
        "1",
    );
    check_exe(
        lab,
        "the forked child's /proc/PID/exe ends in (deleted)",
        &exe,
        (&c_exe, c_deleted),
        true,
    );
    lab.check_eq(
        "a child that execs the path runs build 2, the file now on disk",
        vs.as_str(),
        "2",
    );
    check_exe(
        lab,
        "the exec'ed child's exe is the file on disk, not (deleted)",
        &exe,
        (&s_exe, s_deleted),
        false,
    );
    lab.check_stale(&r, "A", a.pid(), Stale::replaced(&exe));
    lab.check(
        "swaplab stale names A's executable as the replaced file",
        r.get(a.pid()).is_some_and(|p| {
            p.files
                .iter()
                .any(|f| f.role == crate::detector::stale::Role::Executable && f.path == exe)
        }),
        format!("{:?}", r.get(a.pid()).map(|p| &p.files)),
    );
    lab.check_stale(&r, "the forked child", c, Stale::replaced(&exe).via(a.pid()));
    lab.check_stale(&r, "the exec'ed child", s, Stale::Clean);
    Ok(())
}
