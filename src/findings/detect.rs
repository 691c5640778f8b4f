//! D01: which running processes must be restarted? One scenario with every
//! case the experiments showed, judged by `swaplab stale`, by the article's
//! `grep '(deleted)' /proc/*/maps`, by `lsof` (its `DEL` entries, and the
//! `+L1` advice), and by `needrestart -b`, against the truth each process
//! shows when it is called.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::detector::stale::Reason;
use crate::drivers::restart_tools::{
    checkrestart, grep_deleted, judge, lsof, needrestart, Answer, Case, Others, Truth,
};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{pidt, Lab, Stale};
use crate::harness::process::{Program, Target};
use crate::harness::replace::Replace;
use crate::harness::userns;
use crate::harness::variants::Variant::{self, *};
use crate::harness::variants::{NEW, OLD};
use crate::targets::protocol::{self, after_colon, field_i32};

use super::DETECTOR;

/// Starts `program` with `lib/<dir>` as its library folder.
fn start_on(lab: &mut Lab, program: Program, label: &str, dir: &str) -> Result<Target> {
    let libs = lab.sandbox.lib_dir().join(dir);
    let shown = format!("LD_LIBRARY_PATH=lib/{dir}");
    lab.start_with(program, label, &[], move |cmd| {
        cmd.env("LD_LIBRARY_PATH", &libs);
        shown
    })
}

/// A case folder `lib/<dir>/` with variant `v` installed in it.
fn case_lib(lab: &mut Lab, dir: &str, v: Variant) -> Result<String> {
    std::fs::create_dir_all(lab.sandbox.lib_dir().join(dir))?;
    let dst = format!("lib/{dir}/libexample.so");
    lab.put_variant_at(v, Replace::Install, &dst, "")?;
    Ok(dst)
}

/// Case `key`: its own `lib/<key>/` with `v`, and `program` started on it
/// (and, if linked against the library, called once).
fn case(lab: &mut Lab, key: &str, what: &str, v: Variant, program: Program) -> Result<Target> {
    lab.note(format!("{key}: {what}"));
    case_lib(lab, key, v)?;
    let mut t = start_on(lab, program, key, key)?;
    if program != Program::Dlopen {
        lab.call(&mut t)?;
    }
    Ok(t)
}

/// Starts the plain program on `lib/<dir>` in a user namespace of its own
/// (the caller's uid and gid mapped to 0) with a private mount namespace:
/// `unshare --user --map-root-user --mount`, the same for root and for an
/// unprivileged user, so the process is its caller's either way.
fn start_in_own_namespaces(lab: &mut Lab, dir: &str) -> Result<Target> {
    let libs = lab.sandbox.lib_dir().join(dir);
    let mut made = Ok(());
    let started = lab.start_with(Program::Plain, dir, &[], |cmd| {
        cmd.env("LD_LIBRARY_PATH", &libs);
        made = userns::in_own_namespaces(cmd, &userns::Inside::default());
        format!(
            "LD_LIBRARY_PATH=lib/{dir} unshare --user --map-root-user --mount --propagation private"
        )
    });
    made?;
    started.with_context(|| {
        format!(
            "cannot start a process in a user and mount namespace of its own ({})",
            userns::WHY_IT_MAY_FAIL
        )
    })
}

/// Starts the plain program from `lib/<dir>/merged/`, an overlay that
/// exists only in its own mount namespace: the program and libexample v1
/// in the lower layer `lib/<dir>/lower/`, the upper and work folders on a
/// tmpfs of that namespace (an overlay may not be the upper layer of
/// another: the matrix's overlay column). Root's mount namespace, no user
/// namespace: kernels before 5.11 refuse overlays to user namespaces.
fn start_on_own_overlay(lab: &mut Lab, dir: &str) -> Result<Target> {
    let base = lab.sandbox.lib_dir().join(dir);
    let lower = base.join("lower");
    std::fs::create_dir_all(&lower)?;
    for sub in ["rw", "merged"] {
        std::fs::create_dir_all(base.join(sub))?;
    }
    let built = lab.sandbox.built(Program::Plain)?;
    lab.shell(format!(
        "cp bin/swaplab-plain build/libexample-v1.so lib/{dir}/lower/   # its own layer"
    ));
    std::fs::copy(&built, lower.join("swaplab-plain"))?;
    std::fs::copy(lab.sandbox.stage(V1)?, lower.join("libexample.so"))?;
    let overlay = userns::Overlay {
        lower,
        rw: base.join("rw"),
        merged: base.join("merged"),
    };
    let merged = overlay.merged.clone();
    let mut made = Ok(());
    let started = lab.start_exe(&merged.join("swaplab-plain"), dir, &[], |cmd| {
        cmd.env("LD_LIBRARY_PATH", &merged);
        made = userns::in_own_namespaces(
            cmd,
            &userns::Inside {
                overlays: vec![overlay],
                keep_user: true,
                ..Default::default()
            },
        );
        format!(
            "LD_LIBRARY_PATH=lib/{dir}/merged unshare --mount --propagation private sh -c 'mount -t tmpfs rw lib/{dir}/rw; mkdir lib/{dir}/rw/upper lib/{dir}/rw/work; mount -t overlay overlay -o lowerdir=lib/{dir}/lower,upperdir=lib/{dir}/rw/upper,workdir=lib/{dir}/rw/work lib/{dir}/merged; exec \"$0\"'"
        )
    });
    made?;
    started.context("cannot start a process on an overlay in a mount namespace of its own")
}

/// Calls the library in `t` (or says how it died).
fn greeting(lab: &mut Lab, t: &mut Target) -> Result<String> {
    Ok(match lab.call_may_crash(t)? {
        Ok(g) => g,
        Err(how) => how,
    })
}

pub static D01: Finding = Finding {
    id: "D01",
    slug: "swaplab_stale_finds_exactly_the_processes_to_restart",
    claim: "`swaplab stale` flags exactly the processes that run code no longer on disk, in every case the experiments show (library replaced or removed, forked children, in-place writes with and without a new layout and with the old mtime set back by `cp -p` (without a new layout only where the filesystem keeps birth times: elsewhere it counts the file unchecked), a pinned dlopen, the executable replaced, a path mounted over, a library replaced inside an overlay of the process's own mount namespace) and none that run what is on disk (started after the update, reloaded by dlopen, a program that exists only inside its own overlay, memfd/SysV/`/dev` pseudo-files); an identical reinstall is optional. `grep '(deleted)' /proc/*/maps`, `lsof` (its `DEL` entries, and `+L1`), needrestart (its per-process verdicts, `-v`, run as root with its own pseudo-file list but without its `/tmp` and `/run` exclusions, where the processes run) and checkrestart (`-a -v -m`) each get some of these cases wrong.",
    source: DETECTOR,
    steps: &[
        "one process per case, each on its own copy of libexample (lib/a … lib/q): replaced, removed, a child forked after the update, cp, dd and cp -p over the live file, reinstalled identical (same build-id), started after the update, dlopen reloaded, dlopen pinned, the executable replaced, pseudo-file mappings, a bind mount over the path in the process's own user and mount namespaces, a program on an overlay of its own mount namespace left alone or its library replaced inside",
        "run swaplab stale, grep -l '(deleted)' /proc/PID/maps, lsof (DEL entries and +L1), needrestart -v (its per-process verdicts) and checkrestart on them",
        "call every process to see what it really runs; print the case × tool table against that truth",
    ],
    experiment: d01,
    scope: Scope::Host,
    needs: &[
        Need::Root(
            "needrestart, one of the tools compared, judges case m (a path mounted over) one way as root and another as a user; the lab sheet's table is root's; checkrestart runs only as root",
        ),
        Need::Filesystem,
    ],
    lesson: Lesson {
        title: "Which processes must be restarted",
        question: "The article answers with `sudo grep libssl /proc/*/maps` and a look for `(deleted)`. The tools people use (needrestart, checkrestart, `lsof | grep DEL`, `lsof +L1`) work the same way, or by service. The experiments show where that breaks: a file overwritten in place keeps its inode and shows no `(deleted)` (L11), and `cp -p` even sets its old mtime back; a reinstall of the same package does show `(deleted)` though nothing changed; a JIT's memfd is always `(deleted)`; a child forked from a stale parent is stale too, and re-forking it does not help (L04, U07). Does a detector exist that is right in every case?",
        exercise: "In the `judged` table, compare the rows `a` (the library replaced), `e` (the same layout written in place with `dd`) and `f` (the same file installed again) with the TRUTH column. Which tools get each right, and which are marked `✗`?",
        answer: "`a` must be restarted: `swaplab stale`, grep `(deleted)`, lsof DEL, needrestart and checkrestart flag it; only `lsof +L1` misses it (`✗`). `e` must be restarted too, but shows no `(deleted)`: only `swaplab stale` flags it, every other tool misses it. `f` runs what the disk has (same build-id): the truth is optional, and `swaplab stale` says optional, while grep `(deleted)`, lsof DEL, needrestart and checkrestart flag it, a false alarm (`✗`). The line under the table counts each tool's misses and false alarms.",
    },
    ..Finding::DEFAULTS
};

pub fn d01(lab: &mut Lab) -> Result<()> {
    // Root is a declared need: as a user, needrestart cannot follow
    // /proc/PID/map_files (root only), stats the path the process sees
    // instead, and so flags case m, which as root (the way apt runs it) it
    // misses. The lab sheet's table is root's.
    lab.part("the scenario: one process per case, each on its own copy of the library");
    let mut s = start_the_cases(lab)?;

    lab.part("the updates");
    let mut u = update_under_the_cases(lab, &mut s)?;
    let cases = the_cases(lab, &s, &u, lab.birth_times_kept());
    let pids: Vec<i32> = cases.iter().map(|c| c.pid).collect();

    lab.part("the tools");
    let r = lab.stale(&pids)?;
    let answers: Vec<(&str, Answer)> = vec![
        ("grep (deleted)", grep_deleted(lab, &pids)),
        ("lsof DEL", lsof(lab, &pids, false)),
        ("lsof +L1", lsof(lab, &pids, true)),
        ("needrestart", needrestart(lab, &pids)),
        ("checkrestart", checkrestart(lab, &pids)),
    ];

    lab.part("the truth: call each process");
    call_each_process(lab, &mut s, &mut u)?;

    lab.part("judged");
    judge(lab, &cases, &r, &answers, Others::EachErrs);
    Ok(())
}

/// The scenario's processes, one per case, each on its own copy of the
/// library (`lib/a` … `lib/m`); c and h come with the updates.
struct Scenario {
    a: Target,
    b: Target,
    d: Target,
    e: Target,
    /// n: cp -p over its library (the old mtime set back).
    n: Target,
    f: Target,
    i: Target,
    j: Target,
    k: Target,
    l: Target,
    m: Target,
    /// o and q: on overlays of their own mount namespaces.
    o: Target,
    q: Target,
    /// i's handle on its library (the one it calls through).
    i_handle: u32,
    /// j's first handle on its library; a second one pins the file.
    j_handle: u32,
}

/// What the updates add to the scenario.
struct Updated {
    /// c: a's child, forked after the update, and what it said then.
    c: i32,
    c_greeting: String,
    /// h: a process started after the update.
    h: Target,
}

/// Starts one process per case on the old library (v1) and the old
/// executable, each case in its own folder.
fn start_the_cases(lab: &mut Lab) -> Result<Scenario> {
    let a = case(
        lab,
        "a",
        "the library replaced (install) under a running process",
        V1,
        Program::Fork,
    )?;
    let b = case(lab, "b", "the library removed", V1, Program::Plain)?;
    let d = case(
        lab,
        "d",
        "cp over the live library (another layout)",
        V1,
        Program::Plain,
    )?;
    let e = case(
        lab,
        "e",
        "the same layout written in place (dd conv=notrunc)",
        V1,
        Program::Plain,
    )?;
    let n = case(
        lab,
        "n",
        "cp -p over the live library (same layout, the old mtime set back)",
        V1,
        Program::Plain,
    )?;
    let f = case(
        lab,
        "f",
        "the same file installed again (same build-id)",
        V1,
        Program::Plain,
    )?;
    let mut i = case(
        lab,
        "i",
        "dlopen, then a reload after the update",
        V1,
        Program::Dlopen,
    )?;
    let (i_handle, _) = lab.open(&mut i, &lab.sandbox.lib_dir().join("i/libexample.so"), "")?;
    let mut j = case(
        lab,
        "j",
        "dlopen, pinned by a second handle",
        V1,
        Program::Dlopen,
    )?;
    let lib_j = lab.sandbox.lib_dir().join("j/libexample.so");
    let (j_handle, _) = lab.open(&mut j, &lib_j, "")?;
    lab.open(&mut j, &lib_j, "")?;
    let k = start_own_executable(lab)?;
    let l = start_with_pseudo_files(lab)?;
    lab.note("m: the path mounted over in the process's own mount namespace (no (deleted))");
    case_lib(lab, "m", V1)?;
    let m = start_in_own_namespaces(lab, "m")?;
    lab.note("o: a program that exists only inside an overlay of its own mount namespace");
    let o = start_on_own_overlay(lab, "o")?;
    lab.note("q: the same, its library to be replaced inside the overlay");
    let q = start_on_own_overlay(lab, "q")?;
    // Every in-place write must come measurably after its process started.
    crate::detector::stale::wait_until_measurably_started(
        n.pid(),
        crate::harness::process::deadline(),
    )?;
    Ok(Scenario {
        a,
        b,
        d,
        e,
        n,
        f,
        i,
        j,
        k,
        l,
        m,
        o,
        q,
        i_handle,
        j_handle,
    })
}

/// Case k: the app started from its own copy of the executable.
fn start_own_executable(lab: &mut Lab) -> Result<Target> {
    lab.note("k: the executable replaced");
    let app = lab.sandbox.bin_dir().join("app-k");
    let built = lab.sandbox.built(Program::App)?;
    lab.shell("cp bin/swaplab-app bin/app-k");
    std::fs::copy(&built, &app).context("cannot copy the target program")?;
    lab.start_exe(&app, "k", &[], |_| String::new())
}

/// Case l: a process that maps pseudo-files (memfd, SysV shm, /dev/zero)
/// executable, as a JIT does; checked in its maps, not taken on its word.
fn start_with_pseudo_files(lab: &mut Lab) -> Result<Target> {
    let mut l = case(
        lab,
        "l",
        "JIT-style pseudo-files (memfd, SysV shm, /dev/zero) mapped executable, nothing replaced",
        V1,
        Program::Plain,
    )?;
    lab.ask(&mut l, protocol::Command::Pseudo)?;
    // What the kernel shows, not what l says of itself.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", l.pid()))?;
    let exec_of = |what: &str| {
        maps.lines().any(|line| {
            let mut f = line.split_whitespace();
            let perms = f.nth(1).unwrap_or("");
            perms.contains('x') && f.nth(3).is_some_and(|p| p.starts_with(what))
        })
    };
    let kinds = ["/memfd:", "/SYSV", "/dev/zero"];
    let missing: Vec<&str> = kinds.iter().copied().filter(|k| !exec_of(k)).collect();
    lab.check(
        "l's maps hold a memfd, a SysV segment and /dev/zero, each executable",
        missing.is_empty(),
        format!("not mapped executable: {missing:?}"),
    );
    Ok(l)
}

/// Updates each case's library (or executable) its own way; a forks c and
/// h starts in between.
fn update_under_the_cases(lab: &mut Lab, s: &mut Scenario) -> Result<Updated> {
    lab.put_variant_at(V2, Replace::Install, "lib/a/libexample.so", "")?;
    lab.note("c: a child a forks after the update");
    let line = lab.ask(&mut s.a, protocol::Command::Fork)?;
    let c = field_i32(&line, "child")?;
    let c_greeting = after_colon(&lab.expect(&mut s.a, &format!("greeting pid={c}:"))?);
    lab.note("h: a process started after the update");
    let h = start_on(lab, Program::Plain, "h", "a")?;
    lab.shell("rm lib/b/libexample.so");
    std::fs::remove_file(lab.sandbox.lib_dir().join("b/libexample.so"))?;
    lab.put_variant_at(V2Layout, Replace::CopyInPlace, "lib/d/libexample.so", "")?;
    lab.put_variant_at(V2, Replace::WriteInPlace, "lib/e/libexample.so", "")?;
    lab.put_variant_at(V2, Replace::CopyKeepingTimes, "lib/n/libexample.so", "")?;
    lab.put_variant_at(V1, Replace::Install, "lib/f/libexample.so", "")?;
    lab.put_variant_at(V2, Replace::Install, "lib/i/libexample.so", "")?;
    s.i_handle = reopen(lab, &mut s.i, s.i_handle, "i")?;
    lab.put_variant_at(V2, Replace::Install, "lib/j/libexample.so", "")?;
    s.j_handle = reopen(lab, &mut s.j, s.j_handle, "j")?;
    let next = lab.sandbox.stage_program(Program::App2)?;
    let next = lab.sandbox.rel(&next);
    lab.shell(format!(
        "{}   # the new build",
        Replace::Install.shell(&next, "bin/app-k")
    ));
    Replace::Install.apply(lab.sandbox.root(), &next, "bin/app-k")?;
    mount_over_in_its_namespaces(lab, &s.m)?;
    install_inside_its_overlay(lab, &s.q)?;
    Ok(Updated { c, c_greeting, h })
}

/// Closes `t`'s `handle` and opens `lib/<dir>/libexample.so` again: the new
/// handle.
fn reopen(lab: &mut Lab, t: &mut Target, handle: u32, dir: &str) -> Result<u32> {
    lab.close(t, handle)?;
    let lib = lab.sandbox.lib_dir().join(format!("{dir}/libexample.so"));
    Ok(lab.open(t, &lib, "")?.0)
}

/// Case m's update: v2 bind-mounted over `lib/m/libexample.so` inside m's
/// own user and mount namespaces, so only m sees the path change.
fn mount_over_in_its_namespaces(lab: &mut Lab, m: &Target) -> Result<()> {
    let v2 = lab.sandbox.rel(&lab.sandbox.stage(V2)?);
    let shown = format!(
        "nsenter --target {} --user --mount --preserve-credentials --wd mount --bind {v2} lib/m/libexample.so",
        pidt(m.pid())
    );
    lab.proof(format!("$ {shown}"));
    let flags = ["--user", "--mount", "--preserve-credentials", "--wd"];
    let bind = ["mount", "--bind", &v2, "lib/m/libexample.so"];
    in_its_namespaces(lab, m, &flags, &bind, "the bind mount in m's namespaces")?;
    let mounted = std::fs::metadata(format!(
        "/proc/{}/root{}",
        m.pid(),
        lab.sandbox.lib_dir().join("m/libexample.so").display()
    ))
    .map(|md| {
        use std::os::unix::fs::MetadataExt;
        md.ino()
    })
    .ok();
    let here = crate::harness::lab::inode_of(&lab.sandbox.lib_dir().join("m/libexample.so")).ok();
    lab.check(
        "inside m's mount namespace the path names another file; outside it does not",
        mounted.is_some() && mounted != here,
        format!("inside {mounted:?}, outside {here:?}"),
    );
    Ok(())
}

/// Case q's update: v2 installed over `lib/q/merged/libexample.so` inside
/// q's mount namespace, where the overlay is: it lands in the upper layer.
fn install_inside_its_overlay(lab: &mut Lab, q: &Target) -> Result<()> {
    let v2 = lab.sandbox.rel(&lab.sandbox.stage(V2)?);
    let dst = "lib/q/merged/libexample.so";
    lab.shell(format!(
        "nsenter --target {} --mount --wd install -m 755 {v2} {dst}",
        pidt(q.pid())
    ));
    let install = ["install", "-m", "755", &v2, dst];
    in_its_namespaces(lab, q, &["--mount", "--wd"], &install, "the install inside q's overlay")
}

/// Runs `argv` in `t`'s namespaces with `nsenter --target PID FLAGS`, from
/// the sandbox; fails with its error output, saying `what` failed.
fn in_its_namespaces(
    lab: &Lab,
    t: &Target,
    flags: &[&str],
    argv: &[&str],
    what: &str,
) -> Result<()> {
    let out = Command::new("nsenter")
        .args(["--target", &t.pid().to_string()])
        .args(flags)
        .args(argv)
        .current_dir(lab.sandbox.root())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .context("cannot run nsenter (util-linux)")?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Each case with its title in the table, what it really needs and what
/// `swaplab stale` must say of it, naming the file the update changed
/// (`born`: the sandbox's filesystem keeps birth times).
fn the_cases(lab: &Lab, s: &Scenario, u: &Updated, born: bool) -> Vec<Case> {
    let row = |key, title, truth, expect, pid| Case {
        key,
        title,
        truth,
        expect,
        pid,
    };
    let lib = |dir: &str| lab.sandbox.lib_dir().join(dir).join("libexample.so");
    let replaced = |dir: &str| Stale::replaced(lib(dir));
    // Only the modification time shows a same-layout write, beside a
    // birth time.
    let modified = |dir: &str, same_layout: bool| {
        if same_layout && !born {
            Stale::unchecked(lib(dir))
        } else {
            Stale::required(Reason::ModifiedInPlace, lib(dir))
        }
    };
    vec![
        row("a", "library replaced (install)", Truth::Required, replaced("a"), s.a.pid()),
        row(
            "b",
            "library removed (rm)",
            Truth::Required,
            Stale::required(Reason::Removed, lib("b")),
            s.b.pid(),
        ),
        row(
            "c",
            "child forked after the update",
            Truth::Required,
            replaced("a").via(s.a.pid()),
            u.c,
        ),
        row("d", "cp over it: another layout", Truth::Required, modified("d", false), s.d.pid()),
        row("e", "dd over it: same layout", Truth::Required, modified("e", true), s.e.pid()),
        row("n", "cp -p over it: old mtime kept", Truth::Required, modified("n", true), s.n.pid()),
        row(
            "f",
            "same file again (build-id)",
            Truth::Optional,
            Stale::optional(lib("f")),
            s.f.pid(),
        ),
        row("h", "started after the update", Truth::Clean, Stale::Clean, u.h.pid()),
        row("i", "dlopen, reloaded", Truth::Clean, Stale::Clean, s.i.pid()),
        row("j", "dlopen, pinned", Truth::Required, replaced("j"), s.j.pid()),
        row(
            "k",
            "executable replaced",
            Truth::Required,
            Stale::replaced(lab.sandbox.bin_dir().join("app-k")),
            s.k.pid(),
        ),
        row("l", "memfd/SysV/dev JIT maps", Truth::Clean, Stale::Clean, s.l.pid()),
        row("m", "mounted over (no deleted)", Truth::Required, replaced("m"), s.m.pid()),
        row("o", "own overlay, untouched", Truth::Clean, Stale::Clean, s.o.pid()),
        row("q", "own overlay, lib replaced", Truth::Required, replaced("q/merged"), s.q.pid()),
    ]
}

/// Calls every process (d last: its call crashes) and checks that each
/// shows what its case says it runs.
fn call_each_process(lab: &mut Lab, s: &mut Scenario, u: &mut Updated) -> Result<()> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    seen.insert("a", greeting(lab, &mut s.a)?);
    seen.insert("b", greeting(lab, &mut s.b)?);
    seen.insert("c", std::mem::take(&mut u.c_greeting));
    seen.insert("e", greeting(lab, &mut s.e)?);
    seen.insert("n", greeting(lab, &mut s.n)?);
    seen.insert("f", greeting(lab, &mut s.f)?);
    seen.insert("h", greeting(lab, &mut u.h)?);
    seen.insert("i", lab.callh(&mut s.i, s.i_handle)?.0);
    seen.insert("j", lab.callh(&mut s.j, s.j_handle)?.0);
    seen.insert("k", after_colon(&lab.ask(&mut s.k, protocol::Command::Version)?));
    seen.insert("l", greeting(lab, &mut s.l)?);
    seen.insert("m", greeting(lab, &mut s.m)?);
    seen.insert("o", greeting(lab, &mut s.o)?);
    seen.insert("q", greeting(lab, &mut s.q)?);
    seen.insert("d", greeting(lab, &mut s.d)?);
    let want: &[(&str, &str, &str)] = &[
        ("a", OLD, "the old code; the disk has v2"),
        ("b", OLD, "the old code; nothing on disk"),
        ("c", OLD, "the old code, copied by fork"),
        ("d", "killed by SIGSEGV", "its next call crashes"),
        (
            "e",
            NEW,
            "v2's code, run without a restart by a process v1 set up",
        ),
        (
            "n",
            NEW,
            "v2's code, run without a restart by a process v1 set up",
        ),
        ("f", OLD, "what the disk has (v1)"),
        ("h", NEW, "what the disk has (v2)"),
        ("i", NEW, "what the disk has (v2)"),
        ("j", OLD, "the old code; the disk has v2"),
        ("k", "1", "build 1; the disk has build 2"),
        ("l", OLD, "what the disk has (v1)"),
        ("m", OLD, "the old code; its path names v2"),
        ("o", OLD, "what its overlay has (v1)"),
        ("q", OLD, "the old code; its overlay's path names v2"),
    ];
    for (key, expect, why) in want {
        if let Some(got) = seen.get(key) {
            lab.check_eq(format!("{key} shows {why}"), got.as_str(), *expect);
        }
    }
    Ok(())
}
