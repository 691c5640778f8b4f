//! `swaplab matrix --kernel bullseye,trixie`: the findings on other
//! kernels. For each Debian release its kernel (see
//! [`crate::vm::kernel_package`]) boots in a qemu guest whose root is this
//! machine's own files, shared read-only; there this very swaplab runs the
//! findings as the guest's first process (`swaplab guest`) on the host's C
//! library, and writes its report into a shared folder. The column is
//! `kernel-RELEASE`; the report says which kernel, which acceleration, and
//! how long the boot and the run took.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::commands::matrix::{check_codenames, write_report, AccelChoice, Args, Columns};
use crate::harness::finding::Finding;
use crate::vm::initramfs;
use crate::vm::kernel_package::{kernel_of, Kernel};
use crate::vm::qemu::{self, Accel, Boot, Failure, Ran};

/// Where the guest mounts the report folder (a tmpfs folder it makes).
const GUEST_OUT: &str = "/run/swaplab-out";
/// The report the guest writes there.
pub const REPORT: &str = "report.json";

/// A whole guest run, boot included: under emulation one kernel's run of
/// every finding took 6 to 9 minutes here (TCG on 2 cores) before L15; L11
/// may take 15 on a slower machine, and L15's start loops up to 6.
fn run_limit(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(10 * 60),
        Accel::Tcg => Duration::from_secs(45 * 60),
    }
}

/// The handshakes' deadline in an emulated guest: 60 s (three times the usual),
/// or what `SWAPLAB_TIMEOUT` asks if that is longer.
fn tcg_timeout() -> Duration {
    (crate::harness::process::deadline()).max(Duration::from_secs(60))
}

/// The column of a release's kernel.
pub fn column(release: &str) -> String {
    format!("kernel-{release}")
}

/// What the kernel matrix needs, checked before anything is fetched.
pub fn preflight(opts: &Args) -> Result<PathBuf> {
    check_codenames("--kernel", &opts.kernels)?;
    if std::env::consts::ARCH != "x86_64" {
        bail!("--kernel boots Debian's amd64 kernels: it runs on x86_64 machines only");
    }
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
    ] {
        if crate::harness::programs::find(tool).is_none() {
            bail!("{tool} is not installed (apt-get install -y {package})");
        }
    }
    if opts.accel == AccelChoice::Kvm && !qemu::kvm_usable() {
        bail!("--accel kvm: /dev/kvm cannot be opened for reading and writing by this user");
    }
    initramfs::static_busybox()
}

/// Boots each release's kernel, runs `selected` in it, writes
/// `report-kernel-RELEASE.json` into `opts.out`. `busybox` is what
/// [`preflight`] found.
pub fn run(
    opts: &Args,
    busybox: &Path,
    selected: &[&Finding],
    say: &dyn Fn(&str),
) -> Result<Columns> {
    let cache = opts.cache_dir()?.join("kernel");
    let exe = std::env::current_exe().context("cannot tell which swaplab runs")?;
    let scratch = crate::harness::sandbox::scratch("matrix-kernel")?;
    let mut accel = match opts.accel {
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Auto if qemu::kvm_usable() => Accel::Kvm,
        AccelChoice::Auto => Accel::Tcg,
    };
    let mut done = Columns::default();
    for release in &opts.kernels {
        let column = (|| -> Result<PathBuf> {
            let kernel = kernel_of(&cache, release, &opts.mirror, say)?;
            let work = scratch.path().join(release);
            let (ran, mut report) = loop {
                match guest_run(&kernel, &exe, busybox, selected, &work, accel, say) {
                    Ok(done) => break done,
                    // Only a guest that never came up is KVM's to blame.
                    Err(e)
                        if accel == Accel::Kvm
                            && opts.accel == AccelChoice::Auto
                            && e.downcast_ref::<Failure>().is_some_and(|f| !f.came_up) =>
                    {
                        say(&format!(
                            "{release}: KVM did not run the guest ({e:#}); emulating (TCG) from now on"
                        ));
                        accel = Accel::Tcg;
                    }
                    Err(e) => {
                        return Err(e.context(format!("the guest on kernel {}", kernel.uname)))
                    }
                }
            };
            say(&format!(
                "{release}: {} booted in {:.1} s, ran in {:.1} s ({})",
                kernel.uname,
                ran.boot_ms as f64 / 1000.0,
                ran.run_ms as f64 / 1000.0,
                ran.accel.name()
            ));
            report["vm"] = json!({
                "release": kernel.release,
                "package": kernel.package,
                "package_version": kernel.version,
                "accel": ran.accel,
                "boot_ms": ran.boot_ms,
                "run_ms": ran.run_ms,
            });
            write_report(&opts.out, &column(release), &report)
        })();
        match column {
            Ok(path) => done.written.push(path),
            Err(e) => {
                say(&format!("{release}: {e:#}"));
                done.failed.push(format!("{release}: {e:#}"));
            }
        }
    }
    Ok(done)
}

/// One guest: boots `kernel` with `accel`, runs `selected`, returns how it
/// ran and the report it wrote.
fn guest_run(
    kernel: &Kernel,
    exe: &Path,
    busybox: &Path,
    selected: &[&Finding],
    work: &Path,
    accel: Accel,
    say: &dyn Fn(&str),
) -> Result<(Ran, Value)> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    let out = work.join("out");
    std::fs::create_dir_all(&out)?;
    let exe_text = exe
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", exe.display()))?;
    // A clean environment: nothing of this shell's reaches the guest's run.
    let mut command: Vec<String> = [
        "/usr/bin/env",
        "-i",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "TMPDIR=/tmp",
        "LC_ALL=C",
        exe_text,
        "guest",
        "--out",
        GUEST_OUT,
        "--column",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if accel == Accel::Tcg {
        // Emulated, everything takes 10 to 50 times longer: the handshakes'
        // deadline (20 s, see harness::process::deadline) was overrun there
        // by U03 while a second guest ran beside it.
        command.insert(6, format!("SWAPLAB_TIMEOUT={}", tcg_timeout().as_secs()));
        // The findings that judge less there (L15, G10) learn it from the
        // kernel's command line (see vm::qemu), not from this environment.
    }
    command.push(column(&kernel.release));
    command.extend(selected.iter().map(|f| f.id.to_string()));
    let initrd = work.join("initrd.cpio");
    initramfs::write(kernel, busybox, exe_text, &command, &initrd)?;
    let boot = Boot {
        kernel: &kernel.image(),
        initrd: &initrd,
        out: &out,
        accel,
        limit: run_limit(accel),
        console_log: work.join("console.log"),
    };
    say(&format!(
        "{}: booting {} ({}, {} findings)",
        kernel.release,
        kernel.uname,
        accel.name(),
        selected.len()
    ));
    let ran = qemu::boot(&boot, &mut |line| say(line))?;
    let file = out.join(REPORT);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "the guest wrote no report (its console: {})",
            boot.console_log.display()
        )
    })?;
    let report: Value = serde_json::from_str(&text).context("the guest's report is not JSON")?;
    Ok((ran, report))
}
