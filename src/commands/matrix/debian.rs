//! `swaplab matrix --debian bullseye,trixie`: the findings on other glibc
//! releases. For each Debian release it builds (once, then cached) a
//! minimal root with `debootstrap`, compiles the libexample variants and the
//! C twins of the targets inside it with that release's own gcc against its
//! own glibc, and runs every finding with those programs. The programs name
//! the root's loader as their interpreter and the root's library folder as
//! their rpath, so the kernel starts them under that release's loader and C
//! library, while swaplab observes them from the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::commands::matrix::{check_codenames, write_report, Args};
use crate::harness::finding::Finding;
use crate::harness::recipe::{twin_args, variant_steps, Lang, SOURCES, TWINS, VARIANTS};
use crate::harness::report::{self, RunReport};
use crate::harness::runtime::{Libc, Runtime};

use crate::harness::debian_roots::{PORTABLE, READY};

/// The C sources, by name in `csrc/` (the recipe's [`SOURCES`]).
const TEXTS: &[(&str, &str)] = &[
    ("libexample.c", include_str!("../../../csrc/libexample.c")),
    (
        "libexample-1.map",
        include_str!("../../../csrc/libexample-1.map"),
    ),
    (
        "libexample-2.map",
        include_str!("../../../csrc/libexample-2.map"),
    ),
    ("plugin.c", include_str!("../../../csrc/plugin.c")),
    ("unique.cpp", include_str!("../../../csrc/unique.cpp")),
    (
        "thread_local.cpp",
        include_str!("../../../csrc/thread_local.cpp"),
    ),
    ("target.c", include_str!("../../../csrc/target.c")),
];

/// Checks what the matrix needs before it starts anything.
fn preflight(opts: &Args) -> Result<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "needs root: debootstrap builds the roots and chroot compiles inside them; \
             run it as root (sudo swaplab matrix --debian {})",
            opts.debian.join(",")
        );
    }
    check_codenames("--debian", &opts.debian)?;
    let debootstrap = crate::harness::programs::find("debootstrap").ok_or_else(|| {
        anyhow::anyhow!("debootstrap is not installed (apt-get install -y debootstrap)")
    })?;
    crate::harness::programs::find("chroot")
        .ok_or_else(|| anyhow::anyhow!("chroot is not installed (coreutils)"))?;
    Ok(debootstrap)
}

/// The root of `release`, made with debootstrap unless it is cached.
fn root_of(
    debootstrap: &Path,
    cache: &Path,
    release: &str,
    mirror: &str,
    say: &dyn Fn(&str),
) -> Result<PathBuf> {
    let root = cache.join(release);
    if root.join(READY).exists() {
        say(&format!("{release}: cached root {}", root.display()));
        return Ok(root);
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot make the cache folder {}", cache.display()))?;
    let partial = cache.join(format!("{release}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    let log = cache.join(format!("{release}.debootstrap.log"));
    say(&format!(
        "{release}: debootstrap --variant=minbase --include=gcc,g++,libc6-dev {release} {} {mirror} \
         (a few minutes; log in {})",
        root.display(),
        log.display()
    ));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot write {}", log.display()))?;
    let status = Command::new(debootstrap)
        .args(["--variant=minbase", "--include=gcc,g++,libc6-dev", release])
        .arg(&partial)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("cannot run debootstrap")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "debootstrap of {release} failed ({status}); the end of {}:\n{}",
            log.display(),
            crate::harness::process::last_lines(&text, 5)
        );
    }
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::rename(&partial, &root)?;
    std::fs::write(root.join(READY), format!("{release} from {mirror}\n"))?;
    Ok(root)
}

/// Runs `args` inside `root` (chroot, clean environment); its stdout.
fn inside(root: &Path, args: &[&str]) -> Result<String> {
    let out =
        Command::new(crate::harness::programs::find("chroot").unwrap_or_else(|| "chroot".into()))
            .arg(root)
            .args(["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "LC_ALL=C"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot chroot into {}", root.display()))?;
    if !out.status.success() {
        bail!(
            "`{}` inside {} failed: {}",
            args.join(" "),
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The path `p` (inside the root) names after every symlink, resolved by the
/// root's own readlink: absolute links inside the root point into the root,
/// not into the host.
fn resolve_inside(root: &Path, p: &str) -> Result<String> {
    inside(root, &["readlink", "-f", p])
}

/// A host path for a path inside the root.
fn host_path(root: &Path, inner: &str) -> PathBuf {
    root.join(inner.trim_start_matches('/'))
}

/// Compiles the variants and the twins inside `root`; returns the runtime.
fn build_in(root: &Path, release: &str) -> Result<Runtime> {
    let work = "/swaplab";
    let host_work = host_path(root, work);
    if host_work.exists() {
        std::fs::remove_dir_all(&host_work)?;
    }
    std::fs::create_dir_all(host_work.join("src"))?;
    std::fs::create_dir_all(host_work.join("bin"))?;
    for name in SOURCES {
        let text = TEXTS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| anyhow::anyhow!("no text for the source {name}"))?;
        std::fs::write(host_work.join("src").join(name), text)?;
    }
    let target_src = format!("{work}/src/target.c");
    let builds = format!("{work}/libexample");
    // Roots made before they got g++ cannot build L16's C++ kinds: L16
    // says so there (n/a) and names the fix.
    let has_cxx = inside(root, &["g++", "--version"]).is_ok();
    for v in VARIANTS.iter().filter(|v| has_cxx || v.lang == Lang::C) {
        std::fs::create_dir_all(host_path(root, &format!("{builds}/{}", v.name)))?;
        for (lang, args) in variant_steps(v, &format!("{work}/src"), &builds) {
            let compiler = if lang == Lang::C { "gcc" } else { "g++" };
            let mut all = vec![compiler];
            all.extend(args.iter().map(String::as_str));
            inside(root, &all)?;
        }
    }
    // The loader and C library the root's gcc links against, by name: a
    // probe build says which loader it names (no /lib64 assumption), gcc
    // says where libc.so.6 is, and the root resolves both.
    let probe = format!("{work}/bin/probe");
    inside(
        root,
        &[
            "gcc",
            "-O2",
            "-DBUILD=\"0\"",
            &target_src,
            "-o",
            &probe,
            "-ldl",
            "-pthread",
        ],
    )?;
    let interp = crate::detector::elf::interpreter(&host_path(root, &probe))
        .ok_or_else(|| anyhow::anyhow!("the probe built in {release} names no loader"))?;
    std::fs::remove_file(host_path(root, &probe))?;
    let loader = host_path(root, &resolve_inside(root, &interp)?);
    let libc_so = inside(root, &["gcc", "-print-file-name=libc.so.6"])?;
    let libc_real = resolve_inside(root, &libc_so)?;
    let libdir = host_path(
        root,
        Path::new(&libc_real)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("/"),
    );
    // The dlopen twin once more, without loader or rpath: L18C starts it
    // with a copy of this root's loader and C library, and replaces them.
    std::fs::create_dir_all(host_path(root, &format!("/{PORTABLE}")))?;
    for t in TWINS.iter().filter(|t| t.0 == "swaplab-dlopen") {
        let args = twin_args(t, &target_src, &builds, &format!("/{PORTABLE}/{}", t.0));
        let mut all = vec!["gcc"];
        all.extend(args.iter().map(String::as_str));
        inside(root, &all)?;
    }
    for t in TWINS {
        let mut args = twin_args(t, &target_src, &builds, &format!("{work}/bin/{}", t.0));
        args.push(format!("-Wl,--dynamic-linker={}", loader.display()));
        args.push(format!("-Wl,-rpath,{}", libdir.display()));
        args.push("-Wl,--disable-new-dtags".into());
        let mut all = vec!["gcc"];
        all.extend(args.iter().map(String::as_str));
        inside(root, &all)?;
    }
    Runtime::twins(
        &format!("debian-{release}"),
        Libc::Glibc,
        crate::harness::runtime::os_name_in(root),
        host_work.join("bin"),
        host_work.join("libexample"),
    )
}

/// Builds or reuses each release's root, runs `selected` on it, writes
/// `report-debian-<release>.json` into `opts.out`; returns the paths.
pub fn run(opts: &Args, selected: &[&Finding], say: &dyn Fn(&str)) -> Result<Vec<PathBuf>> {
    let debootstrap = preflight(opts)?;
    let cache = opts.cache_dir()?.join("debian");
    let mut written = Vec::new();
    for release in &opts.debian {
        let root = root_of(&debootstrap, &cache, release, &opts.mirror, say)?;
        say(&format!(
            "{release}: compiling the C targets inside the root"
        ));
        let rt = build_in(&root, release).with_context(|| format!("building in {release}"))?;
        say(&format!(
            "{release}: {} ({}), loader {}",
            rt.label(),
            rt.os,
            rt.loader
        ));
        let columns = [Ok(rt)];
        let outcomes = report::run_all(
            selected,
            &columns,
            |_, _| None,
            |o| say(&format!("  {} [{}]: {}", o.id, o.runtime, o.word())),
        );
        let r = RunReport::new(&columns, outcomes);
        let rt = columns[0].as_ref().expect("the column made above");
        let path = write_report(&opts.out, &rt.name, &serde_json::to_value(&r)?)?;
        written.push(path);
    }
    Ok(written)
}
