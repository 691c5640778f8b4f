//! What `/proc` says about processes as a whole: who is alive, whose child
//! each is, which process group, which executable, which fds, which
//! listening sockets. Parsing is procfs's; this module selects and renders.

use std::path::PathBuf;

use procfs::process::{FDTarget, Process};

/// One row of a process table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// `comm`, as `ps -o comm` shows it.
    pub comm: String,
    /// `cmdline` joined with spaces, as `ps -o args` shows it.
    pub args: String,
    /// `/proc/PID/exe` as the kernel shows it (with ` (deleted)`).
    pub exe: Option<PathBuf>,
    pub start: u64,
}

fn read(p: &Process) -> Option<Proc> {
    let stat = p.stat().ok()?;
    if stat.state == 'Z' || stat.state == 'X' {
        return None;
    }
    Some(Proc {
        pid: stat.pid,
        ppid: stat.ppid,
        pgrp: stat.pgrp,
        comm: stat.comm,
        args: p.cmdline().map(|c| c.join(" ")).unwrap_or_default(),
        exe: p.exe().ok(),
        start: stat.starttime,
    })
}

/// Every live (not zombie) process.
pub fn all() -> Vec<Proc> {
    let Ok(it) = procfs::process::all_processes() else {
        return Vec::new();
    };
    it.filter_map(|p| p.ok()).filter_map(|p| read(&p)).collect()
}

/// Process `pid`, if it is alive (a zombie is not).
pub fn get(pid: i32) -> Option<Proc> {
    Process::new(pid).ok().and_then(|p| read(&p))
}

pub fn alive(pid: i32) -> bool {
    get(pid).is_some()
}

/// The live members of process group `pgid` in tree order: each process
/// followed by its children, siblings oldest first (pids may wrap around, so
/// they do not tell the order on their own).
pub fn group(pgid: i32) -> Vec<Proc> {
    let mut members: Vec<Proc> = all().into_iter().filter(|p| p.pgrp == pgid).collect();
    members.sort_by_key(|p| (p.start, p.pid));
    let pids: Vec<i32> = members.iter().map(|p| p.pid).collect();
    let mut out = Vec::with_capacity(members.len());
    fn visit(p: &Proc, members: &[Proc], out: &mut Vec<Proc>) {
        out.push(p.clone());
        for c in members.iter().filter(|c| c.ppid == p.pid && c.pid != p.pid) {
            visit(c, members, out);
        }
    }
    for root in members.iter().filter(|p| !pids.contains(&p.ppid)) {
        visit(root, &members, &mut out);
    }
    out
}

/// The live children of `pid`, oldest first.
pub fn children(pid: i32) -> Vec<Proc> {
    let mut v: Vec<Proc> = all().into_iter().filter(|p| p.ppid == pid).collect();
    v.sort_by_key(|p| (p.start, p.pid));
    v
}

/// `/proc/PID/fd`: (fd, target as `ls -l` shows it), in fd order.
pub fn fds(pid: i32) -> Vec<(i32, String)> {
    let Ok(it) = Process::new(pid).and_then(|p| p.fd()) else {
        return Vec::new();
    };
    let mut v: Vec<(i32, String)> = it
        .filter_map(|f| f.ok())
        .map(|f| {
            let shown = match f.target {
                FDTarget::Path(p) => p.display().to_string(),
                FDTarget::Socket(i) => format!("socket:[{i}]"),
                FDTarget::Net(i) => format!("net:[{i}]"),
                FDTarget::Pipe(i) => format!("pipe:[{i}]"),
                FDTarget::AnonInode(s) => format!("anon_inode:{s}"),
                FDTarget::MemFD(s) => format!("/memfd:{s}"),
                FDTarget::Other(s, i) => format!("{s}:[{i}]"),
                FDTarget::Unknown(s, t) => format!("{s}:{t}"),
            };
            (f.fd, shown)
        })
        .collect();
    v.sort();
    v
}

/// The socket inodes among a process's fds: (fd, inode).
pub fn sockets(pid: i32) -> Vec<(i32, u64)> {
    let Ok(it) = Process::new(pid).and_then(|p| p.fd()) else {
        return Vec::new();
    };
    let mut v: Vec<(i32, u64)> = it
        .filter_map(|f| f.ok())
        .filter_map(|f| match f.target {
            FDTarget::Socket(i) => Some((f.fd, i)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The inode of the socket listening on TCP `addr`, from `/proc/net/tcp`
/// and `/proc/net/tcp6`. The whole address, not the port alone: another
/// process may listen on the same port at another address.
pub fn listening_inode(addr: std::net::SocketAddr) -> Option<u64> {
    let v4 = procfs::net::tcp().unwrap_or_default();
    let v6 = procfs::net::tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .find(|e| e.state == procfs::net::TcpState::Listen && e.local_address == addr)
        .map(|e| e.inode)
}

/// One variable of `/proc/PID/environ`.
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let env = Process::new(pid).and_then(|p| p.environ()).ok()?;
    env.get(std::ffi::OsStr::new(name))
        .map(|v| v.to_string_lossy().into_owned())
}
