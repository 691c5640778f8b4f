//! L18's question with the real C library (L18C): processes on one Debian
//! release's glibc whose C library files are replaced by another release's,
//! as a `libc6` upgrade does, and what `iconv_open` and `getpwnam` do in
//! them afterwards. The releases' files come from the roots of `swaplab
//! matrix --debian`; every file the processes use is a copy in the sandbox.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::detector::maps::{self, Mapping};
use crate::harness::debian_roots::{self, PORTABLE};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{vol, Lab, Stale};
use crate::harness::map_checks::describe;
use crate::harness::process::Target;
use crate::harness::replace::Replace;
use crate::harness::symbols::defines;
use crate::harness::userns;
use crate::targets::protocol::{after_colon, Command};

use super::SHARED_LIBRARY_UPDATE;

/// The release the processes start on, and the one whose files replace it.
const FROM: &str = "bullseye";
const TO: &str = "trixie";

/// The C library's files the processes use besides the loader, in the
/// sandbox's `glibc/` (names in the roots' library folder): libc and the
/// libraries the twin is linked against, the `files` NSS module, and the
/// UTF-16 converter with the converters' list.
const FILES: &[&str] = &[
    "libc.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "libnss_files.so.2",
    "gconv/gconv-modules",
    "gconv/UTF-16.so",
];

/// What NSS is told to use, bound over `/etc/nsswitch.conf` for the
/// processes: the `files` service only, whatever this machine's own list
/// says (its other modules are this machine's, not the roots').
const NSSWITCH: &str = "passwd: files\ngroup: files\n";

/// The answers of a conversion and a lookup that worked, and of a
/// conversion iconv_open refused.
const CONVERTED: &str = "ok bytes=16";
const ROOT_FOUND: &str = "name=root uid=0";
const CONVERSION_FAILED: &str = "failed: Invalid argument";

/// What the `files` service of NSS looks a user up with.
const NSS_FUNCTION: &str = "_nss_files_getpwnam_r";

/// What one process answered to `iconv UTF-16 UTF-8` and `user root`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
struct Lookups {
    iconv: String,
    user: String,
}

pub static L18C: Finding = Finding {
    id: "L18C",
    slug: "after_a_c_library_update_a_running_process_fails_its_first_lookups",
    claim: "With the real C library, measured: processes started on Debian 11's glibc 2.31 (loader, libc, the `files` NSS module and the UTF-16 converter copied from its root; `passwd: files` in their own nsswitch.conf) whose C library files are then replaced by Debian 13's 2.41, as a `libc6` upgrade does, go on running the old C library from memory, and nothing crashes. What a process had already loaded keeps working: A, which had converted to UTF-16 (`iconv_open`) and looked up root (`getpwnam`) before, still does both. What it loads afterwards comes from the new files and does not fit: in B, which had not used them yet, `iconv_open(\"UTF-16\", \"UTF-8\")` fails with EINVAL (the new converter needs `GLIBC_2.36`, which the old libc lacks) and `getpwnam(\"root\")` finds no entry although root exists (2.41's `libnss_files.so.2` is an empty stub: its functions moved into libc.so.6). A process started after the update does both. `swaplab stale` flags A and B. This is why a C library update needs restarts before anything crashes.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "copy Debian 11's loader, libc, NSS module and UTF-16 converter into glibc/ and ask libc its version; start A and B on them, with an nsswitch.conf of their own (passwd: files); A converts to UTF-16 (iconv_open) and looks up root (getpwnam), B does nothing yet",
        "replace each of those files with Debian 13's, as dpkg does (a new file renamed over the old); ask libc its version again",
        "A and B convert and look up again (B for the first time); C, started after, does the same; swaplab stale on all three",
    ],
    experiment: l18c,
    scope: Scope::Host,
    needs: &[Need::DebianRoots(&[FROM, TO]), Need::UserNamespaces, Need::Filesystem],
    lesson: Lesson {
        title: "A C library update under running processes",
        question: "L18 shows the plugin failure with a small library of our own. The C library is the library every process has, and it loads code of its own on demand: character set converters for `iconv` (`gconv` modules) and the NSS modules that look up users and hosts (`getpwnam`, `getaddrinfo`). What does a process running one Debian release's glibc do after the C library files under it are replaced by another release's, as a `libc6` upgrade does? The article left this open; this finding answers it by measurement.",
        exercise: "A used `iconv_open` and `getpwnam` before the update, B only after it, C was started after it. Which of them can still convert to UTF-16 and find root, and what does the loader say about the new converter in B?",
        answer: "A, which had loaded the converter and the NSS module before the update, still converts and finds root. B cannot: `iconv_open` fails with EINVAL and `getpwnam` finds no entry for root, because the new UTF-16 converter needs the version GLIBC_2.36 that B's old libc (still mapped, `(deleted)`) lacks, and Debian 13's `libnss_files.so.2` no longer defines `_nss_files_getpwnam_r`. C, started after, does both. `swaplab stale` flags A and B, not C.",
    },
    ..Finding::DEFAULTS
};

pub fn l18c(lab: &mut Lab) -> Result<()> {
    let from = debian_roots::find(FROM).context("the bullseye root went away")?;
    let to = debian_roots::find(TO).context("the trixie root went away")?;
    lab.note(format!(
        "ROOTS: the Debian roots of swaplab matrix (here {})",
        vol(from.parent().unwrap_or(&from).display())
    ));
    let twin = from.join(PORTABLE).join("swaplab-dlopen");
    // The loader the twin names (PT_INTERP), by its file name.
    let loader = crate::detector::elf::interpreter(&twin)
        .and_then(|i| Path::new(&i).file_name().map(|n| n.to_string_lossy().into_owned()))
        .context("the portable twin names no loader")?;
    let mut files = vec![loader.as_str()];
    files.extend(FILES);
    std::fs::create_dir_all(lab.sandbox.root().join("glibc/gconv"))?;
    lab.shell("mkdir -p glibc/gconv etc");
    put_files(lab, &from, FROM, &files, Replace::CopyInPlace)?;
    let version_before = glibc_version(lab, &loader)?;
    std::fs::create_dir_all(lab.sandbox.root().join("etc"))?;
    std::fs::write(lab.sandbox.root().join("etc/nsswitch.conf"), NSSWITCH)?;
    lab.shell(format!("printf '{}' > etc/nsswitch.conf", NSSWITCH.replace('\n', "\\n")));
    let exe = lab.sandbox.stage_file(&twin, "swaplab-dlopen")?;
    lab.shell(format!("cp $ROOTS/{FROM}/{PORTABLE}/swaplab-dlopen build/   # built in Debian 11, no rpath"));
    let mut a = start(lab, &exe, &loader, "A")?;
    let a_before = lookups(lab, &mut a)?;
    let mut b = start(lab, &exe, &loader, "B")?;
    let libc_before = libc_maps(lab, b.pid())?;
    lab.note("the update: each file replaced by Debian 13's, a new file renamed over the old (as dpkg unpacks)");
    put_files(lab, &to, TO, &files, Replace::Rename)?;
    let version_after = glibc_version(lab, &loader)?;
    let a_after = lookups(lab, &mut a)?;
    let b_after = lookups(lab, &mut b)?;
    lab.note("why: what B's loader says of the new converter, and what the NSS modules define");
    let converter = lab.sandbox.root().join("glibc/gconv/UTF-16.so");
    let converter_in_b = lab.try_open(&mut b, &converter)?;
    let nss = nss_functions(lab, &from, &to)?;
    lab.note("B's maps of libc after the update");
    let libc_after = libc_maps(lab, b.pid())?;
    let mut c = start(lab, &exe, &loader, "C")?;
    let c_after = lookups(lab, &mut c)?;
    let r = lab.stale(&[a.pid(), b.pid(), c.pid()])?;
    lab.observe("a_before", &a_before);
    lab.observe("a_after", &a_after);
    lab.observe("b_after", &b_after);
    lab.observe("c_after", &c_after);
    lab.observe("converter_in_b", format!("{converter_in_b:?}"));
    lab.check_eq(
        "glibc/ holds glibc 2.31 (Debian 11's) before the update and 2.41 (Debian 13's) after, as each libc says",
        [version_before, version_after],
        [Some((2, 31)), Some((2, 41))],
    );
    judge(lab, [&a_before, &a_after, &b_after, &c_after], (&libc_before, &libc_after));
    lab.check(
        "the new UTF-16 converter does not load into B: the old libc lacks the version GLIBC_2.36 it needs",
        converter_in_b
            .as_ref()
            .is_err_and(|e| e.contains("version `GLIBC_2.36' not found")),
        format!("{converter_in_b:?}"),
    );
    lab.check_eq(
        "Debian 11's libnss_files.so.2 defines _nss_files_getpwnam_r; Debian 13's does not (an empty stub: the function is in its libc.so.6)",
        nss,
        (true, false),
    );
    let libc = lab.sandbox.root().join("glibc/libc.so.6");
    lab.check_stale(&r, "A", a.pid(), Stale::replaced(&libc));
    lab.check_stale(&r, "B", b.pid(), Stale::replaced(&libc));
    lab.check_stale(&r, "C", c.pid(), Stale::Clean);
    Ok(())
}

/// The roots' library folder as the transcript shows it.
fn shown_libdir(release: &str) -> String {
    format!("$ROOTS/{release}/usr/lib/{}-linux-gnu", std::env::consts::ARCH)
}

/// Puts `files` of `release`'s root (its library folder) into `glibc/`
/// by `how`: copied at first, renamed over later (as dpkg unpacks).
fn put_files(lab: &mut Lab, root: &Path, release: &str, files: &[&str], how: Replace) -> Result<()> {
    let shown = how.shell(&format!("{}/$f", shown_libdir(release)), "glibc/$f");
    lab.shell(format!("for f in {}; do {shown}; done", files.join(" ")));
    for f in files {
        let src = debian_roots::libdir(root).join(f);
        how.apply(lab.sandbox.root(), &src.display().to_string(), &format!("glibc/{f}"))?;
    }
    Ok(())
}

/// Which glibc the sandbox's `glibc/` holds now, as that libc says itself
/// when run (through its own loader): `release version 2.31.`.
fn glibc_version(lab: &mut Lab, loader: &str) -> Result<Option<(u32, u32)>> {
    let glibc = lab.sandbox.root().join("glibc");
    let mut cmd = std::process::Command::new(glibc.join(loader));
    cmd.arg(glibc.join("libc.so.6")).env_clear().env("LC_ALL", "C");
    let out = crate::harness::process::output_within(&mut cmd, crate::harness::process::deadline())?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    lab.shell(format!("glibc/{loader} glibc/libc.so.6 | head -1"));
    // The Debian revision in it changes with point releases.
    lab.say(vol(&first));
    Ok(first
        .split("release version ")
        .nth(1)
        .and_then(|v| {
            let mut p = v.trim_end_matches('.').split('.').map(|x| x.parse::<u32>().ok());
            Some((p.next()??, p.next()??))
        }))
}

/// Starts the twin `exe` under the sandbox's loader and C library, with
/// the sandbox's converters (`GCONV_PATH`) and its `nsswitch.conf` bound
/// over the machine's in a user and mount namespace of its own.
fn start(lab: &mut Lab, exe: &Path, loader: &str, label: &str) -> Result<Target> {
    // A bind needs a file to bind over; without one glibc 2.31 would fall
    // back to its built-in list (`compat` first), which is this machine's.
    anyhow::ensure!(
        Path::new("/etc/nsswitch.conf").is_file(),
        "this machine has no /etc/nsswitch.conf for the processes' own to be bound over"
    );
    let glibc = lab.sandbox.root().join("glibc");
    let exe_arg = lab.sandbox.rel(exe);
    let gconv = glibc.join("gconv");
    let nsswitch = lab.sandbox.root().join("etc/nsswitch.conf");
    let mut made = Ok(());
    let t = lab
        .start_exe(&glibc.join(loader), label, &["--library-path", "glibc", &exe_arg], |cmd| {
            cmd.env("GCONV_PATH", &gconv);
            let binds = vec![(nsswitch, PathBuf::from("/etc/nsswitch.conf"))];
            made = userns::in_own_namespaces(
                cmd,
                &userns::Inside {
                    binds,
                    ..Default::default()
                },
            );
            "unshare -Urm sh -c 'mount --bind etc/nsswitch.conf /etc/nsswitch.conf; exec \"$@\"' - env GCONV_PATH=$PWD/glibc/gconv".into()
        })
        .with_context(|| format!("starting {label} ({})", userns::WHY_IT_MAY_FAIL))?;
    made?;
    Ok(t)
}

/// `iconv UTF-16 UTF-8` and `user root` in `t`.
fn lookups(lab: &mut Lab, t: &mut Target) -> Result<Lookups> {
    let iconv = after_prefix(&lab.ask(t, Command::Iconv { to: "UTF-16".into(), from: "UTF-8".into() })?, t.pid());
    let user = after_prefix(&lab.ask(t, Command::User("root".into()))?, t.pid());
    Ok(Lookups { iconv, user })
}

/// An answer without its `verb pid=N ` head.
fn after_prefix(line: &str, pid: i32) -> String {
    let head = format!("pid={pid} ");
    line.split_once(&head)
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| after_colon(line))
}

/// The mappings of the sandbox's `glibc/libc.so.6` in `pid`, narrated.
fn libc_maps(lab: &mut Lab, pid: i32) -> Result<Vec<Mapping>> {
    let libc: PathBuf = lab.sandbox.root().join("glibc/libc.so.6");
    let found = maps::mappings_where(pid, |p| p == libc)?;
    lab.proof(format!("$ grep glibc/libc.so.6 /proc/{pid}/maps"));
    for m in &found {
        lab.proof(m.line());
    }
    Ok(found)
}

/// Whether each release's `libnss_files.so.2` defines the function
/// `getpwnam` asks the `files` service for; narrated as readelf.
fn nss_functions(lab: &mut Lab, from: &Path, to: &Path) -> Result<(bool, bool)> {
    let mut found = Vec::new();
    for (name, root) in [(FROM, from), (TO, to)] {
        let file = debian_roots::libdir(root).join("libnss_files.so.2");
        let has = defines(&file, NSS_FUNCTION)?;
        lab.shell(format!(
            "readelf -sW --dyn-syms {}/libnss_files.so.2 | grep -c ' {NSS_FUNCTION}@'",
            shown_libdir(name)
        ));
        lab.say(if has { "1" } else { "0" });
        found.push(has);
    }
    Ok((found[0], found[1]))
}

/// Judges what the processes answered, and B's mappings of libc before
/// and after the update.
fn judge(lab: &mut Lab, seen: [&Lookups; 4], libc: (&[Mapping], &[Mapping])) {
    let [a_before, a_after, b_after, c_after] = seen;
    let works = |l: &Lookups| l.iconv == CONVERTED && l.user == ROOT_FOUND;
    lab.check(
        "on Debian 11's glibc, A converts to UTF-16 and finds root",
        works(a_before),
        format!("{a_before:?}"),
    );
    lab.check(
        "after the update A, which had used both, still converts and finds root",
        works(a_after),
        format!("{a_after:?}"),
    );
    lab.check(
        "B, using them first after the update, cannot convert: iconv_open fails with EINVAL",
        b_after.iconv == CONVERSION_FAILED,
        format!("{b_after:?}"),
    );
    lab.check(
        "B finds no entry for root, which exists",
        b_after.user.starts_with("name=root missing"),
        format!("{b_after:?}"),
    );
    lab.check(
        "C, started after the update, converts and finds root",
        works(c_after),
        format!("{c_after:?}"),
    );
    let (before, after) = libc;
    let inodes = |m: &[Mapping]| maps::inodes(m);
    lab.check(
        "B keeps running the old libc.so.6: same inode before and after, now (deleted)",
        !before.is_empty()
            && before.iter().all(|m| !m.deleted)
            && after.iter().all(|m| m.deleted)
            && inodes(before) == inodes(after),
        format!("{} then {}", describe(before), describe(after)),
    );
}
