//! Where installed programs are: where `SWAPLAB_<NAME>` says, on PATH, or in
//! the sbin folders, which an ordinary user's PATH (and root's under sudo)
//! may lack.

use std::path::PathBuf;

/// The folders searched after PATH.
const SYSTEM_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The program `SWAPLAB_<NAME>` names (`SWAPLAB_NGINX`, `SWAPLAB_IP`), else
/// the first file named `name` on PATH, then in the system folders.
pub fn find(name: &str) -> Option<PathBuf> {
    let chosen = format!("SWAPLAB_{}", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(chosen) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
