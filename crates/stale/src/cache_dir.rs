//! Where swaplab keeps what it builds or downloads to reuse: the dpkg index
//! of `swaplab stale`, and the kernels of `swaplab matrix --kernel`.

use std::path::PathBuf;

/// `/var/cache/swaplab` for root; `$XDG_CACHE_HOME/swaplab` (or
/// `~/.cache/swaplab`) for anyone else; `None` when a user has no home.
pub fn swaplab_cache() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/cache/swaplab"));
    }
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("swaplab")),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/swaplab")),
    }
}
