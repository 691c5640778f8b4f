//! L07: `dlopen` of the same path with a handle open returns the old library.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_old_deleted, check_two_copies, describe};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::runtime::Libc;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;

/// What musl shows instead of L07's claim.
const MUSL_L07: &str = "musl matches by device + inode, not by the path string: `dlopen` of the same path while a handle is still open loads the new file as a second copy, with another handle and the new code; the old copy stays mapped beside it.";

pub static L07: Finding = Finding {
    id: "L07",
    slug: "dlopen_of_the_same_path_with_a_handle_open_returns_the_old_library",
    claim: "glibc matches an already-loaded library by the path string first: `dlopen` of the same path while a handle is still open returns the same handle and the old code, even though the file on disk is new.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start D; dlopen lib/libexample.so and call it",
        "install v2; dlopen the same path again while the first handle is open",
        "call through the second handle; show maps",
    ],
    experiment: l07,
    scope: Scope::PerLibc,
    musl: MUSL_L07,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "The same path opened again while a handle is open",
        question: "If the library is updated on disk while a handle is still open, what does a second `dlopen` of the same path return?",
        exercise: "After the update D opens the same path again. Which greeting does `h=2` give, and which inodes does D's maps show? Compare with the musl block, if your sheet has one.",
        answer: "On glibc `h=2` greets `Hell World`: it is the same handle as `h=1`, and D maps only `[INODE-1]`, `(deleted)`; the new file `[INODE-2]` is not mapped. On musl `h=2` greets `Hello World` and D maps both `[INODE-2]` and the old `[INODE-1]` `(deleted)`: musl matches by device and inode, not by path.",
    },
    ..Finding::DEFAULTS
};

pub fn l07(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let lib = lab.sandbox.lib_file();
    let mut d = lab.start(Program::Dlopen, "D")?;
    let (h1, handle1) = lab.open(&mut d, &lib, "")?;
    let (g1, _) = lab.callh(&mut d, h1)?;
    lab.note("the library is updated; D opens the same path while the first handle is open");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let (h2, handle2) = lab.open(&mut d, &lib, "")?;
    let (g2, _) = lab.callh(&mut d, h2)?;
    let m = lab.maps(d.pid())?;
    lab.observe("handle_first", &handle1);
    lab.observe("handle_second", &handle2);
    lab.check_eq(
        "D greets with v1 through the first handle",
        g1.as_str(),
        OLD,
    );
    let r = lab.stale(&[d.pid()])?;
    match lab.libc() {
        Libc::Glibc => {
            lab.check_eq(
                "the second dlopen returns the same handle",
                &handle2,
                &handle1,
            );
            lab.check_eq(
                "the second handle greets with v1, the old code",
                g2.as_str(),
                OLD,
            );
            check_old_deleted(lab, "D", &m, ino1);
            lab.check(
                "the new file on disk is not mapped",
                !m.iter().any(|m| m.inode == ino2),
                describe(&m),
            );
        }
        Libc::Musl => {
            lab.check(
                "musl: the second dlopen returns another handle (the path matched no loaded inode)",
                handle2 != handle1,
                format!("{handle1} then {handle2}"),
            );
            lab.check_eq(
                "musl: the second handle greets with v2, the new file",
                g2.as_str(),
                NEW,
            );
            check_two_copies(lab, "D", &m, ino1, ino2);
        }
    }
    lab.check_stale(&r, "D", d.pid(), Stale::replaced(lab.sandbox.lib_file()));
    Ok(())
}
