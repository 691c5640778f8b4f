//! A private folder per experiment: `lib/` (what the targets load), `bin/`
//! (the targets), `build/` (the library variants, as `make` left them) and
//! `run/` (pid files, sockets). Nothing is written outside it. Removed when
//! dropped, unless `SWAPLAB_KEEP=1`, which keeps it and prints its path.
//!
//! A process killed before its drops run (SIGKILL, or SIGINT/SIGTERM to a
//! test binary, which has no handler) cannot remove its folders. So every
//! folder is named after its owner (`swaplab-LABEL-PID_START-XXXXXX`: the pid
//! and the kernel's start time of the process, which together never name
//! another process), and the first folder a process makes sweeps away every
//! folder of the same user whose owner is gone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::process::Program;
use crate::runtime::Runtime;
use crate::variants::Variant;

/// Sandboxes alive now, for [`remove_all`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every sandbox still alive (Ctrl-C in the CLI; the targets must be
/// killed first). Other threads may still be writing into a sandbox (a
/// replacement loop), so removal is retried until the folder is gone; once it
/// is, their writes fail.
pub fn remove_all() {
    for dir in live().drain(..) {
        for _ in 0..100 {
            let _ = fs::remove_dir_all(&dir);
            if !dir.exists() {
                break;
            }
        }
    }
}

/// The owner tag of this process: `PID_START`, START being the process's
/// start time in clock ticks after boot (field 22 of `/proc/PID/stat`).
fn owner_tag(pid: i32) -> Option<String> {
    let start = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .ok()?
        .starttime;
    Some(format!("{pid}_{start}"))
}

/// The owner tag in a folder name `swaplab-LABEL-PID_START-XXXXXX`.
fn owner_in(name: &str) -> Option<(i32, &str)> {
    let rest = name.strip_prefix("swaplab-")?;
    let (rest, _random) = rest.rsplit_once('-')?;
    let tag = rest.rsplit('-').next()?;
    let (pid, start) = tag.split_once('_')?;
    let ok = !start.is_empty() && start.bytes().all(|b| b.is_ascii_digit());
    Some((pid.parse().ok()?, tag)).filter(|_| ok)
}

/// `swaplab-LABEL-kept-XXXXXX` for `swaplab-LABEL-PID_START-XXXXXX`: the
/// name of a sandbox kept for a person to look into, which no sweep removes.
fn kept_name(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_str()?;
    let (_, tag) = owner_in(name)?;
    Some(dir.with_file_name(name.replacen(&format!("-{tag}-"), "-kept-", 1)))
}

/// Removes the folders under `tmp` that this user's swaplab processes made
/// and that outlived them; returns how many. A folder whose owner still
/// runs, that another user owns, or whose name carries no owner, stays.
pub fn sweep(tmp: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, tag)) = owner_in(&name.to_string_lossy()).map(|(p, t)| (p, t.to_string()))
        else {
            continue;
        };
        let mine = e
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == me && !m.file_type().is_symlink());
        if mine
            && owner_tag(pid).as_deref() != Some(tag.as_str())
            && fs::remove_dir_all(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A new folder `swaplab-LABEL-PID_START-XXXXXX` in the temp folder, owned
/// by this process (see the module's doc). The first call of a process
/// sweeps away the folders of owners that are gone.
pub fn scratch(label: &str) -> Result<TempDir> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = std::env::temp_dir();
    SWEPT.call_once(|| {
        sweep(&tmp);
    });
    let me = std::process::id() as i32;
    let tag = owner_tag(me).context("cannot read this process's start time in /proc")?;
    tempfile::Builder::new()
        .prefix(&format!("swaplab-{label}-{tag}-"))
        .tempdir_in(&tmp)
        .with_context(|| {
            format!(
                "cannot create a folder in the temp folder {}",
                tmp.display()
            )
        })
}

pub struct Sandbox {
    dir: Option<TempDir>,
    root: PathBuf,
    /// Where the programs and library variants come from.
    runtime: Runtime,
}

impl Sandbox {
    /// A new sandbox under the temp folder, named after its owner (see
    /// [`scratch`]),
    /// for swaplab's own targets on the host's C library.
    pub fn new(label: &str) -> Result<Sandbox> {
        Sandbox::on(label, Runtime::host())
    }

    /// A new sandbox whose programs and libraries come from `runtime`.
    pub fn on(label: &str, runtime: Runtime) -> Result<Sandbox> {
        let dir = scratch(label)?;
        // Maps and /proc/PID/exe show canonical paths: use the same here.
        let root = fs::canonicalize(dir.path())?;
        for sub in ["lib", "bin", "build", "run"] {
            fs::create_dir(root.join(sub))?;
        }
        live().push(root.clone());
        Ok(Sandbox {
            dir: Some(dir),
            root,
            runtime,
        })
    }

    /// The C library (and builds) under this sandbox's targets.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `lib/`: on the targets' LD_LIBRARY_PATH.
    pub fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }

    /// `lib/libexample.so`: the file the experiments replace.
    pub fn lib_file(&self) -> PathBuf {
        self.lib_dir().join("libexample.so")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// A path relative to the sandbox, as transcripts show it.
    pub fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    }

    /// Copies a library variant into `build/` (once) and returns its path.
    pub fn stage(&self, v: Variant) -> Result<PathBuf> {
        let dst = self.root.join("build").join(v.file_name());
        if !dst.exists() {
            let src = self.runtime.variant(v);
            fs::copy(&src, &dst).with_context(|| {
                format!(
                    "cannot copy {} (was the crate built by cargo?)",
                    src.display()
                )
            })?;
        }
        Ok(dst)
    }

    /// Where the runtime's build of program `p` is.
    pub fn built(&self, p: Program) -> Result<PathBuf> {
        if !self.runtime.has(p) {
            anyhow::bail!(
                "the {} column has no {} (its targets are the C twins)",
                self.runtime.name,
                p.file_name()
            );
        }
        Ok(self.runtime.targets()?.join(p.file_name()))
    }

    /// Puts a target program in `bin/` (a hard link to the build output,
    /// or a copy where linking is not possible) and returns its path.
    pub fn program(&self, p: Program) -> Result<PathBuf> {
        let dst = self.bin_dir().join(p.file_name());
        if !dst.exists() {
            let src = self.built(p)?;
            if fs::hard_link(&src, &dst).is_err() {
                fs::copy(&src, &dst)
                    .with_context(|| format!("cannot copy {} to the sandbox", src.display()))?;
            }
        }
        Ok(dst)
    }

    /// Copies a target program into `build/` (once), as the upgrade that
    /// an experiment installs over `bin/`; returns its path.
    pub fn stage_program(&self, p: Program) -> Result<PathBuf> {
        let dst = self.root.join("build").join(p.file_name());
        if !dst.exists() {
            let src = self.built(p)?;
            fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {} to the sandbox", src.display()))?;
        }
        Ok(dst)
    }

    /// Copies any file into `build/` under `name` (once); returns its path.
    pub fn stage_file(&self, src: &Path, name: &str) -> Result<PathBuf> {
        let dst = self.root.join("build").join(name);
        if !dst.exists() {
            fs::copy(src, &dst)
                .with_context(|| format!("cannot copy {} to the sandbox", src.display()))?;
        }
        Ok(dst)
    }

    /// Opens the sandbox to other users (for experiments that run a target
    /// as an unprivileged user): the folders become 0755.
    pub fn open_to_all(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.lib_dir(),
            self.bin_dir(),
            self.run_dir(),
        ] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        live().retain(|d| d != &self.root);
        if std::env::var_os("SWAPLAB_KEEP").is_some_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                // Without its owner tag, no later run's sweep takes it.
                let shown = kept_name(&kept)
                    .and_then(|k| fs::rename(&kept, &k).ok().map(|_| k))
                    .unwrap_or(kept);
                eprintln!("swaplab: sandbox kept at {}", shown.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_read_from_the_folder_name() {
        assert_eq!(
            owner_in("swaplab-l04-123_4567-AbC9xZ"),
            Some((123, "123_4567"))
        );
        assert_eq!(
            owner_in("swaplab-bench-stale-9_10-zzzzzz"),
            Some((9, "9_10"))
        );
        assert_eq!(owner_in("swaplab-l04-AbC9xZ"), None);
        let kept = kept_name(Path::new("/tmp/swaplab-l04-123_4567-AbC9xZ")).unwrap();
        assert_eq!(kept, Path::new("/tmp/swaplab-l04-kept-AbC9xZ"));
        assert_eq!(owner_in("swaplab-l04-kept-AbC9xZ"), None);
        assert_eq!(owner_in("swaplab-bars"), None);
        assert_eq!(owner_in("other-1_2-abcdef"), None);
    }

    #[test]
    fn a_sweep_removes_only_folders_whose_owner_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let me = owner_tag(std::process::id() as i32).unwrap();
        let pid = std::process::id();
        // Same pid, another start time: a process that is gone.
        let gone = tmp.path().join(format!("swaplab-x-{pid}_1-aaaaaa"));
        let alive = tmp.path().join(format!("swaplab-x-{me}-bbbbbb"));
        let untagged = tmp.path().join("swaplab-x-cccccc");
        for d in [&gone, &alive, &untagged] {
            fs::create_dir_all(d.join("lib")).unwrap();
        }
        assert_eq!(sweep(tmp.path()), 1);
        assert!(!gone.exists());
        assert!(alive.exists() && untagged.exists());
    }
}
