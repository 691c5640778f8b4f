//! The scan: every selected process read (on every core), merged in pid
//! order, planned and attributed to its packages.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::packages::{self, Asked};
use crate::plan;
use crate::report::{Excluded, StaleProcess, StaleReport, UnreadDatabase, Urgency};

use super::parents::parents_outside;
use super::process::cgroup_of;
use super::scanner::{boot_to_real_ns, Scanner, Seen, PSEUDO};
use super::ScanOptions;

/// Scans the processes `opts` selects.
pub fn scan(opts: &ScanOptions) -> Result<StaleReport> {
    let t0 = Instant::now();
    let mut report = StaleReport {
        scanned: 0,
        required: 0,
        optional: 0,
        processes: Vec::new(),
        groups: Vec::new(),
        unreadable: Vec::new(),
        kernel_threads: 0,
        vanished: 0,
        excluded: Vec::new(),
        excluded_processes: 0,
        data_files: 0,
        unchecked_files: 0,
        unchecked: Vec::new(),
        unread_databases: Vec::new(),
        scanner_uid: nix::unistd::geteuid().as_raw(),
        seconds: 0.0,
    };
    let mut s = scan_all(opts, &mut report)?;
    let parents = parents_outside(&report, opts);
    plan::advise(&mut report.processes, &parents);
    if !opts.skip_packages {
        report.unread_databases = attribute_packages(&mut report.processes, &opts.package_roots);
    }
    for p in &mut report.processes {
        p.user = s.user(p.uid);
    }
    // Oldest first (a master before the workers it forked), whatever the
    // pids: they wrap around (at 32768 on many machines).
    report.processes.sort_by_key(|p| (p.start_ns, p.pid));
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

/// Reads every process `opts` selects into `report` (see
/// [`on_every_core`]). The scanner returned holds the merged counts.
pub(super) fn scan_all(opts: &ScanOptions, report: &mut StaleReport) -> Result<Scanner> {
    // One clock offset for all: each scanner reading its own put the
    // processes started in one clock tick in the order of the threads'
    // few ns of difference, which changed from run to run.
    let boot_to_real_ns = boot_to_real_ns();
    let new = || {
        let mut s = Scanner::new();
        s.boot_to_real_ns = boot_to_real_ns;
        s
    };
    let parts = on_every_core(opts, new, |s, pid| s.one(pid, opts))?;
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
                Seen::Excluded => report.excluded_processes += 1,
                Seen::Unreadable(u) => report.unreadable.push(u),
                Seen::Scanned { stale, unchecked } => {
                    report.scanned += 1;
                    report.processes.extend(stale.map(|p| *p));
                    report.unchecked.extend(unchecked);
                }
            }
        }
    }
    Ok(s)
}

/// Reads each process `opts` selects with `each`, on every core: processes
/// are independent. Each thread has its own state (its caches), made by
/// `new`, returned with its answers for the caller to merge. The threads
/// start at once and take the pids as /proc lists them (10 ms for 10,000
/// processes, in the kernel).
pub(super) fn on_every_core<S: Send, R: Send>(
    opts: &ScanOptions,
    new: impl Fn() -> S + Sync,
    each: impl Fn(&mut S, i32) -> R + Sync,
) -> Result<Vec<(Vec<R>, S)>> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let few = !opts.pids.is_empty() && opts.pids.len() < 64;
    let threads = if few { 1 } else { cores };
    let (new, each) = (&new, &each);
    let (parts, listed) = std::thread::scope(|scope| {
        let (senders, handles): (Vec<_>, Vec<_>) = (0..threads)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel::<i32>();
                let handle = scope.spawn(move || {
                    let mut s = new();
                    let answers: Vec<R> = rx.iter().map(|pid| each(&mut s, pid)).collect();
                    (answers, s)
                });
                (tx, handle)
            })
            .unzip();
        let listed = hand_out(opts, &senders);
        drop(senders);
        let parts: Vec<(Vec<R>, S)> = handles
            .into_iter()
            .map(|h| h.join().expect("a scan thread panicked"))
            .collect();
        (parts, listed)
    });
    listed?;
    Ok(parts)
}

/// Sends the pids `opts` names, else every pid /proc lists, to the
/// threads in turn. The names alone: procfs's all_processes() opens every
/// /proc/PID on the way, and each thread opens it again.
fn hand_out(opts: &ScanOptions, to: &[std::sync::mpsc::Sender<i32>]) -> Result<()> {
    let mut send = {
        let mut next = 0;
        move |pid: i32| {
            // A thread gone (it panicked) is reported by its join.
            let _ = to[next % to.len()].send(pid);
            next += 1;
        }
    };
    if !opts.pids.is_empty() {
        opts.pids.iter().for_each(|&pid| send(pid));
        return Ok(());
    }
    fs::read_dir("/proc")
        .context("cannot list /proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .for_each(send);
    Ok(())
}

/// Names the package of every flagged file where a dpkg or rpm database
/// tells: the process's own root's database (a chroot, a container), else
/// that of a `package_roots` folder the file is under, else the host's.
/// Returns the databases found that could not be read.
pub(super) fn attribute_packages(
    procs: &mut [StaleProcess],
    package_roots: &[PathBuf],
) -> Vec<UnreadDatabase> {
    // Database root -> (process, file, path inside that root, start).
    type Asks = Vec<(usize, usize, PathBuf, i128)>;
    let mut asked: BTreeMap<PathBuf, Asks> = BTreeMap::new();
    // A worker forked after the upgrade runs what its top started on: the
    // top's start says which upgrade replaced it.
    let starts: HashMap<i32, i128> = procs.iter().map(|p| (p.pid, p.start_ns)).collect();
    for (i, p) in procs.iter().enumerate() {
        let start = starts.get(&p.restart.at).copied().unwrap_or(p.start_ns);
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
            asked.entry(root).or_default().push((i, j, inside, start));
        }
    }
    let mut unread = Vec::new();
    for (root, files) in asked {
        let asks: Vec<Asked> = files
            .iter()
            .map(|(_, _, path, started_ns)| Asked {
                path,
                started_ns: *started_ns,
            })
            .collect();
        let owners = packages::owners(&root, &asks);
        for (k, (i, j, _, _)) in files.iter().enumerate() {
            procs[*i].files[*j].package = owners.by_ask.get(&k).cloned();
        }
        if let Some((path, why)) = owners.unread {
            unread.push(UnreadDatabase { path, why });
        }
    }
    unread
}
