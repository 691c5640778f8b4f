//! `swaplab matrix`: the findings beyond this machine's own C library,
//! kernel and filesystem. `--debian` runs them on other Debian releases'
//! glibc (a root per release, see [`debian`]); `--kernel` on other
//! releases' kernels (a virtual machine per release, see [`kernel`]);
//! `--fs` on fresh filesystems (a mount namespace per filesystem, see
//! [`fs`]). Each column's report is written to the output folder, and the
//! table of them all is printed.

pub mod debian;
pub mod fs;
pub mod kernel;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::commands::{compare, run::select, Done, Exit};

/// How `--kernel`'s guests run their CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when /dev/kvm is usable and a guest boots with it; else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Run the findings on other Debian releases' glibc (`--debian`: a
/// debootstrap root per release, the C targets compiled inside it with
/// its own gcc, run with its own loader and C library; needs root and
/// debootstrap), kernels (`--kernel`: the release's kernel booted in
/// qemu on this machine's own files) or filesystems (`--fs`: each made
/// fresh in a mount namespace of its own; needs root); writes a report
/// per column.
#[derive(clap::Args)]
#[command(after_help = HELP)]
#[command(group(clap::ArgGroup::new("columns").required(true).multiple(true).args(["debian", "kernel", "fs"])))]
pub struct Args {
    /// Debian releases whose glibc makes a column (codenames).
    #[arg(long, value_delimiter = ',', value_name = "RELEASE")]
    pub debian: Vec<String>,
    /// Debian releases whose kernel makes a column (codenames: bullseye
    /// 5.10, bookworm 6.1, trixie 6.12, sid the newest).
    #[arg(
        id = "kernel",
        long = "kernel",
        value_delimiter = ',',
        value_name = "RELEASE"
    )]
    pub kernels: Vec<String>,
    /// Filesystems made fresh for a column each, with the sandboxes of
    /// the findings that depend on the filesystem on them (needs root).
    #[arg(
        id = "fs",
        long = "fs",
        value_delimiter = ',',
        value_name = "FS",
        value_enum
    )]
    pub filesystems: Vec<fs::Fs>,
    /// How --kernel's guests run: KVM, emulation (TCG), or KVM when it
    /// boots a guest and TCG otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// swaplab's cache folder: roots in DIR/debian, kernels in
    /// DIR/kernel (default: $SWAPLAB_CACHE, else /var/cache/swaplab for
    /// root and ~/.cache/swaplab for anyone else).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// The Debian mirror roots and kernels are downloaded from.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    pub mirror: String,
    /// Where the reports go (made if missing).
    #[arg(long, default_value = "swaplab-matrix")]
    pub out: PathBuf,
    /// Only these findings (default: every one).
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    pub only: Vec<String>,
}

const HELP: &str = "\
--debian needs root (debootstrap and chroot) and debootstrap (apt-get install
-y debootstrap). The first run of a release downloads it (about 100 MB per
release, a few minutes); later runs reuse the cached root.

--kernel needs qemu-system-x86, busybox-static, apt and dpkg, not root. The
first run of a release downloads its kernel package with apt (60 to 110 MB;
only the image and a few modules are kept). The guest mounts this machine's
files read-only and runs this swaplab on them, as the guest's root, on the
host's C library; its report gets the guest's kernel and the acceleration
used. Under emulation (TCG) one release took 6 to 9 minutes on 2 cores.

--fs needs root and, for its loop images, mkfs.ext4 (e2fsprogs), mkfs.xfs
(xfsprogs), mkfs.btrfs and btrfs (btrfs-progs). Each filesystem is made
fresh (a sparse 4 GiB image, a tmpfs, an overlay of its own layers) in a
mount namespace of its own, and the findings that depend on the filesystem
under their sandbox run with their sandboxes on it (btrfs: in a subvolume);
the others are n/a there. However the run ends (Ctrl-C, a kill), no mount,
loop device or folder is left behind.

Example:
  sudo swaplab matrix --debian bullseye,trixie
  swaplab matrix --kernel bullseye,bookworm,trixie,sid
  sudo swaplab matrix --fs ext4,xfs,btrfs,tmpfs,overlay
  swaplab compare host.json swaplab-matrix/*.json";

impl Args {
    /// `--cache`, else `$SWAPLAB_CACHE`, else swaplab's own cache folder.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        self.cache
            .clone()
            .or_else(|| std::env::var_os("SWAPLAB_CACHE").map(PathBuf::from))
            .or_else(crate::detector::cache_dir::swaplab_cache)
            .ok_or_else(|| anyhow::anyhow!("no cache folder: HOME is not set (give --cache DIR)"))
    }
}

/// What a matrix of columns that may fail one by one (`--kernel`, `--fs`)
/// wrote, and what it could not do.
#[derive(Default)]
pub struct Columns {
    pub written: Vec<PathBuf>,
    /// One line per column that failed (a kernel not fetched, a guest not
    /// booted, a filesystem not made, a run killed or not ended in time):
    /// the others still ran.
    pub failed: Vec<String>,
}

/// Fails unless every release is a Debian codename (lower-case letters and
/// digits): they become folder and file names.
pub fn check_codenames(flag: &str, releases: &[String]) -> Result<()> {
    if releases.is_empty() {
        bail!("no release given ({flag} bullseye,trixie)");
    }
    for r in releases {
        if r.is_empty()
            || !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            bail!("{flag} {r}: not a Debian codename (bullseye, bookworm, trixie, sid, ...)");
        }
    }
    Ok(())
}

/// Writes a column's report as `report-NAME.json` in `out`; its path.
pub fn write_report(out: &Path, column: &str, report: &serde_json::Value) -> Result<PathBuf> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot make the output folder {}", out.display()))?;
    let path = out.join(compare::file_name(column));
    std::fs::write(&path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

impl Args {
    /// Runs the findings `--only` (default: every one) on each column asked
    /// for, then prints the table of the reports written and their paths;
    /// fails when a cell is marked, with bad input when the matrix cannot run.
    pub fn run(self) -> Done {
        let (opts, only) = (&self, &self.only);
        let bad = |e: String| Exit::BadInput(format!("swaplab matrix: {e}"));
        let selected = select(only, only.is_empty()).map_err(bad)?;
        if !opts.filesystems.is_empty() {
            fs::preflight(&opts.filesystems).map_err(|e| bad(format!("{e:#}")))?;
        }
        let say = |line: &str| eprintln!("{line}");
        let mut written = Vec::new();
        if !opts.debian.is_empty() {
            written.extend(debian::run(opts, &selected, &say).map_err(|e| bad(format!("{e:#}")))?);
        }
        let mut failed = Vec::new();
        if !opts.kernels.is_empty() {
            let busybox = kernel::preflight(opts).map_err(|e| bad(format!("{e:#}")))?;
            let ran = kernel::run(opts, &busybox, &selected, &say)
                .map_err(|e| Exit::Aborted(format!("swaplab matrix: {e:#}")))?;
            written.extend(ran.written);
            failed.extend(ran.failed);
        }
        if !opts.filesystems.is_empty() {
            let ran = fs::run(opts, &selected, &say)
                .map_err(|e| Exit::Aborted(format!("swaplab matrix: {e:#}")))?;
            written.extend(ran.written);
            failed.extend(ran.failed);
        }
        if written.is_empty() {
            return Err(Exit::Aborted(format!(
                "swaplab matrix: no column ran:\n  {}",
                failed.join("\n  ")
            )));
        }
        let judged = compare::print(&written, "matrix");
        println!("\nreports:");
        for p in &written {
            println!("  {}", p.display());
        }
        if !failed.is_empty() {
            return Err(Exit::Aborted(format!(
                "swaplab matrix: these columns did not run:\n  {}",
                failed.join("\n  ")
            )));
        }
        judged
    }
}
