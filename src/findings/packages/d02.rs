//! D02: a real package upgrade. Two builds of a small Debian package that
//! holds libexample, installed and upgraded by `dpkg` itself in the
//! sandbox's own root, under running processes; `swaplab stale` names the
//! package and both versions and groups what to restart, and the tools
//! people use are judged on the same processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::detector::stale::StaleReport;
use crate::drivers::restart_tools::{
    checkrestart, grep_deleted, judge, lsof, needrestart, Answer, Others, Truth,
};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{pidt, Lab, Stale};
use crate::harness::process::Program;
use crate::harness::userns;
use crate::harness::variants::Variant::{self, V1, V2};
use crate::harness::variants::{NEW, OLD};

use super::common::{ask_swaplab, case, check_greetings, check_groups, package_of, run, start_on_package, upgrade_under_two};
use crate::findings::DETECTOR;

/// The package's name, and its two versions.
const PACKAGE: &str = "libexample1";
const VERSIONS: [(&str, Variant); 2] = [("1.0", V1), ("2.0", V2)];

pub static D02: Finding = Finding {
    id: "D02",
    slug: "a_real_dpkg_upgrade_is_attributed_to_its_package_and_grouped",
    claim: "After `dpkg -i` upgrades a package (its own unpack to `.dpkg-new`, then rename) in the sandbox's own dpkg root, `swaplab stale --package-root` flags exactly the processes that still run the old build, names the package, the version installed now (dpkg's status) and the one they run (dpkg's log), and groups them by what to restart: a master and the worker it forked after the upgrade as one entry that a fork-only reload cannot fix, a lone process as another; the process started after the upgrade is left alone. On the same processes, `grep '(deleted)' /proc/*/maps`, `lsof` (its `DEL` entries), needrestart (its per-process verdicts) and checkrestart each flag exactly the three that run the old build: a clean upgrade is the case they were made for.",
    source: DETECTOR,
    steps: &[
        "build libexample1 1.0 (libexample v1) and 2.0 (v2) with dpkg-deb; install 1.0 with dpkg --root into the sandbox's own root",
        "start a forking master and a lone process on the package's library; upgrade to 2.0 with dpkg -i; fork a worker from the master; start a process after the upgrade",
        "run swaplab stale (its report and --plan), grep, lsof, needrestart and checkrestart on them; call every process to see what it runs",
    ],
    experiment: d02,
    scope: Scope::Host,
    needs: &[
        Need::Tool {
            program: "dpkg-deb",
            package: "dpkg",
        },
        Need::Root("checkrestart, one of the tools compared, refuses to run but as root"),
        Need::Filesystem,
    ],
    lesson: Lesson {
        title: "A dpkg upgrade under running processes",
        question: "D01 replaces files by hand. A real upgrade is done by dpkg, and the question a sysadmin asks next is not only *which process* but *which package did this, and what do I restart to be done with it?* A master that forked workers is one thing to restart, not three; and if the master itself runs the old library, a reload that only forks new workers from it (nginx's `HUP`) copies the old code into them (L04, U07).",
        exercise: "Which processes run the old build after `dpkg -i` (the truth: each process's greeting)? How does `swaplab stale --package-root` group them, and what did the other tools get wrong?",
        answer: "a, b and c greet `Hell World` (the old build); h, started after, greets `Hello World`. `swaplab stale` names the package and both versions and groups a with c, the worker a forked after the upgrade (exec or restart a, `[PID-1]`), and b alone; h is left alone. grep `(deleted)`, `lsof` DEL, needrestart and checkrestart each flag exactly these three: 0 missed, 0 false alarms.",
    },
    ..Finding::DEFAULTS
};

pub fn d02(lab: &mut Lab) -> Result<()> {
    lab.part("two builds of one package, installed by dpkg in the sandbox's own root");
    let root = lab.sandbox.root().join("dpkg-root");
    let debs = build_packages(lab)?;
    make_dpkg_root(lab, &root)?;
    dpkg(lab, &root, &debs[0])?;
    let lib = root.join("usr/lib/libexample.so");

    let (mut a, mut b) = upgrade_under_two(
        lab,
        &root,
        &lib,
        (
            "the upgrade: dpkg -i",
            "dpkg put a new file at the library's path (unpack, then rename)",
        ),
        |lab| dpkg(lab, &root, &debs[1]),
    )?;
    let log = std::fs::read_to_string(root.join("var/log/dpkg.log")).unwrap_or_default();
    lab.check(
        "dpkg's log in the sandbox's root records the upgrade from 1.0 to 2.0",
        log.lines()
            .any(|l| l.contains(&format!(" upgrade {PACKAGE}:")) && l.ends_with(" 1.0 2.0")),
        log.lines().filter(|l| l.contains(" upgrade ")).collect::<Vec<_>>().join("; "),
    );
    let (c, c_greeting) = lab.fork_child(&mut a)?;
    let mut h = start_on_package(lab, Program::Plain, "h", &root)?;

    lab.part("the tools");
    let cases = vec![
        case("a", "master, started before", Truth::Required, Stale::replaced(&lib), a.pid()),
        case("b", "lone, started before", Truth::Required, Stale::replaced(&lib), b.pid()),
        case("c", "forked from a after", Truth::Required, Stale::replaced(&lib).via(a.pid()), c),
        case("h", "started after", Truth::Clean, Stale::Clean, h.pid()),
    ];
    let (pids, r) = ask_swaplab(lab, &cases, &root)?;
    let answers: Vec<(&str, Answer)> = vec![
        ("grep (deleted)", grep_deleted(lab, &pids)),
        ("lsof DEL", lsof(lab, &pids, false)),
        ("needrestart", needrestart(lab, &pids)),
        ("checkrestart", checkrestart(lab, &pids)),
    ];

    lab.part("the truth: call each process");
    let seen = [
        ("a", lab.call(&mut a)?, OLD),
        ("b", lab.call(&mut b)?, OLD),
        ("c", c_greeting, OLD),
        ("h", lab.call(&mut h)?, NEW),
    ];
    check_greetings(lab, seen);

    lab.part("judged");
    judge(lab, &cases, &r, &answers, Others::EachRight);
    check_packages(lab, &r, &[a.pid(), b.pid(), c], &root);
    check_groups(lab, &r, a.pid(), c, &[("b", b.pid())]);
    Ok(())
}

/// `pkg-VERSION/` with the control file and the variant's library at
/// `/usr/lib/libexample.so`, built into `libexample1_VERSION.deb`.
fn build_packages(lab: &mut Lab) -> Result<Vec<PathBuf>> {
    let arch = run(lab, Command::new("dpkg").arg("--print-architecture"), false)?;
    let arch = arch.trim().to_string();
    let mut debs = Vec::new();
    for (version, v) in VERSIONS {
        let dir = lab.sandbox.root().join(format!("pkg-{version}"));
        std::fs::create_dir_all(dir.join("DEBIAN"))?;
        std::fs::create_dir_all(dir.join("usr/lib"))?;
        std::fs::copy(lab.sandbox.stage(v)?, dir.join("usr/lib/libexample.so"))?;
        let control = format!(
            "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: swaplab <swaplab@localhost>\nDescription: libexample, {}\n",
            v.file_name()
        );
        std::fs::write(dir.join("DEBIAN/control"), control)?;
        lab.shell(format!(
            "mkdir -p pkg-{version}/DEBIAN pkg-{version}/usr/lib; cp build/{} pkg-{version}/usr/lib/libexample.so   # and DEBIAN/control: {PACKAGE} {version}",
            v.file_name()
        ));
        let deb = lab.sandbox.root().join(format!("{PACKAGE}_{version}.deb"));
        let mut cmd = Command::new("dpkg-deb");
        cmd.args(["--build", "--root-owner-group"]).arg(&dir).arg(&deb);
        run(lab, &mut cmd, true)?;
        debs.push(deb);
    }
    Ok(debs)
}

/// An empty dpkg database and log folder under `root`.
fn make_dpkg_root(lab: &mut Lab, root: &Path) -> Result<()> {
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "usr/lib"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "")?;
    lab.shell("mkdir -p dpkg-root/var/lib/dpkg/{info,updates} dpkg-root/var/log; touch dpkg-root/var/lib/dpkg/status");
    Ok(())
}

/// `dpkg -i DEB` into `root`, with its database and log there. It runs in
/// a user and mount namespace of its own, as its caller mapped to root,
/// with an empty folder over `/etc/dpkg/dpkg.cfg.d`: the host's dpkg
/// hooks (needrestart's status logger writes under /run) must not run for
/// the sandbox's package.
fn dpkg(lab: &mut Lab, root: &Path, deb: &Path) -> Result<()> {
    let empty = lab.sandbox.root().join("empty-dpkg.cfg.d");
    std::fs::create_dir_all(&empty)?;
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .arg("-i")
        .arg(deb);
    let mut binds = Vec::new();
    if Path::new("/etc/dpkg/dpkg.cfg.d").is_dir() {
        binds.push((empty, PathBuf::from("/etc/dpkg/dpkg.cfg.d")));
    }
    userns::in_own_namespaces(
        &mut cmd,
        &userns::Inside {
            binds,
            ..Default::default()
        },
    )?;
    lab.shell(format!(
        "unshare --user --map-root-user --mount sh -c 'mount --bind empty-dpkg.cfg.d /etc/dpkg/dpkg.cfg.d; dpkg --root=dpkg-root --admindir=dpkg-root/var/lib/dpkg --log=dpkg-root/var/log/dpkg.log -i {}'",
        lab.sandbox.rel(deb)
    ));
    run(lab, &mut cmd, true).with_context(|| format!("dpkg -i ({})", userns::WHY_IT_MAY_FAIL))?;
    Ok(())
}

/// Each flagged process's library is attributed to the package, with the
/// version installed now and the one the process started on.
fn check_packages(lab: &mut Lab, r: &StaleReport, pids: &[i32], root: &Path) {
    let db = root.join("var/lib/dpkg");
    for &pid in pids {
        let pkg = package_of(r, pid);
        let saw = pkg.as_ref().map_or("no package".to_string(), |p| {
            format!(
                "{} {:?} (upgraded from {:?}) from {}",
                p.name,
                p.version,
                p.upgraded_from,
                lab.sandbox.rel(&p.database)
            )
        });
        lab.check(
            format!(
                "swaplab stale names {PACKAGE} 2.0, upgraded from 1.0, from the sandbox's database, for {}",
                pidt(pid)
            ),
            pkg.is_some_and(|p| {
                p.name == PACKAGE
                    && p.version.as_deref() == Some("2.0")
                    && p.upgraded_from.as_deref() == Some("1.0")
                    && p.database == db
            }),
            saw,
        );
    }
}

