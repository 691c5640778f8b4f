//! Which dpkg list files may name a path, without reading them all: an
//! index of every listed path's hash to the list files that hold it, kept
//! in swaplab's cache and rebuilt when dpkg changes its database.
//!
//! dpkg keeps no index of its own: `dpkg -S` reads every `info/*.list`
//! (about 2,800 files and 7 MB on a desktop), some 16 ms each time here,
//! which alone would make `swaplab stale` slower than `grep` over every
//! process's maps. The index is a sorted array of 64-bit FNV-1a hashes,
//! read in one call; a hash only proposes a list file, and the caller
//! confirms the path in that file, so a collision can cost a read but
//! never gives a wrong owner.
//!
//! It is rebuilt when the `info` folder's or the `status` file's
//! modification time changes (dpkg writes both, by rename, on every
//! install, upgrade and removal). The machine's own database's index is
//! kept in `/var/cache/swaplab/dpkg/host.idx` for root,
//! `$XDG_CACHE_HOME/swaplab/dpkg/host.idx` (or under `~/.cache`) for
//! others (a chroot's or container's is built for the one scan), and read only when it belongs to the user reading it and
//! nobody else may write it; where it cannot be written, it is built in
//! memory for the one scan.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::regular;

const MAGIC: &[u8; 8] = b"SWLDPKG1";

/// FNV-1a, 64 bits: stable across builds and versions of Rust, unlike
/// std's hasher, so a cache written by one build reads in the next.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The index of one dpkg database.
pub struct Index {
    /// The list files' names (`libc6:amd64`), by number.
    pub lists: Vec<String>,
    /// `(hash of a listed path, list number)`, sorted.
    entries: Vec<(u64, u32)>,
}

impl Index {
    /// The list files that may hold `path` (by its hash).
    pub fn candidates(&self, path: &[u8]) -> impl Iterator<Item = &str> {
        let h = hash(path);
        let from = self.entries.partition_point(|e| e.0 < h);
        self.entries[from..]
            .iter()
            .take_while(move |e| e.0 == h)
            .map(|e| self.lists[e.1 as usize].as_str())
    }
}

/// The modification times (ns) that say whether an index is current.
fn stamp(admin: &Path) -> Option<(i128, i128)> {
    let ns = |m: fs::Metadata| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    Some((
        ns(fs::metadata(admin.join("info")).ok()?),
        ns(fs::metadata(admin.join("status")).ok()?),
    ))
}

/// The index of the database at `admin` (`…/var/lib/dpkg`): from the cache
/// when current, else built from the list files (and cached where it can
/// be). `None` when there is no database.
pub fn load(admin: &Path) -> Option<Index> {
    let stamp = stamp(admin)?;
    let cached = cache_file(admin);
    if let Some(index) = cached.as_deref().and_then(|f| read(f, stamp)) {
        return Some(index);
    }
    let index = build(admin)?;
    if let Some(file) = cached {
        // A cache that cannot be written costs the next scan a rebuild,
        // nothing more.
        let _ = write(&file, stamp, &index);
    }
    Some(index)
}

/// Where the index of `admin` is cached, if it is the machine's.
fn cache_file(admin: &Path) -> Option<PathBuf> {
    let base = crate::cache_dir::swaplab_cache()?;
    // Only the machine's own database is kept: it is the large one, and a
    // chroot's or a test's would leave a file behind for every folder. The
    // name as given, not resolved: a container's, reached through
    // /proc/PID/root, resolves to the same text.
    (admin == Path::new("/var/lib/dpkg")).then(|| base.join("dpkg/host.idx"))
}

/// Reads every list file of the database.
fn build(admin: &Path) -> Option<Index> {
    let entries = fs::read_dir(admin.join("info")).ok()?;
    let mut index = Index {
        lists: Vec::new(),
        entries: Vec::new(),
    };
    let mut text = Vec::with_capacity(64 * 1024);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".list")) else {
            continue;
        };
        text.clear();
        if regular::open(&entry.path())
            .and_then(|f| f.take(64 << 20).read_to_end(&mut text))
            .is_err()
        {
            continue;
        }
        let number = index.lists.len() as u32;
        index.lists.push(stem.to_string());
        index.entries.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| (hash(l), number)),
        );
    }
    index.entries.sort_unstable();
    index.entries.dedup();
    Some(index)
}

/// The cached index, if it is current (`stamp`) and only its reader may
/// have written it: root must not trust a file a user could change.
fn read(file: &Path, stamp: (i128, i128)) -> Option<Index> {
    let mut opened = regular::open(file).ok()?;
    let me = nix::unistd::geteuid().as_raw();
    let folder = fs::metadata(file.parent()?).ok()?;
    let meta = opened.metadata().ok()?;
    let foreign = |m: &fs::Metadata| m.uid() != me || m.mode() & 0o022 != 0;
    if foreign(&meta) || foreign(&folder) {
        return None;
    }
    let mut bytes = Vec::new();
    opened.read_to_end(&mut bytes).ok()?;
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    if take(8)? != MAGIC {
        return None;
    }
    let i128_at = |s: &[u8]| i128::from_le_bytes(s.try_into().unwrap_or([0; 16]));
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
    if (i128_at(take(16)?), i128_at(take(16)?)) != stamp {
        return None;
    }
    let lists = u32_at(take(4)?) as usize;
    let mut index = Index {
        lists: Vec::with_capacity(lists),
        entries: Vec::new(),
    };
    for _ in 0..lists {
        let len = u32_at(take(4)?) as usize;
        index
            .lists
            .push(String::from_utf8(take(len)?.to_vec()).ok()?);
    }
    let n = u32_at(take(4)?) as usize;
    let raw = take(n.checked_mul(12)?)?;
    index.entries = raw
        .chunks_exact(12)
        .map(|c| {
            let h = u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8]));
            (h, u32_at(&c[8..]))
        })
        .collect();
    let sane = index.entries.windows(2).all(|w| w[0] <= w[1])
        && index.entries.iter().all(|e| (e.1 as usize) < lists);
    sane.then_some(index)
}

/// Writes the index atomically (a temporary file in the same folder,
/// renamed over), readable by its owner only.
fn write(file: &Path, stamp: (i128, i128), index: &Index) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let dir = file.parent().unwrap_or(Path::new("."));
    // Only the index's own folder is private: the cache above it (made
    // here when the index is its first user) holds the Debian roots and
    // kernels of `swaplab matrix`, whose loaders other users must reach.
    if let Some(above) = dir.parent() {
        fs::create_dir_all(above)?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut out = Vec::with_capacity(64 + index.entries.len() * 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&stamp.0.to_le_bytes());
    out.extend_from_slice(&stamp.1.to_le_bytes());
    out.extend_from_slice(&(index.lists.len() as u32).to_le_bytes());
    for l in &index.lists {
        out.extend_from_slice(&(l.len() as u32).to_le_bytes());
        out.extend_from_slice(l.as_bytes());
    }
    out.extend_from_slice(&(index.entries.len() as u32).to_le_bytes());
    for (h, n) in &index.entries {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&out)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_used_when_current_rebuilt_when_dpkg_changes_and_ignored_when_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("var/lib/dpkg");
        fs::create_dir_all(admin.join("info")).unwrap();
        fs::write(admin.join("status"), "").unwrap();
        fs::write(admin.join("info/a.list"), "/.\n/usr/bin/a\n").unwrap();
        let file = dir.path().join("cache/x.idx");
        let s1 = stamp(&admin).unwrap();
        write(&file, s1, &build(&admin).unwrap()).unwrap();
        let index = read(&file, s1).expect("current");
        assert_eq!(index.candidates(b"/usr/bin/a").collect::<Vec<_>>(), ["a"]);
        assert_eq!(index.candidates(b"/usr/bin/b").count(), 0);
        // A later stamp (dpkg wrote the database) makes it stale.
        assert!(read(&file, (s1.0 + 1, s1.1)).is_none());
        // A cache others may write is not read.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read(&file, s1).is_none());
    }
}
