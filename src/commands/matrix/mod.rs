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

pub struct Options {
    /// Releases whose glibc makes a column (`--debian`).
    pub debian: Vec<String>,
    /// Releases whose kernel makes a column (`--kernel`).
    pub kernels: Vec<String>,
    /// Filesystems made fresh for a column each (`--fs`).
    pub filesystems: Vec<fs::Fs>,
    pub accel: AccelChoice,
    /// swaplab's cache folder (roots in `debian/`, kernels in `kernel/`).
    pub cache: Option<PathBuf>,
    pub mirror: String,
    /// Where the reports go.
    pub out: PathBuf,
}

impl Options {
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

/// Runs the findings `only` (default: every one) on each release of
/// `opts`, then prints the table of the reports written and their paths;
/// fails when a cell is marked, with bad input when the matrix cannot run.
pub fn command(opts: &Options, only: &[String]) -> Done {
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
