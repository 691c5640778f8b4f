//! The control files (`DEBIAN/`): what dpkg reads of the package.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use md5::{Digest, Md5};

use crate::tree::APT_HOOK;
use crate::{run, write, PACKAGE, VERSION};

/// The machine's Debian architecture (`amd64`, `arm64`, …).
pub fn architecture() -> Result<String> {
    Ok(run(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string())
}

/// What the program needs of the C libraries, as `dpkg-shlibdeps` says
/// from their symbols files: `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`.
/// `work` holds `debian/PACKAGE/`, the layout it expects.
pub fn shlib_depends(work: &Path, program: &Path) -> Result<String> {
    write(
        &work.join("debian/control"),
        format!("Source: swaplab\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let out = run(Command::new("dpkg-shlibdeps")
        .current_dir(work)
        .args(["-O", "-e"])
        .arg(program))?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .context("dpkg-shlibdeps printed no shlibs:Depends")
}

/// `DEBIAN/control`, `conffiles`, `md5sums` and the maintainer scripts.
pub fn write_all(root: &Path, arch: &str, depends: &str) -> Result<()> {
    let files = files_under(root)?;
    // Installed-Size: KiB, each file rounded up, as dpkg-gencontrol counts.
    let kib: u64 = files
        .iter()
        .map(|f| Ok(std::fs::metadata(f)?.len().div_ceil(1024)))
        .sum::<Result<u64>>()?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: swaplab developers <swaplab@localhost>\n\
         Installed-Size: {kib}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: which running processes run code no longer on disk\n \
         swaplab-stale lists the processes that run an executable or a library\n \
         that was replaced, removed or modified in place since they started\n \
         (after a package upgrade, say), names the package, and groups what to\n \
         restart: a service, a container, a process tree. It reads /proc and the\n \
         package databases (dpkg's and rpm's) as files and runs nothing.\n \
         .\n \
         The package adds apt's hook, which prints the plan after each dpkg run\n \
         when a restart is needed, and a systemd timer that writes OpenMetrics\n \
         for node-exporter's textfile collector.\n"
    );
    write(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(
        &root.join("DEBIAN/conffiles"),
        format!("/{APT_HOOK}\n").as_bytes(),
        0o644,
    )?;
    write(
        &root.join("DEBIAN/md5sums"),
        md5sums(root, &files)?.as_bytes(),
        0o644,
    )?;
    let scripts = [
        ("postinst", include_str!("../debian/postinst")),
        ("prerm", include_str!("../debian/prerm")),
        ("postrm", include_str!("../debian/postrm")),
    ];
    for (name, text) in scripts {
        write(&root.join("DEBIAN").join(name), text.as_bytes(), 0o755)?;
    }
    Ok(())
}

/// `MD5  path` of each file but the conffiles, as dpkg --verify reads it.
fn md5sums(root: &Path, files: &[PathBuf]) -> Result<String> {
    let mut out = String::new();
    for f in files {
        let rel = f.strip_prefix(root)?;
        if rel == Path::new(APT_HOOK) {
            continue;
        }
        let digest = Md5::digest(std::fs::read(f)?);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{hex}  {}\n", rel.display()));
    }
    Ok(out)
}

/// The regular files under `root`, outside `DEBIAN/`, in name order.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                if p != root.join("DEBIAN") {
                    dirs.push(p);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
