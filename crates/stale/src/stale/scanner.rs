//! The scanner: its caches, and one process read and its mapped files
//! judged ([`Scanner::one`]); the pseudo-files it passes over.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::elf;
use crate::exclude::Candidate;
use crate::maps;
use crate::mounts::Mounts;
use crate::plan;
use crate::report::{
    FileId, Restart, Role, StaleFile, StaleProcess, UncheckedFile, UncheckedProcess, Unread,
    Unreadable, Urgency,
};
use crate::scripts;

use super::judge::{self, FileCtx, Judged};
use super::process::{args_of, cgroup_of, inside_root, proc_dir, uid_of, ProcDir, View};
use super::stat::Stat;
use super::ScanOptions;

/// The kinds of pseudo-file mapping that are never reported.
pub(super) const PSEUDO: &[(&str, &str)] = &[
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

pub(super) fn pseudo_kind(path: &str) -> Option<&'static str> {
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
pub(super) type FileKey = (u32, u32, u64, Arc<std::ffi::OsStr>);

/// One file-backed mapping, as the checks need it.
#[derive(Clone, Debug)]
pub(super) struct Map {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) offset: u64,
    pub(super) perms: [u8; 4],
}

pub(super) struct Scanner {
    pub(super) my_mnt_ns: Option<PathBuf>,
    /// The scanner's root directory (device, inode).
    pub(super) my_root: Option<(u64, u64)>,
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, in ns: turns a start time (since
    /// boot) into wall-clock time, as file times are.
    pub(super) boot_to_real_ns: i128,
    pub(super) tick_ns: i128,
    pub(super) page: u64,
    pub(super) paths: HashMap<PathBuf, judge::OnDisk>,
    pub(super) segments: HashMap<(FileId, i128, u64), Option<Vec<elf::Segment>>>,
    pub(super) compared: HashMap<(FileId, FileId, i128), judge::Compared>,
    /// The link count `/proc/PID/map_files` told of each mapped file
    /// (device and inode, and its name in maps), in the scanner's mount
    /// namespace: a file's, not a process's (one `stat` for the thousand
    /// processes that map one replaced library).
    pub(super) links: HashMap<(FileId, PathBuf), u64>,
    /// The mounts each (mount namespace, root directory) sees.
    pub(super) mounts: HashMap<SeenFrom, Arc<Mounts>>,
    pub(super) users: HashMap<u32, String>,
    pub(super) excluded: BTreeMap<&'static str, (usize, usize)>,
    pub(super) data_files: usize,
}

pub(super) fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

/// CLOCK_REALTIME − CLOCK_BOOTTIME now, in ns (two clock reads: a few ns
/// apart from one reading to the next).
pub(super) fn boot_to_real_ns() -> i128 {
    clock_ns(nix::time::ClockId::CLOCK_REALTIME) - clock_ns(nix::time::ClockId::CLOCK_BOOTTIME)
}

pub(super) enum Seen {
    Vanished,
    Kernel,
    Filtered,
    /// Left out by `--exclude`.
    Excluded,
    Unreadable(Unreadable),
    Scanned {
        stale: Option<Box<StaleProcess>>,
        unchecked: Option<UncheckedProcess>,
    },
}

/// A mount namespace's link and a root directory (device, inode).
pub(super) type SeenFrom = (PathBuf, Option<(u64, u64)>);

impl Scanner {
    pub(super) fn new() -> Scanner {
        Scanner {
            my_mnt_ns: fs::read_link("/proc/self/ns/mnt").ok(),
            my_root: fs::metadata("/").ok().map(|m| (m.dev(), m.ino())),
            boot_to_real_ns: boot_to_real_ns(),
            tick_ns: 1_000_000_000 / procfs::ticks_per_second().max(1) as i128,
            page: procfs::page_size(),
            paths: HashMap::new(),
            segments: HashMap::new(),
            compared: HashMap::new(),
            links: HashMap::new(),
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
    pub(super) fn name_in_root(
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
        } else if view.root(dir).is_some() && view.root(dir) == self.my_root {
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

    pub(super) fn user(&mut self, uid: u32) -> String {
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
    pub(super) fn view_of(&self, dir: &Path) -> View {
        let ns = fs::read_link(dir.join("ns/mnt")).ok();
        let own_ns = ns.is_some() && ns == self.my_mnt_ns;
        let root_link = (!own_ns)
            .then(|| fs::read_link(dir.join("root")).ok())
            .flatten();
        let view = View {
            ns,
            own_ns,
            root_link,
            root: std::cell::OnceCell::new(),
        };
        if !own_ns {
            view.root(dir);
        }
        view
    }

    pub(super) fn one(&mut self, pid: i32, opts: &ScanOptions) -> Seen {
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
        // A kernel thread is counted as one, whatever the rules say.
        const PF_KTHREAD: u32 = 0x0020_0000;
        if !opts.exclude.is_empty() && stat.flags & PF_KTHREAD == 0 {
            uid = uid.or_else(|| uid_of(pid));
            // The executable's path, also once it was replaced.
            let exe = std::fs::read_link(dir.join("exe")).ok().map(|e| {
                let s = e.to_string_lossy();
                PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
            });
            let unit = cgroup_of(&dir)
                .as_deref()
                .and_then(plan::service_in)
                .map(|(unit, _)| unit);
            let candidate = Candidate {
                command: &stat.comm,
                exe: exe.as_deref(),
                uid,
                unit: unit.as_deref(),
            };
            if opts.exclude.iter().any(|e| e.matches(&candidate)) {
                return Seen::Excluded;
            }
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
    pub(super) fn start_ns(&self, stat: &Stat) -> i128 {
        self.boot_to_real_ns + stat.starttime as i128 * self.tick_ns
    }

    /// Judges each file the process maps as code: the executable's path
    /// (as `/proc/PID/exe` names it) and id, the stale files and the
    /// unchecked ones. The executable is the file whose mapping holds the
    /// start of the program's code (stat's startcode): no readlink of
    /// /proc/PID/exe for every process.
    pub(super) fn judge_files(
        &mut self,
        pid: i32,
        dir: &Path,
        view: &View,
        stat: &Stat,
        files: Vec<(FileKey, Vec<Map>)>,
    ) -> (
        Option<PathBuf>,
        Option<FileId>,
        Vec<StaleFile>,
        Vec<UncheckedFile>,
    ) {
        // The process's mounts, looked up the first time a file needs them.
        let cache = std::cell::RefCell::new(std::mem::take(&mut self.mounts));
        let once = std::cell::OnceCell::new();
        let mounts = || {
            once.get_or_init(|| mounts_seen(&mut cache.borrow_mut(), view, dir))
                .clone()
        };
        let root = crate::in_root::Root::new(dir.join("root"));
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
                mounts: &mounts,
                root: &root,
            };
            match self.check(&ctx) {
                Judged::Stale(f) => stale.push(*f),
                Judged::Unchecked(f) => unchecked.push(f),
                Judged::Current => {}
            }
        }
        self.mounts = cache.into_inner();
        (exe, exe_id, stale, unchecked)
    }

    /// The file mappings grouped by file, in order of first appearance;
    /// pseudo-files counted in `excluded`, anonymous memory passed over.
    pub(super) fn group_by_file(&mut self, lines: Vec<maps::Line>) -> Vec<(FileKey, Vec<Map>)> {
        let mut files: Vec<(FileKey, Vec<Map>)> = Vec::new();
        let mut pseudo: BTreeMap<&'static str, usize> = BTreeMap::new();
        for m in lines {
            // UTF-8 checked fast (most names are), lossily only if not.
            let shown = match std::str::from_utf8(m.name.as_bytes()) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => m.name.to_string_lossy(),
            };
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

/// The mounts the process in `dir` sees: its namespace's, as its root
/// shows them (mountinfo leaves out what a chroot cannot reach); `cache`
/// holds them by namespace and root.
fn mounts_seen(cache: &mut HashMap<SeenFrom, Arc<Mounts>>, view: &View, dir: &Path) -> Arc<Mounts> {
    let Some(ns) = &view.ns else {
        return Arc::new(Mounts::of(dir));
    };
    cache
        .entry((ns.clone(), view.root(dir)))
        .or_insert_with(|| Arc::new(Mounts::of(dir)))
        .clone()
}

/// The mappings (in address order) that belong to the image the loader laid
/// out, without any other view of the same file (rustc maps each proc-macro
/// library again, whole and read-only, to read its metadata): from the
/// image's header mapping (offset 0) below its code, upward while the file
/// offsets grow, as the segments of one image do. A data view is no
/// evidence of a changed layout.
pub(super) fn loaded_image(maps: &[Map]) -> &[Map] {
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
