//! What `/proc` says about a process: its mappings of one file and its
//! executable. Parsing is procfs's; this module only selects and renders.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use procfs::process::{MMapPath, Process};
use serde::Serialize;

const DELETED: &str = " (deleted)";

/// One line of `/proc/PID/maps` that maps a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    /// (major, minor)
    pub dev: (i32, i32),
    pub inode: u64,
    /// The path without the ` (deleted)` mark.
    pub path: PathBuf,
    pub deleted: bool,
}

impl Mapping {
    /// The line as the kernel prints it in `/proc/PID/maps` (same columns,
    /// same padding before the path).
    pub fn line(&self) -> String {
        let head = format!(
            "{:08x}-{:08x} {} {:08x} {:02x}:{:02x} {} ",
            self.start, self.end, self.perms, self.offset, self.dev.0, self.dev.1, self.inode
        );
        // The kernel pads to column 73 on 64-bit machines.
        format!(
            "{head:<73}{}{}",
            self.path.display(),
            if self.deleted { DELETED } else { "" }
        )
    }
}

/// Splits a maps path into the path and whether it carried ` (deleted)`.
pub fn split_deleted(p: &Path) -> (PathBuf, bool) {
    let s = p.to_string_lossy();
    match s.strip_suffix(DELETED) {
        Some(rest) => (PathBuf::from(rest), true),
        None => (p.to_path_buf(), false),
    }
}

/// Every file-backed mapping of process `pid`.
pub fn file_mappings(pid: i32) -> Result<Vec<Mapping>> {
    let maps = Process::new(pid)
        .and_then(|p| p.maps())
        .with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    Ok(maps
        .into_iter()
        .filter_map(|m| match &m.pathname {
            MMapPath::Path(p) => {
                let (path, deleted) = split_deleted(p);
                Some(Mapping {
                    start: m.address.0,
                    end: m.address.1,
                    perms: m.perms.as_str(),
                    offset: m.offset,
                    dev: m.dev,
                    inode: m.inode,
                    path,
                    deleted,
                })
            }
            _ => None,
        })
        .collect())
}

/// The mappings of process `pid` whose path satisfies `pred`.
pub fn mappings_where(pid: i32, pred: impl Fn(&Path) -> bool) -> Result<Vec<Mapping>> {
    Ok(file_mappings(pid)?
        .into_iter()
        .filter(|m| pred(&m.path))
        .collect())
}

/// `grep PATTERN /proc/*/maps`: every process with a mapping whose path
/// satisfies `pred`, with those lines, in pid order. Processes that vanish or
/// cannot be read are passed over, as grep's `2>/dev/null` does.
pub fn scan_all(pred: impl Fn(&Path) -> bool) -> Result<Vec<(i32, Vec<Mapping>)>> {
    let mut found = Vec::new();
    for p in procfs::process::all_processes().context("cannot list /proc")? {
        let Ok(p) = p else { continue };
        if let Ok(maps) = mappings_where(p.pid, &pred) {
            if !maps.is_empty() {
                found.push((p.pid, maps));
            }
        }
    }
    found.sort_by_key(|(pid, _)| *pid);
    Ok(found)
}

/// `/proc/PID/exe`: the executable's path and whether it was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exe {
    pub path: PathBuf,
    pub deleted: bool,
}

pub fn exe_of(pid: i32) -> Result<Exe> {
    let raw = Process::new(pid)
        .and_then(|p| p.exe())
        .with_context(|| format!("cannot read /proc/{pid}/exe"))?;
    let (path, deleted) = split_deleted(&raw);
    Ok(Exe { path, deleted })
}

/// The distinct inodes among `maps`, in order of appearance.
pub fn inodes(maps: &[Mapping]) -> Vec<u64> {
    let mut v: Vec<u64> = Vec::new();
    for m in maps {
        if !v.contains(&m.inode) {
            v.push(m.inode);
        }
    }
    v
}
