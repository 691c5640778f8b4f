//! L02: a running process keeps the old library marked deleted.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_current, check_old_deleted};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::OLD;
use crate::findings::SHARED_LIBRARY_UPDATE;

pub static L02: Finding = Finding {
    id: "L02",
    slug: "a_running_process_keeps_the_old_library_marked_deleted",
    claim: "A process running across the replacement keeps the old code: calling into the library again still gives the old output, and every mapping of the library in `/proc/PID/maps` ends in ` (deleted)` with the old inode.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start A; call the library; show its maps",
        "install v2 over it while A runs",
        "call the library in A again; show A's maps",
    ],
    experiment: l02,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A running process and a library update",
        question: "If the library is updated while a process runs, does that process switch to the new code on its next call?",
        exercise: "Compare A's two `grep libexample /proc/PID/maps` outputs, before and after the second `install`. What changed in the lines, what stayed, and which inode does the path name afterwards?",
        answer: "The same five mappings, on the same inode `[INODE-1]`, now each end in `(deleted)`: the file A maps no longer has a name. `stat` shows the path names `[INODE-2]` after the install. A still greets `Hell World` (v1), and `swaplab stale` flags it: restart required.",
    },
    ..Finding::DEFAULTS
};

pub fn l02(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let mut a = lab.start(Program::Plain, "A")?;
    let before = lab.call(&mut a)?;
    let m1 = lab.maps(a.pid())?;
    lab.note("the library is updated while A runs");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let after = lab.call(&mut a)?;
    let m2 = lab.maps(a.pid())?;
    lab.observe("inode_old", ino1);
    lab.observe("inode_new", ino2);
    lab.observe("greeting_after", &after);
    lab.check_eq("A greets with v1 before the update", before.as_str(), OLD);
    check_current(lab, "A", &m1, ino1);
    lab.check_eq(
        "A, running across the update, still greets with v1",
        after.as_str(),
        OLD,
    );
    check_old_deleted(lab, "A", &m2, ino1);
    lab.check(
        "the file on disk is a new inode",
        ino2 != ino1,
        format!("{ino1} -> {ino2}"),
    );
    lab.note("which processes must be restarted?");
    let r = lab.stale(&[a.pid()])?;
    lab.check_stale(&r, "A", a.pid(), Stale::replaced(lab.sandbox.lib_file()));
    Ok(())
}
