//! L10: musl `dlclose` never unloads and `dlopen` matches by inode.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{Context, Result};

use crate::detector::maps;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_two_copies, describe};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::runtime::Libc;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;

pub static L10: Finding = Finding {
    id: "L10",
    slug: "musl_dlclose_never_unloads_and_dlopen_matches_by_inode",
    claim: "musl differs (measured): `dlclose` never unloads, and `dlopen` of a path matches by device + inode, so after a replacement it loads the new file as a second copy while the old stays mapped.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "on musl: install v1; start D (dlopen program, built with musl-gcc); dlopen lib/libexample.so and call it",
        "hard-link the file to another name and dlopen that: the same handle (same device and inode)",
        "install v2; dlopen the same path while the first handle is open: another handle, v2; the first still gives v1",
        "dlclose every handle: both copies stay mapped",
    ],
    experiment: l10,
    scope: Scope::Only(Libc::Musl),
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "musl's dlclose and dlopen",
        question: "L06–L08 answer the article's dlopen question for glibc. Does another C library give the same answers? musl is the C library of Alpine and of most static Linux binaries, and its dynamic loader is written differently.",
        exercise: "Which handle does `dlopen` of a hard link to the library return, and which after the replacement? With every handle closed, what is still mapped?",
        answer: "The hard link (same device and inode) returns the same handle as the first `dlopen`; after the replacement the same path returns a new handle, `h=3`, which greets `Hello World` while `h=1` still greets `Hell World`. D maps two files, the old one `(deleted)` and the one on disk, and both stay mapped after every handle is closed: musl's `dlclose` never unloads.",
    },
    ..Finding::DEFAULTS
};

/// L10: musl's loader. Run on the musl column only (see `Scope::Only`).
pub fn l10(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let lib = lab.sandbox.lib_file();
    let alias = lab.sandbox.lib_dir().join("libexample-alias.so");
    let mut d = lab.start(Program::Dlopen, "D")?;
    let (h1, handle1) = lab.open(&mut d, &lib, "")?;
    let (g1, _) = lab.callh(&mut d, h1)?;
    lab.note("another name for the same file (a hard link: same device and inode)");
    lab.shell("ln lib/libexample.so lib/libexample-alias.so");
    fs::hard_link(&lib, &alias).context("cannot link the library")?;
    let (h2, handle2) = lab.open(&mut d, &alias, "")?;
    lab.note("the library is updated; D opens the same path while the first handle is open");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let (h3, handle3) = lab.open(&mut d, &lib, "")?;
    let (g3, _) = lab.callh(&mut d, h3)?;
    let (g1b, _) = lab.callh(&mut d, h1)?;
    let m = lab.maps(d.pid())?;
    lab.note("dlclose every handle");
    for h in [h3, h2, h1] {
        lab.close(&mut d, h)?;
    }
    let m_closed = lab.maps(d.pid())?;
    let r = lab.stale(&[d.pid()])?;
    lab.observe("handles", [&handle1, &handle2, &handle3]);
    lab.check_eq("D greets with v1", g1.as_str(), OLD);
    lab.check_eq(
        "dlopen of another path to the same device and inode returns the same handle",
        &handle2,
        &handle1,
    );
    lab.check(
        "after the replacement, dlopen of the same path returns another handle",
        handle3 != handle1,
        format!("{handle1} then {handle3}"),
    );
    lab.check_eq("the new handle greets with v2", g3.as_str(), NEW);
    lab.check_eq(
        "the first handle still greets with v1 beside it",
        g1b.as_str(),
        OLD,
    );
    lab.check_eq(
        "D maps two files: the old one and the one now on disk",
        m.iter().map(|m| m.inode).collect::<BTreeSet<u64>>(),
        BTreeSet::from([ino1, ino2]),
    );
    check_two_copies(lab, "D", &m, ino1, ino2);
    lab.check(
        "with every handle closed, both copies stay mapped: dlclose never unloads",
        maps::inodes(&m_closed) == maps::inodes(&m),
        format!("{} before, {} after", describe(&m), describe(&m_closed)),
    );
    lab.check_stale(&r, "D", d.pid(), Stale::replaced(lab.sandbox.lib_file()));
    Ok(())
}
