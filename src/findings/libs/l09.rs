//! L09: `dlopen` of a copy at a new path loads the new version beside the old.

use std::fs;

use anyhow::{Context, Result};

use crate::detector::maps::{self, Mapping};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_current, check_old_deleted};
use crate::harness::lab::{inode_of, Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;

pub static L09: Finding = Finding {
    id: "L09",
    slug: "dlopen_of_a_copy_at_a_new_path_loads_the_new_version_beside_the_old",
    claim: "`dlopen` of a copy at a new, unique path loads the new version beside the old one: both are mapped and callable (the hot-reload trick).",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start D; dlopen lib/libexample.so and call it",
        "replace it with v2 (rename); copy it to a new, unique path",
        "dlopen the copy and call it; call the first handle again; show maps",
    ],
    experiment: l09,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A copy of the library at a new path",
        question: "How do hot-reload systems load a new version of a plugin while the old one is still in use?",
        exercise: "After the update D opens a copy of the new file at a unique path. Which greeting does each handle give, and which of D's files does `swaplab stale` list?",
        answer: "`h=2`, the copy, greets `Hello World`; `h=1` still greets `Hell World` beside it. D maps the old file `(deleted)` and the copy, not deleted. `swaplab stale` flags D for `lib/libexample.so` only, not for the copy, which is the file on disk.",
    },
    ..Finding::DEFAULTS
};

pub fn l09(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let lib = lab.sandbox.lib_file();
    let mut d = lab.start(Program::Dlopen, "D")?;
    let (h1, _) = lab.open(&mut d, &lib, "")?;
    let (g1, _) = lab.callh(&mut d, h1)?;
    lab.note("the library is updated; D loads a copy of the new file from a unique path");
    lab.put_lib(V2, Replace::Rename)?;
    let copy = lab.sandbox.lib_dir().join("libexample.reload-1.so");
    lab.shell("cp lib/libexample.so lib/libexample.reload-1.so");
    fs::copy(&lib, &copy).context("cannot copy the library")?;
    let ino_copy = inode_of(&copy)?;
    let (h2, _) = lab.open(&mut d, &copy, "")?;
    let (g2, _) = lab.callh(&mut d, h2)?;
    let (g1b, _) = lab.callh(&mut d, h1)?;
    let m = lab.maps(d.pid())?;
    let old: Vec<Mapping> = m.iter().filter(|m| m.path == lib).cloned().collect();
    let new: Vec<Mapping> = m.iter().filter(|m| m.path == copy).cloned().collect();
    lab.observe("inodes_mapped", maps::inodes(&m));
    lab.check_eq("the first handle greets with v1", g1.as_str(), OLD);
    lab.check_eq("the copy at a new path greets with v2", g2.as_str(), NEW);
    lab.check_eq(
        "the first handle still greets with v1 beside it",
        g1b.as_str(),
        OLD,
    );
    check_old_deleted(lab, "D (old file)", &old, ino1);
    check_current(lab, "D (copy)", &new, ino_copy);
    let r = lab.stale(&[d.pid()])?;
    lab.check_stale(&r, "D", d.pid(), Stale::replaced(lab.sandbox.lib_file()));
    lab.check(
        "swaplab stale lists only the old file, not the copy D also runs",
        r.get(d.pid())
            .is_some_and(|p| p.files.len() == 1 && p.files[0].path == lib),
        format!("{:?}", r.get(d.pid()).map(|p| &p.files)),
    );
    Ok(())
}
