//! Article 000's question for a library that is preloaded rather than
//! linked (`LD_PRELOAD`): L14.

use std::path::Path;

use anyhow::Result;

use crate::detector::maps::Mapping;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_current, check_old_deleted};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::{self, V1, V2};

use super::SHARED_LIBRARY_UPDATE;

/// The preloaded library, relative to the sandbox: beside the linked
/// `lib/libexample.so`, a name no program is linked against.
const PRELOADED: &str = "lib/libexample-preload.so";

/// The linked library, relative to the sandbox (what the
/// `libs` experiments replace).
const LINKED: &str = "lib/libexample.so";

/// Installs variant `v` at `dst` (relative to the sandbox) with install(1),
/// narrated with what the file is for.
fn install(lab: &mut Lab, v: Variant, dst: &str, role: &str) -> Result<()> {
    lab.put_variant_at(v, Replace::Install, dst, &format!(", the {role} library"))
}

/// Installs variant `v` as the preloaded library; returns the new file's
/// inode, narrated as `stat`. (The linked library's inode is not shown: no
/// process of glibc's column holds it, so the file system may hand its
/// number to the next file, or not.)
fn install_preloaded(lab: &mut Lab, v: Variant) -> Result<u64> {
    install(lab, v, PRELOADED, "preloaded")?;
    lab.inode_at(PRELOADED)
}

/// The mappings of the preloaded library among `m` (musl also maps the
/// linked `lib/libexample.so`; glibc does not, see the lab sheet).
fn of_preloaded(lab: &Lab, m: &[Mapping]) -> Vec<Mapping> {
    let file = lab.sandbox.root().join(PRELOADED);
    m.iter().filter(|m| m.path == file).cloned().collect()
}

/// `grep libexample /proc/PID/maps`, narrated; returns the preloaded
/// library's mappings.
fn preloaded_maps(lab: &mut Lab, pid: i32) -> Result<Vec<Mapping>> {
    let all = lab.maps(pid)?;
    Ok(of_preloaded(lab, &all))
}

/// `LD_PRELOAD` as process `pid` got it, read from `/proc/PID/environ`
/// (not from what the process says), narrated.
fn preload_env(lab: &mut Lab, pid: i32) -> Result<Option<String>> {
    let found = crate::harness::procs::environ_var(pid, "LD_PRELOAD");
    lab.proof(format!(
        "$ tr '\\0' '\\n' < /proc/{pid}/environ | grep LD_PRELOAD"
    ));
    lab.proof(match &found {
        Some(v) => format!("LD_PRELOAD={v}"),
        None => "(no lines)".into(),
    });
    Ok(found)
}

pub static L14: Finding = Finding {
    id: "L14",
    slug: "a_preloaded_library_behaves_like_a_linked_one_across_a_replacement",
    claim: "A library preloaded with `LD_PRELOAD` behaves like a linked one: replaced on disk, the running process keeps the old code (its maps show ` (deleted)`), a forked child keeps it too, and an exec loads whatever file the inherited `LD_PRELOAD` names now.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v2 as the linked lib/libexample.so and v1 as lib/libexample-preload.so; start the forking program P with LD_PRELOAD naming the latter; call the library, show P's maps",
        "install v2 over the preloaded file; call the library in P again, show its maps",
        "P forks a child, which calls the library; show its maps",
        "install v1 over the linked file, so it still says the other greeting; P forks a child that execs P's program (inheriting LD_PRELOAD): it calls the library; show its environment and maps",
    ],
    experiment: l14,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A preloaded library and an update",
        question: "`LD_PRELOAD` loads a library into a program that was never linked against it (a malloc replacement, a tracing shim, an interposer). Is such a library any different from a linked one when it is updated under running processes: does anything load it again, and what do children get?",
        exercise: "Which greeting does P give before and after the preloaded library is updated, which does the forked child give, and which the exec'ed child? Which process tokens does `swaplab stale` flag, and what does it say of the forked child?",
        answer: "P greets `Hell World` from the preloaded v1 before and after the update; the forked child also greets `Hell World` and maps the preloaded file `(deleted)`; the exec'ed child, which inherited `LD_PRELOAD`, greets `Hello World` from the preloaded file now on disk. `swaplab stale` flags P and the forked child (exec or restart `[PID-1]`, P, instead) and not the exec'ed child.",
    },
    ..Finding::DEFAULTS
};

pub fn l14(lab: &mut Lab) -> Result<()> {
    lab.note("the linked library and the preloaded one always hold different versions, so a greeting says which file answered");
    install(lab, V2, LINKED, "linked")?;
    let ino1 = install_preloaded(lab, V1)?;
    let preload = lab.sandbox.root().join(PRELOADED);
    let mut p = lab.start_with(Program::Fork, "P", &[], |cmd| {
        cmd.env("LD_PRELOAD", &preload);
        format!("LD_PRELOAD=$PWD/{PRELOADED}")
    })?;
    let g_before = lab.call(&mut p)?;
    let m_before = preloaded_maps(lab, p.pid())?;
    lab.note("the preloaded library is updated while P runs");
    let ino2 = install_preloaded(lab, V2)?;
    let g_after = lab.call(&mut p)?;
    let m_after = preloaded_maps(lab, p.pid())?;
    let (c, g_fork) = lab.fork_child(&mut p)?;
    let m_fork = preloaded_maps(lab, c)?;
    lab.note("the linked library gets v1, so it still says the other greeting; then fork + execve");
    install(lab, V1, LINKED, "linked")?;
    let (s, g_exec) = lab.spawn_child(&mut p)?;
    let env_exec = preload_env(lab, s)?;
    let m_exec = preloaded_maps(lab, s)?;
    lab.note("which processes must be restarted, and how?");
    let r = lab.stale(&[p.pid(), c, s])?;
    lab.observe("inode_old", ino1);
    lab.observe("inode_new", ino2);
    lab.observe("greeting_after_update", &g_after);
    lab.observe("greeting_forked", &g_fork);
    lab.observe("greeting_exec", &g_exec);
    judge(lab, &preload, [g_before, g_after, g_fork, g_exec], env_exec);
    lab.note(format!("the maps checked below are those of the preloaded {PRELOADED}"));
    check_current(lab, "P, before the update,", &m_before, ino1);
    check_old_deleted(lab, "P", &m_after, ino1);
    check_old_deleted(lab, "the forked child", &m_fork, ino1);
    check_current(lab, "the exec'ed child", &m_exec, ino2);
    lab.check_stale(&r, "P", p.pid(), Stale::replaced(&preload));
    lab.check_stale(&r, "the forked child", c, Stale::replaced(&preload).via(p.pid()));
    lab.check_stale(&r, "the exec'ed child", s, Stale::Clean);
    Ok(())
}

/// Judges what the processes answered: the greetings before and after the
/// update, of the forked and of the exec'ed child, and the `LD_PRELOAD` the
/// exec'ed child inherited.
fn judge(lab: &mut Lab, preload: &Path, greetings: [String; 4], env_exec: Option<String>) {
    let [before, after, forked, exec] = greetings;
    let (old, new) = (V1.greeting(), V2.greeting());
    lab.check_eq(
        "P greets with the preloaded v1, not the linked v2",
        before.as_str(),
        old,
    );
    lab.check_eq(
        "P, running across the update, still greets with the old preloaded v1",
        after.as_str(),
        old,
    );
    lab.check_eq(
        "a child forked after the update greets with the old preloaded v1",
        forked.as_str(),
        old,
    );
    let want = preload.display().to_string();
    lab.check_eq(
        "the exec'ed child inherited P's LD_PRELOAD",
        env_exec.as_deref(),
        Some(want.as_str()),
    );
    lab.check_eq(
        "the exec'ed child greets with the preloaded file now on disk, v2, not the linked v1",
        exec.as_str(),
        new,
    );
}
