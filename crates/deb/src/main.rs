//! `swaplab-stale-deb`: builds the Debian package of `swaplab-stale`.
//!
//! ```console
//! $ cargo run --release -p swaplab-stale-deb
//! ```
//!
//! Started by `cargo run`, it first builds the program itself (release),
//! then writes `target/debian/swaplab-stale_VERSION_ARCH.deb` and prints
//! its path. `--binary` packages a program built elsewhere.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

/// Builds the Debian package of swaplab-stale (dpkg-deb and dpkg-shlibdeps,
/// from dpkg-dev) and prints its path.
#[derive(Parser)]
#[command(name = "swaplab-stale-deb", version)]
struct Args {
    /// The swaplab-stale program to package; by default, the release
    /// build of this checkout, built first.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// The folder to write the .deb into [default: target/debian].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(b) = args.binary.as_ref().filter(|b| !b.is_file()) {
        eprintln!("swaplab-stale-deb: --binary {}: no such file", b.display());
        return ExitCode::from(2);
    }
    match package(args) {
        Ok(deb) => {
            println!("{}", deb.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swaplab-stale-deb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn package(args: Args) -> Result<PathBuf> {
    // This program runs from target/PROFILE/: the target folder is above.
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|profile| profile.parent())
        .context("cannot tell the target folder from this program's path")?
        .to_path_buf();
    let binary = match args.binary {
        Some(b) => b,
        None => build_release(&target)?,
    };
    swaplab_stale_deb::build(&swaplab_stale_deb::Options {
        binary,
        out: args.out.unwrap_or_else(|| target.join("debian")),
    })
}

/// Builds swaplab-stale (release) with the cargo that runs this program.
fn build_release(target: &std::path::Path) -> Result<PathBuf> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        bail!("not started by cargo run, which could build swaplab-stale: give --binary PATH");
    };
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "swaplab-stale",
            "--bin",
            "swaplab-stale",
        ])
        .status()
        .context("cannot run cargo")?;
    ensure!(
        status.success(),
        "cargo build of swaplab-stale failed ({status})"
    );
    Ok(target.join("release/swaplab-stale"))
}
