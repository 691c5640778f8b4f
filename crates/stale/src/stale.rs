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

mod judge;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procfs::process::Process;
use procfs::FromRead;
use regex::Regex;

use crate::elf;
use crate::maps;
use crate::mounts::Mounts;
use crate::packages::{self, Asked};
use crate::plan;
use crate::scripts;
use judge::{FileCtx, Judged};

pub use crate::report::{
    Excluded, FileId, Group, GroupKind, Identity, Marks, Reason, Report, Restart, Role, StaleFile,
    StaleProcess, UncheckedFile, UncheckedProcess, Unjudged, Unread, Unreadable, Urgency, PLAIN,
};
pub use crate::text::{render, render_plan, summary};

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

struct Scanner {
    my_mnt_ns: Option<PathBuf>,
    /// The scanner's root directory (device, inode).
    my_root: Option<(u64, u64)>,
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, in ns: turns a start time (since
    /// boot) into wall-clock time, as file times are.
    boot_to_real_ns: i128,
    tick_ns: i128,
    page: u64,
    paths: HashMap<PathBuf, judge::OnDisk>,
    segments: HashMap<(FileId, i128, u64), Option<Vec<elf::Segment>>>,
    compared: HashMap<(FileId, FileId, i128), judge::Compared>,
    /// The mounts each (mount namespace, root directory) sees.
    mounts: HashMap<SeenFrom, Arc<Mounts>>,
    users: HashMap<u32, String>,
    excluded: BTreeMap<&'static str, (usize, usize)>,
    data_files: usize,
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
        unchecked: Vec::new(),
        scanner_uid: nix::unistd::geteuid().as_raw(),
        seconds: 0.0,
    };
    let mut s = scan_all(&pids, opts, &mut report);
    let parents = parents_outside(&report, opts);
    plan::advise(&mut report.processes, &parents);
    if !opts.skip_packages {
        attribute_packages(&mut report.processes, &opts.package_roots);
    }
    for p in &mut report.processes {
        p.user = s.user(p.uid);
    }
    report.processes.sort_by_key(|p| p.pid);
    let own_cgroup = cgroup_of(Path::new("/proc/self"));
    report.groups = plan::groups(
        &report.processes,
        &parents,
        Path::new("/run/systemd/system").is_dir(),
        own_cgroup.as_deref(),
    );
    report.unreadable.sort_by_key(|u| u.pid);
    report.unchecked.sort_by_key(|u| u.pid);
    report.unchecked_files = report.unchecked.iter().map(|u| u.files.len()).sum();
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
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads every process of `pids` into `report`. Processes are independent:
/// read them on every core, each thread with its own caches, then merge in
/// pid order. The scanner returned holds the merged counts.
fn scan_all(pids: &[i32], opts: &Options, report: &mut Report) -> Scanner {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let threads = if pids.len() < 64 { 1 } else { threads };
    let parts: Vec<(Vec<Seen>, Scanner)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
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
        for one in seen {
            match one {
                Seen::Vanished => report.vanished += 1,
                Seen::Kernel => report.kernel_threads += 1,
                Seen::Filtered => {}
                Seen::Unreadable(u) => report.unreadable.push(u),
                Seen::Scanned { stale, unchecked } => {
                    report.scanned += 1;
                    report.processes.extend(stale.map(|p| *p));
                    report.unchecked.extend(unchecked);
                }
            }
        }
    }
    s
}

/// The parents of flagged processes that the scan did not report because
/// they were not asked for (`--pid`, `--user`, `--match`): read now, so
/// that the restart plan sees whether a process was forked from one that
/// runs the same old code. Each is [`plan::Parent::Stale`], `Clean` or
/// `Unread` (with its command name, which `/proc/PID/stat` gives anyone).
fn parents_outside(report: &Report, opts: &Options) -> plan::Parents {
    // Its own scanner: what it reads counts nowhere in the report.
    let mut s = Scanner::new();
    let filtered = !opts.pids.is_empty() || opts.user.is_some() || opts.pattern.is_some();
    let mut known: HashMap<i32, plan::Parent> = HashMap::new();
    for u in &report.unreadable {
        known.insert(u.pid, plan::Parent::Unjudged(u.command.clone()));
    }
    for u in &report.unchecked {
        known.insert(u.pid, plan::Parent::Unjudged(u.command.clone()));
    }
    let reported: std::collections::HashSet<i32> = report.processes.iter().map(|p| p.pid).collect();
    let mut todo: Vec<i32> = report
        .processes
        .iter()
        .filter(|p| p.need == Urgency::Required)
        .map(|p| p.ppid)
        .collect();
    let everyone = Options::default();
    let mut guard = 0;
    while let Some(ppid) = todo.pop() {
        guard += 1;
        if ppid <= 1 || guard > 256 || reported.contains(&ppid) || known.contains_key(&ppid) {
            continue;
        }
        if !filtered {
            // Every process was read: one that is not reported is clean.
            known.insert(ppid, plan::Parent::Clean);
            continue;
        }
        let parent = match s.one(ppid, &everyone) {
            Seen::Scanned { stale: Some(p), .. } => {
                todo.push(p.ppid);
                plan::Parent::Stale(p)
            }
            Seen::Unreadable(u) => plan::Parent::Unjudged(u.command),
            Seen::Scanned {
                unchecked: Some(u), ..
            } => plan::Parent::Unjudged(u.command),
            _ => plan::Parent::Clean,
        };
        known.insert(ppid, parent);
    }
    known
}

enum Seen {
    Vanished,
    Kernel,
    Filtered,
    Unreadable(Unreadable),
    Scanned {
        stale: Option<Box<StaleProcess>>,
        unchecked: Option<UncheckedProcess>,
    },
}

/// A mount namespace's link and a root directory (device, inode).
type SeenFrom = (PathBuf, Option<(u64, u64)>);

/// How a process sees files (see [`Scanner::view_of`]).
struct View {
    ns: Option<PathBuf>,
    own_ns: bool,
    root_link: Option<PathBuf>,
    /// Its root directory (device, inode).
    root: Option<(u64, u64)>,
}

/// A process's folder in /proc, and its stat, as the scan reads it: a live
/// thread's (`/proc/PID/task/TID`) when the main thread has exited
/// (`pthread_exit` in main) and the others still run the process's code.
struct ProcDir {
    dir: PathBuf,
    stat: procfs::process::Stat,
}

fn proc_dir(pid: i32) -> Option<ProcDir> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = read_in(&dir, "stat", |b| procfs::process::Stat::from_read(b))
        .ok()?
        .ok()?;
    if !matches!(stat.state, 'Z' | 'X') {
        return Some(ProcDir { dir, stat });
    }
    if stat.num_threads <= 1 {
        return None;
    }
    // The main thread is a zombie: its maps, root and namespaces are gone
    // with it; a live thread has them all.
    let tasks = fs::read_dir(dir.join("task")).ok()?;
    tasks.filter_map(|t| t.ok()).find_map(|t| {
        let tdir = t.path();
        let tstat = read_in(&tdir, "stat", |b| procfs::process::Stat::from_read(b))
            .ok()?
            .ok()?;
        if matches!(tstat.state, 'Z' | 'X') {
            return None;
        }
        // The process's start, name and parent are the main thread's.
        let mut tstat = tstat;
        tstat.starttime = stat.starttime;
        tstat.comm = stat.comm.clone();
        tstat.ppid = stat.ppid;
        Some(ProcDir {
            dir: tdir,
            stat: tstat,
        })
    })
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
            mounts: HashMap::new(),
            users: HashMap::new(),
            excluded: BTreeMap::new(),
            data_files: 0,
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
        dir: &Path,
        view: &View,
        stale: &mut [StaleFile],
    ) -> Option<PathBuf> {
        let (root, chroot) = if view.own_ns {
            let r = fs::read_link(dir.join("root"))
                .ok()
                .filter(|r| r != Path::new("/"));
            (r.clone(), r)
        } else if view.root.is_some() && view.root == self.my_root {
            // The host's root with mounts of its own (a service's
            // PrivateTmp or ProtectSystem): judged through /proc/PID/root,
            // but no container.
            (None, None)
        } else {
            (
                Some(PathBuf::from(format!("/proc/{pid}/root"))),
                view.root_link.clone(),
            )
        };
        for f in stale.iter_mut().filter(|f| f.role != Role::Script) {
            if let Some(inside) = chroot.as_deref().and_then(|r| inside_root(&f.path, r)) {
                f.path_in_maps = Some(std::mem::replace(&mut f.path, inside));
            }
        }
        root
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

    /// How the process in `dir` sees files: its mount namespace and, in
    /// another namespace than the scanner's, its root's link (maps names
    /// files from that namespace's root, and a chroot inside it the same
    /// way).
    fn view_of(&self, dir: &Path) -> View {
        let ns = fs::read_link(dir.join("ns/mnt")).ok();
        let own_ns = ns.is_some() && ns == self.my_mnt_ns;
        let root_link = (!own_ns)
            .then(|| fs::read_link(dir.join("root")).ok())
            .flatten();
        let root = fs::metadata(dir.join("root"))
            .ok()
            .map(|m| (m.dev(), m.ino()));
        View {
            ns,
            own_ns,
            root_link,
            root,
        }
    }

    /// The mounts the process in `dir` sees: its namespace's, as its root
    /// shows them (mountinfo leaves out what a chroot cannot reach).
    fn mounts_of(&mut self, view: &View, dir: &Path) -> Arc<Mounts> {
        let Some(ns) = &view.ns else {
            return Arc::new(Mounts::of(dir));
        };
        self.mounts
            .entry((ns.clone(), view.root))
            .or_insert_with(|| Arc::new(Mounts::of(dir)))
            .clone()
    }

    fn one(&mut self, pid: i32, opts: &Options) -> Seen {
        let Some(ProcDir { dir, stat }) = proc_dir(pid) else {
            return Seen::Vanished;
        };
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
            let a = args_of(&dir);
            if !re.is_match(&stat.comm) && !re.is_match(&a) {
                return Seen::Filtered;
            }
            args = Some(a);
        }
        let lines = match maps::read_file_lines(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let uid = uid.or_else(|| uid_of(pid));
                let me = nix::unistd::geteuid();
                let reason = if me.is_root() || uid == Some(me.as_raw()) {
                    Unread::Refused
                } else {
                    Unread::AnotherUser
                };
                return Seen::Unreadable(Unreadable {
                    pid,
                    command: stat.comm,
                    uid,
                    reason,
                });
            }
            Err(_) => return Seen::Vanished,
        };
        // A kernel thread maps nothing.
        if lines.is_empty() {
            return Seen::Kernel;
        }
        let files = self.group_by_file(lines);
        let view = self.view_of(&dir);
        let (exe, exe_id, mut stale, mut unchecked) =
            self.judge_files(pid, &dir, &view, &stat, files);
        let start_ns = self.start_ns(&stat);
        if let Some(script) = exe.as_deref().and_then(|e| scripts::script_of(pid, e)) {
            match self.check_script(&script, start_ns) {
                Judged::Stale(f) => stale.push(*f),
                Judged::Unchecked(f) => unchecked.push(f),
                Judged::Current => {}
            }
        }
        let unchecked = (!unchecked.is_empty()).then(|| UncheckedProcess {
            pid,
            command: stat.comm.clone(),
            files: unchecked,
        });
        if stale.is_empty() {
            return Seen::Scanned {
                stale: None,
                unchecked,
            };
        }
        let need = stale
            .iter()
            .map(|f| f.need)
            .max()
            .unwrap_or(Urgency::Optional);
        let args = args.unwrap_or_else(|| args_of(&dir));
        let root = self.name_in_root(pid, &dir, &view, &mut stale);
        let cgroup = cgroup_of(&dir);
        let found = StaleProcess {
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
                parent_unjudged: None,
            },
            files: stale,
        };
        Seen::Scanned {
            stale: Some(Box::new(found)),
            unchecked,
        }
    }

    /// When the process started, in wall-clock ns.
    fn start_ns(&self, stat: &procfs::process::Stat) -> i128 {
        self.boot_to_real_ns + stat.starttime as i128 * self.tick_ns
    }

    /// Judges each file the process maps as code: the executable's path
    /// (as `/proc/PID/exe` names it) and id, the stale files and the
    /// unchecked ones. The executable is the file whose mapping holds the
    /// start of the program's code (stat's startcode): no readlink of
    /// /proc/PID/exe for every process.
    fn judge_files(
        &mut self,
        pid: i32,
        dir: &Path,
        view: &View,
        stat: &procfs::process::Stat,
        files: Vec<(FileKey, Vec<Map>)>,
    ) -> (
        Option<PathBuf>,
        Option<FileId>,
        Vec<StaleFile>,
        Vec<UncheckedFile>,
    ) {
        let mounts = self.mounts_of(view, dir);
        let start_ns = self.start_ns(stat);
        let (mut exe, mut exe_id) = (None, None);
        let (mut stale, mut unchecked) = (Vec::new(), Vec::new());
        for ((major, minor, inode, printed), maps) in files {
            let readings = maps::readings(&printed);
            let code = stat.startcode;
            let mapped = FileId {
                major,
                minor,
                inode,
            };
            let role = if exe.is_none() && maps.iter().any(|m| m.start <= code && code < m.end) {
                // As /proc/PID/exe names it: unescaped, mark included.
                exe = Some(readings[0].path.clone());
                exe_id = Some(mapped);
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
                dir,
                role,
                readings: &readings,
                mapped,
                maps: loaded_image(&maps),
                own_ns: view.own_ns,
                root_link: view.root_link.as_deref(),
                start_ns,
                mounts: mounts.clone(),
            };
            match self.check(&ctx) {
                Judged::Stale(f) => stale.push(*f),
                Judged::Unchecked(f) => unchecked.push(f),
                Judged::Current => {}
            }
        }
        (exe, exe_id, stale, unchecked)
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

/// A file of a process's folder in /proc, read whole in as few calls as it
/// takes (see [`maps::read_whole`]; procfs reads with `std`'s
/// `read_to_end`, which asks the size first and then reads 32 bytes, 32,
/// 64…).
fn read_in<T>(dir: &Path, name: &str, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    let file = File::open(dir.join(name))?;
    maps::read_whole(file, f)
}

/// The owner of `/proc/PID`: the process's effective uid.
fn uid_of(pid: i32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The command line, its words joined by spaces, as procfs's `cmdline()`
/// gives them (empty words left out; nothing when it is not UTF-8).
fn args_of(dir: &Path) -> String {
    read_in(dir, "cmdline", |b| {
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
fn cgroup_of(dir: &Path) -> Option<String> {
    let groups = read_in(dir, "cgroup", |b| procfs::ProcessCGroups::from_read(b))
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
