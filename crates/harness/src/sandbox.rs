//! A private folder per experiment: `lib/` (what the targets load), `bin/`
//! (the targets), `build/` (the library variants, as `make` left them) and
//! `run/` (pid files, sockets). Nothing is written outside it. Removed when
//! dropped, unless `SWAPLAB_KEEP=1`, which keeps it and prints its path.
//!
//! A process killed before its drops run (SIGKILL, or SIGINT/SIGTERM to a
//! test binary, which has no handler) cannot remove its folders. So the
//! owner of every folder holds a lock on the folder's `.owner` file for as
//! long as it lives (`flock`: the kernel drops it when the process dies,
//! however it dies, and whichever pid namespace looks), and the first folder
//! a process makes sweeps away every folder of the same user whose lock is
//! free. The name says whose it was, for people: `swaplab-LABEL-PID_START-
//! XXXXXX`, with the pid and the kernel's start time of the owner.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

use crate::process::Program;
use crate::runtime::Runtime;
use crate::variants::Variant;
use swaplab_protocol::sentinel::OWNER_LOCK;
use swaplab_stale::mounts::mounted_under;

/// Sandboxes alive now, for [`remove_all`].
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every sandbox still alive (Ctrl-C in the CLI; the targets must be
/// killed first). Other threads may still be writing into a sandbox (a
/// replacement loop), so removal is retried until the folder is gone; once it
/// is, their writes fail. A folder that a process killed just before still
/// mounts over (`matrix --fs`) is removed once its mounts are gone (see
/// [`wait_unmounted`]).
pub fn remove_all() {
    for dir in live().drain(..) {
        if wait_unmounted(&dir, UNMOUNT_LIMIT).is_err() {
            continue;
        }
        for _ in 0..100 {
            let _ = fs::remove_dir_all(&dir);
            if !dir.exists() {
                break;
            }
        }
    }
}

pub use swaplab_protocol::sentinel::UNMOUNT_LIMIT;

/// Waits up to `limit` until no mount namespace has a mount at or under
/// `dir`; fails naming a process of one that still has. A folder must not
/// be removed before: removing a mount point from another namespace
/// detaches its mounts lazily, and a loop device mounted under them then
/// stays attached for good, with no mount left to undo (measured on 6.18).
pub fn wait_unmounted(dir: &Path, limit: std::time::Duration) -> Result<()> {
    crate::process::poll_until(
        limit,
        std::time::Duration::from_millis(20),
        || match mounted_under(dir).first() {
            None => Ok(()),
            Some(pid) => Err(anyhow::anyhow!(
                "process {pid} still mounts something under {} after {limit:?}",
                dir.display()
            )),
        },
    )
}

/// The owner tag of this process, for people: `PID_START`, START being its
/// start time in clock ticks after boot (0 where `/proc` cannot tell).
fn owner_tag() -> String {
    let start = procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .map_or(0, |s| s.starttime);
    format!("{}_{start}", std::process::id())
}

/// Whether nobody holds the lock on `dir`'s owner file: its owner is gone.
/// A folder with no owner file yet (being made) is not taken for gone.
fn owner_gone(dir: &Path) -> bool {
    match fs::File::open(dir.join(OWNER_LOCK)) {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
        // No owner file: being made (it comes within microseconds), or
        // left half removed by an owner killed while it removed it. The
        // name's tag tells them apart where it can: its owner is gone if
        // no live process has that pid and start time, and in any case
        // once the folder is a minute old.
        Err(_) => {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            let tagged = name
                .as_deref()
                .and_then(owner_in)
                .map(|(_, t)| t.to_string());
            let old = fs::metadata(dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() >= 60));
            old || tagged.is_some_and(|t| !tag_alive(&t))
        }
    }
}

/// Whether the process a tag `PID_START` names is alive in this pid
/// namespace.
fn tag_alive(tag: &str) -> bool {
    let Some((pid, start)) = tag.split_once('_') else {
        return true;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return true;
    };
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|st| st.starttime.to_string() == start)
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
/// holds its lock, that another user owns, or whose name carries no owner
/// tag, stays.
pub fn sweep(tmp: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if owner_in(&name.to_string_lossy()).is_none() {
            continue;
        }
        let mine = e
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == me && !m.file_type().is_symlink());
        // Not while another mount namespace mounts over it: its owner's
        // `matrix --fs` column may still be dying (see wait_unmounted).
        if mine
            && owner_gone(&e.path())
            && mounted_under(&e.path()).is_empty()
            && fs::remove_dir_all(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A folder in the temp folder that this process owns (see the module's
/// doc): removed when dropped, swept by a later run if this process dies
/// first.
pub struct Scratch {
    /// `None` once kept.
    dir: Option<TempDir>,
    _owner: Flock<fs::File>,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("a kept folder is no longer used")
            .path()
    }

    /// Keeps the folder for a person to look into: it loses its lock and
    /// its owner tag (`swaplab-LABEL-kept-XXXXXX`), so no sweep takes it.
    /// Returns where it is.
    pub fn keep(mut self) -> PathBuf {
        let kept = self.dir.take().expect("kept once").keep();
        live().retain(|d| d != &kept);
        kept_name(&kept)
            .and_then(|k| fs::rename(&kept, &k).ok().map(|_| k))
            .unwrap_or(kept)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Everything but the owner file first: a folder half removed when
        // this process is killed still has its owner file, whose lock the
        // kernel then frees, and a later sweep finishes the job.
        let Some(dir) = &self.dir else { return };
        live().retain(|d| d != dir.path());
        // Not while a mount namespace still mounts under it (a process in
        // one may still be dying): see wait_unmounted. Left to a later
        // sweep if it does not go.
        if wait_unmounted(dir.path(), UNMOUNT_LIMIT).is_err() {
            return;
        }
        for e in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if e.file_name() == OWNER_LOCK {
                continue;
            }
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(e.path()),
                _ => fs::remove_file(e.path()),
            };
        }
    }
}

/// A new folder `swaplab-LABEL-PID_START-XXXXXX` in the temp folder, owned
/// by this process. The first call of a process sweeps away the folders of
/// owners that are gone.
pub fn scratch(label: &str) -> Result<Scratch> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = std::env::temp_dir();
    SWEPT.call_once(|| {
        sweep(&tmp);
    });
    let dir = tempfile::Builder::new()
        .prefix(&format!("swaplab-{label}-{}-", owner_tag()))
        .tempdir_in(&tmp)
        .with_context(|| {
            format!(
                "cannot create a folder in the temp folder {}",
                tmp.display()
            )
        })?;
    // Locked under another name, then renamed: a sweep never sees an owner
    // file that nobody holds yet.
    let new = dir.path().join(".owner.new");
    let file = fs::File::create(&new).context("cannot create the owner file")?;
    let owner = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("cannot lock the owner file")?;
    fs::rename(&new, dir.path().join(OWNER_LOCK))?;
    // Ctrl-C removes it too (remove_all), not only a later sweep.
    live().push(dir.path().to_path_buf());
    Ok(Scratch {
        dir: Some(dir),
        _owner: owner,
    })
}

pub struct Sandbox {
    dir: Option<Scratch>,
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

    /// Puts a copy of a target program in `bin/` and returns its path. A
    /// copy, not a hard link to the build output: every link made or
    /// removed moves the ctime of the inode all links share, and `swaplab
    /// stale` reads a ctime moved after a process started as a change.
    /// Another sandbox's link would change what this one shows.
    pub fn program(&self, p: Program) -> Result<PathBuf> {
        let dst = self.bin_dir().join(p.file_name());
        if !dst.exists() {
            let src = self.built(p)?;
            fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {} to the sandbox", src.display()))?;
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
                eprintln!("swaplab: sandbox kept at {}", dir.keep().display());
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
        let made = |name: &str, locked: bool| {
            let d = tmp.path().join(name);
            fs::create_dir_all(d.join("lib")).unwrap();
            let f = fs::File::create(d.join(OWNER_LOCK)).unwrap();
            let lock = locked.then(|| Flock::lock(f, FlockArg::LockExclusive).unwrap());
            (d, lock)
        };
        // Its lock free: the owner is gone (killed, its lock dropped).
        let (gone, _) = made("swaplab-x-1_2-aaaaaa", false);
        // Its lock held: the owner runs (here, this test).
        let (alive, _held) = made("swaplab-x-3_4-bbbbbb", true);
        // No owner tag in the name: not ours to judge.
        let (untagged, _) = made("swaplab-x-cccccc", false);
        // Being made by a live process (this one): no owner file yet.
        let young = tmp.path().join(format!("swaplab-x-{}-dddddd", owner_tag()));
        fs::create_dir_all(&young).unwrap();
        // Half removed by an owner that was killed meanwhile: no owner
        // file, and no live process has its tag (pid 1 never started late).
        let half = tmp.path().join("swaplab-x-1_999999999-eeeeee");
        fs::create_dir_all(half.join("bin")).unwrap();
        assert_eq!(sweep(tmp.path()), 2);
        assert!(!gone.exists() && !half.exists());
        assert!(alive.exists() && untagged.exists() && young.exists());
    }

    #[test]
    fn a_scratch_folder_is_locked_while_it_lives_and_kept_ones_lose_their_tag() {
        let s = scratch("unit").unwrap();
        assert!(!owner_gone(s.path()), "a live owner's folder looks gone");
        let kept = s.keep();
        assert!(kept
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains("-kept-"));
        assert!(owner_in(&kept.file_name().unwrap().to_string_lossy()).is_none());
        fs::remove_dir_all(kept).unwrap();
    }
}
