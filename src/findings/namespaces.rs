//! `dlmopen` (L17): a second copy of a library at the same path, in a
//! link-map namespace of its own, and how many namespaces there are.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{answer_of, vol, Lab, Stale};
use crate::targets::protocol::Command;
use crate::harness::map_checks::{check_current, check_two_copies};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::runtime::Libc;
use crate::harness::symbols::defines;
use crate::harness::variants::Variant::{V1, V2};
use crate::harness::variants::{NEW, OLD};

use super::SHARED_LIBRARY_UPDATE;

/// glibc's table of namespaces (`DL_NNS`): the base one and 15 new ones.
const NEW_NAMESPACES: usize = 15;
/// What glibc says when the table is full.
const TABLE_FULL: &str = "no more namespaces available for dlmopen()";
/// What glibc says when a namespace's own libc finds no static TLS left.
const TLS_FULL: &str = "cannot allocate memory in static TLS block";
/// More attempts than any glibc has namespaces: the loop's bound.
const ATTEMPTS: usize = 32;

/// What musl shows instead of L17's claim.
const MUSL_L17: &str = "musl has no `dlmopen`: its C library (the loader file) exports no such symbol, and the twin built for it can only say so. A second copy at the same path needs a copy at another path there (L09).";

pub static L17: Finding = Finding {
    id: "L17",
    slug: "dlmopen_loads_the_new_version_beside_the_old_at_the_same_path_until_the_namespaces_run_out",
    claim: "`dlmopen(LM_ID_NEWLM, path)` (glibc) loads the library into a new link-map namespace even at the same path: after a replacement the new namespace runs the new version while the old namespace keeps the old one, both callable, with no copy to a unique path (compare L09); `swaplab stale` flags the process while the old namespace holds the old copy, and not once its handle is closed. The namespaces run out, at fewer than 16: each new one loads its own libc (the maps show one more copy per namespace), whose thread-local storage must come from a small static reserve, and the first new namespace that finds none fails with \"cannot allocate memory in static TLS block\"; with that reserve raised to its maximum (`GLIBC_TUNABLES=glibc.rtld.nns=16`; measured on Debian's glibc 2.31, 2.36 and 2.41) the loader's table is the limit: 15 new namespaces, and the 16th fails with \"no more namespaces available for dlmopen()\".",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1; start D; dlmopen lib/libexample.so into a new namespace and call it",
        "replace it with v2 (rename); dlmopen the same path into another new namespace; call both; show maps; swaplab stale",
        "dlclose the first namespace's handle; show maps; swaplab stale",
        "start N: dlmopen the library into new namespaces until one fails; then the same in N2, started with GLIBC_TUNABLES=glibc.rtld.nns=16",
    ],
    experiment: l17,
    scope: Scope::PerLibc,
    musl: MUSL_L17,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "dlmopen and link-map namespaces",
        question: "L07 showed that glibc will not load a second copy of a library from the same path while the first is loaded, and L09 worked around it by copying the file to a new path. glibc has another way: `dlmopen(LM_ID_NEWLM, path)` loads a library into a new *link-map namespace*, a loader table of its own in which nothing is loaded yet. Does that give the new version beside the old one, at the same path? And how many namespaces can a process have?",
        exercise: "After the replacement D opens the same path into a new namespace. What do `h=1` and `h=2` greet, which files does D map, and what happens when the first namespace's handle is closed? How many namespaces did N and N2 open before failing, and with which message?",
        answer: "`h=2` greets `Hello World` and `h=1` still `Hell World`: D maps the old file `(deleted)` and the new one. Once the first namespace's handle is closed, D maps only the file on disk and `swaplab stale` no longer flags it. N fails before 16 namespaces with \"cannot allocate memory in static TLS block\" (each namespace loads a libc of its own); with `glibc.rtld.nns=16` N2 opens 15 and the next fails with \"no more namespaces available for dlmopen()\". On musl there is no `dlmopen`.",
    },
    ..Finding::DEFAULTS
};

pub fn l17(lab: &mut Lab) -> Result<()> {
    if lab.libc() == Libc::Musl {
        return on_musl(lab);
    }
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let lib = lab.sandbox.lib_file();
    let mut d = lab.start(Program::Dlopen, "D")?;
    let (h1, ns1) = opened(lab.mopen(&mut d, &lib)?)?;
    let (g1, _) = lab.callh(&mut d, h1)?;
    lab.note("the library is replaced; D opens the same path into another new namespace");
    let ino2 = lab.put_lib(V2, Replace::Rename)?;
    let (h2, ns2) = opened(lab.mopen(&mut d, &lib)?)?;
    let (g2, _) = lab.callh(&mut d, h2)?;
    let (g1b, _) = lab.callh(&mut d, h1)?;
    let both = lab.maps(d.pid())?;
    let r1 = lab.stale(&[d.pid()])?;
    lab.note("the first namespace's handle is closed");
    lab.close(&mut d, h1)?;
    let after = lab.maps(d.pid())?;
    let r2 = lab.stale(&[d.pid()])?;
    lab.observe("namespaces", [ns1, ns2]);
    lab.check_eq("the first namespace greets with v1", g1.as_str(), OLD);
    lab.check(
        "the second dlmopen of the same path makes another namespace",
        ns1 > 0 && ns2 > 0 && ns1 != ns2,
        format!("namespaces {ns1} and {ns2}"),
    );
    lab.check_eq("the new namespace greets with v2", g2.as_str(), NEW);
    lab.check_eq(
        "the old namespace still greets with v1 beside it",
        g1b.as_str(),
        OLD,
    );
    check_two_copies(lab, "D", &both, ino1, ino2);
    lab.check_stale(&r1, "D, while the old namespace holds the old copy", d.pid(), Stale::replaced(&lib));
    check_current(lab, "D, its old namespace's handle closed,", &after, ino2);
    lab.check_stale(&r2, "D, with the old copy unloaded", d.pid(), Stale::Clean);

    lab.part("how many namespaces");
    let (n, why, libc_copies) = count_namespaces(lab, "N", false)?;
    let (n16, why16, _) = count_namespaces(lab, "N2", true)?;
    lab.observe("new_namespaces", n);
    lab.observe("new_namespaces_with_nns_16", n16);
    lab.check(
        format!("N opens fewer than 16 new namespaces, and the next fails: \"{TLS_FULL}\""),
        (1..NEW_NAMESPACES).contains(&n) && why.contains(TLS_FULL),
        format!("{n} opened, then: {why}"),
    );
    lab.check(
        "each new namespace loaded a libc of its own: N maps it once more per namespace",
        libc_copies == n + 1,
        format!("{libc_copies} copies of libc for {n} new namespaces"),
    );
    lab.check(
        format!("with glibc.rtld.nns=16, N2 opens {NEW_NAMESPACES} new namespaces and the next fails: \"{TABLE_FULL}\""),
        n16 == NEW_NAMESPACES && why16.contains(TABLE_FULL),
        format!("{n16} opened, then: {why16}"),
    );
    Ok(())
}

/// The handle and namespace of an `mopen` that must work.
fn opened(r: std::result::Result<(u32, i64), String>) -> Result<(u32, i64)> {
    r.map_err(|e| anyhow::anyhow!("dlmopen failed: {e}"))
}

/// Starts `label` (with the static TLS reserve at its maximum if
/// `raised`) and opens the library into new namespaces until one fails:
/// how many opened, the failure, and how many copies of libc it then maps.
fn count_namespaces(lab: &mut Lab, label: &str, raised: bool) -> Result<(usize, String, usize)> {
    let mut t = lab.start_with(Program::Dlopen, label, &[], |cmd| {
        if raised {
            cmd.env("GLIBC_TUNABLES", "glibc.rtld.nns=16");
            "GLIBC_TUNABLES=glibc.rtld.nns=16".into()
        } else {
            String::new()
        }
    })?;
    lab.shell(format!(
        "for i in $(seq {ATTEMPTS}); do echo mopen lib/libexample.so; done   # to {label}, until an answer is an error"
    ));
    let lib = lab.sandbox.lib_file();
    let (mut n, mut why) = (0, String::from("(no failure)"));
    for _ in 0..ATTEMPTS {
        match answer_of(&mut t, &Command::MOpen(lib.clone()))? {
            Ok(_) => n += 1,
            Err(e) => {
                why = e;
                break;
            }
        }
    }
    lab.note(format!("{label}: {} new namespaces opened; the next: {}", vol(n), shown_error(&why)));
    let copies = libc_copies(t.pid())?;
    lab.proof(format!(
        "$ grep -E 'libc[.-].*so' /proc/{}/maps | awk '$3 == \"00000000\"' | wc -l   # one per copy of libc",
        t.pid()
    ));
    lab.proof(vol(copies));
    Ok((n, why, copies))
}

/// How many copies of the C library process `pid` maps: the mappings of a
/// `libc.so.6` or `libc-2.NN.so` at file offset 0, one per copy.
fn libc_copies(pid: i32) -> Result<usize> {
    let is_libc = |p: &std::path::Path| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n == "libc.so.6" || (n.starts_with("libc-") && n.ends_with(".so"))
        })
    };
    Ok(crate::detector::maps::mappings_where(pid, is_libc)?
        .iter()
        .filter(|m| m.offset == 0)
        .count())
}

/// The loader's words with the machine's own C library path left out (it
/// differs between machines: /lib/…, /usr/lib/…).
fn shown_error(why: &str) -> String {
    for known in [TLS_FULL, TABLE_FULL] {
        if why.contains(known) {
            return format!("\"{known}\"");
        }
    }
    vol(why)
}

/// musl: no dlmopen in its C library; the twin says so.
fn on_musl(lab: &mut Lab) -> Result<()> {
    let loader = std::path::PathBuf::from(&lab.sandbox.runtime().loader);
    let has = defines(&loader, "dlmopen")?;
    let has_dlopen = defines(&loader, "dlopen")?;
    lab.shell(format!(
        "readelf -sW --dyn-syms {} | awk '$8 == \"dlopen\" || $8 == \"dlmopen\" {{print $8}}'",
        loader.display()
    ));
    for (name, found) in [("dlopen", has_dlopen), ("dlmopen", has)] {
        if found {
            lab.say(name);
        }
    }
    lab.put_lib(V1, Replace::Install)?;
    let lib = lab.sandbox.lib_file();
    let mut d = lab.start(Program::Dlopen, "D")?;
    let r = lab.mopen(&mut d, &lib)?;
    lab.check(
        "musl's C library exports dlopen but no dlmopen",
        has_dlopen && !has,
        format!("dlopen {has_dlopen}, dlmopen {has}"),
    );
    lab.check(
        "the musl twin cannot dlmopen",
        r.is_err(),
        format!("{r:?}"),
    );
    Ok(())
}
