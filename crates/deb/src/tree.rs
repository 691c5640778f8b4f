//! The package's files, laid out under its root as they are installed.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use clap_complete::Shell;

use crate::{docs, run, write};

/// Where the program is installed.
pub const PROGRAM: &str = "usr/bin/swaplab-stale";
/// apt's hook: a configuration file, the administrator's to change.
pub const APT_HOOK: &str = "etc/apt/apt.conf.d/90swaplab-stale";

/// Every file of the package but its control files, under `root`.
pub fn lay_out(root: &Path, binary: &Path) -> Result<()> {
    let program = root.join(PROGRAM);
    write(&program, &std::fs::read(binary)?, 0o755)?;
    // As dh_strip does: no debug symbols in the package (a tenth of the
    // size); the build-id note stays.
    run(Command::new("strip")
        .args([
            "--remove-section=.comment",
            "--remove-section=.note",
            "--strip-unneeded",
        ])
        .arg(&program))?;
    write(
        &root.join("usr/share/man/man1/swaplab-stale.1.gz"),
        &docs::man_page()?,
        0o644,
    )?;
    let completions = [
        (
            Shell::Bash,
            "usr/share/bash-completion/completions/swaplab-stale",
        ),
        (
            Shell::Zsh,
            "usr/share/zsh/vendor-completions/_swaplab-stale",
        ),
        (
            Shell::Fish,
            "usr/share/fish/vendor_completions.d/swaplab-stale.fish",
        ),
    ];
    for (shell, path) in completions {
        write(&root.join(path), &docs::completion(shell), 0o644)?;
    }
    let texts = [
        (APT_HOOK, include_str!("../debian/apt.conf")),
        (
            "usr/lib/systemd/system/swaplab-stale.service",
            include_str!("../debian/swaplab-stale.service"),
        ),
        (
            "usr/lib/systemd/system/swaplab-stale.timer",
            include_str!("../debian/swaplab-stale.timer"),
        ),
        (
            "usr/share/doc/swaplab-stale/copyright",
            include_str!("../debian/copyright"),
        ),
    ];
    for (path, text) in texts {
        write(&root.join(path), text.as_bytes(), 0o644)?;
    }
    folders_open(root)
}

/// Every folder under `root` (and `root`) 0755, whatever the umask: dpkg
/// installs them as the package has them, and refuses a control folder
/// of another mode.
pub fn folders_open(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            }
        }
    }
    Ok(())
}
