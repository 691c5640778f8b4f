//! U06: a failed exec leaves the old master serving.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;

use crate::drivers::fleet::{finish_load, install_program, is_worker, served_by, start_load, start_server, Fleet, Passed, SETTLE};
use crate::drivers::load::Load;
use crate::drivers::nginx;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::Lab;
use crate::harness::process::Program;
use crate::harness::procs;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::V1;
use crate::findings::{NGINX, NGINX_UPGRADE};

use super::common::{at_rest, show_log};

/// Renames in one folder as the kernel reports them (inotify), whatever the
/// renaming process says about them.
struct Renames {
    fd: std::os::fd::OwnedFd,
    dir: String,
    from: HashMap<u32, String>,
    seen: Vec<(String, String)>,
}

impl Renames {
    /// Watches `dir` (shown as `shown`) from now on, narrated as
    /// `inotifywait`.
    fn watch(lab: &mut Lab, dir: &Path, shown: &str) -> Result<Renames> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        lab.shell(format!(
            "inotifywait -m -e moved_from,moved_to {shown} &   # the kernel's record of renames there"
        ));
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: plain system calls; the fd is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: fd was just returned by inotify_init1 and nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let mask = libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
        // SAFETY: fd is an inotify instance; c is a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("inotify_add_watch {}", dir.display()));
        }
        Ok(Renames {
            fd,
            dir: shown.to_string(),
            from: HashMap::new(),
            seen: Vec::new(),
        })
    }

    /// The renames so far, `(from, to)`, oldest first.
    fn read(&mut self) -> &[(String, String)] {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut at = 0;
            let n = n as usize;
            // struct inotify_event: wd, mask, cookie, len (4 bytes each), name.
            while at + 16 <= n {
                let word = |i: usize| {
                    u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().expect("4 bytes"))
                };
                let (mask, cookie, len) = (word(4), word(8), word(12) as usize);
                let name = &buf[at + 16..(at + 16 + len).min(n)];
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                if mask & libc::IN_MOVED_FROM != 0 {
                    self.from.insert(cookie, name);
                } else if mask & libc::IN_MOVED_TO != 0 {
                    let from = self.from.remove(&cookie).unwrap_or_default();
                    self.seen.push((from, name));
                }
                at += 16 + len;
            }
        }
        &self.seen
    }

    /// Narrates the renames seen, as `inotifywait` prints them.
    fn show(&mut self, lab: &mut Lab) -> Vec<(String, String)> {
        let seen = self.read().to_vec();
        for (from, to) in &seen {
            lab.say(format!("{} MOVED_FROM {from}", self.dir));
            lab.say(format!("{} MOVED_TO {to}", self.dir));
        }
        seen
    }
}

/// The masters in the group now.
fn masters(fleet: &Fleet) -> Vec<i32> {
    procs::group(fleet.pgid)
        .iter()
        .filter(|p| !is_worker(p))
        .map(|p| p.pid)
        .collect()
}

pub static U06: Finding = Finding {
    id: "U06",
    slug: "a_failed_exec_leaves_the_old_master_serving",
    claim: "If the new binary cannot be executed, the old master keeps serving and renames the pid file back (swaplab's server and real nginx).",
    source: NGINX_UPGRADE,
    steps: &[
        "start the server under load",
        "install 2.0.0 with mode 644 (nobody may execute it); watch run/ for renames (inotify)",
        "USR2; wait until the master has handled it and the exit of the child it forked (nothing pending, nothing unreaped, waiting in its event loop)",
        "inotify saw the pid file renamed to .oldbin and back; the pid file names the old master; it is the only master and keeps the same workers; clients are answered by them; no request failed",
        "the same on real nginx, copied into the sandbox as in U08 (Skipped without nginx)",
    ],
    experiment: u06,
    scope: Scope::Host,
    needs: &[NGINX, Need::Filesystem],
    lesson: Lesson {
        title: "A new binary that cannot run",
        question: "What if the new binary cannot start at all — the file is not executable, is truncated, or belongs to another architecture?",
        exercise: "The new binary is installed without execute permission. What happens to the pid file after USR2, which master remains, and did any request fail?",
        answer: "USR2 renames the pid file to `.oldbin` and, once the exec fails, back: the pid file names the old master again. The old master is the only master and keeps the same workers, which go on answering: the load line says 0 requests failed. Real nginx behaves the same.",
    },
    ..Finding::DEFAULTS
};

pub fn u06(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (s, fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note("the new binary is installed without execute permission: execve will fail");
    install_program(
        lab,
        Program::Server2,
        Program::Server,
        Replace::InstallNoExec,
    )?;
    failed_upgrade(lab, &fleet, &load, old, "bin/swaplab-server")?;
    finish_load(lab, load, &fleet);
    drop(s);
    lab.part("the same on real nginx");
    let ng = nginx::start(lab, 2)?;
    let load = start_load(lab, &ng.fleet, 4)?;
    served_by(lab, &load, &ng.fleet, load.mark(), ng.master, SETTLE)?;
    lab.note("a copy of nginx is installed without execute permission");
    lab.shell(format!(
        "{}   # nobody may execute it",
        Replace::InstallNoExec.shell("build/nginx", "bin/nginx")
    ));
    Replace::InstallNoExec.apply(lab.sandbox.root(), "build/nginx", "bin/nginx")?;
    failed_upgrade(lab, &ng.fleet, &load, ng.master, "bin/nginx")?;
    finish_load(lab, load, &ng.fleet);
    lab.note("what nginx wrote about it (shown, not judged)");
    if let Passed::ErrorLog(log) = &ng.fleet.passed {
        show_log(
            lab,
            log,
            &[
                "SIGUSR2",
                "start new binary process",
                "execve() failed",
                "exited with code",
            ],
        );
    }
    Ok(())
}

/// `ls -l`'s mode string of a file (`-rw-r--r--`).
fn mode_of(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    let mut out = String::from("-");
    for shift in [6, 3, 0] {
        for (bit, c) in [(4, 'r'), (2, 'w'), (1, 'x')] {
            out.push(if (mode >> shift) & bit != 0 { c } else { '-' });
        }
    }
    out
}

/// U06 on a fleet whose binary at `bin` (relative to the sandbox) cannot be
/// executed: USR2 to `old` under load, then what the kernel (renames in
/// run/), the process table, the pid file and the clients show once the
/// master has handled the signal and the child it forked.
fn failed_upgrade(lab: &mut Lab, fleet: &Fleet, load: &Load, old: i32, bin: &str) -> Result<()> {
    lab.shell(format!("stat -c %A {bin}"));
    lab.say(mode_of(&lab.sandbox.root().join(bin)));
    let workers = {
        let mut w = fleet.workers_of(old);
        w.sort();
        w
    };
    let run = fleet
        .pid_file
        .parent()
        .ok_or_else(|| anyhow!("the pid file has no folder"))?
        .to_path_buf();
    let mut renames = Renames::watch(lab, &run, &format!("{}/", lab.sandbox.rel(&run)))?;
    let name = fleet
        .pid_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    lab.kill(Signal::SIGUSR2, old, &format!("$(cat {})", fleet.pid_rel))?;
    // Done once the master is at rest with no child but its workers (the
    // child it forked for the new binary is gone), or once a child of it
    // wrote the pid file: then the exec worked, and the checks say so.
    let extra = || -> Result<(), String> {
        let others: Vec<i32> = procs::children(old)
            .iter()
            .map(|p| p.pid)
            .filter(|p| !workers.contains(p))
            .collect();
        match others.first() {
            None => Ok(()),
            Some(p) if fleet.current() == Some(*p) => Ok(()),
            Some(_) => Err(format!("children besides the workers: {others:?}")),
        }
    };
    lab.wait_until("the master has handled USR2 and its child's exit", || {
        at_rest(old, &extra)
    })?;
    let since = load.mark();
    let seen = renames.show(lab);
    fleet.show_pid_files(lab);
    fleet.table(lab);
    let served = served_by(lab, load, fleet, since, old, SETTLE);
    let oldbin = format!("{name}.oldbin");
    lab.check(
        "USR2 started the upgrade and it was undone: the kernel saw the pid file renamed to .oldbin and back",
        seen == vec![(name.clone(), oldbin.clone()), (oldbin, name.clone())],
        format!("{seen:?}"),
    );
    let (c, o) = (fleet.current(), fleet.oldbin());
    lab.check(
        "the pid file names the old master again, no .oldbin",
        c == Some(old) && o.is_none(),
        format!("pid file {c:?}, .oldbin {o:?}"),
    );
    lab.check_eq(
        "the old master is the only master (process table)",
        masters(fleet),
        vec![old],
    );
    let now = {
        let mut w = fleet.workers_of(old);
        w.sort();
        w
    };
    lab.check_eq("the old master keeps the same workers", now, workers);
    lab.check(
        "clients are answered by the old master's workers after the failed upgrade",
        served.is_ok(),
        format!("{served:?}"),
    );
    Ok(())
}
