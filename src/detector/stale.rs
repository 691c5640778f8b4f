//! `swaplab stale`: which running processes run code that is no longer what
//! is on disk, and how to restart them.
//!
//! For every process it may read (or those chosen by pid, user, or a pattern
//! on the command), the detector takes the executable and every mapped file
//! with an executable mapping (the code the process runs) from
//! `/proc/PID/maps`, and compares each with what its path names now, as the
//! process itself would see it (its mount namespace, through
//! `/proc/PID/root`):
//!
//! | what it sees | verdict | restart |
//! |---|---|---|
//! | the path names nothing | removed | required |
//! | the path names another device/inode (the mapping is usually ` (deleted)`) and the content differs | replaced | required |
//! | the same, with the same ELF build-id (or, without one, the same bytes) | reinstalled, same content | optional |
//! | the same inode, but its `PT_LOAD` segments no longer match the mappings | modified in place (the `cp` case of L11: the next call may crash) | required |
//! | the same inode, its content written (mtime) after the process started, by more than the start time's resolution | modified in place | required |
//!
//! The in-place checks know what they can: the segment check needs no clock,
//! and catches every write that moves or shortens the code. A write that
//! keeps the layout (L11's `dd conv=notrunc`) shows only in the inode's
//! modification time, which is compared with the process's start time: that is a
//! clock comparison, with the start time known to one clock tick (10 ms),
//! and it trusts that the wall clock did not jump in between. A file created
//! after the process started and then mapped (a `dlopen` of a new file) is
//! not counted as changed: the change must come after the file's birth time
//! by more than the time its installer may take to write it
//! ([`INSTALL_WRITE_NS`]), or the file must be older than the process.
//!
//! A process run by an interpreter (python, perl, ruby, node, a shell) is
//! also judged on the script its command line names (see [`scripts`]):
//! replaced when the interpreter's open descriptor on it holds another
//! file than the path, or, once it closed it, when the file at the path was
//! born after the process started; modified when written (mtime) after
//! the start; removed when nothing is at the path and the interpreter
//! still holds it. The modules a script imports are not mapped and not
//! seen; compiled extension modules are mapped, and checked as libraries.
//!
//! Not reported, and counted in the summary instead:
//! - pseudo-files, which have no file on disk to compare with: memfd
//!   (`/memfd:… (deleted)`: JIT code, sealed executables), SysV shared
//!   memory (`/SYSV…`), anything under `/dev` (a shared mapping of `/dev/zero`,
//!   `(deleted)` on older kernels; `/dev/shm` holds POSIX shared memory),
//!   huge pages (`/anon_hugepage`) and `[aio]` rings;
//! - anonymous mappings (heap, stacks, `[vdso]`), which are not files;
//! - files mapped without execute permission (data, locale archives,
//!   caches): the process does not run them.
//!
//! Processes whose maps it may not read (another user's, unless root) are
//! counted and named, never dropped silently.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procfs::process::Process;
use procfs::ProcError;
use regex::Regex;
use serde::Serialize;

use crate::detector::elf::{self, Where};
use crate::detector::maps;
use crate::detector::scripts::{self, Script};

/// How long an installer (`install`, a package manager) may take between
/// creating a file and its last write: a file born after the process
/// started counts as modified in place only if written later than this
/// after its birth. Seen here: with a margin of one clock tick (10 ms), a
/// library that `install` had just written, on a 2-core machine busy with
/// other work, was flagged as modified in place (L07 on musl, whose
/// process maps the new file).
pub const INSTALL_WRITE_NS: i128 = 1_000_000_000;

/// Which processes to look at. Empty means every process.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub pids: Vec<i32>,
    pub user: Option<u32>,
    /// Matched against the command name and the command line.
    pub pattern: Option<Regex>,
}

/// Whether a restart is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// The file on disk has the same content: nothing to gain but the
    /// `(deleted)` mark going away.
    Optional,
    /// The process runs code that is no longer on disk.
    Required,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Executable,
    Library,
    /// The script an interpreter was started on (see [`scripts`]).
    Script,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Nothing is at the path now.
    Removed,
    /// The path names another file, with other content.
    Replaced,
    /// The path names another file with the same content.
    Reinstalled,
    /// Same inode, written after the process mapped it.
    ModifiedInPlace,
    /// The script's path names a file born after the process started, or
    /// another file than the one the interpreter still reads.
    ScriptReplaced,
    /// The script's file was written after the process started.
    ScriptModified,
    /// Nothing is at the script's path now.
    ScriptRemoved,
}

impl Reason {
    pub fn word(self) -> &'static str {
        match self {
            Reason::Removed => "removed",
            Reason::Replaced => "replaced",
            Reason::Reinstalled => "reinstalled with the same content",
            Reason::ModifiedInPlace => "modified in place",
            Reason::ScriptReplaced => "replaced since the process started",
            Reason::ScriptModified => "modified since the process started",
            Reason::ScriptRemoved => "removed since the process started",
        }
    }
}

/// A file as `/proc` or `stat` names it: device (major:minor) and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> FileId {
        let dev = meta.dev();
        FileId {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
            inode: meta.ino(),
        }
    }
}

/// One file a process runs that is not what is on disk.
#[derive(Clone, Debug, Serialize)]
pub struct StaleFile {
    pub path: PathBuf,
    pub role: Role,
    pub reason: Reason,
    pub need: Urgency,
    /// What the process maps.
    pub mapped: FileId,
    /// Whether `/proc/PID/maps` marks it ` (deleted)`.
    pub deleted: bool,
    /// What the path names now, if anything.
    pub on_disk: Option<FileId>,
    /// How the contents were compared: `build-id`, `bytes`, `segments`,
    /// `mtime`, or why they could not be.
    pub evidence: String,
    /// The whole explanation, for people.
    pub detail: String,
}

/// What to restart, and how.
#[derive(Clone, Debug, Serialize)]
pub struct Restart {
    /// The process to restart: itself, or the ancestor it was forked from
    /// that runs the same stale code.
    pub at: i32,
    /// Whether re-forking this process from its parent would help (never
    /// when the parent runs the same stale code).
    pub fork_is_enough: bool,
    pub advice: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StaleProcess {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub user: String,
    pub command: String,
    pub args: String,
    /// The systemd service from the process's cgroup, if any.
    pub service: Option<String>,
    pub need: Urgency,
    pub restart: Restart,
    pub files: Vec<StaleFile>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unreadable {
    pub pid: i32,
    pub command: String,
    pub uid: Option<u32>,
}

/// Mappings left out, by kind, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Excluded {
    pub kind: &'static str,
    pub why: &'static str,
    pub processes: usize,
    pub mappings: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Processes whose maps were read (after the filters).
    pub scanned: usize,
    pub required: usize,
    pub optional: usize,
    pub processes: Vec<StaleProcess>,
    pub unreadable: Vec<Unreadable>,
    /// Kernel threads: no executable, no mappings.
    pub kernel_threads: usize,
    /// Processes that exited while being read.
    pub vanished: usize,
    pub excluded: Vec<Excluded>,
    /// Files mapped without execute permission (not code).
    pub data_files: usize,
    /// Files whose state on disk could not be read (`stat` refused).
    pub unchecked_files: usize,
    /// The effective uid the scan ran as.
    pub scanner_uid: u32,
    pub seconds: f64,
}

impl Report {
    /// The exit status `swaplab stale` ends with: 0 when no process needs a
    /// restart (optional ones may be listed), 1 when at least one does.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.required > 0)
    }

    pub fn get(&self, pid: i32) -> Option<&StaleProcess> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

/// The kinds of pseudo-file mapping that are never reported.
const PSEUDO: &[(&str, &str)] = &[
    (
        "memfd",
        "memfd_create(2) memory, not a file on disk (JIT code, sealed executables); always (deleted)",
    ),
    (
        "sysv-shm",
        "SysV shared memory segment (/SYSV…), not a file on disk",
    ),
    (
        "dev",
        "a device or /dev/shm object (a shared /dev/zero mapping is anonymous memory)",
    ),
    ("hugetlb", "anonymous huge pages (/anon_hugepage)"),
    ("kernel", "a kernel object mapped like a file (/[aio] rings)"),
];

fn pseudo_kind(path: &str) -> Option<&'static str> {
    if path.starts_with("/memfd:") {
        Some("memfd")
    } else if path.starts_with("/SYSV") {
        Some("sysv-shm")
    } else if path.starts_with("/dev/") {
        Some("dev")
    } else if path.starts_with("/anon_hugepage") {
        Some("hugetlb")
    } else if path.starts_with("/[") || !path.starts_with('/') {
        Some("kernel")
    } else {
        None
    }
}

/// A mapped file as maps names it: major, minor, inode, the name as printed.
type FileKey = (u32, u32, u64, std::ffi::OsString);

/// One file-backed mapping, as the checks need it.
#[derive(Clone, Debug)]
struct Map {
    start: u64,
    end: u64,
    offset: u64,
    perms: String,
}

/// What a path names now (cached per path for processes that share the
/// scanner's mount namespace).
#[derive(Clone)]
enum OnDisk {
    File {
        id: FileId,
        size: u64,
        ctime_ns: i128,
        /// When the content was last written.
        mtime_ns: i128,
        btime_ns: Option<i128>,
    },
    Missing,
    Unreadable,
}

fn on_disk(p: &Path) -> OnDisk {
    match fs::metadata(p) {
        Ok(m) => OnDisk::File {
            id: FileId::of(&m),
            size: m.size(),
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            btime_ns: m.created().ok().and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_nanos() as i128)
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::Missing,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => OnDisk::Missing,
        Err(_) => OnDisk::Unreadable,
    }
}

/// How two contents compared.
#[derive(Clone, Debug)]
enum Compared {
    Same(String),
    Differ(String),
    Unknown(String),
}

struct Scanner {
    my_mnt_ns: Option<PathBuf>,
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, in ns: turns a start time (since
    /// boot) into wall-clock time, as file times are.
    boot_to_real_ns: i128,
    tick_ns: i128,
    page: u64,
    paths: HashMap<PathBuf, OnDisk>,
    segments: HashMap<(FileId, i128, u64), Option<Vec<elf::Segment>>>,
    compared: HashMap<(FileId, FileId, i128), Compared>,
    users: HashMap<u32, String>,
    excluded: BTreeMap<&'static str, (usize, usize)>,
    data_files: usize,
    unchecked_files: usize,
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

/// Scans the processes `opts` selects.
pub fn scan(opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let pids: Vec<i32> = if opts.pids.is_empty() {
        procfs::process::all_processes()
            .context("cannot list /proc")?
            .filter_map(|p| p.ok().map(|p| p.pid))
            .collect()
    } else {
        opts.pids.clone()
    };
    let mut report = Report {
        scanned: 0,
        required: 0,
        optional: 0,
        processes: Vec::new(),
        unreadable: Vec::new(),
        kernel_threads: 0,
        vanished: 0,
        excluded: Vec::new(),
        data_files: 0,
        unchecked_files: 0,
        scanner_uid: nix::unistd::geteuid().as_raw(),
        seconds: 0.0,
    };
    // Processes are independent: read them on every core, each thread with
    // its own caches, then merge in pid order.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let threads = if pids.len() < 64 { 1 } else { threads };
    let parts: Vec<(Vec<Seen>, Scanner)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let pids = &pids;
                scope.spawn(move || {
                    let mut s = Scanner::new();
                    let seen: Vec<Seen> = pids
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&pid| s.one(pid, opts))
                        .collect();
                    (seen, s)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a scan thread panicked"))
            .collect()
    });
    let mut s = Scanner::new();
    for (seen, part) in parts {
        for (kind, (procs, maps)) in part.excluded {
            let e = s.excluded.entry(kind).or_default();
            e.0 += procs;
            e.1 += maps;
        }
        s.data_files += part.data_files;
        s.unchecked_files += part.unchecked_files;
        for one in seen {
            match one {
                Seen::Vanished => report.vanished += 1,
                Seen::Kernel => report.kernel_threads += 1,
                Seen::Filtered => {}
                Seen::Unreadable(u) => report.unreadable.push(u),
                Seen::Scanned(found) => {
                    report.scanned += 1;
                    if let Some(p) = found {
                        report.processes.push(p);
                    }
                }
            }
        }
    }
    advise(&mut report.processes);
    for p in &mut report.processes {
        p.user = s.user(p.uid);
    }
    report.processes.sort_by_key(|p| p.pid);
    report.unreadable.sort_by_key(|u| u.pid);
    report.required = report
        .processes
        .iter()
        .filter(|p| p.need == Urgency::Required)
        .count();
    report.optional = report.processes.len() - report.required;
    report.excluded = PSEUDO
        .iter()
        .filter_map(|(kind, why)| {
            s.excluded.get(kind).map(|&(processes, mappings)| Excluded {
                kind,
                why,
                processes,
                mappings,
            })
        })
        .collect();
    report.data_files = s.data_files;
    report.unchecked_files = s.unchecked_files;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

enum Seen {
    Vanished,
    Kernel,
    Filtered,
    Unreadable(Unreadable),
    Scanned(Option<StaleProcess>),
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            my_mnt_ns: fs::read_link("/proc/self/ns/mnt").ok(),
            boot_to_real_ns: clock_ns(nix::time::ClockId::CLOCK_REALTIME)
                - clock_ns(nix::time::ClockId::CLOCK_BOOTTIME),
            tick_ns: 1_000_000_000 / procfs::ticks_per_second().max(1) as i128,
            page: procfs::page_size(),
            paths: HashMap::new(),
            segments: HashMap::new(),
            compared: HashMap::new(),
            users: HashMap::new(),
            excluded: BTreeMap::new(),
            data_files: 0,
            unchecked_files: 0,
        }
    }

    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }

    fn one(&mut self, pid: i32, opts: &Options) -> Seen {
        let Ok(proc) = Process::new(pid) else {
            return Seen::Vanished;
        };
        let Ok(stat) = proc.stat() else {
            return Seen::Vanished;
        };
        if matches!(stat.state, 'Z' | 'X') {
            return Seen::Vanished;
        }
        // The owner of /proc/PID; read only when it is asked for or shown.
        let mut uid = None;
        if let Some(want) = opts.user {
            uid = proc.uid().ok();
            if uid != Some(want) {
                return Seen::Filtered;
            }
        }
        let mut args: Option<String> = None;
        if let Some(re) = &opts.pattern {
            let a = proc.cmdline().map(|c| c.join(" ")).unwrap_or_default();
            if !re.is_match(&stat.comm) && !re.is_match(&a) {
                return Seen::Filtered;
            }
            args = Some(a);
        }
        let lines = match maps::read_lines(pid) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Seen::Unreadable(Unreadable {
                    pid,
                    command: stat.comm,
                    uid: uid.or_else(|| proc.uid().ok()),
                })
            }
            Err(_) => return Seen::Vanished,
        };
        let exe = match proc.exe() {
            Ok(e) => Some(e),
            Err(ProcError::PermissionDenied(_)) => {
                return Seen::Unreadable(Unreadable {
                    pid,
                    command: stat.comm,
                    uid: uid.or_else(|| proc.uid().ok()),
                })
            }
            Err(_) => None,
        };
        if lines.is_empty() && exe.is_none() {
            return Seen::Kernel;
        }
        let files = self.group_by_file(lines);
        let ns = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let own_ns = ns.is_some() && ns == self.my_mnt_ns;
        let start_ns = self.boot_to_real_ns + stat.starttime as i128 * self.tick_ns;
        let mut stale = Vec::new();
        for ((major, minor, inode, printed), maps) in files {
            let readings = maps::readings(&printed);
            // /proc/PID/exe is the same name unescaped, mark included.
            let role = match &exe {
                Some(e) if readings.iter().any(|r| !r.unlinked && r.path == *e) => Role::Executable,
                _ => Role::Library,
            };
            if role == Role::Library && !maps.iter().any(|m| m.perms.contains('x')) {
                self.data_files += 1;
                continue;
            }
            let ctx = FileCtx {
                pid,
                role,
                readings: &readings,
                mapped: FileId {
                    major,
                    minor,
                    inode,
                },
                maps: loaded_image(&maps),
                own_ns,
                start_ns,
            };
            if let Some(f) = self.check(&ctx) {
                stale.push(f);
            }
        }
        if let Some(script) = exe.as_deref().and_then(|e| scripts::script_of(pid, e)) {
            stale.extend(self.check_script(&script, start_ns));
        }
        if stale.is_empty() {
            return Seen::Scanned(None);
        }
        let need = stale
            .iter()
            .map(|f| f.need)
            .max()
            .unwrap_or(Urgency::Optional);
        let args = args.unwrap_or_else(|| proc.cmdline().map(|c| c.join(" ")).unwrap_or_default());
        Seen::Scanned(Some(StaleProcess {
            pid,
            ppid: stat.ppid,
            uid: uid.or_else(|| proc.uid().ok()).unwrap_or(u32::MAX),
            user: String::new(),
            command: stat.comm,
            args,
            service: service_of(&proc),
            need,
            restart: Restart {
                at: pid,
                fork_is_enough: false,
                advice: String::new(),
            },
            files: stale,
        }))
    }

    /// The file mappings grouped by file, in order of first appearance;
    /// pseudo-files counted in `excluded`, anonymous memory passed over.
    fn group_by_file(&mut self, lines: Vec<maps::Line>) -> Vec<(FileKey, Vec<Map>)> {
        let mut files: Vec<(FileKey, Vec<Map>)> = Vec::new();
        let mut pseudo: BTreeMap<&'static str, usize> = BTreeMap::new();
        for m in lines {
            let shown = m.name.to_string_lossy();
            // Anonymous memory, [heap], [stack], [vdso] and the like.
            if shown.is_empty() || (shown.starts_with('[') && shown.ends_with(']')) {
                continue;
            }
            if let Some(kind) = pseudo_kind(&shown) {
                *pseudo.entry(kind).or_default() += 1;
                continue;
            }
            let key = (m.dev.0, m.dev.1, m.inode, m.name);
            let map = Map {
                start: m.start,
                end: m.end,
                offset: m.offset,
                perms: m.perms,
            };
            match files.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(map),
                None => files.push((key, vec![map])),
            }
        }
        for (kind, n) in pseudo {
            let e = self.excluded.entry(kind).or_default();
            e.0 += 1;
            e.1 += n;
        }
        files
    }

    /// Where the process itself would find `path`: the same path when it
    /// shares the scanner's mount namespace (maps show paths from the
    /// reader's root), else through `/proc/PID/root`.
    fn resolve(&mut self, ctx: &FileCtx, path: &Path) -> (PathBuf, OnDisk) {
        if ctx.own_ns {
            let state = self
                .paths
                .entry(path.to_path_buf())
                .or_insert_with(|| on_disk(path))
                .clone();
            (path.to_path_buf(), state)
        } else {
            let rel = path.strip_prefix("/").unwrap_or(path);
            let p = PathBuf::from(format!("/proc/{}/root", ctx.pid)).join(rel);
            let state = on_disk(&p);
            (p, state)
        }
    }

    /// The name the mapped file went by, and what that name holds now.
    /// A reading of the printed name that holds the mapped device and inode
    /// settles it: the file is current there, whatever its name ends with.
    /// Otherwise the file is at none of them: its name was unlinked (the
    /// kernel's mark, confirmed by the link count of the mapped file itself
    /// where `/proc/PID/map_files` is readable, that is as root), and that
    /// name is compared with what it holds now.
    fn locate(&mut self, ctx: &FileCtx) -> Located {
        let mut states = Vec::with_capacity(ctx.readings.len());
        for r in ctx.readings {
            let (real, state) = self.resolve(ctx, &r.path);
            if matches!(state, OnDisk::File { id, .. } if id == ctx.mapped) {
                return Located {
                    path: r.path.clone(),
                    real,
                    state,
                    deleted: false,
                    identity: None,
                };
            }
            states.push((real, state));
        }
        let links = ctx.maps.first().and_then(|m| {
            fs::metadata(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                ctx.pid, m.start, m.end
            ))
            .ok()
            .map(|meta| meta.nlink())
        });
        let pick = ctx.readings.iter().position(|r| r.unlinked).unwrap_or(0);
        let unlinked = ctx.readings[pick].unlinked;
        let (deleted, identity) = match links {
            Some(0) => (true, "map_files: the mapped file has no link left".to_string()),
            Some(n) => (
                unlinked,
                format!("map_files: the mapped file has {n} links, none at this name"),
            ),
            None => (
                unlinked,
                "maps text checked with stat (map_files is root's): no reading of the name holds the mapped inode".to_string(),
            ),
        };
        let (real, state) = states.swap_remove(pick);
        Located {
            path: ctx.readings[pick].path.clone(),
            real,
            state,
            deleted,
            identity: Some(identity),
        }
    }

    fn check(&mut self, ctx: &FileCtx) -> Option<StaleFile> {
        let Located {
            path,
            real,
            state,
            deleted,
            identity,
        } = self.locate(ctx);
        let file = |reason: Reason, need, on_disk, evidence: String, detail: String| StaleFile {
            path: path.clone(),
            role: ctx.role,
            reason,
            need,
            mapped: ctx.mapped,
            deleted,
            on_disk,
            evidence: match &identity {
                Some(how) => format!("{evidence}; identity: {how}"),
                None => evidence,
            },
            detail,
        };
        let marked = if deleted {
            "the mapping is (deleted)"
        } else {
            "the mapping is not marked (deleted)"
        };
        match state {
            OnDisk::Unreadable => {
                self.unchecked_files += 1;
                None
            }
            OnDisk::Missing => Some(file(
                Reason::Removed,
                Urgency::Required,
                None,
                "path".into(),
                format!("{marked}; nothing is at the path now"),
            )),
            OnDisk::File { id, ctime_ns, .. } if id != ctx.mapped => {
                let how = self.compare(ctx, &real, id, ctime_ns);
                let (reason, need, evidence, what) = match how {
                    Compared::Same(by) => (
                        Reason::Reinstalled,
                        Urgency::Optional,
                        by.clone(),
                        format!("the same content ({by})"),
                    ),
                    Compared::Differ(by) => (
                        Reason::Replaced,
                        Urgency::Required,
                        by.clone(),
                        format!("another content ({by})"),
                    ),
                    Compared::Unknown(why) => (
                        Reason::Replaced,
                        Urgency::Required,
                        format!("not compared: {why}"),
                        format!("content not compared: {why}"),
                    ),
                };
                Some(file(
                    reason,
                    need,
                    Some(id),
                    evidence,
                    format!(
                        "{marked}; mapped inode={}, the path names inode={}: {what}",
                        ctx.mapped.inode, id.inode
                    ),
                ))
            }
            OnDisk::File {
                id,
                size,
                ctime_ns,
                mtime_ns,
                btime_ns,
            } => {
                if let Some(why) = self.segments_differ(ctx, &real, id, ctime_ns, size) {
                    return Some(file(
                        Reason::ModifiedInPlace,
                        Urgency::Required,
                        Some(id),
                        "segments".into(),
                        format!(
                            "same inode={}, rewritten: {why} (its next call into it may crash, L11)",
                            id.inode
                        ),
                    ));
                }
                // Content written after the start, by more than the start
                // time's resolution (one tick), to a file that existed
                // before the process or was written well after it was
                // made. The modification time, not the change time: a new
                // hard link or a chmod changes the ctime of a file nobody
                // wrote.
                let after_start = self.written_after_start(ctx.start_ns, mtime_ns, btime_ns)?;
                Some(file(
                    Reason::ModifiedInPlace,
                    Urgency::Required,
                    Some(id),
                    "mtime".into(),
                    format!(
                        "same inode={}, written (mtime) {} ms after the process started",
                        id.inode,
                        after_start / 1_000_000
                    ),
                ))
            }
        }
    }

    /// How long after the process started (`start_ns`, known to one tick) a
    /// file was written, when measurably after it: by more than the tick,
    /// to a file that existed before the process or was written well after
    /// it was made (an installer's own writing is no change).
    fn written_after_start(
        &self,
        start_ns: i128,
        mtime_ns: i128,
        btime_ns: Option<i128>,
    ) -> Option<i128> {
        let after_start = mtime_ns - start_ns;
        let old_enough = match btime_ns {
            None => true,
            Some(b) => b < start_ns || mtime_ns - b > INSTALL_WRITE_NS,
        };
        (after_start > self.tick_ns && old_enough).then_some(after_start)
    }

    /// Judges the script an interpreter runs. Where the interpreter still
    /// reads it from a descriptor, that file is compared with the one at
    /// the path (device and inode); where it does not (it read the script
    /// and closed it), the file at the path must be older than the
    /// process (its birth time, more than the start's tick after the
    /// start: replaced) and unwritten since (its mtime, as for libraries:
    /// modified).
    fn check_script(&mut self, script: &Script, start_ns: i128) -> Option<StaleFile> {
        let held = script.held.as_ref().map(|h| (h.fd, FileId::of(&h.file)));
        let read_from = match held {
            Some((fd, _)) => format!("the interpreter reads it from fd {fd}"),
            None => "the interpreter holds it open no more".to_string(),
        };
        let file = |reason, on_disk: Option<FileId>, evidence: String, what: String| {
            let mapped = held.map(|(_, id)| id).or(on_disk)?;
            Some(StaleFile {
                path: script.path.clone(),
                role: Role::Script,
                reason,
                need: Urgency::Required,
                mapped,
                deleted: script.held.as_ref().is_some_and(|h| h.file.nlink() == 0),
                on_disk,
                evidence,
                detail: format!("{read_from}; {what}"),
            })
        };
        match on_disk(&script.real) {
            OnDisk::Unreadable => {
                self.unchecked_files += 1;
                None
            }
            // Without a descriptor, a name relative to a directory the
            // process has left may name nothing: no evidence of removal.
            OnDisk::Missing => held.and_then(|(fd, id)| {
                file(
                    Reason::ScriptRemoved,
                    None,
                    format!("fd {fd}"),
                    format!("it holds inode={}, nothing is at the path now", id.inode),
                )
            }),
            OnDisk::File { id, .. } if held.is_some_and(|(_, h)| h != id) => {
                let (fd, was) = held?;
                file(
                    Reason::ScriptReplaced,
                    Some(id),
                    format!("fd {fd}"),
                    format!(
                        "it holds inode={}, the path names inode={}",
                        was.inode, id.inode
                    ),
                )
            }
            OnDisk::File {
                id,
                mtime_ns,
                btime_ns,
                ..
            } => {
                if let Some(born) = btime_ns.filter(|b| b - start_ns > self.tick_ns) {
                    return file(
                        Reason::ScriptReplaced,
                        Some(id),
                        "btime".into(),
                        format!(
                            "the path names inode={}, born {} ms after the process started",
                            id.inode,
                            (born - start_ns) / 1_000_000
                        ),
                    );
                }
                let after_start = self.written_after_start(start_ns, mtime_ns, btime_ns)?;
                file(
                    Reason::ScriptModified,
                    Some(id),
                    "mtime".into(),
                    format!(
                        "inode={}, written (mtime) {} ms after the process started",
                        id.inode,
                        after_start / 1_000_000
                    ),
                )
            }
        }
    }

    /// Whether the ELF segments of the file now on disk still match the
    /// process's mappings of it; `Some(what differs)` when they do not.
    fn segments_differ(
        &mut self,
        ctx: &FileCtx,
        real: &Path,
        id: FileId,
        ctime_ns: i128,
        size: u64,
    ) -> Option<String> {
        let loads = self
            .segments
            .entry((id, ctime_ns, size))
            .or_insert_with(|| {
                File::open(real)
                    .ok()
                    .and_then(|f| elf::read(&f, Where::File))
                    .map(|e| e.loads)
            })
            .clone()?;
        let page = self.page;
        let down = |v: u64| v & !(page - 1);
        let up = |v: u64| (v + page - 1) & !(page - 1);
        let first = ctx.maps.iter().find(|m| m.offset == 0)?;
        let seg0 = loads.iter().find(|s| s.offset == 0)?;
        let base = first.start.wrapping_sub(down(seg0.vaddr));
        for m in ctx.maps {
            let len = m.end - m.start;
            if m.offset + len > up(size) {
                return Some(format!(
                    "the file is now {size} bytes, shorter than the mapping of offset {:#x}+{len:#x}",
                    m.offset
                ));
            }
            let rel = m.start.wrapping_sub(base);
            let fits = loads.iter().any(|s| {
                let (lo, hi) = (down(s.vaddr), up(s.vaddr + s.memsz));
                let r = m.perms.as_bytes();
                rel >= lo
                    && rel + len <= hi
                    && m.offset.wrapping_sub(down(s.offset)) == rel - lo
                    && (r[2] == b'x') == s.executable()
                    && (r[0] == b'r') == s.readable()
                    && (r[1] != b'w' || s.writable())
            });
            if !fits {
                return Some(format!(
                    "no segment of the file now maps offset {:#x} at {:#x} {}",
                    m.offset,
                    rel,
                    &m.perms[..3]
                ));
            }
        }
        None
    }

    /// Compares the content the process maps with the file at `real`.
    fn compare(&mut self, ctx: &FileCtx, real: &Path, now: FileId, ctime_ns: i128) -> Compared {
        let key = (ctx.mapped, now, ctime_ns);
        if let Some(c) = self.compared.get(&key) {
            return c.clone();
        }
        let c = compare_contents(ctx, real);
        self.compared.insert(key, c.clone());
        c
    }
}

/// Where [`Scanner::locate`] found the mapped file's name.
struct Located {
    /// The name as the process knows it.
    path: PathBuf,
    /// The same name as the scanner reaches it.
    real: PathBuf,
    state: OnDisk,
    /// Whether the name was unlinked from the mapped file.
    deleted: bool,
    /// How that was told, when the file is not at its name.
    identity: Option<String>,
}

struct FileCtx<'a> {
    pid: i32,
    role: Role,
    /// What the printed name may stand for.
    readings: &'a [maps::Reading],
    mapped: FileId,
    /// The mappings of the loaded image only (see [`loaded_image`]).
    maps: &'a [Map],
    own_ns: bool,
    start_ns: i128,
}

/// The mappings (in address order) that belong to the image the loader laid
/// out, without any other view of the same file (rustc maps each proc-macro
/// library again, whole and read-only, to read its metadata): from the
/// image's header mapping (offset 0) below its code, upward while the file
/// offsets grow, as the segments of one image do. A data view is no
/// evidence of a changed layout.
fn loaded_image(maps: &[Map]) -> &[Map] {
    let code = maps
        .iter()
        .find(|m| m.perms.contains('x'))
        .map_or(u64::MAX, |m| m.start);
    let Some(first) = maps.iter().rposition(|m| m.offset == 0 && m.start <= code) else {
        return maps;
    };
    let len = maps[first..]
        .windows(2)
        .position(|w| w[1].offset <= w[0].offset)
        .map_or(maps.len() - first, |i| i + 1);
    &maps[first..first + len]
}

/// The old content: the mapped file itself through `/proc/PID/map_files`
/// (root only), or `/proc/PID/exe` for the executable; failing both, the
/// process's memory, which holds the build-id note but not the whole file.
fn compare_contents(ctx: &FileCtx, real: &Path) -> Compared {
    let Ok(new) = File::open(real) else {
        return Compared::Unknown("the file on disk cannot be opened".into());
    };
    let first = ctx.maps.iter().find(|m| m.offset == 0).or(ctx.maps.first());
    let Some(first) = first else {
        return Compared::Unknown("no mapping".into());
    };
    let old_file = File::open(format!(
        "/proc/{}/map_files/{:x}-{:x}",
        ctx.pid, first.start, first.end
    ))
    .ok()
    .or_else(|| {
        (ctx.role == Role::Executable)
            .then(|| File::open(format!("/proc/{}/exe", ctx.pid)).ok())
            .flatten()
    });
    let new_elf = elf::read(&new, Where::File);
    let old_elf =
        match &old_file {
            Some(f) => elf::read(f, Where::File),
            None if first.offset == 0 => File::open(format!("/proc/{}/mem", ctx.pid))
                .ok()
                .and_then(|m| {
                    elf::read(
                        &m,
                        Where::Memory {
                            header_at: first.start,
                        },
                    )
                }),
            None => None,
        };
    let ids = (
        old_elf.as_ref().and_then(|e| e.build_id.clone()),
        new_elf.as_ref().and_then(|e| e.build_id.clone()),
    );
    if let (Some(a), Some(b)) = &ids {
        return if a == b {
            Compared::Same(format!("build-id={}", elf::hex(a)))
        } else {
            Compared::Differ(format!(
                "build-id={} -> build-id={}",
                elf::hex(a),
                elf::hex(b)
            ))
        };
    }
    match old_file {
        Some(old) => match same_bytes(&old, &new) {
            Ok(true) => Compared::Same("same bytes".into()),
            Ok(false) => Compared::Differ("other bytes".into()),
            Err(e) => Compared::Unknown(format!("reading failed: {e}")),
        },
        None => Compared::Unknown(
            "no build-id, and the old file is readable only by root (/proc/PID/map_files)".into(),
        ),
    }
}

fn same_bytes(a: &File, b: &File) -> std::io::Result<bool> {
    use std::io::Read;
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (std::io::BufReader::new(a), std::io::BufReader::new(b));
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = ra.read(&mut ba)?;
        if n == 0 {
            let m = rb.read(&mut bb)?;
            return Ok(m == 0);
        }
        rb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The systemd service a process belongs to: the innermost `*.service` of
/// its cgroup path.
fn service_of(p: &Process) -> Option<String> {
    let groups = p.cgroups().ok()?;
    groups.0.iter().find_map(|g| {
        g.pathname
            .rsplit('/')
            .find(|c| c.ends_with(".service"))
            .map(str::to_string)
    })
}

/// Fills in the restart advice: a process whose parent runs the same stale
/// code was forked from it, and restarting it by another fork would copy
/// that code again (L04, U07): the parent (the top of such a chain) needs an
/// exec or a full restart.
fn advise(procs: &mut [StaleProcess]) {
    let index: HashMap<i32, usize> = procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
    let inherits = |child: &StaleProcess, parent: &StaleProcess| {
        parent.need == Urgency::Required
            && child
                .files
                .iter()
                .filter(|f| f.need == Urgency::Required)
                .all(|f| parent.files.iter().any(|g| g.mapped == f.mapped))
    };
    let mut tops = Vec::with_capacity(procs.len());
    for p in procs.iter() {
        let mut top = p.pid;
        let mut cur = p;
        let mut guard = 0;
        while let Some(&i) = index.get(&cur.ppid) {
            let parent = &procs[i];
            if cur.need != Urgency::Required || !inherits(cur, parent) || guard > 64 {
                break;
            }
            top = parent.pid;
            cur = parent;
            guard += 1;
        }
        tops.push(top);
    }
    for (p, top) in procs.iter_mut().zip(tops) {
        p.restart = Restart {
            at: top,
            fork_is_enough: p.need == Urgency::Optional,
            advice: match p.need {
                Urgency::Optional => OPTIONAL.into(),
                Urgency::Required if top == p.pid => ITSELF.into(),
                Urgency::Required => inherited(top.to_string()),
            },
        };
    }
}

const OPTIONAL: &str = "the files on disk have the same content";
const ITSELF: &str = "exec it again or restart it";

fn inherited(top: String) -> String {
    format!(
        "exec or restart {top}, which runs the same old code: a fork from it copies that code, so restarting only this process is not enough"
    )
}

/// How pids and changing values are printed (plain for the CLI; marked for
/// redaction in lab transcripts).
pub struct Marks {
    pub pid: fn(i32) -> String,
    pub vol: fn(String) -> String,
}

pub const PLAIN: Marks = Marks {
    pid: |p| p.to_string(),
    vol: |s| s,
};

/// The report for people: one block per process, then the summary.
pub fn render(r: &Report, marks: &Marks) -> Vec<String> {
    let mut out = Vec::new();
    for p in &r.processes {
        let who = match &p.service {
            Some(s) => format!("user {}, {s}", p.user),
            None => format!("user {}", p.user),
        };
        let need = match p.need {
            Urgency::Required => "restart required",
            Urgency::Optional => "restart optional",
        };
        out.push(format!(
            "{} {} ({who}): {need}: {}",
            (marks.pid)(p.pid),
            p.command,
            advice_text(p, marks)
        ));
        for f in &p.files {
            let role = match f.role {
                Role::Executable => "executable",
                Role::Library => "library",
                Role::Script => "script",
            };
            let detail = if f.evidence == "mtime" || f.evidence == "btime" {
                ms_vol(&f.detail, marks)
            } else {
                f.detail.clone()
            };
            // A newline in a name would forge a line of the report: shown
            // escaped, as maps shows it (JSON carries the name as it is).
            out.push(format!(
                "  {role} {}: {}: {detail}",
                f.path.to_string_lossy().replace('\n', "\\012"),
                f.reason.word()
            ));
        }
    }
    out.push(summary(r, marks));
    out
}

fn ms_vol(detail: &str, marks: &Marks) -> String {
    match detail.split_once(" ms after") {
        Some((head, tail)) => match head.rsplit_once(' ') {
            Some((pre, n)) => format!("{pre} {} ms after{tail}", (marks.vol)(n.to_string())),
            None => detail.to_string(),
        },
        None => detail.to_string(),
    }
}

fn advice_text(p: &StaleProcess, marks: &Marks) -> String {
    match p.need {
        Urgency::Optional => OPTIONAL.to_string(),
        Urgency::Required if p.restart.at == p.pid => ITSELF.to_string(),
        Urgency::Required => inherited((marks.pid)(p.restart.at)),
    }
}

/// The summary line.
pub fn summary(r: &Report, marks: &Marks) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = format!(
        "{} a restart, {} (same content on disk); {} scanned",
        plural(r.required, "process needs", "processes need"),
        plural(r.optional, "process may have one", "processes may have one"),
        plural(r.scanned, "process", "processes"),
    );
    if r.unreadable.is_empty() {
        s.push_str(", none unreadable");
    } else {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for u in &r.unreadable {
            *names.entry(u.command.as_str()).or_default() += 1;
        }
        let mut shown: Vec<String> = names
            .iter()
            .take(8)
            .map(|(n, k)| {
                if *k > 1 {
                    format!("{n} ×{k}")
                } else {
                    n.to_string()
                }
            })
            .collect();
        if names.len() > 8 {
            shown.push("…".into());
        }
        let why = if r.scanner_uid == 0 {
            "denied even to root: another user namespace, or a process that forbids it"
        } else {
            "another user's; run as root to read them"
        };
        s.push_str(&format!(
            ", {} unreadable ({why}: {})",
            (marks.vol)(r.unreadable.len().to_string()),
            (marks.vol)(shown.join(", "))
        ));
    }
    let mut left: Vec<String> = r
        .excluded
        .iter()
        .map(|e| format!("{} {}", e.mappings, e.kind))
        .collect();
    if r.data_files > 0 {
        left.push(format!("{} data files", r.data_files));
    }
    if !left.is_empty() {
        s.push_str(&format!(
            "; not checked: {} (pseudo-files and data: no code on disk to compare)",
            (marks.vol)(left.join(", "))
        ));
    }
    if r.unchecked_files > 0 {
        s.push_str(&format!(
            "; {} files could not be stat'ed",
            (marks.vol)(r.unchecked_files.to_string())
        ));
    }
    s
}

/// `--user`: a user name or a numeric uid.
pub fn parse_user(s: &str) -> std::result::Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("--user {s}: no such user")),
        Err(e) => Err(format!("--user {s}: cannot look the user up: {e}")),
    }
}

/// Waits until process `pid` has run longer than the detector's time
/// resolution (two clock ticks of its start time) plus a margin, and an
/// installer's writing time ([`INSTALL_WRITE_NS`]), so that a write made
/// afterwards is measurably after the start, and after the birth of a file
/// born with the process. The margin covers
/// the file times' coarse clock, which lags the real time by a jiffy and,
/// on a busy virtual machine whose timer interrupts come late, by more:
/// one musl L11 run here saw a write two ticks after the start go
/// unflagged.
pub fn wait_until_measurably_started(pid: i32, deadline: Duration) -> Result<()> {
    const MARGIN_NS: i128 = 50_000_000;
    let tick = 1_000_000_000 / procfs::ticks_per_second().max(1) as i128;
    let stat = Process::new(pid)
        .and_then(|p| p.stat())
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let start = stat.starttime as i128 * tick;
    let until = Instant::now() + deadline;
    // A file born in the tick the process started in may be younger than
    // the process by that tick's measure: its write must also come more
    // than an installer's writing time after its birth.
    let enough = start + 2 * tick + MARGIN_NS + INSTALL_WRITE_NS;
    while clock_ns(nix::time::ClockId::CLOCK_BOOTTIME) <= enough {
        if Instant::now() >= until {
            anyhow::bail!(
                "process {pid} did not age two clock ticks and {INSTALL_WRITE_NS} ns within {deadline:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
