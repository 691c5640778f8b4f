//! L01: a process started after the replacement runs the new library.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::check_current;
use crate::harness::lab::Lab;
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;

pub static L01: Finding = Finding {
    id: "L01",
    slug: "a_process_started_after_the_replacement_runs_the_new_library",
    claim: "A process started after the library file is replaced runs the new version; its maps show the new inode and no `(deleted)`.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1 as lib/libexample.so; start A (linked at start-up), call the library, show its maps; stop A",
        "install v2 over it (install(1): unlink + create)",
        "start B; call the library; show its maps",
    ],
    experiment: l01,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A process started after a library update",
        question: "The article's starting point: after `make install` of a new `libexample.so`, does a process started afterwards run the new code? What do its maps show?",
        exercise: "A and B run the same program. Compare the inode column of A's maps lines with B's, and with the inodes `stat` printed after each `install`. Which file does each process map?",
        answer: "A maps `[INODE-1]`, the file v1's install created; B maps `[INODE-2]`, the file the second install created, and greets `Hello World` (v2). None of the lines ends in `(deleted)`: each process maps the file its path named when it started. The columns of a maps line are the address range, the permissions, the offset in the file, the device, the inode and the path.",
    },
    ..Finding::DEFAULTS
};

pub fn l01(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let mut a = lab.start(Program::Plain, "A")?;
    let before = lab.call(&mut a)?;
    let ma = lab.maps(a.pid())?;
    lab.note("the library is updated (make install), and A is restarted as B");
    // A stops after the install, not before: while A holds the old file its
    // inode number cannot be handed to the new one (ext4 reuses a freed
    // number at once, tmpfs never does), so the transcript is the same on
    // every file system. The lab sheet's exercise shows the reuse.
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    lab.stop(&mut a)?;
    let mut b = lab.start(Program::Plain, "B")?;
    let after = lab.call(&mut b)?;
    let mb = lab.maps(b.pid())?;
    lab.observe("inode_before", ino1);
    lab.observe("inode_after", ino2);
    lab.observe("greeting_a", &before);
    lab.observe("greeting_b", &after);
    lab.check_eq("A, started on v1, greets with v1", before.as_str(), OLD);
    check_current(lab, "A", &ma, ino1);
    lab.check_eq(
        "B, started after the replacement, greets with v2",
        after.as_str(),
        NEW,
    );
    check_current(lab, "B", &mb, ino2);
    Ok(())
}
