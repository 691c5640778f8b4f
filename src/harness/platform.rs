//! The machine the findings were observed on.

use serde::Serialize;

use crate::harness::runtime::Runtime;

/// The machine the findings were observed on.
#[derive(Clone, Debug, Serialize)]
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
            os: crate::harness::runtime::os_name(),
            kernel: kernel_release(),
            arch: field(|u| u.machine()),
            libc: host.libc.name().into(),
            libc_version: host.libc_version,
            loader: host.loader,
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{}, kernel {}, {} {} ({}), loader {}",
            self.os, self.kernel, self.libc, self.libc_version, self.arch, self.loader
        )
    }
}

/// Set (to 1) by `swaplab matrix --kernel` in a guest it runs under
/// emulation (TCG), where a process start takes 100 ms and more.
pub const EMULATED: &str = "SWAPLAB_EMULATED";

/// Whether this swaplab runs in an emulated guest of `swaplab matrix
/// --kernel` (see [`EMULATED`]).
pub fn emulated() -> bool {
    std::env::var_os(EMULATED).is_some_and(|v| v == "1")
}

/// The running kernel's release (`uname -r`), empty if uname fails.
pub fn kernel_release() -> String {
    crate::detector::kernel::running_release().unwrap_or_default()
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
