//! What `/proc` says about a process: its mappings of one file and its
//! executable. Parsing is procfs's, except for the detector's lines
//! ([`read_lines`]), whose names must be kept byte for byte.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

/// One line of `/proc/PID/maps` as the kernel wrote it, the name kept byte
/// for byte: procfs trims the spaces and tabs a name may end with, and
/// fails on a name that is not UTF-8.
#[derive(Clone, Debug)]
pub struct Line {
    pub start: u64,
    pub end: u64,
    /// `rwxp`: read, write, execute, private or shared (no allocation per
    /// line: a scan reads hundreds of thousands).
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    /// The name column as printed (newlines escaped as `\012`, ` (deleted)`
    /// appended to an unlinked name); empty for anonymous memory.
    pub name: OsString,
}

/// Every line of `/proc/PID/maps`; the error is the open's or the read's
/// (`PermissionDenied` for another user's process).
pub fn read_lines(pid: i32) -> std::io::Result<Vec<Line>> {
    let file = std::fs::File::open(format!("/proc/{pid}/maps"))?;
    read_whole(file, |text| {
        text.split(|&b| b == b'\n').filter_map(parse_line).collect()
    })
}

std::thread_local! {
    /// The buffer [`read_whole`] reads into, kept from one file to the next.
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// Hands `f` the whole content of `file`, a `/proc` file, read with as few
/// calls as it takes: `std::fs::read` asks the size first (`statx`, which
/// says 0 for `/proc` files) and then reads 32, 32, 64, 128… bytes, and
/// each call that empties the kernel's buffer makes it lock the process's
/// memory map and format again from where it stopped: 9 reads for a 3 KB
/// maps file, where a large buffer takes 2 (a page, then the end).
pub fn read_whole<T>(mut file: std::fs::File, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    use std::io::Read;
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut n = 0;
        loop {
            if n == buf.len() {
                let grown = buf.len() * 2;
                buf.resize(grown, 0);
            }
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(f(&buf[..n]))
    })
}

/// `START-END PERMS OFFSET MAJ:MIN INODE   NAME`: the first five fields hold
/// no space; the name follows the padding and runs to the end of the line.
fn parse_line(line: &[u8]) -> Option<Line> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let mut next = || std::str::from_utf8(fields.next()?).ok();
    let (range, perms, offset, dev, inode) = (next()?, next()?, next()?, next()?, next()?);
    let rest = fields.next().unwrap_or_default();
    let name = &rest[rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())..];
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    Some(Line {
        start: hex(start)?,
        end: hex(end)?,
        perms: perms.as_bytes().try_into().ok()?,
        offset: hex(offset)?,
        dev: (hex(major)? as u32, hex(minor)? as u32),
        inode: inode.parse().ok()?,
        name: OsStr::from_bytes(name).to_os_string(),
    })
}

/// One name a printed maps name may stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub path: PathBuf,
    /// Read as an unlinked name with the kernel's ` (deleted)` taken off.
    pub unlinked: bool,
}

/// The names a printed maps name may stand for: the kernel escapes a
/// newline as `\012` but not a backslash, and appends ` (deleted)` to an
/// unlinked name, which a real name may also end with. So the text alone
/// decides nothing: each reading is to be checked against the mapping's
/// device and inode. Unescaped readings come first (the kernel's meaning),
/// then the literal ones; for each, the whole name before the one with the
/// mark taken off.
pub fn readings(printed: &OsStr) -> Vec<Reading> {
    let bytes = printed.as_bytes();
    let unescaped = replace(bytes, b"\\012", b"\n");
    let mut texts = vec![unescaped];
    if texts[0] != bytes {
        texts.push(bytes.to_vec());
    }
    let mut out = Vec::with_capacity(4);
    for t in texts {
        out.push(Reading {
            path: PathBuf::from(OsString::from_vec(t.clone())),
            unlinked: false,
        });
        if let Some(rest) = t.strip_suffix(DELETED.as_bytes()) {
            out.push(Reading {
                path: PathBuf::from(OsStr::from_bytes(rest)),
                unlinked: true,
            });
        }
    }
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
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
