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
//! Where the filesystem keeps no birth time (tmpfs on Debian 11's 5.10,
//! measured by `matrix --kernel`), a file written after the start with its
//! layout unchanged is not judged (counted unchecked): it may as well have
//! been installed after the start and mapped since.
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
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procfs::process::Process;
use procfs::FromRead;
use regex::Regex;

use crate::detector::elf::{self, Where};
use crate::detector::maps;
use crate::detector::packages::{self, Asked};
use crate::detector::plan;
use crate::detector::regular;
use crate::detector::scripts::{self, Script};

pub use crate::detector::report::{
    Excluded, FileId, Group, GroupKind, Marks, Reason, Report, Restart, Role, StaleFile,
    StaleProcess, Unreadable, Urgency, PLAIN,
};
pub use crate::detector::text::{render, render_plan, summary};

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
    /// Folders that hold a dpkg database of their own (`dpkg --root`): a
    /// flagged file under one is attributed from that database, by its
    /// path inside the folder.
    pub package_roots: Vec<PathBuf>,
    /// Leave the package databases unread.
    pub skip_packages: bool,
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
    perms: [u8; 4],
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
    /// The scanner's root directory (device, inode).
    my_root: Option<(u64, u64)>,
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
        // The names alone: procfs's all_processes() opens every /proc/PID
        // on the way (an open and a close each, before the threads start),
        // and each thread opens it again.
        fs::read_dir("/proc")
            .context("cannot list /proc")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .collect()
    } else {
        opts.pids.clone()
    };
    let mut report = Report {
        scanned: 0,
        required: 0,
        optional: 0,
        processes: Vec::new(),
        groups: Vec::new(),
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
                        report.processes.push(*p);
                    }
                }
            }
        }
    }
    plan::advise(&mut report.processes);
    if !opts.skip_packages {
        attribute_packages(&mut report.processes, &opts.package_roots);
    }
    for p in &mut report.processes {
        p.user = s.user(p.uid);
    }
    report.processes.sort_by_key(|p| p.pid);
    let own_cgroup = cgroup_of(std::process::id() as i32);
    report.groups = plan::groups(
        &report.processes,
        Path::new("/run/systemd/system").is_dir(),
        own_cgroup.as_deref(),
    );
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
    Scanned(Option<Box<StaleProcess>>),
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            my_mnt_ns: fs::read_link("/proc/self/ns/mnt").ok(),
            my_root: fs::metadata("/").ok().map(|m| (m.dev(), m.ino())),
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

    /// The process's root when it is not the scanner's root directory (a
    /// chroot's folder, or `/proc/PID/root` in another namespace), with
    /// its stale files renamed as it knows them: maps names a chroot's
    /// files from the namespace's root, the process without the chroot's
    /// folder in front.
    fn name_in_root(
        &self,
        pid: i32,
        own_ns: bool,
        root_link: Option<PathBuf>,
        stale: &mut [StaleFile],
    ) -> Option<PathBuf> {
        let (root, chroot) = if own_ns {
            let r = fs::read_link(format!("/proc/{pid}/root"))
                .ok()
                .filter(|r| r != Path::new("/"));
            (r.clone(), r)
        } else if self.same_root_dir(pid) {
            // The host's root with mounts of its own (a service's
            // PrivateTmp or ProtectSystem): judged through /proc/PID/root,
            // but no container.
            (None, None)
        } else {
            (Some(PathBuf::from(format!("/proc/{pid}/root"))), root_link)
        };
        for f in stale.iter_mut().filter(|f| f.role != Role::Script) {
            if let Some(inside) = chroot.as_deref().and_then(|r| inside_root(&f.path, r)) {
                f.path_in_maps = Some(std::mem::replace(&mut f.path, inside));
            }
        }
        root
    }

    /// Whether process `pid`'s root is the scanner's root directory.
    fn same_root_dir(&self, pid: i32) -> bool {
        let root = fs::metadata(format!("/proc/{pid}/root")).ok();
        root.is_some() && root.map(|m| (m.dev(), m.ino())) == self.my_root
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
        let Ok(Ok(stat)) = read_rel(pid, "stat", |b| procfs::process::Stat::from_read(b)) else {
            return Seen::Vanished;
        };
        if matches!(stat.state, 'Z' | 'X') {
            return Seen::Vanished;
        }
        // The owner of /proc/PID; read only when it is asked for or shown.
        let mut uid = None;
        if let Some(want) = opts.user {
            uid = uid_of(pid);
            if uid != Some(want) {
                return Seen::Filtered;
            }
        }
        let mut args: Option<String> = None;
        if let Some(re) = &opts.pattern {
            let a = args_of(pid);
            if !re.is_match(&stat.comm) && !re.is_match(&a) {
                return Seen::Filtered;
            }
            args = Some(a);
        }
        let lines = match maps::read_file_lines(pid) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Seen::Unreadable(Unreadable {
                    pid,
                    command: stat.comm,
                    uid: uid.or_else(|| uid_of(pid)),
                })
            }
            Err(_) => return Seen::Vanished,
        };
        // A kernel thread maps nothing. The executable is the file whose
        // mapping holds the start of the program's code (stat's
        // startcode): no readlink of /proc/PID/exe for every process.
        if lines.is_empty() {
            return Seen::Kernel;
        }
        let mut exe: Option<PathBuf> = None;
        let mut exe_id: Option<FileId> = None;
        let files = self.group_by_file(lines);
        let ns = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let own_ns = ns.is_some() && ns == self.my_mnt_ns;
        // In another mount namespace, maps names files from that
        // namespace's root, and the process's own root (a chroot inside it)
        // is named the same way.
        let root_link = if own_ns {
            None
        } else {
            fs::read_link(format!("/proc/{pid}/root")).ok()
        };
        let start_ns = self.boot_to_real_ns + stat.starttime as i128 * self.tick_ns;
        let mut stale = Vec::new();
        for ((major, minor, inode, printed), maps) in files {
            let readings = maps::readings(&printed);
            let code = stat.startcode;
            let role = if exe.is_none() && maps.iter().any(|m| m.start <= code && code < m.end) {
                // As /proc/PID/exe names it: unescaped, mark included.
                exe = Some(readings[0].path.clone());
                exe_id = Some(FileId {
                    major,
                    minor,
                    inode,
                });
                Role::Executable
            } else {
                Role::Library
            };
            if role == Role::Library && !maps.iter().any(|m| m.perms[2] == b'x') {
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
                root_link: root_link.as_deref(),
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
        let args = args.unwrap_or_else(|| args_of(pid));
        let root = self.name_in_root(pid, own_ns, root_link, &mut stale);
        let cgroup = cgroup_of(pid);
        Seen::Scanned(Some(Box::new(StaleProcess {
            pid,
            ppid: stat.ppid,
            uid: uid.or_else(|| uid_of(pid)).unwrap_or(u32::MAX),
            user: String::new(),
            command: stat.comm,
            args,
            service: cgroup
                .as_deref()
                .and_then(plan::service_in)
                .map(|(unit, _)| unit),
            cgroup,
            root,
            start_ns,
            exe: exe_id,
            need,
            restart: Restart {
                at: pid,
                fork_is_enough: false,
                advice: String::new(),
            },
            files: stale,
        })))
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
            let p = PathBuf::from(format!("/proc/{}/root", ctx.pid));
            // A process that chrooted inside its namespace after it loaded
            // its libraries maps files outside its root: nothing reaches
            // them from here, and they are not called removed.
            let inside = match ctx.root_link {
                Some(r) if r != Path::new("/") => match inside_root(path, r) {
                    Some(inside) => inside,
                    None => return (p, OnDisk::Unreadable),
                },
                _ => path.to_path_buf(),
            };
            let rel = inside.strip_prefix("/").unwrap_or(&inside);
            let p = p.join(rel);
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
            package: None,
            path_in_maps: None,
            address: ctx.maps.first().map_or(0, |m| m.start),
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
                if btime_ns.is_none() {
                    // No birth time (tmpfs before 6.x, as on Debian 11's
                    // 5.10; NFS): a write after the start cannot be told
                    // from a file installed after it and mapped since (a
                    // dlopen, an exec). Not judged, rather than a restart
                    // called for that may be needless.
                    self.unchecked_files += 1;
                    return None;
                }
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
                package: None,
                path_in_maps: None,
                address: 0,
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
                regular::open(real)
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
                let r = &m.perms;
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
                    String::from_utf8_lossy(&m.perms[..3])
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
    /// `/proc/PID/root`'s link, for a process in another mount namespace.
    root_link: Option<&'a Path>,
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
        .find(|m| m.perms[2] == b'x')
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
    let Ok(new) = regular::open(real) else {
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

/// A file of `/proc/PID`, read whole in as few calls as it takes (see
/// [`maps::read_whole`]; procfs reads with `std`'s `read_to_end`, which asks
/// the size first and then reads 32 bytes, 32, 64…).
fn read_rel<T>(pid: i32, name: &str, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    let file = File::open(format!("/proc/{pid}/{name}"))?;
    maps::read_whole(file, f)
}

/// The owner of `/proc/PID`: the process's effective uid.
fn uid_of(pid: i32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The command line, its words joined by spaces, as procfs's `cmdline()`
/// gives them (empty words left out; nothing when it is not UTF-8).
fn args_of(pid: i32) -> String {
    read_rel(pid, "cmdline", |b| {
        std::str::from_utf8(b)
            .map(|s| {
                s.split('\0')
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// The process's cgroup: the unified hierarchy's path, else systemd's
/// (`name=systemd`), else the first controller's that is not the root.
fn cgroup_of(pid: i32) -> Option<String> {
    let groups = read_rel(pid, "cgroup", |b| procfs::ProcessCGroups::from_read(b))
        .ok()?
        .ok()?
        .0;
    let mut set = groups.iter().filter(|g| g.pathname != "/");
    let unified = set.clone().find(|g| g.hierarchy == 0);
    let systemd = set
        .clone()
        .find(|g| g.controllers.iter().any(|c| c == "name=systemd"));
    unified
        .or(systemd)
        .or_else(|| set.next())
        .map(|g| g.pathname.clone())
}

/// `path` as a process whose root is `root` names it: without the root's
/// folder in front; `None` when the root is `/` or holds no such path.
fn inside_root(path: &Path, root: &Path) -> Option<PathBuf> {
    if root == Path::new("/") {
        return None;
    }
    path.strip_prefix(root)
        .ok()
        .map(|rest| Path::new("/").join(rest))
}

/// Names the package of every flagged file where a dpkg database tells:
/// the process's own root's database (a chroot, a container), else that
/// of a `package_roots` folder the file is under, else the host's.
fn attribute_packages(procs: &mut [StaleProcess], package_roots: &[PathBuf]) {
    // Database root -> (process, file, path inside that root, start).
    type Asks = Vec<(usize, usize, PathBuf, String)>;
    let mut asked: BTreeMap<PathBuf, Asks> = BTreeMap::new();
    // A worker forked after the upgrade runs what its top started on: the
    // top's start says which upgrade replaced it.
    let starts: HashMap<i32, i128> = procs.iter().map(|p| (p.pid, p.start_ns)).collect();
    for (i, p) in procs.iter().enumerate() {
        let start = starts.get(&p.restart.at).copied().unwrap_or(p.start_ns);
        let started = packages::log_time(start);
        let other_ns = PathBuf::from(format!("/proc/{}/root", p.pid));
        for (j, f) in p.files.iter().enumerate() {
            // The process's own database, for what lies in its root (a
            // chroot's file found under it, or anything seen through
            // another namespace's root).
            let own = p
                .root
                .as_ref()
                .filter(|r| f.path_in_maps.is_some() || **r == other_ns);
            let (root, inside) = match own {
                Some(r) => (r.clone(), f.path.clone()),
                None => package_roots
                    .iter()
                    .find_map(|r| {
                        let rest = f.path.strip_prefix(r).ok()?;
                        Some((r.clone(), Path::new("/").join(rest)))
                    })
                    .unwrap_or_else(|| (PathBuf::from("/"), f.path.clone())),
            };
            asked
                .entry(root)
                .or_default()
                .push((i, j, inside, started.clone()));
        }
    }
    for (root, files) in asked {
        let asks: Vec<Asked> = files
            .iter()
            .map(|(_, _, path, started)| Asked { path, started })
            .collect();
        let owners = packages::owners(&root, &asks);
        for (i, j, path, _) in &files {
            procs[*i].files[*j].package = owners.get(path).cloned();
        }
    }
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
