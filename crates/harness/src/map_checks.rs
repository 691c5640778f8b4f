//! Judgments on a process's mappings of the library, as the library
//! findings make them: the old file kept and marked (deleted), the file now
//! on disk, or both side by side. Each is a check on the [`Lab`] that can
//! fail, with what the maps showed.

use crate::lab::Lab;
use swaplab_stale::maps::{self, Mapping};

/// Every mapping in `m` is marked (deleted) (and there is one).
pub fn all_deleted(m: &[Mapping]) -> bool {
    !m.is_empty() && m.iter().all(|m| m.deleted)
}

/// No mapping in `m` is marked (deleted) (and there is one).
pub fn none_deleted(m: &[Mapping]) -> bool {
    !m.is_empty() && m.iter().all(|m| !m.deleted)
}

/// Every mapping in `m` is of inode `ino` (and there is one).
pub fn only_inode(m: &[Mapping], ino: u64) -> bool {
    !m.is_empty() && m.iter().all(|m| m.inode == ino)
}

/// What a check saw in a process's mappings of the library.
pub fn describe(m: &[Mapping]) -> String {
    if m.is_empty() {
        return "no mapping".into();
    }
    let inodes = maps::inodes(m);
    let deleted = m.iter().filter(|m| m.deleted).count();
    format!(
        "{} mappings, inodes {inodes:?}, {deleted} marked (deleted)",
        m.len()
    )
}

/// Checks that `m` maps exactly the old, deleted file `ino`.
pub fn check_old_deleted(lab: &mut Lab, who: &str, m: &[Mapping], ino: u64) {
    lab.check(
        format!("every mapping of the library in {who}'s maps ends in (deleted)"),
        all_deleted(m),
        describe(m),
    );
    lab.check(
        format!("{who}'s mappings keep the old inode"),
        only_inode(m, ino),
        describe(m),
    );
}

/// Checks that `m` maps the current file `ino`, none deleted.
pub fn check_current(lab: &mut Lab, who: &str, m: &[Mapping], ino: u64) {
    lab.check(
        format!("{who} maps the file now on disk, none (deleted)"),
        only_inode(m, ino) && none_deleted(m),
        describe(m),
    );
}

/// Checks that `m` maps both the old file `old`, every mapping of it
/// (deleted), and the file now on disk `new`, none of it (deleted): two
/// copies side by side (musl's second copy).
pub fn check_two_copies(lab: &mut Lab, who: &str, m: &[Mapping], old: u64, new: u64) {
    let of = |ino: u64| -> Vec<Mapping> { m.iter().filter(|m| m.inode == ino).cloned().collect() };
    let (o, n) = (of(old), of(new));
    lab.check(
        format!("{who} still maps the old file, every mapping (deleted)"),
        all_deleted(&o),
        describe(m),
    );
    lab.check(
        format!("{who} also maps the file now on disk, none (deleted)"),
        none_deleted(&n),
        describe(m),
    );
}
