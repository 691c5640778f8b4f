//! What the scan reads of one process in /proc: its folder, how it sees
//! files (its mount namespace and root), its owner, command line and cgroup.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::stat::Stat;
use crate::maps;

/// How a process sees files (see
/// [`Scanner::view_of`](super::scanner::Scanner::view_of)).
pub(super) struct View {
    pub(super) ns: Option<PathBuf>,
    pub(super) own_ns: bool,
    pub(super) root_link: Option<PathBuf>,
    /// Its root directory (device, inode): read with the view in another
    /// namespace, and in the scanner's only once its mounts are asked for
    /// (most files never need them: a `stat` per process spared).
    pub(super) root: std::cell::OnceCell<Option<(u64, u64)>>,
}

impl View {
    /// The root directory (device, inode) of the process in `dir`.
    pub(super) fn root(&self, dir: &Path) -> Option<(u64, u64)> {
        *self.root.get_or_init(|| {
            fs::metadata(dir.join("root"))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        })
    }
}

/// A process's folder in /proc, and its stat, as the scan reads it: a live
/// thread's (`/proc/PID/task/TID`) when the main thread has exited
/// (`pthread_exit` in main) and the others still run the process's code.
pub(super) struct ProcDir {
    pub(super) dir: PathBuf,
    pub(super) stat: Stat,
}

pub(super) fn proc_dir(pid: i32) -> Option<ProcDir> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = read_record_in(&dir, "stat", Stat::parse).ok()??;
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
        let tstat = read_record_in(&tdir, "stat", Stat::parse).ok()??;
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

/// A file of a process's folder in /proc, read whole in as few calls as it
/// takes (see [`maps::read_whole`]; procfs reads with `std`'s
/// `read_to_end`, which asks the size first and then reads 32 bytes, 32,
/// 64…).
pub(super) fn read_in<T>(dir: &Path, name: &str, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    let file = File::open(dir.join(name))?;
    maps::read_whole(file, f)
}

/// [`read_in`] of a file the kernel formats as one record (`stat`,
/// `cgroup`): one read (see [`maps::read_record`]).
fn read_record_in<T>(dir: &Path, name: &str, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
    let file = File::open(dir.join(name))?;
    maps::read_record(file, f)
}

/// The owner of `/proc/PID`: the process's effective uid.
pub(super) fn uid_of(pid: i32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The command line, its words joined by spaces, as procfs's `cmdline()`
/// gives them (empty words left out; nothing when it is not UTF-8).
pub(super) fn args_of(dir: &Path) -> String {
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
/// Read from the text's `ID:CONTROLLERS:PATH` lines as they come: procfs's
/// parser builds a vector of owned strings per line, a tenth of a scan
/// that flags thousands of processes.
pub(super) fn cgroup_of(dir: &Path) -> Option<String> {
    read_record_in(dir, "cgroup", |b| {
        chosen_cgroup(std::str::from_utf8(b).ok()?)
    })
    .ok()?
}

/// The cgroup [`cgroup_of`] picks from the text of `/proc/PID/cgroup`.
fn chosen_cgroup(text: &str) -> Option<String> {
    let (mut systemd, mut first) = (None, None);
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        if path == "/" {
            continue;
        }
        if id == "0" {
            return Some(path.to_string());
        }
        if systemd.is_none() && controllers.split(',').any(|c| c == "name=systemd") {
            systemd = Some(path);
        }
        first = first.or(Some(path));
    }
    systemd.or(first).map(str::to_string)
}

/// `path` as a process whose root is `root` names it: without the root's
/// folder in front; `None` when the root is `/` or holds no such path.
pub(super) fn inside_root(path: &Path, root: &Path) -> Option<PathBuf> {
    if root == Path::new("/") {
        return None;
    }
    path.strip_prefix(root)
        .ok()
        .map(|rest| Path::new("/").join(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-read text gives what procfs's parser gives, on this
    /// machine's own cgroup file and on a hybrid hierarchy's.
    #[test]
    fn the_cgroup_chosen_is_the_one_procfs_reads() {
        use procfs::FromRead;
        let by_procfs = |text: &str| {
            let groups = procfs::ProcessCGroups::from_read(text.as_bytes()).ok()?.0;
            let mut set = groups.iter().filter(|g| g.pathname != "/");
            let unified = set.clone().find(|g| g.hierarchy == 0);
            let systemd = set
                .clone()
                .find(|g| g.controllers.iter().any(|c| c == "name=systemd"));
            unified
                .or(systemd)
                .or_else(|| set.next())
                .map(|g| g.pathname.clone())
        };
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let hybrid = "12:cpu,cpuacct:/user.slice\n1:name=systemd:/system.slice/ssh.service\n0::/\n";
        let v1 = "3:memory:/\n2:cpu:/batch\n1:name=systemd:/\n";
        for text in [own.as_str(), hybrid, v1, "0::/\n", "broken\n"] {
            assert_eq!(chosen_cgroup(text), by_procfs(text), "{text:?}");
        }
        assert_eq!(
            chosen_cgroup(hybrid).as_deref(),
            Some("/system.slice/ssh.service")
        );
    }
}
