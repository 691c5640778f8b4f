//! Guards a sandbox whose processes leave the harness's process tree (real
//! nginx daemonizes: a new session, its parent init). The harness starts it
//! with a pipe on stdin. When stdin ends — the harness closed it, or died,
//! even by SIGKILL — the sentinel kills every process whose executable lies
//! under the sandbox, until none is left. If the harness did not say `done`
//! first, or said it and died since (its sandbox's owner lock is free), the
//! sentinel removes the sandbox too, once no mount
//! namespace mounts anything under it any more (killing the processes of
//! those namespaces, which are the harness's).
//!
//! Process groups the harness names (a server that a user's own command
//! started and that daemonized out of the harness's tree, with its
//! executable elsewhere) are killed too. The lines it reads are
//! `swaplab::targets::sentinel::Order`s.
//!
//! usage: swaplab-sentinel SANDBOX

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use swaplab::targets::sentinel::{Order, OWNER_LOCK};

fn under(root: &Path) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter(|p| p.stat().is_ok_and(|s| s.state != 'Z'))
        .filter_map(|p| p.exe().ok().map(|e| (p.pid, e)))
        .filter(|(_, e)| e.starts_with(root))
        .map(|(pid, _)| pid)
        .collect()
}

fn main() {
    let Some(root) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: swaplab-sentinel SANDBOX");
        std::process::exit(2);
    };
    let named_like_a_sandbox = root
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("swaplab-"));
    if !root.is_absolute() || !named_like_a_sandbox {
        eprintln!(
            "swaplab-sentinel: {} is not a swaplab sandbox",
            root.display()
        );
        std::process::exit(2);
    }
    let mut said = Vec::new();
    let mut chunk = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let mut groups: Vec<i32> = Vec::new();
    let mut said_done = false;
    for order in String::from_utf8_lossy(&said)
        .lines()
        .filter_map(Order::parse)
    {
        match order {
            Order::Watch(g) => groups.push(g),
            Order::Forget(g) => groups.retain(|w| *w != g),
            Order::Done => said_done = true,
        }
    }
    let until = Instant::now() + swaplab::targets::sentinel::SWEEP;
    loop {
        for g in &groups {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*g),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let left = under(&root);
        if left.is_empty() || Instant::now() > until {
            break;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A harness that said `done` and then died (killed while it waited for
    // this sweep) has let go of its sandbox's owner lock: the sandbox is
    // then no one's to remove but this sentinel's.
    if !said_done || !owner_holds(&root) {
        remove_once_unmounted(&root);
    }
}

/// Whether a live process holds the owner lock of the sandbox `root` (the
/// harness's sandbox module takes it for as long as its owner lives). A
/// sandbox without the lock file is left to whoever made it.
fn owner_holds(root: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    match std::fs::File::open(root.join(OWNER_LOCK)) {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
        Err(_) => true,
    }
}

/// Removes `root` once no mount namespace mounts anything under it. Not
/// before: removing it while a namespace of the harness's (`matrix --fs`)
/// still mounts over it would detach those mounts lazily and leave their
/// loop device attached for good. A namespace that mounts under the
/// sandbox is the harness's own, and lives as long as any process in it:
/// each is killed (a target with its executable elsewhere, or a sentinel
/// of a sandbox in there, would otherwise keep it for seconds).
fn remove_once_unmounted(root: &Path) {
    let limit = swaplab::targets::sentinel::UNMOUNT_LIMIT;
    let until = Instant::now() + limit;
    let holders = || swaplab::detector::mounts::mounted_under(root);
    let mut left = holders();
    while !left.is_empty() && Instant::now() < until {
        for pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        left = holders();
    }
    if let Some(pid) = left.first() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        eprintln!(
            "swaplab-sentinel: {} stays: process {pid} ({}) still mounts under it after {limit:?}",
            root.display(),
            comm.trim()
        );
    } else if let Err(e) = std::fs::remove_dir_all(root).or_else(|e| {
        (e.kind() == std::io::ErrorKind::NotFound)
            .then_some(())
            .ok_or(e)
    }) {
        eprintln!("swaplab-sentinel: cannot remove {}: {e}", root.display());
    }
}
