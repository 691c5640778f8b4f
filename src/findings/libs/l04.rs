//! L04: forked children keep the old library.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_current, check_old_deleted};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;
use crate::targets::protocol::Command;

pub static L04: Finding = Finding {
    id: "L04",
    slug: "forked_children_keep_the_old_library",
    claim: "Children forked after the replacement run the old version (they inherit the parent's mappings); restarting only the children is not enough.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start the forking program P; fork a child, which calls the library",
        "install v2",
        "fork another child: it calls the library; show P's maps, then the child's",
        "kill the children and fork a fresh one (a children-only restart)",
        "start a new process N (a full restart)",
    ],
    experiment: l04,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A forking process and a library update",
        question: "The article's `test-fork` forks a child every second. Here v1 of libexample greets `Hell World` (misspelt on purpose, so that the two versions differ by one letter) and v2 `Hello World`. A process P starts on v1 and forks a child; then v2 is installed and P forks again. Does the new child greet with v1 or v2? And if the children are killed and P forks fresh ones (a restart of the children only), do they?\n\nThe transcript shows each process's mappings of the library with `grep libexample /proc/PID/maps`, one line per mapping: the address range, the permissions (`r`, `w`, `x`; `p` for a private, copy-on-write mapping), the offset in the file, the device, the inode, and the path, followed by `(deleted)` when the file has no name any more.",
        exercise: "Find P's pid token and each child's in the `ready` and `forked pid=… child=…` lines. Then read the two `grep libexample /proc/[PID-k]/maps` blocks after the update: whose maps is each, which inode do they map, and what do their lines have in common? Which processes does `swaplab stale` say to restart?",
        answer: "P is `[PID-1]`; its children are `[PID-2]` (forked before the update), `[PID-3]` (after it) and `[PID-4]` (after the children-only restart); N is `[PID-5]`. The two blocks are P's (`/proc/[PID-1]/maps`) and the child `[PID-3]`'s: line for line the same permissions, offsets and inode `[INODE-1]`, each `(deleted)`, while the path names `[INODE-2]` since the update. The child has a copy of P's address space: `fork` runs no loader, so `[PID-3]` and `[PID-4]` greet `Hell World` like P. `swaplab stale` flags `[PID-1]` and tells of `[PID-4]` to exec or restart `[PID-1]` instead; only N, a new process, greets `Hello World` and maps `[INODE-2]`.",
    },
    ..Finding::DEFAULTS
};

pub fn l04(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let mut p = lab.start(Program::Fork, "P")?;
    let gp = lab.call(&mut p)?;
    let (_, g1) = lab.fork_child(&mut p)?;
    lab.note("the library is updated while P runs");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let (c2, g2) = lab.fork_child(&mut p)?;
    lab.note("the parent's mappings of the library, then the new child's");
    lab.maps(p.pid())?;
    let m2 = lab.maps(c2)?;
    lab.note("restart only the children: kill them, fork a fresh one");
    lab.ask(&mut p, Command::KillChildren)?;
    let (c3, g3) = lab.fork_child(&mut p)?;
    lab.note("which processes must be restarted, and how?");
    let r = lab.stale(&[p.pid(), c3])?;
    lab.check_stale(&r, "P", p.pid(), Stale::replaced(lab.sandbox.lib_file()));
    lab.check_stale(&r, "P's new child", c3, Stale::replaced(lab.sandbox.lib_file()).via(p.pid()));
    lab.note("a full restart: a new process");
    let mut n = lab.start(Program::Fork, "N")?;
    let gn = lab.call(&mut n)?;
    let mn = lab.maps(n.pid())?;
    lab.observe("greeting_child_after_update", &g2);
    lab.observe("greeting_child_after_children_restart", &g3);
    lab.check_eq(
        "P and its first child greet with v1",
        (gp.as_str(), g1.as_str()),
        (OLD, OLD),
    );
    lab.check_eq(
        "a child forked after the update greets with v1",
        g2.as_str(),
        OLD,
    );
    check_old_deleted(lab, "that child", &m2, ino1);
    lab.check_eq(
        "a child forked after a children-only restart still greets with v1",
        g3.as_str(),
        OLD,
    );
    lab.check_eq("a new process greets with v2", gn.as_str(), NEW);
    check_current(lab, "the new process", &mn, ino2);
    let r = lab.stale(&[n.pid()])?;
    lab.check_stale(&r, "the new process", n.pid(), Stale::Clean);
    Ok(())
}
