//! Where the target programs run: the C library and dynamic loader under
//! them. The host column is swaplab's own target programs (Rust, built for
//! the C library swaplab is built for); the others are the C twins of the
//! same programs (`csrc/target.c`), built for another C library: musl by
//! `build.rs` with `musl-gcc`, an older or newer glibc by `swaplab matrix`
//! inside a Debian root.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::process::Program;
use crate::variants::Variant;

/// A C library family: the loaders differ in how they match and unload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Libc {
    Glibc,
    Musl,
}

impl Libc {
    pub fn name(self) -> &'static str {
        match self {
            Libc::Glibc => "glibc",
            Libc::Musl => "musl",
        }
    }

    /// The C library swaplab itself (and so its Rust targets) is built for.
    pub fn of_host() -> Libc {
        if cfg!(target_env = "musl") {
            Libc::Musl
        } else {
            Libc::Glibc
        }
    }
}

/// Why a runtime cannot be used here, and what would make it usable.
#[derive(Clone, Debug, Serialize)]
pub struct Unavailable {
    pub name: String,
    pub libc: Libc,
    pub reason: String,
    pub enable: String,
}

/// One column: the programs and libraries built for one C library.
#[derive(Clone, Debug, Serialize)]
pub struct Runtime {
    /// The column's key: `host`, `musl`, `debian-bullseye`.
    pub name: String,
    pub libc: Libc,
    pub libc_version: String,
    /// The dynamic loader the targets name (their `PT_INTERP`).
    pub loader: String,
    /// The system this C library comes from (the host's, or a Debian root's).
    pub os: String,
    /// Only the C twins are there (no servers: those findings stay in the
    /// host column).
    pub twins: bool,
    /// Set in a column of `swaplab matrix --fs`: the filesystem made fresh
    /// under the sandboxes (`ext4`, `btrfs`, ...). There only the findings
    /// whose outcome can depend on it run
    /// ([`crate::finding::Finding::depends_on_filesystem`]).
    pub filesystem: Option<String>,
    /// The target programs' folder; `None` for the host's (found beside the
    /// running executable, see [`crate::process::targets_dir`]).
    #[serde(skip)]
    targets: Option<PathBuf>,
    /// The libexample variants' folder (`<dir>/<variant>/libexample.so`).
    #[serde(skip)]
    variants: PathBuf,
}

/// The programs the C twins cover.
const TWINNED: &[Program] = &[
    Program::Plain,
    Program::Soname,
    Program::Fork,
    Program::Dlopen,
    Program::App,
    Program::App2,
];

impl Runtime {
    /// swaplab's own targets, on the host's C library.
    pub fn host() -> Runtime {
        let libc = Libc::of_host();
        Runtime {
            name: "host".into(),
            libc,
            libc_version: host_libc_version(),
            loader: host_loader().unwrap_or_else(|| "unknown".into()),
            os: os_name(),
            twins: false,
            filesystem: None,
            targets: None,
            variants: PathBuf::from(crate::variants::VARIANTS_DIR),
        }
    }

    /// The musl twins `build.rs` made with `musl-gcc`, if it could.
    pub fn musl() -> std::result::Result<Runtime, Unavailable> {
        let dir = env!("SWAPLAB_MUSL");
        let unavailable = |reason: String| Unavailable {
            name: "musl".into(),
            libc: Libc::Musl,
            reason,
            enable: "apt-get install -y musl-tools && touch build.rs && cargo build \
                     (Fedora: dnf install -y musl-gcc; Arch: pacman -S musl)"
                .into(),
        };
        if dir.is_empty() {
            return Err(unavailable(format!(
                "no musl builds of the targets: {}",
                env!("SWAPLAB_MUSL_WHY")
            )));
        }
        let dir = Path::new(dir);
        Runtime::twins(
            "musl",
            Libc::Musl,
            os_name(),
            dir.join("bin"),
            dir.join("libexample"),
        )
        .map_err(|e| unavailable(format!("{e:#}")))
    }

    /// Every column this machine can run: the host's, then musl's (unless
    /// the host is musl already). The ones it cannot run say why.
    pub fn available() -> Vec<std::result::Result<Runtime, Unavailable>> {
        let host = Runtime::host();
        let mut all = vec![Ok(host.clone())];
        if host.libc != Libc::Musl {
            all.push(Runtime::musl());
        }
        all
    }

    /// A column of C twins in `targets`, with the variants in `variants`;
    /// the loader and the C library's version are read off the programs.
    pub fn twins(
        name: &str,
        libc: Libc,
        os: String,
        targets: PathBuf,
        variants: PathBuf,
    ) -> Result<Runtime> {
        let probe = targets.join(Program::Plain.file_name());
        let loader = swaplab_stale::elf::interpreter(&probe).ok_or_else(|| {
            anyhow::anyhow!("{} names no dynamic loader (PT_INTERP)", probe.display())
        })?;
        let libc_version = match libc {
            Libc::Musl => musl_version(Path::new(&loader)),
            Libc::Glibc => glibc_version(&targets),
        }
        .unwrap_or_else(|| "unknown".into());
        Ok(Runtime {
            name: name.into(),
            libc,
            libc_version,
            loader,
            os,
            twins: true,
            filesystem: None,
            targets: Some(targets),
            variants,
        })
    }

    /// `glibc 2.36`, `musl 1.2.3`.
    pub fn label(&self) -> String {
        format!("{} {}", self.libc.name(), self.libc_version)
    }

    /// Whether this column has program `p`.
    pub fn has(&self, p: Program) -> bool {
        !self.twins || TWINNED.contains(&p)
    }

    /// The folder of this column's target programs.
    pub fn targets(&self) -> Result<PathBuf> {
        match &self.targets {
            Some(d) => Ok(d.clone()),
            None => crate::process::targets_dir(),
        }
    }

    /// Fails unless process `pid` (a C twin) runs under this column's
    /// loader: the guard that a column really runs the C library it names
    /// (the host's own targets are not checked).
    pub fn check_loaded(&self, pid: i32) -> Result<()> {
        if !self.twins {
            return Ok(());
        }
        let want =
            std::fs::canonicalize(&self.loader).unwrap_or_else(|_| PathBuf::from(&self.loader));
        let maps = swaplab_stale::maps::file_mappings(pid)?;
        if maps.iter().any(|m| m.path == want) {
            return Ok(());
        }
        let mut seen: Vec<String> = maps.iter().map(|m| m.path.display().to_string()).collect();
        seen.dedup();
        anyhow::bail!(
            "process {pid} of the {} column does not map its loader {} (maps: {})",
            self.name,
            want.display(),
            seen.join(", ")
        )
    }

    /// Where this column's build of variant `v` is.
    pub fn variant(&self, v: Variant) -> PathBuf {
        self.variants.join(v.name()).join("libexample.so")
    }
}

fn host_libc_version() -> String {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: returns a pointer to a static string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        v.to_string_lossy().into_owned()
    }
    #[cfg(not(target_env = "gnu"))]
    {
        host_loader()
            .and_then(|l| musl_version(Path::new(&l)))
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The loader mapped into this very process (`ld-linux…`, `ld-musl…`; on
/// musl the loader is libc itself).
pub fn host_loader() -> Option<String> {
    let me = nix::unistd::getpid().as_raw();
    let maps = swaplab_stale::maps::file_mappings(me).ok()?;
    let named = |prefix: &str| {
        maps.iter().map(|m| &m.path).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
    };
    named("ld-")
        .or_else(|| named("libc.musl"))
        .or_else(|| named("libc.so"))
        .map(|p| p.display().to_string())
}

/// What `program ARGS` prints on stdout and stderr, run with nothing
/// inherited but `LC_ALL=C`.
fn output_of(program: &Path, args: &[&str]) -> Option<(String, String)> {
    let out = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some((text(&out.stdout), text(&out.stderr)))
}

/// musl's loader, run as a command, prints its version (`Version 1.2.3`).
fn musl_version(loader: &Path) -> Option<String> {
    let (_, err) = output_of(loader, &[])?;
    err.lines()
        .find_map(|l| l.strip_prefix("Version "))
        .map(|v| v.trim().to_string())
}

/// The running glibc's own answer: a C twin run with `--libc` prints
/// `libc pid=N: glibc 2.31` (gnu_get_libc_version). Asking the loader
/// (`ld.so --version`) works only from glibc 2.33 on.
fn glibc_version(targets: &Path) -> Option<String> {
    let (out, _) = output_of(&targets.join(Program::Dlopen.file_name()), &["--libc"])?;
    out.lines()
        .find_map(|l| l.split_once(": glibc "))
        .map(|(_, v)| v.trim().to_string())
}

/// `PRETTY_NAME` from os-release (of the root at `root`, `/` for the host).
pub fn os_name_in(root: &std::path::Path) -> String {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown Linux".into())
}

/// The host's `PRETTY_NAME`.
pub fn os_name() -> String {
    os_name_in(std::path::Path::new("/"))
}
