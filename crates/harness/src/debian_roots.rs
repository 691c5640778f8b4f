//! The Debian roots `swaplab matrix --debian` builds (and keeps in its
//! cache), found again by experiments that need another release's real C
//! library (L18C), without root and without building anything.

use std::path::{Path, PathBuf};

/// The marker of a finished root: debootstrap ran to the end.
pub const READY: &str = ".swaplab-root-ready";

/// Where, inside a root, the matrix puts its build of the C twins without
/// loader or rpath: started by a loader the experiment chooses.
pub const PORTABLE: &str = "swaplab/portable";

/// The folders a root may be in: `$SWAPLAB_CACHE/debian`, this user's
/// cache, and root's (`/var/cache/swaplab/debian`, readable by everyone).
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("SWAPLAB_CACHE")
        .map(PathBuf::from)
        .into_iter()
        .chain(swaplab_stale::cache_dir::swaplab_cache())
        .chain([PathBuf::from("/var/cache/swaplab")])
        .map(|d| d.join("debian"))
        .collect();
    dirs.dedup();
    dirs
}

/// The twins' source this swaplab has; the matrix leaves the one it built
/// from in the root (`swaplab/src/target.c`).
const TARGET_C: &str = include_str!("../../../csrc/target.c");

/// The finished root of `release` whose portable twins this swaplab's
/// matrix built (from the same `target.c`: an older build lacks commands
/// the experiments send), if any.
pub fn find(release: &str) -> Option<PathBuf> {
    candidates().into_iter().map(|d| d.join(release)).find(|r| {
        r.join(READY).exists()
            && r.join(PORTABLE).join("swaplab-dlopen").is_file()
            && std::fs::read_to_string(r.join("swaplab/src/target.c")).is_ok_and(|t| t == TARGET_C)
    })
}

/// The multiarch library folder of a Debian root for this machine
/// (`usr/lib/x86_64-linux-gnu`).
pub fn libdir(root: &Path) -> PathBuf {
    root.join("usr/lib")
        .join(format!("{}-linux-gnu", std::env::consts::ARCH))
}
