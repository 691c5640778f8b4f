//! Whether a path still holds the file a process maps, from the kernel's
//! facts on each filesystem.
//!
//! `/proc/PID/maps` names a file by its superblock's device and its inode;
//! `stat` by the device the filesystem reports. Mostly the two are the
//! same. They are not on btrfs, where `stat` gives each volume and
//! subvolume an anonymous device of its own (measured on 6.18: maps
//! `00:29`, `stat` `00:2a` on the volume and `00:2b` on a subvolume, and
//! inode 257 in both), nor on overlayfs before Linux 6.8, where maps shows
//! the real file's device and inode, not the overlay's. So the identity is
//! asked, in this order, of:
//! 1. `stat`, when it names the device maps names: the inode decides;
//! 2. the mapped file itself through `/proc/PID/map_files` (root only),
//!    whose `stat` is compared with the path's: exact everywhere;
//! 3. the path's mount (`statx`'s mount id, looked up in the process's
//!    `mountinfo`), when its superblock device is the one maps names and
//!    the path lies in the subvolume the mount shows: the inode decides
//!    (btrfs; a nested subvolume tells nothing, since inode numbers repeat
//!    across subvolumes);
//! 4. an overlay's layers (its `upperdir` and `lowerdir` options): the
//!    first layer holding the path is the file the overlay shows.
//!
//! Where none of them tells, the file is not judged (`no-identity`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::mounts::Mounts;
use crate::report::{FileId, Identity};

/// A file's facts, as `statx` gives them.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    pub id: FileId,
    /// The mount it was found on (Linux 5.8+).
    pub mount: Option<u64>,
    pub size: u64,
    /// Its links (names) now.
    pub nlink: u32,
    pub ctime_ns: i128,
    /// When the content was last written.
    pub mtime_ns: i128,
    pub btime_ns: Option<i128>,
}

fn ns(t: rustix::fs::StatxTimestamp) -> i128 {
    t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
}

/// `statx` of `path`, following links.
pub fn facts(path: &Path) -> std::io::Result<Facts> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let want = StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::MNT_ID;
    let s = statx(CWD, path, AtFlags::empty(), want)?;
    let got = StatxFlags::from_bits_retain(s.stx_mask);
    Ok(Facts {
        id: FileId {
            major: s.stx_dev_major,
            minor: s.stx_dev_minor,
            inode: s.stx_ino,
        },
        mount: got.contains(StatxFlags::MNT_ID).then_some(s.stx_mnt_id),
        size: s.stx_size,
        nlink: s.stx_nlink,
        ctime_ns: ns(s.stx_ctime),
        mtime_ns: ns(s.stx_mtime),
        btime_ns: got.contains(StatxFlags::BTIME).then(|| ns(s.stx_btime)),
    })
}

/// What an identity said of a path and a mapped file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// The path holds the mapped file.
    Same(Identity),
    /// The path holds another file.
    Other(Identity),
    /// Nothing here tells.
    Unknown,
}

/// Where to look, for one path of one process.
pub struct Ask<'a> {
    pub mapped: FileId,
    /// The path's facts, as the scanner reached it.
    pub path: &'a Facts,
    /// The path as the process names it (for an overlay's layers).
    pub named: &'a Path,
    /// The mounts of the process's namespace (read when first asked for:
    /// most files are settled by `stat` alone).
    pub mounts: &'a dyn Fn() -> Arc<Mounts>,
    /// `/proc/PID/map_files/START-END` of one of the file's mappings.
    pub map_file: &'a dyn Fn() -> PathBuf,
    /// The facts of a path the process names, looked up as the process
    /// sees it: itself, or inside its root (see [`crate::in_root`]).
    pub stat: &'a dyn Fn(&Path) -> std::io::Result<Facts>,
}

/// Whether the path holds the mapped file (see the module's text).
pub fn holds(a: &Ask) -> Holds {
    let inode = |same: bool, how| {
        if same {
            Holds::Same(how)
        } else {
            Holds::Other(how)
        }
    };
    let m = a.mapped;
    let dev = |id: FileId| (id.major, id.minor);
    if dev(a.path.id) == dev(m) {
        return inode(a.path.id.inode == m.inode, Identity::Stat);
    }
    if let Ok(mapped) = facts(&(a.map_file)()) {
        return inode(mapped.id == a.path.id, Identity::MapFiles);
    }
    let mounts = (a.mounts)();
    let mount = a.path.mount.and_then(|id| mounts.get(id));
    if let Some(mount) = mount.filter(|mount| mount.dev == dev(m)) {
        // btrfs numbers inodes per subvolume: the inode decides only for
        // a path in the subvolume the mount shows (the same device as its
        // mount point), where a new file gets a new number. A path in a
        // nested subvolume may name another subvolume's file of the same
        // number (a snapshot swapped in).
        let point = (a.stat)(&mount.point).map(|f| dev(f.id));
        return match point {
            Ok(d) if d == dev(a.path.id) => inode(a.path.id.inode == m.inode, Identity::Mountinfo),
            _ => Holds::Unknown,
        };
    }
    let Some(mount) = mount.filter(|mount| !mount.layers.is_empty()) else {
        return Holds::Unknown;
    };
    let Ok(rel) = a.named.strip_prefix(&mount.point) else {
        return Holds::Unknown;
    };
    for layer in &mount.layers {
        match (a.stat)(&layer.join(rel)) {
            Ok(f) => return inode(f.id == m, Identity::OverlayLayer),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return Holds::Unknown,
        }
    }
    Holds::Unknown
}

/// Where a file maps names as `printed` is seen, when that name is
/// relative to a layer of an overlay: the kernel names a file mapped
/// through an overlay whose lower layer is itself an overlay from the
/// layer's private mount, so `/lib.so` stands for `LAYER/lib.so`. The
/// overlay one of whose layers holds `mapped` at that name gives the
/// path under its mount point, and whether that path still shows it
/// (no layer above holds the name); `stat` looks a path up as the
/// process sees it.
pub fn through_layer(
    mounts: &Mounts,
    printed: &Path,
    mapped: FileId,
    stat: &dyn Fn(&Path) -> std::io::Result<Facts>,
) -> Option<(PathBuf, Holds)> {
    let rel = printed.strip_prefix("/").ok()?;
    mounts.all().find_map(|m| {
        let held: Vec<FileId> = m
            .layers
            .iter()
            .filter_map(|layer| stat(&layer.join(rel)).ok().map(|f| f.id))
            .collect();
        let at = held.iter().position(|id| *id == mapped)?;
        let holds = if at == 0 {
            Holds::Same(Identity::OverlayLayer)
        } else {
            Holds::Other(Identity::OverlayLayer)
        };
        Some((m.point.join(rel), holds))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_a_file_name_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"x").unwrap();
        let got = facts(&f).unwrap();
        assert_eq!(got.size, 1);
        let mounts = Mounts::of(Path::new("/proc/self"));
        let mount = got.mount.and_then(|id| mounts.get(id));
        assert!(mount.is_some(), "mount {:?} not in mountinfo", got.mount);
    }
}
