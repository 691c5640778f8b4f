//! The Debian package of `swaplab-stale`, built with `dpkg-deb` from the
//! files this crate lays out: the program, its man page and shell
//! completions (made from the same clap definitions as its command line),
//! apt's hook (`DPkg::Post-Invoke`), and a systemd service and timer that
//! write the OpenMetrics textfile for node-exporter. `dpkg-shlibdeps` names
//! the C libraries it depends on, as for any Debian package.
//!
//! `cargo run --release -p swaplab-stale-deb` builds it (see `main.rs`).

mod control;
mod docs;
mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// The package's name: the program's.
pub const PACKAGE: &str = "swaplab-stale";
/// The package's version: the workspace's, Debian revision 1.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-1");

/// What to package, and where to put the `.deb`.
pub struct Options {
    /// The `swaplab-stale` program (a release build).
    pub binary: PathBuf,
    /// The folder the `.deb` is written into.
    pub out: PathBuf,
}

/// Builds `swaplab-stale_VERSION_ARCH.deb` in `opts.out`; returns its path.
pub fn build(opts: &Options) -> Result<PathBuf> {
    ensure!(
        opts.binary.is_file(),
        "{}: no program there to package",
        opts.binary.display()
    );
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot make {}", opts.out.display()))?;
    // dpkg-shlibdeps expects the package's files in debian/PACKAGE.
    let work = tempfile::tempdir_in(&opts.out)?;
    let root = work.path().join("debian").join(PACKAGE);
    tree::lay_out(&root, &opts.binary)?;
    let depends = control::shlib_depends(work.path(), &root.join(tree::PROGRAM))?;
    let arch = control::architecture()?;
    control::write_all(&root, &arch, &depends)?;
    tree::folders_open(&root)?;
    let deb = opts.out.join(format!("{PACKAGE}_{VERSION}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&deb))?;
    Ok(deb)
}

/// Runs `cmd`; its stdout, or an error with its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?} (dpkg-dev has it)", cmd.get_program()))?;
    ensure!(
        out.status.success(),
        "{:?} failed ({}): {}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `content` at `path` (its folders made) with `mode`.
fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
