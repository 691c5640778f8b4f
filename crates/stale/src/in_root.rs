//! A name as a process in another root knows it, reached from that root.
//!
//! `/proc/PID/root/NAME` walks into the process's root, but a symbolic link
//! met on the way that holds an absolute path is followed from the
//! scanner's own root: in a container, `/usr/bin/tool` linked to
//! `/etc/alternatives/tool` would name the host's file. `openat2` with
//! `RESOLVE_IN_ROOT` (Linux 5.6) follows every link inside the root, as the
//! process itself does; the file it opens is then read through
//! `/proc/self/fd/N` for as long as the [`Reached`] lives.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the scanner finds a name: the name itself, or the file opened
/// inside a process's root.
#[derive(Debug)]
pub struct Reached {
    /// Held open while [`Reached::path`] is in use.
    fd: Option<OwnedFd>,
    path: PathBuf,
}

impl Reached {
    /// A name the scanner reaches as it is (its own root).
    pub fn as_is(path: &Path) -> Reached {
        Reached {
            fd: None,
            path: path.to_path_buf(),
        }
    }

    /// The path to stat or open: valid while `self` lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the name was opened inside a root (else it is itself).
    pub fn opened(&self) -> bool {
        self.fd.is_some()
    }
}

/// `name` (absolute, as the process names it) reached from `root`, the
/// process's root directory (`/proc/PID/root`). The error is the lookup's:
/// `NotFound` when nothing is at the name in that root. On a kernel
/// without `openat2`, the name under `root` as before (links with an
/// absolute path then lead out of it).
pub fn reach(root: &Path, name: &Path) -> std::io::Result<Reached> {
    use rustix::fs::{open, openat2, Mode, OFlags, ResolveFlags};
    let rel = name.strip_prefix("/").unwrap_or(name);
    let dir = open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel_or_dot = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    match openat2(
        &dir,
        rel_or_dot,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(fd) => Ok(Reached {
            path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            fd: Some(fd),
        }),
        Err(rustix::io::Errno::NOSYS) => Ok(Reached::as_is(&root.join(rel))),
        Err(e) => Err(e.into()),
    }
}

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
        let r = reach(&root, Path::new("/tool")).unwrap();
        assert!(r.opened());
        assert_eq!(std::fs::read(r.path()).unwrap(), b"inside");
        // From the scanner's root the link leads to nothing.
        assert!(std::fs::metadata(root.join("tool")).is_err());
        let gone = reach(&root, Path::new("/nothing")).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
        // `..` stays in the root, as it does for the process.
        let up = reach(&root, Path::new("/../../tool")).unwrap();
        assert_eq!(std::fs::read(up.path()).unwrap(), b"inside");
    }
}
