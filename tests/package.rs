//! The detector's Debian package (`crates/deb`) as an operator meets it:
//! built, installed with the real `dpkg -i`, its apt hook run by a real
//! `apt-get install`, its service's command run, its units verified.
//!
//! All of it happens in a root of the sandbox's own (`dpkg --root`, apt's
//! `Dir`), inside a user, mount and PID namespace of its own: no root is
//! needed, nothing of the machine's packages changes, and the hook sees
//! only the namespace's processes, so that what it prints does not depend
//! on what else runs on the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use swaplab::harness::process::{deadline, output_within};
use swaplab::harness::variants::{Variant, SLEEPER};

use crate::stale::sandbox;

/// Runs in the namespaces: installs the package and libexample1 1.0 with
/// dpkg, starts a sleeper on the library, upgrades it with apt-get (the
/// hook must print the plan), stops the sleeper, and installs another
/// package with apt-get (the hook must print nothing).
const SCRIPT: &str = r#"
set -euo pipefail
cd "$W"
# The machine's dpkg hooks (needrestart's status logger) are not this root's.
if [ -d /etc/dpkg/dpkg.cfg.d ]; then mount --bind "$W/empty" /etc/dpkg/dpkg.cfg.d; fi
in_root() { dpkg --root="$R" --admindir="$R/var/lib/dpkg" --log="$R/var/log/dpkg.log" --force-script-chrootless "$@"; }
apt_install() {
  APT_CONFIG="$W/apt.conf" PATH="$R/usr/bin:$PATH" apt-get -q -y \
    -o Dir="$R/" -o Dir::State::status="$R/var/lib/dpkg/status" \
    -o APT::Sandbox::User=root -o Dpkg::Use-Pty=0 \
    -o DPkg::Options::=--root="$R" -o DPkg::Options::=--admindir="$R/var/lib/dpkg" \
    -o DPkg::Options::=--log="$R/var/log/dpkg.log" -o DPkg::Options::=--force-script-chrootless \
    install "$@"
}
in_root -i "$DEB"
in_root -i "$LIB1"
mkfifo ready
LD_LIBRARY_PATH="$R/usr/lib" "$SLEEPER" $$ > ready &
sleeper=$!
exec 3<ready
# Its first lines, to `ready`; at its end (EOF) or after 30 s, the script fails.
line=
while read -t 30 -r line <&3; do case "$line" in ready*) break ;; esac; done
case "$line" in ready*) ;; *) echo "the sleeper never said ready" >&2; exit 1 ;; esac
echo "== sleeper $sleeper"
echo "== upgrade"
if apt_install "$LIB2" 2>&1; then echo "== apt exit 0"; else echo "== apt exit $?"; fi
kill "$sleeper"; wait "$sleeper" || true
echo "== other"
if apt_install "$OTHER" 2>&1; then echo "== apt exit 0"; else echo "== apt exit $?"; fi
echo "== done"
"#;

/// Purges the package from the root: it must take the detector's part of
/// swaplab's cache, not the lab's (Debian roots, kernels).
const PURGE: &str = r#"
set -euo pipefail
if [ -d /etc/dpkg/dpkg.cfg.d ]; then mount --bind "$W/empty" /etc/dpkg/dpkg.cfg.d; fi
mkdir -p "$R/var/cache/swaplab/dpkg" "$R/var/cache/swaplab/kernels"
touch "$R/var/cache/swaplab/dpkg/host.idx" "$R/var/cache/swaplab/kernels/vmlinuz"
dpkg --root="$R" --admindir="$R/var/lib/dpkg" --log="$R/var/log/dpkg.log" --force-script-chrootless --purge swaplab-stale
"#;

#[test]
fn the_detectors_debian_package_installs_with_dpkg_and_apt_runs_its_hook() {
    for tool in ["dpkg-deb", "dpkg-shlibdeps", "apt-get", "unshare"] {
        assert!(
            on_path(tool),
            "{tool} is missing: sudo apt-get install dpkg-dev apt util-linux"
        );
    }
    let dir = sandbox();
    let w = dir.path();
    let deb = swaplab_stale_deb::build(&swaplab_stale_deb::Options {
        binary: detector_binary(),
        out: w.join("out"),
    })
    .expect("the package builds");
    check_contents(&deb);

    let root = w.join("root");
    make_root(&root);
    let lib1 = local_deb(w, "libexample1", "1.0", Some(Variant::V1));
    let lib2 = local_deb(w, "libexample1", "2.0", Some(Variant::V2));
    let other = local_deb(w, "hello-local", "1.0", None);
    std::fs::create_dir_all(w.join("empty")).unwrap();
    std::fs::write(
        w.join("apt.conf"),
        // Read before any other configuration: the machine's apt.conf.d
        // (its hooks, needrestart's among them) is not this root's.
        format!("Dir \"{}/\";\n", root.display()),
    )
    .unwrap();
    let in_namespaces = |script: &str| {
        let mut cmd = Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "--mount", "--pid", "--fork"])
            .args(["--mount-proc", "--kill-child", "bash", "-c", script])
            .current_dir(w)
            .env("W", w)
            .env("R", &root)
            .env("DEB", &deb)
            .env("LIB1", &lib1)
            .env("LIB2", &lib2)
            .env("OTHER", &other)
            .env("SLEEPER", SLEEPER)
            .env("LC_ALL", "C");
        let out = output_within(&mut cmd, 3 * deadline()).expect("the script ends");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the script failed:\n{all}");
        (text, all)
    };
    let (text, all) = in_namespaces(SCRIPT);
    check_hook(&text, &all);
    check_installed(&root);
    check_service(&root);
    let (_, all) = in_namespaces(PURGE);
    assert!(
        !root.join("usr/bin/swaplab-stale").exists()
            && !root.join("var/cache/swaplab/dpkg").exists()
            && root.join("var/cache/swaplab/kernels/vmlinuz").exists(),
        "purge took the program and the detector's cache, and left the lab's:\n{all}"
    );
}

/// The package holds the program, its man page, completions for three
/// shells, apt's hook, the service and timer, and its copyright.
fn check_contents(deb: &Path) {
    let list = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    for path in [
        "./usr/bin/swaplab-stale",
        "./usr/share/man/man1/swaplab-stale.1.gz",
        "./usr/share/bash-completion/completions/swaplab-stale",
        "./usr/share/zsh/vendor-completions/_swaplab-stale",
        "./usr/share/fish/vendor_completions.d/swaplab-stale.fish",
        "./etc/apt/apt.conf.d/90swaplab-stale",
        "./usr/lib/systemd/system/swaplab-stale.service",
        "./usr/lib/systemd/system/swaplab-stale.timer",
        "./usr/share/doc/swaplab-stale/copyright",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{list}"
        );
    }
    let depends = run(Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg("Depends"));
    assert!(depends.contains("libc6"), "Depends: {depends}");
}

/// After the upgrade the hook printed the plan, naming the sleeper; after
/// the other install it printed nothing; apt succeeded both times.
fn check_hook(text: &str, all: &str) {
    let sleeper = text
        .lines()
        .find_map(|l| l.strip_prefix("== sleeper "))
        .unwrap_or_else(|| panic!("no sleeper:\n{all}"));
    let (upgrade, other) = text
        .split_once("== other")
        .unwrap_or_else(|| panic!("the script stopped early:\n{all}"));
    assert!(
        upgrade.contains("swaplab-stale: 1 process is running code that is no longer on disk"),
        "apt's hook printed no plan after the upgrade:\n{all}"
    );
    assert!(
        upgrade.contains(&format!("restart process {sleeper} (swaplab-sleeper)")),
        "the plan does not name the sleeper ({sleeper}):\n{all}"
    );
    assert!(upgrade.contains("== apt exit 0"), "apt failed:\n{all}");
    // The sandbox's own path names swaplab-stale: look for the hook's lines
    // (its stderr is in them too: `swaplab stale: …`).
    assert!(
        !other.lines().any(|l| l.starts_with("swaplab-stale:")
            || l.starts_with("swaplab stale:")
            || l.contains("[required]")),
        "with nothing to restart, the hook was not quiet:\n{all}"
    );
    assert!(other.contains("== apt exit 0"), "apt failed:\n{all}");
}

/// dpkg's database in the root has the package installed, and its
/// program runs.
fn check_installed(root: &Path) {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status
            .split("\n\n")
            .any(|s| s.contains("Package: swaplab-stale\n")
                && s.contains("Status: install ok installed")),
        "swaplab-stale is not installed in the root's database"
    );
    let version = run(Command::new(root.join("usr/bin/swaplab-stale")).arg("--version"));
    assert!(version.starts_with("swaplab-stale "), "{version}");
}

/// The service's own command, as its unit says it (the paths moved into
/// the root), writes a whole OpenMetrics file and ends with a status the
/// unit counts as success; systemd's own checker accepts both units.
fn check_service(root: &Path) {
    let unit = root.join("usr/lib/systemd/system/swaplab-stale.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the service has an ExecStart");
    let ok: BTreeSet<i32> = text
        .lines()
        .find_map(|l| l.strip_prefix("SuccessExitStatus="))
        .map_or(BTreeSet::new(), |s| {
            s.split(' ').filter_map(|c| c.parse().ok()).collect()
        });
    let words: Vec<PathBuf> = exec
        .split(' ')
        .map(|w| match w.strip_prefix('/') {
            Some(abs) => root.join(abs),
            None => PathBuf::from(w),
        })
        .collect();
    let output = words
        .windows(2)
        .find(|w| w[0] == Path::new("--output"))
        .map(|w| w[1].clone())
        .expect("the service writes a file");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let status = output_within(Command::new(&words[0]).args(&words[1..]), deadline())
        .expect("the service's command ends")
        .status
        .code()
        .unwrap_or(-1);
    assert!(
        status == 0 || ok.contains(&status),
        "the service's command ended with {status}"
    );
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written.ends_with("# EOF\n"),
        "not a whole OpenMetrics file:\n{written}"
    );
    if !on_path("systemd-analyze") {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing on CI: sudo apt-get install systemd"
        );
        eprintln!(
            "systemd-analyze is missing: the units were not verified (apt-get install systemd)"
        );
        return;
    }
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["--man=no", "--recursive-errors=no"])
        .args(["swaplab-stale.service", "swaplab-stale.timer"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The folders apt and dpkg need under `root`, and a dpkg status that holds
/// the machine's own entries for what the package depends on (and what
/// they depend on): the root stands for this machine.
fn make_root(root: &Path) {
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log/apt",
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "usr/lib",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let host = std::fs::read_to_string("/var/lib/dpkg/status").expect("a Debian machine");
    let status = dependency_closure(&host, &["libc6", "libgcc-s1"]);
    std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
    std::fs::write(root.join("var/lib/dpkg/available"), "").unwrap();
}

/// The installed stanzas of `status` for `names` and everything they
/// depend on (any alternative, any architecture).
fn dependency_closure(status: &str, names: &[&str]) -> String {
    let field = |stanza: &str, key: &str| -> Option<String> {
        stanza.lines().find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
    };
    let mut by_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for stanza in status.split("\n\n") {
        let installed = field(stanza, "Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name)) = (installed, field(stanza, "Package")) {
            by_name.entry(name).or_default().push(stanza.trim());
        }
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    while let Some(name) = todo.pop() {
        let Some(stanzas) = by_name.get(&name) else {
            continue;
        };
        if !seen.insert(name) {
            continue;
        }
        for s in stanzas {
            for key in ["Depends", "Pre-Depends"] {
                let deps = field(s, key).unwrap_or_default();
                for dep in deps.split([',', '|']) {
                    let dep = dep.trim().split([' ', '(', ':']).next().unwrap_or_default();
                    if !dep.is_empty() {
                        todo.push(dep.to_string());
                    }
                }
            }
        }
    }
    let mut out = String::new();
    for name in &seen {
        for s in &by_name[name] {
            out.push_str(s);
            out.push_str("\n\n");
        }
    }
    out
}

/// A package built with dpkg-deb: `variant`'s library as
/// `/usr/lib/libexample.so`, or a README alone.
fn local_deb(w: &Path, name: &str, version: &str, variant: Option<Variant>) -> PathBuf {
    let tree = w.join(format!("{name}-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    match variant {
        Some(v) => {
            std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
            std::fs::copy(v.built_path(), tree.join("usr/lib/libexample.so")).unwrap();
        }
        None => {
            let doc = tree.join(format!("usr/share/doc/{name}"));
            std::fs::create_dir_all(&doc).unwrap();
            std::fs::write(doc.join("README"), "nothing runs this\n").unwrap();
        }
    }
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: swaplab <swaplab@localhost>\nDescription: swaplab's test package\n"
        ),
    )
    .unwrap();
    let deb = w.join(format!("{name}_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(&deb));
    deb
}

/// The `swaplab-stale` program of this checkout, in the profile the tests
/// were built in: built by cargo when the tests run under it (it links in
/// a second), else the one beside the test binaries (`.ci/as-user` runs
/// them after a `cargo test` as root built it).
fn detector_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/PROFILE/deps/tests-HASH
    let profile = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--bin", "swaplab-stale"]);
        if profile.ends_with("release") {
            cmd.arg("--release");
        }
        let out = output_within(&mut cmd, 10 * deadline()).unwrap();
        assert!(
            out.status.success(),
            "cargo build --bin swaplab-stale: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binary = profile.join("swaplab-stale");
    assert!(
        binary.is_file(),
        "no {}: run cargo build first",
        binary.display()
    );
    binary
}

fn on_path(tool: &str) -> bool {
    swaplab::harness::programs::find(tool).is_some()
}

fn run(cmd: &mut Command) -> String {
    let out = output_within(cmd, deadline()).unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
