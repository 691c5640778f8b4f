//! D03: a real rpm upgrade. Two builds of a small rpm package that holds
//! libexample, made by `rpmbuild`, installed and upgraded by `rpm` itself
//! in the sandbox's own root, under running processes; `swaplab stale`
//! reads rpm's database as a file and names the package, the version
//! installed now and when, and groups what to restart.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::detector::stale::StaleReport;
use crate::drivers::restart_tools::{grep_deleted, judge, lsof, Answer, Others, Truth};
use crate::harness::finding::{Finding, Lesson, Need, Scope};
use crate::harness::lab::{pidt, Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::{self, V1, V2, V2Layout};
use crate::harness::variants::{NEW, OLD};

use super::common::{ask_swaplab, case, check_greetings, check_groups, package_of, run, start_on_package, upgrade_under_two};
use crate::findings::DETECTOR;

/// The package's name, and its two versions.
const PACKAGE: &str = "libexample1";
const VERSIONS: [(&str, Variant); 2] = [("1.0", V1), ("2.0", V2)];
/// Where the database lies inside the root (`rpm --dbpath`, relative to
/// `--root`). Debian's rpm keeps `~/.rpmdb` by default; rpm systems this.
const DBPATH: &str = "/var/lib/rpm";

pub static D03: Finding = Finding {
    id: "D03",
    slug: "a_real_rpm_upgrade_is_attributed_from_the_rpm_database",
    claim: "After `rpm -U` upgrades a package built with `rpmbuild`, in the sandbox's own root (`rpm --root --dbpath`), under running processes, `swaplab stale --package-root` flags exactly the processes that still run the old build and names, from rpm's database read as a file (`rpmdb.sqlite`; rpm is not run), the package, the version installed now and its install time, both as `rpm -q` tells them; that time is after the processes started, so they run an earlier version (rpm keeps no record of which). A process started after the upgrade whose library is then replaced by hand, outside rpm, is flagged too, with the same package installed before it started: each process is judged by its own start. The plan groups them as after dpkg's upgrade (D02): a master and the worker it forked after the upgrade as one entry a fork-only reload cannot fix, each lone process as another; the process started after the last replacement is left alone. `grep '(deleted)' /proc/*/maps` and `lsof` (its `DEL` entries) flag the same four and name no package.",
    source: DETECTOR,
    steps: &[
        "build libexample1 1.0 (libexample v1) and 2.0 (v2) with rpmbuild; install 1.0 with rpm --root into the sandbox's own root",
        "start a forking master and a lone process on the package's library; upgrade to 2.0 with rpm -U; ask rpm -q what it installed, and when; fork a worker from the master",
        "start a process after the upgrade; replace the library by hand with another build (v2-layout); start one more",
        "run swaplab stale (its report and --plan), grep and lsof on them; call every process to see what it runs",
    ],
    experiment: d03,
    scope: Scope::Host,
    needs: &[
        Need::Tool {
            program: "rpmbuild",
            package: "rpm",
        },
        Need::Filesystem,
    ],
    lesson: Lesson {
        title: "An rpm upgrade under running processes",
        question: "D02 asked dpkg. On Fedora, RHEL or openSUSE the package manager is rpm, and its database is another file in another format: an SQLite database of package headers. dpkg's log says which version an upgrade replaced; rpm keeps no such log. What can a detector still tell from rpm's database about a process that runs a library rpm has since replaced?",
        exercise: "Which processes run the old build after `rpm -U` (the truth: each process's greeting)? What does `swaplab stale --package-root` say of their package, and how does it know they started before the upgrade? What does it say of d, whose library was replaced by hand after it started?",
        answer: "a, b and c greet `Hell World` (the old build, 1.0); d greets `Hello World` (2.0) but its file is gone too; h, started last, runs the hand-made build. `swaplab stale` names libexample1 2.0-1 (rpm), installed at the time `rpm -q --qf '%{INSTALLTIME}'` prints: after a and b started (c counts from a, the master it was forked from), so they run an earlier version; before d started, so d runs the package's own 2.0 and what replaced it came from outside rpm. It groups a with c (exec or restart a, `[PID-1]`), b alone and d alone; h is left alone. grep and lsof flag the same four and cannot say which package.",
    },
    ..Finding::DEFAULTS
};

pub fn d03(lab: &mut Lab) -> Result<()> {
    lab.part("two builds of one package, made by rpmbuild, installed by rpm in the sandbox's own root");
    let root = lab.sandbox.root().join("rpm-root");
    std::fs::create_dir_all(&root)?;
    let rpms = build_packages(lab)?;
    rpm(lab, &root, &["-i"], &rpms[0])?;
    let lib = root.join("usr/lib/libexample.so");

    let (mut a, mut b) = upgrade_under_two(
        lab,
        &root,
        &lib,
        ("the upgrade: rpm -U", "rpm put a new file at the library's path"),
        |lab| rpm(lab, &root, &["-U"], &rpms[1]),
    )?;
    let installed = query(lab, &root)?;
    let (c, c_greeting) = lab.fork_child(&mut a)?;

    lab.part("after the upgrade: a process, then the library replaced by hand");
    // rpm keeps its install time in whole seconds, and a start is known to
    // a clock tick, rounded down: d starts a whole second after the
    // install's second, where the two cannot meet.
    lab.wait_until("the clock is a second past rpm's install time", || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        (now > installed.secs + 1)
            .then_some(())
            .ok_or(format!("{now} s"))
    })?;
    let mut d = start_on_package(lab, Program::Plain, "d", &root)?;
    lab.put_variant_at(
        V2Layout,
        Replace::Install,
        "rpm-root/usr/lib/libexample.so",
        ", by hand: outside rpm",
    )?;
    let mut h = start_on_package(lab, Program::Plain, "h", &root)?;

    lab.part("the tools");
    let cases = vec![
        case("a", "master, started before", Truth::Required, Stale::replaced(&lib), a.pid()),
        case("b", "lone, started before", Truth::Required, Stale::replaced(&lib), b.pid()),
        case("c", "forked from a after", Truth::Required, Stale::replaced(&lib).via(a.pid()), c),
        case("d", "started after rpm, before the hand", Truth::Required, Stale::replaced(&lib), d.pid()),
        case("h", "started last", Truth::Clean, Stale::Clean, h.pid()),
    ];
    let (pids, r) = ask_swaplab(lab, &cases, &root)?;
    let answers: Vec<(&str, Answer)> = vec![
        ("grep (deleted)", grep_deleted(lab, &pids)),
        ("lsof DEL", lsof(lab, &pids, false)),
    ];

    lab.part("the truth: call each process");
    let seen = [
        ("a", lab.call(&mut a)?, OLD),
        ("b", lab.call(&mut b)?, OLD),
        ("c", c_greeting, OLD),
        ("d", lab.call(&mut d)?, NEW),
        ("h", lab.call(&mut h)?, V2Layout.greeting()),
    ];
    check_greetings(lab, seen);

    lab.part("judged");
    judge(lab, &cases, &r, &answers, Others::EachRight);
    check_packages(lab, &r, &[(a.pid(), true), (b.pid(), true), (c, true), (d.pid(), false)], &root, &installed);
    check_groups(lab, &r, a.pid(), c, &[("b", b.pid()), ("d", d.pid())]);
    Ok(())
}

/// What `rpm -q` says is installed: the version and the install time.
struct Installed {
    version: String,
    /// rpm's INSTALLTIME, in seconds since the epoch.
    secs: u64,
    /// rpm's INSTALLTIME, as the report writes it (UTC, RFC 3339).
    at: String,
}

/// `rpmbuild/` with a spec that installs the variant's library at
/// `/usr/lib/libexample.so`, built into `libexample1-VERSION-1.ARCH.rpm`.
/// Every path rpmbuild writes to is in the sandbox.
fn build_packages(lab: &mut Lab) -> Result<Vec<PathBuf>> {
    let top = lab.sandbox.root().join("rpmbuild");
    std::fs::create_dir_all(top.join("tmp"))?;
    let spec = top.join("libexample1.spec");
    std::fs::write(&spec, SPEC)?;
    lab.shell("cat rpmbuild/libexample1.spec   # Name: libexample1, Version: %{pkgversion}; installs %{library} as /usr/lib/libexample.so");
    let mut built = Vec::new();
    for (version, v) in VERSIONS {
        let library = lab.sandbox.stage(v)?;
        let mut cmd = Command::new("rpmbuild");
        cmd.arg("-bb").arg("--quiet");
        for (name, value) in [
            ("_topdir", top.display().to_string()),
            ("_tmppath", top.join("tmp").display().to_string()),
            ("_dbpath", top.join("db").display().to_string()),
            ("pkgversion", version.to_string()),
            ("library", library.display().to_string()),
            ("__os_install_post", "%{nil}".to_string()),
            ("debug_package", "%{nil}".to_string()),
        ] {
            cmd.arg("--define").arg(format!("{name} {value}"));
        }
        cmd.arg(&spec).env("HOME", lab.sandbox.root());
        lab.shell(format!(
            "rpmbuild -bb --define '_topdir rpmbuild' --define 'pkgversion {version}' --define 'library build/{}' rpmbuild/libexample1.spec",
            v.file_name()
        ));
        run(lab, &mut cmd, false)?;
        built.push(find_rpm(&top.join("RPMS"), version)?);
    }
    Ok(built)
}

/// The package rpmbuild wrote for `version`, under `RPMS/ARCH/`.
fn find_rpm(rpms: &Path, version: &str) -> Result<PathBuf> {
    let prefix = format!("{PACKAGE}-{version}-1.");
    for arch in std::fs::read_dir(rpms).with_context(|| format!("no {}", rpms.display()))? {
        for f in std::fs::read_dir(arch?.path())? {
            let f = f?.path();
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".rpm") {
                return Ok(f);
            }
        }
    }
    anyhow::bail!("rpmbuild wrote no {prefix}*.rpm under {}", rpms.display())
}

const SPEC: &str = "\
Name: libexample1
Version: %{pkgversion}
Release: 1
Summary: libexample, for swaplab's D03
License: MIT
AutoReqProv: no

%description
libexample, the test library swaplab replaces under running processes.

%install
mkdir -p %{buildroot}/usr/lib
cp %{library} %{buildroot}/usr/lib/libexample.so

%files
/usr/lib/libexample.so
";

/// `rpm --root ROOT --dbpath /var/lib/rpm ARGS PACKAGE`, with no plugin
/// (Debian's rpm would log to the machine's syslog) and the sandbox as
/// HOME (no `~/.rpmmacros` of the user's).
fn rpm(lab: &mut Lab, root: &Path, args: &[&str], package: &Path) -> Result<()> {
    let mut cmd = base_rpm(lab, root);
    cmd.args(args).arg(package);
    // rpmbuild names the folder and the file by the machine's
    // architecture: a glob keeps the sheet the same on every one.
    let name = package.file_name().unwrap_or_default().to_string_lossy();
    let shown = name
        .strip_suffix(".rpm")
        .and_then(|n| n.rsplit_once('.'))
        .map_or(name.to_string(), |(nvr, _)| format!("{nvr}.*.rpm"));
    lab.shell(format!(
        "rpm --root {} --dbpath {DBPATH} --noplugins {} rpmbuild/RPMS/*/{shown}",
        lab.sandbox.rel(root),
        args.join(" "),
    ));
    run(lab, &mut cmd, true)?;
    Ok(())
}

fn base_rpm(lab: &Lab, root: &Path) -> Command {
    let mut cmd = Command::new("rpm");
    cmd.arg("--root")
        .arg(root)
        .args(["--dbpath", DBPATH, "--noplugins"])
        .env("HOME", lab.sandbox.root());
    cmd
}

/// What rpm itself says it installed, and which package owns the library.
fn query(lab: &mut Lab, root: &Path) -> Result<Installed> {
    let mut cmd = base_rpm(lab, root);
    cmd.args(["-q", "--qf", "%{VERSION}-%{RELEASE} %{INSTALLTIME}\\n", PACKAGE]);
    lab.shell(format!(
        "rpm --root {} --dbpath {DBPATH} --noplugins -q --qf '%{{VERSION}}-%{{RELEASE}} %{{INSTALLTIME}}\\n' {PACKAGE}",
        lab.sandbox.rel(root)
    ));
    let out = run(lab, &mut cmd, false)?;
    let (version, time) = out
        .trim()
        .split_once(' ')
        .with_context(|| format!("rpm -q printed {out:?}"))?;
    let secs: u64 = time.parse().with_context(|| format!("rpm -q printed {out:?}"))?;
    let at = crate::detector::packages::utc_time(secs);
    // The time changes from run to run: shown marked as such.
    lab.proof(format!("{version} {}", crate::harness::lab::vol(at.clone())));
    let mut owner = base_rpm(lab, root);
    owner.args(["-qf", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}\\n", "/usr/lib/libexample.so"]);
    lab.shell(format!(
        "rpm --root {} --dbpath {DBPATH} --noplugins -qf --qf '%{{NAME}}-%{{VERSION}}-%{{RELEASE}}\\n' /usr/lib/libexample.so",
        lab.sandbox.rel(root)
    ));
    let owner = run(lab, &mut owner, true)?;
    lab.check_eq(
        "rpm -qf names the package and version that own the library",
        owner.trim(),
        format!("{PACKAGE}-2.0-1").as_str(),
    );
    Ok(Installed {
        version: version.to_string(),
        secs,
        at,
    })
}

/// Each flagged process's library is attributed to the package, from the
/// sandbox's rpm database, with the version and install time rpm -q
/// gave, and judged by the process's own start: after it (`true`) or
/// before it.
fn check_packages(lab: &mut Lab, r: &StaleReport, pids: &[(i32, bool)], root: &Path, rpm: &Installed) {
    let db = root.join("var/lib/rpm/rpmdb.sqlite");
    lab.check_eq(
        "rpm -q says 2.0-1 is installed",
        rpm.version.as_str(),
        "2.0-1",
    );
    for &(pid, after) in pids {
        let pkg = package_of(r, pid);
        let saw = pkg.as_ref().map_or("no package".to_string(), |p| {
            format!(
                "{:?} {} {:?} installed {:?} after start {:?} from {}",
                p.manager,
                p.name,
                p.version,
                p.installed_at.as_deref().map(|t| crate::harness::lab::vol(t.to_string())),
                p.installed_after_start,
                lab.sandbox.rel(&p.database)
            )
        });
        lab.check(
            format!(
                "swaplab stale names rpm's {PACKAGE} 2.0-1, installed when rpm -q says, {} {} started, from the sandbox's database",
                if after { "after" } else { "before" },
                pidt(pid)
            ),
            pkg.is_some_and(|p| {
                p.manager == crate::detector::packages::Manager::Rpm
                    && p.name == PACKAGE
                    && p.version.as_deref() == Some(rpm.version.as_str())
                    && p.installed_at.as_deref() == Some(rpm.at.as_str())
                    && p.installed_after_start == Some(after)
                    && p.upgraded_from.is_none()
                    && p.database == db
            }),
            saw,
        );
    }
}
