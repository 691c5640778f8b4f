//! The machine the findings were observed on.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::runtime::Runtime;

/// The machine the findings were observed on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Platform {
    /// `PRETTY_NAME` from /etc/os-release.
    pub os: String,
    pub kernel: String,
    pub arch: String,
    /// `glibc` or `musl`: the C library the targets run on.
    pub libc: String,
    pub libc_version: String,
    /// The dynamic loader mapped into this process.
    pub loader: String,
    /// The filesystem the sandboxes were made on (the one holding the temp
    /// folder); absent in reports from before it was recorded.
    #[serde(default)]
    pub filesystem: Option<Filesystem>,
    /// Whether this is an emulated guest of `swaplab matrix --kernel`
    /// ([`emulated`]), where some findings judge less.
    #[serde(default)]
    pub emulated: bool,
}

/// A mounted filesystem, as `/proc/self/mountinfo` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// `ext4`, `btrfs`, `tmpfs`, `overlay`, ...
    #[serde(rename = "type")]
    pub fstype: String,
    /// The device or name it was mounted from (`/dev/loop3`, `tmpfs`).
    pub source: String,
    pub mount_point: String,
    /// The mount's own options, then the filesystem's (`rw,relatime` and
    /// `rw,seclabel,subvol=/`, joined with `,`).
    pub options: String,
    /// The folder asked about (the temp folder, for the sandboxes).
    pub folder: String,
    /// btrfs: the subvolume the folder lies in (statx's `stx_subvol`, on
    /// kernels from 6.10), else `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvolume: Option<u64>,
}

impl Filesystem {
    /// `ext4 (/dev/loop3 at /tmp/x, rw,relatime)`.
    pub fn one_line(&self) -> String {
        let subvolume = self
            .subvolume
            .filter(|_| self.fstype == "btrfs")
            .map(|s| format!(", subvolume {s}"))
            .unwrap_or_default();
        format!(
            "{} ({} at {}{subvolume}, {})",
            self.fstype, self.source, self.mount_point, self.options
        )
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |d: &[u8]| {
            d.iter()
                .all(|c| (b'0'..=b'7').contains(c))
                .then(|| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
                .and_then(|n| u8::try_from(n).ok())
        };
        match (b[i], b.get(i + 1..i + 4).and_then(octal)) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of mountinfo: its mount id and the filesystem it describes.
fn mountinfo_line(line: &str) -> Option<(u64, Filesystem)> {
    let (mount, fs) = line.split_once(" - ")?;
    let m: Vec<&str> = mount.split(' ').collect();
    let f: Vec<&str> = fs.split(' ').collect();
    let options = match f.get(2) {
        Some(sup) if !sup.is_empty() => format!("{},{sup}", m.get(5)?),
        _ => m.get(5)?.to_string(),
    };
    Some((
        m.first()?.parse().ok()?,
        Filesystem {
            fstype: f.first()?.to_string(),
            source: unescape(f.get(1)?),
            mount_point: unescape(m.get(4)?),
            options,
            folder: String::new(),
            subvolume: None,
        },
    ))
}

/// The mount id and btrfs subvolume of `dir` (statx), where the kernel
/// tells them.
fn mount_id_of(dir: &Path) -> (Option<u64>, Option<u64>) {
    #[cfg(target_env = "gnu")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return (None, None);
        };
        // SAFETY: a zeroed statx is a valid out-buffer for statx(2).
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        let mask = libc::STATX_MNT_ID | libc::STATX_SUBVOL;
        // SAFETY: a NUL-terminated path and a buffer of the right type.
        if unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, mask, &mut st) } != 0 {
            return (None, None);
        }
        let has = |bit: libc::c_uint| st.stx_mask & bit != 0;
        (
            has(libc::STATX_MNT_ID).then_some(st.stx_mnt_id),
            has(libc::STATX_SUBVOL).then_some(st.stx_subvol),
        )
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = dir;
        (None, None)
    }
}

/// The filesystem that holds `dir`, from this process's
/// `/proc/self/mountinfo`: the mount statx names, or else the one whose
/// mount point is the longest prefix of `dir` (the last such line: a later
/// mount covers an earlier one).
pub fn filesystem_of(dir: &Path) -> Option<Filesystem> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts: Vec<(u64, Filesystem)> = text.lines().filter_map(mountinfo_line).collect();
    let (id, subvolume) = mount_id_of(&dir);
    let by_id = id.and_then(|id| mounts.iter().find(|(m, _)| *m == id));
    let by_prefix = || {
        mounts
            .iter()
            .filter(|(_, f)| dir.starts_with(&f.mount_point))
            .max_by_key(|(_, f)| Path::new(&f.mount_point).components().count())
    };
    let (_, found) = by_id.or_else(by_prefix)?;
    Some(Filesystem {
        folder: dir.display().to_string(),
        subvolume,
        ..found.clone()
    })
}

impl Platform {
    pub fn detect() -> Platform {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let host = Runtime::host();
        Platform {
            os: crate::runtime::os_name(),
            kernel: kernel_release(),
            arch: field(|u| u.machine()),
            libc: host.libc.name().into(),
            libc_version: host.libc_version,
            loader: host.loader,
            filesystem: filesystem_of(&std::env::temp_dir()),
            emulated: emulated(),
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{}, kernel {}{}, {} {} ({}), loader {}",
            self.os,
            self.kernel,
            if self.emulated { " (emulated)" } else { "" },
            self.libc,
            self.libc_version,
            self.arch,
            self.loader
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mountinfo_line_gives_the_filesystem_with_its_escapes_undone() {
        let line = "36 27 7:3 / /tmp/a\\040b rw,relatime shared:1 - ext4 /dev/loop3 rw,seclabel";
        let (id, fs) = mountinfo_line(line).unwrap();
        assert_eq!(id, 36);
        assert_eq!(fs.fstype, "ext4");
        assert_eq!(fs.source, "/dev/loop3");
        assert_eq!(fs.mount_point, "/tmp/a b");
        assert_eq!(fs.options, "rw,relatime,rw,seclabel");
    }

    #[test]
    fn only_the_kernel_parameter_says_emulated() {
        assert!(emulated_in("console=ttyS0 quiet swaplab.emulated=1\n"));
        assert!(!emulated_in("console=ttyS0 quiet"));
        assert!(!emulated_in("xswaplab.emulated=1 swaplab.emulated=0"));
        // On this machine the environment has no say.
        let booted = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        assert_eq!(emulated(), emulated_in(&booted));
    }

    #[test]
    fn the_temp_folder_lies_on_a_mounted_filesystem() {
        let fs = filesystem_of(&std::env::temp_dir()).expect("a filesystem");
        assert!(!fs.fstype.is_empty(), "{fs:?}");
        assert!(fs.folder.starts_with(&fs.mount_point), "{fs:?}");
    }
}

/// The kernel parameter `swaplab matrix --kernel` boots a guest with when
/// it runs it under emulation (TCG), where a process start takes 100 ms and
/// more. The guest reads it from its own kernel command line: no user's
/// environment can say so, on a guest or on a native machine.
pub const EMULATED: &str = "swaplab.emulated=1";

/// Whether this swaplab runs in an emulated guest of `swaplab matrix
/// --kernel`: whether the kernel was booted with [`EMULATED`].
pub fn emulated() -> bool {
    static EMULATED_HERE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EMULATED_HERE
        .get_or_init(|| std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| emulated_in(&c)))
}

/// Whether the kernel command line `cmdline` holds [`EMULATED`].
fn emulated_in(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == EMULATED)
}

/// The running kernel's release (`uname -r`), empty if uname fails.
pub fn kernel_release() -> String {
    swaplab_stale::kernel::running_release().unwrap_or_default()
}

/// (major, minor) of the running kernel, if its release says.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = kernel_release();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// What every swaplab report starts with: swaplab's version and the machine.
#[derive(Clone, Debug, Serialize)]
pub struct Header {
    pub swaplab: &'static str,
    pub platform: Platform,
}

impl Header {
    /// This swaplab, on this machine.
    pub fn here(platform: Platform) -> Header {
        Header {
            swaplab: env!("CARGO_PKG_VERSION"),
            platform,
        }
    }
}
