//! What `/proc` says about a process: its mappings of one file and its
//! executable. Parsing is procfs's, except for the detector's lines
//! ([`read_lines`]), whose names must be kept byte for byte.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// appended to an unlinked name); empty for anonymous memory. Shared
    /// by the lines of one name in a row (a library's four or five).
    pub name: Arc<OsStr>,
}

/// Every line of `/proc/PID/maps`; the error is the open's or the read's
/// (`PermissionDenied` for another user's process).
pub fn read_lines(pid: i32) -> std::io::Result<Vec<Line>> {
    read_lines_in(Path::new(&format!("/proc/{pid}")))
}

/// [`read_lines`] of the maps in `dir`: a process's folder in /proc, or
/// one of its threads' (`/proc/PID/task/TID`).
pub fn read_lines_in(dir: &Path) -> std::io::Result<Vec<Line>> {
    let file = std::fs::File::open(dir.join("maps"))?;
    read_whole(file, |text| {
        text.split(|&b| b == b'\n').filter_map(parse_line).collect()
    })
}

/// The lines of `/proc/PID/maps` that map a file, as [`read_lines`] gives
/// them (same fields, the name byte for byte), asked of the kernel one
/// mapping at a time with the `PROCMAP_QUERY` ioctl (Linux 6.11): no text
/// to format and parse, anonymous memory passed over in the kernel.
///
/// Where the ioctl cannot answer, this is [`read_lines`], anonymous lines
/// included (callers pass them over by their name): on older kernels, for a
/// name longer than a page, and for a process that maps no file at all, so
/// that such a process is not taken for a kernel thread (the only one with
/// no lines).
pub fn read_file_lines(dir: &Path) -> std::io::Result<Vec<Line>> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_IOCTL: AtomicBool = AtomicBool::new(false);
    if NO_IOCTL.load(Ordering::Relaxed) {
        return read_lines_in(dir);
    }
    // The same open, and so the same error, as the text's.
    let file = std::fs::File::open(dir.join("maps"))?;
    let mut name = [0u8; 4096];
    let mut lines = Vec::with_capacity(32);
    let mut addr = 0;
    loop {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: PROCMAP_QUERY_COVERING_OR_NEXT_VMA | PROCMAP_QUERY_FILE_BACKED_VMA,
            query_addr: addr,
            vma_name_addr: name.as_mut_ptr() as u64,
            vma_name_size: name.len() as u32,
            ..Default::default()
        };
        // SAFETY: `q` is a `struct procmap_query` of the size it says, and
        // the kernel writes at most `vma_name_size` bytes to `name`.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), PROCMAP_QUERY as _, &mut q) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let first = lines.is_empty();
            return match e.raw_os_error() {
                // No file mapped at or after `addr`.
                Some(libc::ENOENT) if !first => Ok(lines),
                Some(libc::ENOENT) => read_lines_in(dir),
                // No memory: a kernel thread, or a process on its way out,
                // for which the text has no lines either.
                Some(libc::ESRCH) if first => Ok(lines),
                Some(libc::ENOTTY | libc::EINVAL) if first => {
                    NO_IOCTL.store(true, Ordering::Relaxed);
                    read_lines_in(dir)
                }
                Some(libc::ENAMETOOLONG) => read_lines_in(dir),
                _ => Err(e),
            };
        }
        // The size the kernel returns counts the name's final NUL.
        let len = (q.vma_name_size as usize).saturating_sub(1).min(name.len());
        let flag = |bit, c| if q.vma_flags & bit != 0 { c } else { b'-' };
        lines.push(Line {
            start: q.vma_start,
            end: q.vma_end,
            perms: [
                flag(PROCMAP_QUERY_VMA_READABLE, b'r'),
                flag(PROCMAP_QUERY_VMA_WRITABLE, b'w'),
                flag(PROCMAP_QUERY_VMA_EXECUTABLE, b'x'),
                if q.vma_flags & PROCMAP_QUERY_VMA_SHARED != 0 {
                    b's'
                } else {
                    b'p'
                },
            ],
            offset: q.vma_offset,
            dev: (q.dev_major, q.dev_minor),
            inode: q.inode,
            name: shared_name(&lines, &name[..len]),
        });
        addr = q.vma_end;
    }
}

/// `raw`, a name the ioctl gave, as printed: the previous line's name
/// when it is the same (no copy), else a new one.
fn shared_name(lines: &[Line], raw: &[u8]) -> Arc<OsStr> {
    match lines.last() {
        Some(prev) if !raw.contains(&b'\n') && prev.name.as_bytes() == raw => prev.name.clone(),
        _ => Arc::from(OsStr::from_bytes(&as_printed(raw))),
    }
}

/// A name from the ioctl as maps prints it: both are `d_path`'s (with its
/// ` (deleted)`), but maps escapes a newline as `\012` (`seq_path`).
fn as_printed(name: &[u8]) -> Vec<u8> {
    if name.contains(&b'\n') {
        replace(name, b"\n", b"\\012")
    } else {
        name.to_vec()
    }
}

/// `struct procmap_query` of `include/uapi/linux/fs.h` (Linux 6.11).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR(PROCFS_IOCTL_MAGIC, 17, struct procmap_query)`, the magic being
/// `'f'`.
const PROCMAP_QUERY: u64 =
    (3 << 30) | ((std::mem::size_of::<ProcmapQuery>() as u64) << 16) | ((b'f' as u64) << 8) | 17;
const _: () = assert!(PROCMAP_QUERY == 0xc068_6611);
const PROCMAP_QUERY_VMA_READABLE: u64 = 0x01;
const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
const PROCMAP_QUERY_VMA_EXECUTABLE: u64 = 0x04;
const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;
const PROCMAP_QUERY_FILE_BACKED_VMA: u64 = 0x20;

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
pub fn read_whole<T>(file: std::fs::File, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    read_until(file, false, f)
}

/// [`read_whole`] of a `/proc` file that is one record (a `single_open`
/// seq_file: `stat`, `cgroup`): the kernel formats it whole and hands it
/// all to the first read with room for it, so a read that leaves room
/// was the last, and the read that would say so (0 bytes) is spared.
pub fn read_record<T>(file: std::fs::File, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    read_until(file, true, f)
}

fn read_until<T>(
    mut file: std::fs::File,
    short_is_end: bool,
    f: impl FnOnce(&[u8]) -> T,
) -> std::io::Result<T> {
    use std::io::Read;
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let mut n = 0;
        loop {
            if n == buf.len() {
                let grown = buf.len() * 2;
                buf.resize(grown, 0);
            }
            let room = buf.len() - n;
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if short_is_end && k < room {
                        break;
                    }
                }
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
        name: Arc::from(OsStr::from_bytes(name)),
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
        let marked = t
            .strip_suffix(DELETED.as_bytes())
            .map(|rest| PathBuf::from(OsStr::from_bytes(rest)));
        out.push(Reading {
            path: PathBuf::from(OsString::from_vec(t)),
            unlinked: false,
        });
        if let Some(path) = marked {
            out.push(Reading {
                path,
                unlinked: true,
            });
        }
    }
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    // From one occurrence of `from`'s first byte to the next, copied a
    // stretch at a time (names rarely hold it at all).
    while let Some(at) = rest.iter().position(|&b| b == from[0]) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out.extend_from_slice(rest);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The ioctl's lines are the text's file lines, names byte for byte:
    /// a newline (escaped), a name that ends with ` (deleted)` and is not,
    /// one that was unlinked, one that was unlinked and ended so already.
    #[test]
    fn ioctl_lines_are_the_texts() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "a\nb",
            "x (deleted)",
            "gone",
            "y (deleted)",
            "trailing ",
            "back\\012slash",
        ];
        let mut maps = Vec::new();
        for n in names {
            let p = dir.path().join(n);
            std::fs::write(&p, [7u8; 4096]).unwrap();
            let f = std::fs::File::open(&p).unwrap();
            // SAFETY: a fresh read-only shared mapping of a whole page,
            // unmapped below.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(at, libc::MAP_FAILED);
            maps.push(at);
        }
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        std::fs::remove_file(dir.path().join("y (deleted)")).unwrap();
        let me = std::process::id() as i32;
        let key = |l: &Line| {
            (
                l.start,
                l.end,
                l.perms,
                l.offset,
                l.dev,
                l.inode,
                l.name.clone(),
            )
        };
        let both = || {
            let text: Vec<_> = read_lines(me)
                .unwrap()
                .iter()
                .filter(|l| l.inode != 0)
                .map(key)
                .collect();
            let ioctl: Vec<_> = read_file_lines(Path::new(&format!("/proc/{me}")))
                .unwrap()
                .iter()
                .map(key)
                .collect();
            (text, ioctl)
        };
        // Another thread may map or unmap between the two reads (libtest
        // runs tests in parallel): a difference must last to count.
        let (mut text, mut ioctl) = both();
        for _ in 0..5 {
            if text == ioctl {
                break;
            }
            (text, ioctl) = both();
        }
        for at in maps {
            // SAFETY: mapped above, one page.
            unsafe { libc::munmap(at, 4096) };
        }
        assert_eq!(text, ioctl);
        let printed: Vec<_> = ioctl
            .iter()
            .map(|k| k.6.to_string_lossy().into_owned())
            .collect();
        for want in [
            "a\\012b",
            "x (deleted)",
            "gone (deleted)",
            "y (deleted) (deleted)",
            "trailing ",
            "back\\012slash",
        ] {
            assert!(
                printed.iter().any(|p| p.ends_with(&format!("/{want}"))),
                "{want:?} not among {printed:?}"
            );
        }
    }
}
