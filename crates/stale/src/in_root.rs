//! A name as a process in another root knows it, reached from that root.
//!
//! `/proc/PID/root/NAME` walks into the process's root, but a symbolic link
//! met on the way that holds an absolute path is followed from the
//! scanner's own root: in a container, `/usr/bin/tool` linked to
//! `/etc/alternatives/tool` would name the host's file. `openat2` with
//! `RESOLVE_IN_ROOT` (Linux 5.6) follows every link inside the root, as the
//! process itself does; the file it opens is then read through
//! `/proc/self/fd/N` for as long as the [`Reached`] lives.

use std::cell::OnceCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the scanner finds a name: the name itself, or the file opened
/// inside a process's root.
#[derive(Debug)]
pub struct Reached {
    /// Held open while [`Reached::path`] is in use.
    fd: Option<OwnedFd>,
    path: PathBuf,
    shown: PathBuf,
}

impl Reached {
    /// A name the scanner reaches as it is.
    pub fn as_is(path: &Path) -> Reached {
        Reached {
            fd: None,
            path: path.to_path_buf(),
            shown: path.to_path_buf(),
        }
    }

    /// The path to stat or open: valid while `self` lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name to show a reader: under `/proc/PID/root`, never the
    /// descriptor's.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Whether the name was opened inside the root (else it is itself).
    pub fn opened(&self) -> bool {
        self.fd.is_some()
    }
}

/// A process's root directory (`/proc/PID/root`), opened when first used
/// and kept for every name looked up in it.
pub struct Root {
    path: PathBuf,
    /// The directory, or the errno that opening it gave.
    dir: OnceCell<Result<OwnedFd, i32>>,
}

impl Root {
    pub fn new(path: PathBuf) -> Root {
        Root {
            path,
            dir: OnceCell::new(),
        }
    }

    /// `name` (absolute, as the process names it) reached inside this root.
    /// The error is the lookup's: `NotFound` when nothing is at the name
    /// there. Where the kernel cannot resolve inside a root (no `openat2`
    /// before Linux 5.6, a seccomp filter that forbids it, a magic link on
    /// the way, which `RESOLVE_IN_ROOT` refuses), the name under the root
    /// as before: links with an absolute path then lead out of it.
    pub fn reach(&self, name: &Path) -> std::io::Result<Reached> {
        use rustix::fs::{open, openat2, Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        let rel = name.strip_prefix("/").unwrap_or(name);
        let shown = self.path.join(rel);
        let dir = self.dir.get_or_init(|| {
            open(
                &self.path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| e.raw_os_error())
        });
        let dir = dir
            .as_ref()
            .map_err(|&e| std::io::Error::from_raw_os_error(e))?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        // EAGAIN: a rename or mount raced the walk through `..`.
        let mut tries = 0;
        let found = loop {
            let r = openat2(
                dir,
                rel,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            );
            tries += 1;
            match r {
                Err(Errno::AGAIN) if tries < 5 => continue,
                r => break r,
            }
        };
        match found {
            Ok(fd) => Ok(Reached {
                path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
                fd: Some(fd),
                shown,
            }),
            Err(Errno::NOSYS | Errno::PERM | Errno::LOOP | Errno::AGAIN) => {
                Ok(Reached::as_is(&shown))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What a test that needs `RESOLVE_IN_ROOT` says when it skips.
#[cfg(test)]
pub(crate) const SKIP_WITHOUT_OPENAT2: &str =
    "skipped: this kernel cannot resolve a name inside a root (openat2, Linux 5.6)";

#[cfg(test)]
mod tests {
    use super::*;

    /// A link holding an absolute path leads to the file under the root,
    /// not to the file of that path outside it.
    #[test]
    fn an_absolute_link_is_followed_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        // A folder name no other root holds (the temporary folder's own).
        let alt = Path::new("/").join(dir.path().file_name().unwrap());
        let inside = root.join(alt.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("tool"), b"inside").unwrap();
        std::os::unix::fs::symlink(alt.join("tool"), root.join("tool")).unwrap();
        let root = Root::new(root);
        let r = root.reach(Path::new("/tool")).unwrap();
        if !r.opened() {
            eprintln!("{SKIP_WITHOUT_OPENAT2}");
            return;
        }
        assert_eq!(std::fs::read(r.path()).unwrap(), b"inside");
        assert_eq!(r.shown(), dir.path().join("root/tool"));
        // From the scanner's root the link leads to nothing.
        assert!(std::fs::metadata(r.shown()).is_err());
        let gone = root.reach(Path::new("/nothing")).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
        // `..` stays in the root, as it does for the process.
        let up = root.reach(Path::new("/../../tool")).unwrap();
        assert_eq!(std::fs::read(up.path()).unwrap(), b"inside");
    }
}
