//! Libraries that `dlclose` does not unload although nothing asked for it
//! (L16): C++ `UNIQUE` symbols and `thread_local` destructors pin a plugin
//! on glibc, so its reload silently keeps the old code.

use anyhow::Result;

use crate::detector::maps::Mapping;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{Lab, Stale};
use crate::harness::map_checks::{check_current, check_two_copies, describe};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::runtime::Libc;
use crate::harness::symbols::unique_symbols;
use crate::harness::variants::Variant::{self, *};
use crate::harness::variants::{NEW, OLD};

use super::SHARED_LIBRARY_UPDATE;

/// One kind of library, as L16 tries it.
struct Kind {
    /// What the transcript calls it.
    name: &'static str,
    /// Its file in the sandbox.
    file: &'static str,
    old: Variant,
    new: Variant,
    /// Whether glibc keeps it mapped after the last dlclose (the claim).
    pinned_on_glibc: bool,
    /// The UNIQUE symbols it defines (what pins it, if anything): the
    /// static of `calls()` and the static member `Tally<int>::n`.
    unique: &'static [&'static str],
}

const KINDS: &[Kind] = &[
    Kind {
        name: "plain C",
        file: "lib/libexample-c.so",
        old: V1,
        new: V2,
        pinned_on_glibc: false,
        unique: &[],
    },
    Kind {
        name: "C __thread",
        file: "lib/libexample-tls.so",
        old: TlsV1,
        new: TlsV2,
        pinned_on_glibc: false,
        unique: &[],
    },
    Kind {
        name: "C++ UNIQUE",
        file: "lib/libexample-unique.so",
        old: UniqueV1,
        new: UniqueV2,
        pinned_on_glibc: true,
        unique: &["_ZN5TallyIiE1nE", "_ZZ5callsvE1n"],
    },
    Kind {
        name: "C++ thread_local",
        file: "lib/libexample-thread_local.so",
        old: ThreadLocalV1,
        new: ThreadLocalV2,
        pinned_on_glibc: true,
        unique: &[],
    },
];

/// What musl shows instead of L16's claim.
const MUSL_L16: &str = "On musl every kind stays mapped after its last `dlclose`, because musl's `dlclose` never unloads (L10): plain C, C with `__thread`, and C++ with a `UNIQUE` symbol (the C++ `thread_local` kind needs libstdc++: Debian's musl-tools has none, so there it is not built and not run; where it is, as on Alpine, it stays mapped like the others). Its reload after a replacement loads the new file as a second copy beside the old one (musl matches by inode), so the reload runs the new code while the old copy stays mapped, `(deleted)`.";

pub static L16: Finding = Finding {
    id: "L16",
    slug: "unique_symbols_and_thread_local_destructors_pin_a_library_so_its_reload_keeps_the_old_code",
    claim: "Implicitly pinned (glibc): a library with `STB_GNU_UNIQUE` symbols (`UNIQUE` in `readelf -s`: the static of a C++ inline function, the static member of a class template) stays mapped after its last `dlclose`, and so does one with a C++ `thread_local` object that has a destructor when that `dlclose` comes while a thread that used it is alive — still mapped after that thread exits. So the reload of L06 (dlopen of the same path after a replacement) silently runs the old code, and `swaplab stale` flags the process. When every thread that used the `thread_local` one has exited before the last `dlclose`, it unloads. A plain C library and one with a C `__thread` variable (no destructor) unload, and their reload runs the new code.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "for each kind (plain C; C with __thread; C++ with a UNIQUE symbol; C++ with a thread_local destructor): install its v1; show its UNIQUE symbols (readelf)",
        "start D; dlopen the library; call it on a thread that stays alive; dlclose it (the last handle); let the thread exit; show D's maps",
        "install v2 over it; swaplab stale; dlopen the same path again and call it: which version runs; show D's maps",
        "the thread_local kind again in E, the thread joined before the dlclose; show E's maps",
    ],
    experiment: l16,
    scope: Scope::PerLibc,
    musl: MUSL_L16,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "C++ plugins and dlclose",
        question: "L06 showed that after the last `dlclose` glibc unloads a library, so that `dlopen` of the same path loads the new file: that is how plugin hosts reload a plugin without a restart. C++ plugins are known not to reload that way. Which kinds of library stay mapped after their last `dlclose`, although nobody asked for `RTLD_NODELETE` (L08), and what does the reload then run?",
        exercise: "For each kind of library (plain C, C `__thread`, C++ UNIQUE, C++ `thread_local`), is it still mapped after its last `dlclose`, and what does its reload after the update greet?",
        answer: "The plain C and the C `__thread` libraries are unmapped after their last `dlclose`, and their reload greets `Hello World` (v2). The C++ library with UNIQUE symbols, and the one with a `thread_local` destructor, stay mapped: their reload greets `Hell World`, the old code, and `swaplab stale` flags D.",
    },
    ..Finding::DEFAULTS
};

pub fn l16(lab: &mut Lab) -> Result<()> {
    let mut seen = Vec::new();
    for kind in KINDS {
        lab.part(format!("{}: {}", kind.name, kind.file));
        let built = lab.sandbox.runtime().variant(kind.old);
        if !built.exists() {
            // musl-tools has no libstdc++ (its claim says so); a Debian root
            // made before its roots got g++ has no C++ compiler.
            let why = format!(
                "the {} kind is not built for the {} column (no C++ compiler or C++ library for it)",
                kind.name,
                lab.sandbox.runtime().name
            );
            match lab.libc() {
                Libc::Musl => lab.note(format!("{why}: not run")),
                Libc::Glibc => lab.not_applicable(format!(
                    "{why}, and the claim is about it (a Debian root made with g++ builds it: \
                     remove the root to have swaplab matrix make it again)"
                )),
            }
            continue;
        }
        let pinned = one_kind(lab, kind)?;
        seen.push((kind.name, pinned));
        if kind.old == ThreadLocalV1 && lab.libc() == Libc::Glibc {
            thread_gone_first(lab, kind)?;
        }
    }
    lab.observe("pinned", &seen);
    Ok(())
}

/// The control for the thread_local kind: when the thread that used the
/// library has exited before the last dlclose, nothing is left to run at a
/// thread's exit, and glibc unloads it.
fn thread_gone_first(lab: &mut Lab, kind: &Kind) -> Result<()> {
    lab.part(format!("{}: the thread gone before the dlclose", kind.name));
    let path = lab.sandbox.root().join(kind.file);
    let mut e = lab.start(Program::Dlopen, "E")?;
    let (h, _) = lab.open(&mut e, &path, "")?;
    let g = lab.thread_call(&mut e, h)?;
    lab.join(&mut e)?;
    lab.close(&mut e, h)?;
    let m = lab.maps(e.pid())?;
    lab.check_eq("E greets with v2 (the file now on disk)", g.as_str(), NEW);
    lab.check(
        "glibc: when the thread that used it exits before the last dlclose, the library is unmapped",
        m.is_empty(),
        describe(&m),
    );
    Ok(())
}

/// What D saw of one kind.
struct Seen {
    unique: Vec<String>,
    after_close: Vec<Mapping>,
    reloaded: String,
    after_reload: Vec<Mapping>,
    inodes: (u64, u64),
}

/// Tries one kind; returns whether it stayed mapped after its last
/// dlclose.
fn one_kind(lab: &mut Lab, kind: &Kind) -> Result<bool> {
    let role = format!(", the {} kind", kind.name);
    lab.put_variant_at(kind.old, Replace::Install, kind.file, &role)?;
    let ino1 = lab.inode_at(kind.file)?;
    let path = lab.sandbox.root().join(kind.file);
    let unique = unique_symbols(&path)?;
    lab.shell(format!(
        "readelf -sW --dyn-syms {} | grep UNIQUE | awk '{{print $5, $8}}'",
        kind.file
    ));
    for name in &unique {
        lab.say(format!("UNIQUE {name}"));
    }
    if unique.is_empty() {
        lab.say("(no lines)");
    }
    let mut d = lab.start(Program::Dlopen, "D")?;
    let (h1, _) = lab.open(&mut d, &path, "")?;
    let g1 = lab.thread_call(&mut d, h1)?;
    lab.note("the last dlclose comes while the thread that called the library is alive; then the thread exits");
    lab.close(&mut d, h1)?;
    lab.join(&mut d)?;
    let after_close = lab.maps(d.pid())?;
    lab.note("the library is updated; D opens the same path again");
    // Kept under another name, the old file keeps its inode number, so the
    // new file's differs whether or not D still maps the old one (ext4
    // hands a freed number to the next file at once).
    let kept = format!("build/kept-{}", kind.file.trim_start_matches("lib/"));
    lab.shell(format!("ln {} {kept}   # the old file kept: its inode stays taken", kind.file));
    std::fs::hard_link(&path, lab.sandbox.root().join(&kept))?;
    lab.put_variant_at(kind.new, Replace::Install, kind.file, &role)?;
    let ino2 = lab.inode_at(kind.file)?;
    let r = lab.stale(&[d.pid()])?;
    let (h2, _) = lab.open(&mut d, &path, "")?;
    let (reloaded, _) = lab.callh(&mut d, h2)?;
    let after_reload = lab.maps(d.pid())?;
    lab.check_eq(format!("D greets with v1 (the {} kind)", kind.name), g1.as_str(), OLD);
    let seen = Seen {
        unique,
        after_close,
        reloaded,
        after_reload,
        inodes: (ino1, ino2),
    };
    let pinned = !seen.after_close.is_empty();
    judge(lab, kind, &seen, &r, d.pid());
    Ok(pinned)
}

/// Judges one kind against the running C library's expectation.
fn judge(
    lab: &mut Lab,
    kind: &Kind,
    seen: &Seen,
    r: &crate::detector::stale::StaleReport,
    pid: i32,
) {
    let (ino1, ino2) = seen.inodes;
    let file = lab.sandbox.root().join(kind.file);
    let mut unique = seen.unique.clone();
    unique.sort();
    let want: Vec<String> = kind.unique.iter().map(|s| s.to_string()).collect();
    let what = if kind.unique.is_empty() {
        format!("the {} library defines no UNIQUE symbol", kind.name)
    } else {
        format!(
            "the {} library defines the UNIQUE symbols of an inline function's static and a class template's static member",
            kind.name
        )
    };
    if lab.libc() == Libc::Glibc {
        lab.check_eq(what, unique, want);
    } else {
        // A g++ built for musl (Alpine's) may mark nothing UNIQUE; musl's
        // dlclose unloads nothing anyway.
        lab.note(format!("{what}: {}", if unique == want { "yes" } else { "not with this compiler" }));
    }
    let pinned = !seen.after_close.is_empty();
    match lab.libc() {
        Libc::Glibc if kind.pinned_on_glibc => {
            lab.check(
                format!("glibc: the {} library is still mapped after its last dlclose and the thread's exit", kind.name),
                pinned,
                describe(&seen.after_close),
            );
            lab.check_eq(
                "its reload after the replacement silently runs the old code (v1)",
                seen.reloaded.as_str(),
                OLD,
            );
            lab.check(
                "D still maps only the old file, now (deleted)",
                !seen.after_reload.is_empty()
                    && seen.after_reload.iter().all(|m| m.inode == ino1 && m.deleted),
                describe(&seen.after_reload),
            );
            lab.check_stale(r, "D", pid, Stale::replaced(&file));
        }
        Libc::Glibc => {
            lab.check(
                format!("glibc: the {} library is unmapped after its last dlclose", kind.name),
                !pinned,
                describe(&seen.after_close),
            );
            lab.check_eq(
                "its reload after the replacement runs the new code (v2)",
                seen.reloaded.as_str(),
                NEW,
            );
            check_current(lab, "D after the reload", &seen.after_reload, ino2);
            lab.check_stale(r, "D, with nothing mapped", pid, Stale::Clean);
        }
        Libc::Musl => {
            lab.check(
                format!("musl: the {} library is still mapped after its last dlclose (dlclose never unloads)", kind.name),
                pinned && seen.after_close.iter().all(|m| m.inode == ino1),
                describe(&seen.after_close),
            );
            lab.check_eq(
                "musl: its reload loads the new file as a second copy and runs the new code (v2)",
                seen.reloaded.as_str(),
                NEW,
            );
            check_two_copies(lab, "D after the reload", &seen.after_reload, ino1, ino2);
            lab.check_stale(r, "D", pid, Stale::replaced(&file));
        }
    }
}
