//! Whether the running kernel is older than the newest one installed: the
//! kernel's own "restart" (a reboot), as needrestart reports it beside the
//! processes.
//!
//! Read only, nothing run: the running release from `uname`, the installed
//! ones from the kernel images the machine shows, `/boot/vmlinuz-RELEASE`
//! (Debian, Ubuntu) and `/usr/lib/modules/RELEASE/vmlinuz` or
//! `/lib/modules/RELEASE/vmlinuz` (Fedora, Arch). A modules folder without
//! an image is not counted: package removal may leave one behind.
//!
//! Said only when certain: if the running release is not among the
//! installed ones (a virtual machine booted with a kernel from outside, a
//! container whose `/boot` is its image's, a kexec), the installed images
//! do not tell which kernel the next boot runs, and nothing is said. Not
//! seen either: a package that rebuilds the same release name (Debian's
//! ABI-compatible updates keep `6.1.0-18-amd64` across versions); telling
//! those apart needs the version string inside the compressed image.

use std::cmp::Ordering;
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

/// The running kernel against the newest installed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelStatus {
    pub running: String,
    pub newest_installed: String,
    /// A newer kernel is installed: a reboot would run it.
    pub outdated: bool,
}

impl KernelStatus {
    /// The report's line, only when a reboot would run a newer kernel.
    pub fn line(&self) -> Option<String> {
        self.outdated.then(|| {
            format!(
                "kernel {} is running, {} is installed: a reboot runs the newer kernel",
                self.running, self.newest_installed
            )
        })
    }
}

/// The release of the running kernel (`uname -r`).
pub fn running_release() -> Option<String> {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.release().to_str().map(str::to_string))
}

/// This machine's kernel status, or `None` when it cannot tell.
pub fn status_here() -> Option<KernelStatus> {
    status(Path::new("/"), &running_release()?)
}

/// The status of kernel `running` against the kernels installed under
/// `root` (`/` on a real machine), or `None` when `running` is not among
/// them (see the module's note).
pub fn status(root: &Path, running: &str) -> Option<KernelStatus> {
    let installed = installed(root);
    if !installed.iter().any(|r| r == running) {
        return None;
    }
    let newest = installed
        .into_iter()
        .max_by(|a, b| compare_releases(a, b))?;
    Some(KernelStatus {
        outdated: compare_releases(&newest, running) == Ordering::Greater,
        running: running.to_string(),
        newest_installed: newest,
    })
}

/// The releases whose kernel image is under `root`.
fn installed(root: &Path) -> Vec<String> {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    };
    let mut found: Vec<String> = names("boot")
        .into_iter()
        .filter_map(|n| {
            let release = n
                .strip_prefix("vmlinuz-")
                .or_else(|| n.strip_prefix("vmlinux-"))?;
            root.join("boot")
                .join(&n)
                .is_file()
                .then(|| release.to_string())
        })
        .collect();
    for dir in ["usr/lib/modules", "lib/modules"] {
        found.extend(
            names(dir)
                .into_iter()
                .filter(|r| root.join(dir).join(r).join("vmlinuz").is_file()),
        );
    }
    found.sort();
    found.dedup();
    found
}

/// Orders kernel releases as `sort -V` does, and so GRUB's menu, whose
/// first (default) entry is the newest: runs of digits compared as numbers
/// (`6.1.0-18` after `6.1.0-9`), other text as text, a release that is a
/// prefix of another first.
pub fn compare_releases(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    while !x.is_empty() && !y.is_empty() {
        let (cx, rx) = next_chunk(x);
        let (cy, ry) = next_chunk(y);
        let digits = |c: &str| c.starts_with(|ch: char| ch.is_ascii_digit());
        let order = match (digits(cx), digits(cy)) {
            (true, true) => compare_numbers(cx, cy),
            // As in sort -V, a number sorts before text in its place.
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => cx.cmp(cy),
        };
        if order != Ordering::Equal {
            return order;
        }
        (x, y) = (rx, ry);
    }
    // Equal up to here: the longer one is newer; `01` and `1` differ only
    // in their text, compared last so the order is total.
    x.len().cmp(&y.len()).then_with(|| a.cmp(b))
}

/// The leading run of digits, or of other characters, and the rest.
fn next_chunk(s: &str) -> (&str, &str) {
    let digit = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| c.is_ascii_digit() != digit)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Two runs of digits as numbers, of any length (no overflow).
fn compare_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_revisions_compare_as_numbers() {
        assert_eq!(
            compare_releases("6.1.0-18-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            compare_releases("6.1.0-9-amd64", "6.1.0-18-amd64"),
            Ordering::Less
        );
        assert_eq!(
            compare_releases("6.1.0-18-amd64", "6.1.0-18-amd64"),
            Ordering::Equal
        );
        assert_eq!(
            compare_releases("6.10.0-1-amd64", "6.9.12-1-amd64"),
            Ordering::Greater
        );
    }

    #[test]
    fn other_distributions_order_as_sort_v() {
        let mut releases = vec![
            "6.5.12-300.fc39.x86_64",
            "6.5.6-300.fc39.x86_64",
            "6.7.1-arch2-1",
            "6.7.1-arch10-1",
            "5.15.0-101-generic",
            "5.15.0-99-generic",
            "6.7",
            "6.7.0",
        ];
        releases.sort_by(|a, b| compare_releases(a, b));
        assert_eq!(
            releases,
            [
                "5.15.0-99-generic",
                "5.15.0-101-generic",
                "6.5.6-300.fc39.x86_64",
                "6.5.12-300.fc39.x86_64",
                "6.7",
                "6.7.0",
                "6.7.1-arch2-1",
                "6.7.1-arch10-1",
            ]
        );
    }

    #[test]
    fn numbers_longer_than_any_integer_and_leading_zeros_compare() {
        let big = "1.99999999999999999999999999";
        assert_eq!(compare_releases(big, "1.9"), Ordering::Greater);
        assert_eq!(compare_releases("1.010", "1.9"), Ordering::Greater);
        assert_ne!(compare_releases("1.01", "1.1"), Ordering::Equal);
    }
}
