//! Article 001: upgrading the executable on the fly (U01–U08).
//!
//! U01/U02 use a small target (`swaplab-app`, builds 1 and 2). U03–U07 use
//! swaplab's nginx-style master/worker server (`swaplab::targets::server`), U08 real
//! nginx; both are driven by the same steps (USR2, WINCH, HUP, QUIT, from
//! [`crate::drivers::fleet`]) under the load client, and every step waits
//! on evidence (pid files, the process tree in /proc), never on a sleep.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;

use crate::drivers::fleet::{
    exe_of, finish_load, install_program, install_server_2, is_worker, quit, rollback, served_by,
    start_load, start_server, upgrade, upgraded, usr2, Fleet, Passed, SETTLE,
};
use crate::drivers::load::{Load, Sample};
use crate::drivers::nginx;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{pidt, Lab, Stale};
use crate::harness::process::{Program, Target};
use crate::harness::procs::{self, Proc};
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::{V1, V2};
use crate::harness::variants::{NEW, OLD};
use crate::targets::protocol::{after_colon, field_i32, Command};

use super::{NGINX, NGINX_UPGRADE};

// ---- U01, U02: fork and execve on a small target --------------------------

fn version(lab: &mut Lab, t: &mut Target) -> Result<String> {
    Ok(after_colon(&lab.ask(t, Command::Version)?))
}

/// Checks that an exe (as `exe_of` returned it) is `path`, deleted or not.
fn check_exe(lab: &mut Lab, what: &str, path: &Path, seen: (&Path, bool), deleted: bool) {
    let (exe, d) = seen;
    lab.check(
        what,
        exe == path && d == deleted,
        format!("{} deleted={d}", exe.display()),
    );
}

pub static U01: Finding = Finding {
    id: "U01",
    slug: "a_child_forked_after_the_executable_is_replaced_runs_the_old_program",
    claim: "`fork` copies the running image: a child forked after the executable file is replaced runs the old program; its `/proc/PID/exe` ends in `(deleted)`.",
    source: NGINX_UPGRADE,
    steps: &[
        "start A (bin/swaplab-app, build 1); ask its build; readlink /proc/A/exe",
        "install build 2 over bin/swaplab-app (install(1): unlink + create)",
        "A forks a child: it says build 1 and its /proc/PID/exe ends in (deleted)",
        "A forks a child that execs the same path: it says build 2, its exe is the file on disk",
    ],
    experiment: u01,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "Forking after the executable is replaced",
        question: "A master process forks its workers long after it started. If the program file was replaced in between (`make install`, a package upgrade), what do the new children run: the program that is on disk now, or the one their parent runs?",
        exercise: "Which pid token is A, which the forked child and which the exec'ed child (the `forked`/`spawned pid=… child=…` lines)? What does `readlink /proc/PID/exe` show for each, and which version does each run?",
        answer: "A is `[PID-1]`, the forked child `[PID-2]`, the exec'ed child `[PID-3]`. A and `[PID-2]` run version 1 and their exe ends in `(deleted)`; `[PID-3]` runs version 2 and its exe is the file on disk. `swaplab stale` flags `[PID-1]` and tells of `[PID-2]` to exec or restart `[PID-1]`; it does not flag `[PID-3]`.",
    },
    ..Finding::DEFAULTS
};

pub fn u01(lab: &mut Lab) -> Result<()> {
    let exe = lab.sandbox.program(Program::App)?;
    let mut a = lab.start_exe(&exe, "A", &[], |_| String::new())?;
    let va = version(lab, &mut a)?;
    let (a_exe_before, a_deleted_before) = exe_of(lab, a.pid())?;
    lab.note("the program file is replaced while A runs (make install)");
    install_program(lab, Program::App2, Program::App, Replace::Install)?;
    let (a_exe, a_deleted) = exe_of(lab, a.pid())?;
    lab.note("fork: A copies itself");
    let line = lab.ask(&mut a, Command::Fork)?;
    let c = field_i32(&line, "child")?;
    let vc = after_colon(&lab.expect(&mut a, &format!("version pid={c}:"))?);
    let (c_exe, c_deleted) = exe_of(lab, c)?;
    lab.note("fork + execve of the same path: A starts its program anew");
    let line = lab.ask(&mut a, Command::Spawn)?;
    let s = field_i32(&line, "child")?;
    lab.expect(&mut a, &format!("ready pid={s}"))?;
    let vs = after_colon(&lab.expect(&mut a, &format!("version pid={s}:"))?);
    let (s_exe, s_deleted) = exe_of(lab, s)?;
    lab.note("which processes must be restarted?");
    let r = lab.stale(&[a.pid(), c, s])?;
    lab.observe("build_forked_child", &vc);
    lab.observe("build_exec_child", &vs);
    lab.check_eq("A runs build 1", va.as_str(), "1");
    check_exe(
        lab,
        "before the replacement A's exe is the file on disk",
        &exe,
        (&a_exe_before, a_deleted_before),
        false,
    );
    check_exe(
        lab,
        "after the replacement A's exe ends in (deleted)",
        &exe,
        (&a_exe, a_deleted),
        true,
    );
    lab.check_eq(
        "the child forked after the replacement still runs build 1",
        vc.as_str(),
        "1",
    );
    check_exe(
        lab,
        "the forked child's /proc/PID/exe ends in (deleted)",
        &exe,
        (&c_exe, c_deleted),
        true,
    );
    lab.check_eq(
        "a child that execs the path runs build 2, the file now on disk",
        vs.as_str(),
        "2",
    );
    check_exe(
        lab,
        "the exec'ed child's exe is the file on disk, not (deleted)",
        &exe,
        (&s_exe, s_deleted),
        false,
    );
    lab.check_stale(&r, "A", a.pid(), Stale::replaced(&exe));
    lab.check(
        "swaplab stale names A's executable as the replaced file",
        r.get(a.pid()).is_some_and(|p| {
            p.files
                .iter()
                .any(|f| f.role == crate::detector::stale::Role::Executable && f.path == exe)
        }),
        format!("{:?}", r.get(a.pid()).map(|p| &p.files)),
    );
    lab.check_stale(&r, "the forked child", c, Stale::replaced(&exe).via(a.pid()));
    lab.check_stale(&r, "the exec'ed child", s, Stale::Clean);
    Ok(())
}

pub static U02: Finding = Finding {
    id: "U02",
    slug: "execve_runs_the_new_file_and_keeps_pid_and_open_fds",
    claim: "`execve` starts the program now on disk, keeps the pid and every fd not marked close-on-exec, and keeps no memory (flags, state); close-on-exec fds are gone.",
    source: NGINX_UPGRADE,
    steps: &[
        "start A (build 1); it remembers a flag, opens a plain pipe and a close-on-exec pipe; ls -l /proc/A/fd",
        "install build 2 over the program; A calls execve on its own path",
        "A prints ready with the same pid, says build 2, has forgotten the flag; /proc/A/fd still shows stdin/stdout/stderr and the plain pipe (same inodes) and no close-on-exec pipe",
    ],
    experiment: u02,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "What survives execve",
        question: "`execve` replaces the program a process runs. What exactly survives it: the pid? the open files and sockets? the data in memory?",
        exercise: "Compare A's pid, its fds and its flag before and after `execve`. Which fds keep their number and inode, which one is gone, and which build runs afterwards?",
        answer: "The pid and the start time stay: the same process runs build 2, its exe the file on disk. stdin, stdout, stderr and the plain pipe keep their fd numbers and inodes; the close-on-exec pipe is gone; the flag set before the exec is forgotten: nothing in memory survives.",
    },
    ..Finding::DEFAULTS
};

pub fn u02(lab: &mut Lab) -> Result<()> {
    let exe = lab.sandbox.program(Program::App)?;
    let mut a = lab.start_exe(&exe, "A", &[], |_| String::new())?;
    let pid = a.pid();
    let v1 = version(lab, &mut a)?;
    lab.ask(&mut a, Command::Remember("the flag is set".into()))?;
    let keep = lab.ask(&mut a, Command::Pipe { cloexec: false })?;
    let gone = lab.ask(&mut a, Command::Pipe { cloexec: true })?;
    let (kr, kw) = (field_i32(&keep, "r")?, field_i32(&keep, "w")?);
    let (gr, gw) = (field_i32(&gone, "r")?, field_i32(&gone, "w")?);
    let before = lab.fds(pid);
    let started = procs::get(pid).map(|p| p.start);
    lab.note("the program file is replaced, then A calls execve on its own path");
    install_program(lab, Program::App2, Program::App, Replace::Install)?;
    lab.ask(&mut a, Command::Exec)?;
    lab.expect(&mut a, "ready pid=")?;
    let restarted = procs::get(pid).map(|p| p.start);
    let v2 = version(lab, &mut a)?;
    let recall = after_colon(&lab.ask(&mut a, Command::Recall)?);
    let after = lab.fds(pid);
    let (exe_after, deleted) = exe_of(lab, pid)?;
    let at = |fds: &[(i32, String)], fd: i32| -> Option<String> {
        fds.iter().find(|(f, _)| *f == fd).map(|(_, t)| t.clone())
    };
    lab.observe("fds_before", before.len());
    lab.observe("fds_after", after.len());
    lab.check_eq("before: build 1", v1.as_str(), "1");
    lab.check(
        "after execve the same process runs: pid A alive, its start time in /proc/A/stat unchanged",
        started.is_some() && restarted == started,
        format!("start time {started:?} -> {restarted:?} (None: gone)"),
    );
    lab.check_eq(
        "after execve the file now on disk runs: build 2",
        v2.as_str(),
        "2",
    );
    check_exe(
        lab,
        "its exe is the file on disk, not (deleted)",
        &exe,
        (&exe_after, deleted),
        false,
    );
    let kept: Vec<i32> = vec![0, 1, 2, kr, kw];
    let same: Vec<bool> = kept
        .iter()
        .map(|fd| at(&before, *fd).is_some() && at(&before, *fd) == at(&after, *fd))
        .collect();
    lab.check(
        "stdin, stdout, stderr and the plain pipe keep their fd numbers and inodes",
        same.iter().all(|s| *s),
        format!("fds {kept:?} same: {same:?}"),
    );
    lab.check(
        "the close-on-exec pipe is gone",
        at(&before, gr).is_some() && at(&after, gr).is_none() && at(&after, gw).is_none(),
        format!(
            "fd {gr}: {:?} -> {:?}, fd {gw}: {:?}",
            at(&before, gr),
            at(&after, gr),
            at(&after, gw)
        ),
    );
    lab.check_eq(
        "nothing in memory survives: the flag is forgotten",
        recall.as_str(),
        "(nothing)",
    );
    Ok(())
}

// ---- when a master has handled a signal, seen from /proc -------------------

/// Where `pid` sleeps, if it sleeps in a call that waits for events or
/// signals (`rt_sigsuspend` for nginx, `poll` for swaplab's server):
/// `/proc/PID/syscall` (which needs ptrace access), or else
/// `/proc/PID/wchan`. `None` while it runs or sleeps elsewhere.
fn waiting_in(pid: i32) -> Option<String> {
    let waits: &[i64] = &[
        libc::SYS_rt_sigsuspend,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_pwait,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait,
    ];
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
        let first = s.split_whitespace().next().unwrap_or_default();
        return first
            .parse::<i64>()
            .ok()
            .filter(|n| waits.contains(n))
            .map(|n| format!("syscall {n}"));
    }
    let w = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    ["sigsuspend", "poll", "select", "epoll"]
        .iter()
        .any(|k| w.contains(k))
        .then(|| format!("wchan {w}"))
}

/// The signals pending for `pid` (thread and process), as a mask.
fn pending(pid: i32) -> Option<u64> {
    let st = procfs::process::Process::new(pid).ok()?.status().ok()?;
    Some(st.sigpnd | st.shdpnd)
}

fn bit(sig: Signal) -> u64 {
    1u64 << (sig as i32 - 1)
}

/// The children of `pid` that have exited and wait to be reaped.
fn zombies(pid: i32) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter_map(|p| p.stat().ok())
        .filter(|st| st.ppid == pid && st.state == 'Z')
        .map(|st| st.pid)
        .collect()
}

/// Whether `master` has handled every signal sent to it so far: no USR2 or
/// CHLD pending (`/proc/PID/status`), no child left unreaped, and it waits
/// again in its event loop. Read in that order, "nothing pending" then
/// "waiting" means a new wait, begun after the signal was taken: whatever
/// the master does for a signal (a fork, a rename), it has done. `more` is a
/// further condition; `Err` says what is not there yet.
fn at_rest(master: i32, more: &dyn Fn() -> Result<(), String>) -> Result<(), String> {
    let p = pending(master).ok_or_else(|| format!("master {master} is gone"))?;
    let sigs = bit(Signal::SIGUSR2) | bit(Signal::SIGCHLD);
    if p & sigs != 0 {
        return Err(format!("signals pending: {p:#x}"));
    }
    let z = zombies(master);
    if !z.is_empty() {
        return Err(format!("unreaped children {z:?}"));
    }
    more()?;
    if waiting_in(master).is_none() {
        return Err(format!(
            "master {master} is not waiting in its event loop (/proc/{master}/syscall, wchan)"
        ));
    }
    Ok(())
}

/// `kill -SIG`, then waits until the master has handled it (`at_rest`).
pub fn signal_handled(
    lab: &mut Lab,
    sig: Signal,
    master: i32,
    how: &str,
    more: &dyn Fn() -> Result<(), String>,
) -> Result<()> {
    lab.kill(sig, master, how)?;
    lab.wait_until("the master has handled the signal", || {
        at_rest(master, more)
    })
}

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

// ---- U03–U07: swaplab's server, and real nginx beside it --------------------

pub static U03: Finding = Finding {
    id: "U03",
    slug: "the_nginx_style_upgrade_keeps_every_connection",
    claim: "The nginx upgrade, reproduced by the harness's own master/worker server: USR2 renames the pid file to `<pid>.oldbin`, forks and execs the new binary, which is a child of the old master and inherits the listening socket (the same socket inode in `/proc/PID/fd` of both masters; fd numbers passed in an environment variable). Both generations serve. WINCH: old workers finish gracefully, the old master stays. QUIT: the old master exits. No client connection fails through the whole sequence under load.",
    source: NGINX_UPGRADE,
    steps: &[
        "start swaplab-server 1.0.0 (a master, 2 workers, 127.0.0.1 on an ephemeral port, run/swaplab.pid); the load client opens new connections continuously",
        "install swaplab-server 2.0.0 over bin/swaplab-server",
        "kill -USR2 master: wait until the pid file names a new master with its workers; its parent (in /proc) is the old master; show the pid files, the process table, both masters' exe, the listening socket inode in both /proc/PID/fd and the fd numbers in the new master's environment; wait for answers from both generations",
        "kill -WINCH old master: wait until its workers are gone; only gen 2 answers",
        "kill -QUIT old master: wait until it exits; the pid file names the new master; stop the load: no request failed",
    ],
    experiment: u03,
    scope: Scope::Host,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "The nginx upgrade sequence under load",
        question: "Can a server be replaced by a new version of itself without a single client noticing — no refused connection, no reset, no truncated answer — and what does the process tree look like at each step of nginx's documented procedure (USR2, WINCH, QUIT)?",
        exercise: "Follow the `[load] gen N (master [PID-k]) answers` lines and the process tables: which master answers after USR2, after WINCH and after QUIT? Who is the new master's parent, and how many requests failed?",
        answer: "After USR2 both generations answer, gen 1 from master `[PID-1]` and gen 2 from the new master, whose parent (PPID) in the table is `[PID-1]`; the old master's exe is `(deleted)` and both hold the same listening socket inode. After WINCH only gen 2's workers answer; after QUIT gen 2 serves alone and the pid file names the new master. The load line says 0 requests failed.",
    },
    ..Finding::DEFAULTS
};

pub fn u03(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (mut s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note(
        "the new version is installed over the running binary, then the article's three signals",
    );
    let new = upgrade(lab, &mut fleet, &load, old, SETTLE, &mut install_server_2)?;
    s.wait_exit()?;
    let samples = finish_load(lab, load, &fleet);
    let versions: Vec<(u32, String)> = {
        let mut v: Vec<(u32, String)> = samples
            .iter()
            .filter_map(|s| s.answer.as_ref())
            .filter_map(|a| Some((a.gen?, a.version.clone()?)))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    lab.check_eq(
        "gen 1 answered as version 1.0.0 and gen 2 as 2.0.0",
        versions,
        vec![(1, "1.0.0".to_string()), (2, "2.0.0".to_string())],
    );
    lab.observe(
        "new_master_ppid_after_quit",
        procs::get(new).map(|p| p.ppid),
    );
    Ok(())
}

/// The masters in the group now.
fn masters(fleet: &Fleet) -> Vec<i32> {
    procs::group(fleet.pgid)
        .iter()
        .filter(|p| !is_worker(p))
        .map(|p| p.pid)
        .collect()
}

/// The pids in the fleet's process group now, in tree order.
fn group_pids(fleet: &Fleet) -> Vec<i32> {
    procs::group(fleet.pgid).iter().map(|p| p.pid).collect()
}

pub static U04: Finding = Finding {
    id: "U04",
    slug: "usr2_is_ignored_while_an_upgrade_is_in_progress",
    claim: "USR2 is ignored by the old master while its new binary runs, and by the new master while the old master is alive: no process starts and the pid files stay as they are (swaplab's server and real nginx); once the old master has exited, USR2 to the new one starts the next master.",
    source: NGINX_UPGRADE,
    steps: &[
        "start the server, install 2.0.0, USR2: two masters",
        "USR2 to the old master, then to the new one, each time waiting until the master has taken the signal (not pending in /proc/PID/status) and waits in its event loop again: the process group has the same processes as before, the pid files are unchanged",
        "QUIT the old master; USR2 to the new one now forks a new master and renames the pid file to .oldbin",
        "the same on real nginx, copied into the sandbox as in U08 (Skipped without nginx)",
    ],
    experiment: u04,
    scope: Scope::Host,
    needs: &[NGINX, Need::Filesystem],
    lesson: Lesson {
        title: "USR2 sent twice",
        question: "What happens if someone sends USR2 twice — to the old master while the upgrade is in progress, or to the new master before the old one has gone?",
        exercise: "In the part `USR2 again, to either master, while both run`, what changes in the process table and the pid files after each USR2? And once the old master is gone?",
        answer: "Nothing: USR2 to the old master while its new binary runs, and USR2 to the new master while the old is alive, start no process, and the pid files stay as they were. Once the old master is gone, USR2 to the new master forks a new master again and renames the pid file to `.oldbin`. Real nginx does the same.",
    },
    ..Finding::DEFAULTS
};

pub fn u04(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (mut s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    install_server_2(lab)?;
    let new = usr2(lab, &mut fleet, old, true)?;
    usr2_while_both_run(lab, &mut fleet, old, new)?;
    s.wait_exit()?;
    drop(s);
    lab.part("the same on real nginx");
    let mut ng = nginx::start(lab, 2)?;
    let first = ng.master;
    crate::drivers::nginx::replace_binary(lab)?;
    let second = usr2(lab, &mut ng.fleet, first, true)?;
    usr2_while_both_run(lab, &mut ng.fleet, first, second)?;
    lab.note("what nginx wrote about each USR2 (shown, not judged)");
    if let Passed::ErrorLog(log) = &ng.fleet.passed {
        show_log(lab, log, &["SIGUSR2", "signal is ignored"]);
    }
    Ok(())
}

/// U04 on a fleet whose masters `old` and `new` both run: USR2 to each, and
/// what the process table and the pid files show once each has handled it;
/// then QUIT `old`, and USR2 to `new` starts a new master.
fn usr2_while_both_run(lab: &mut Lab, fleet: &mut Fleet, old: i32, new: i32) -> Result<()> {
    let (cur, oldbin) = (
        format!("$(cat {})", fleet.pid_rel),
        format!("$(cat {}.oldbin)", fleet.pid_rel),
    );
    lab.part("USR2 again, to either master, while both run");
    let before = group_pids(fleet);
    signal_handled(lab, Signal::SIGUSR2, old, &oldbin, &|| Ok(()))?;
    let after_old = group_pids(fleet);
    signal_handled(lab, Signal::SIGUSR2, new, &cur, &|| Ok(()))?;
    let after_new = group_pids(fleet);
    fleet.show_pid_files(lab);
    fleet.table(lab);
    let diff = |after: &[i32]| {
        let born: Vec<i32> = after
            .iter()
            .filter(|p| !before.contains(p))
            .copied()
            .collect();
        let gone: Vec<i32> = before
            .iter()
            .filter(|p| !after.contains(p))
            .copied()
            .collect();
        format!("started {born:?}, ended {gone:?}")
    };
    lab.check(
        "USR2 to the old master while its new binary runs starts no process (the process table is as before)",
        after_old == before,
        diff(&after_old),
    );
    lab.check(
        "USR2 to the new master while the old master is alive starts no process",
        after_new == before,
        diff(&after_new),
    );
    let (c, o) = (fleet.current(), fleet.oldbin());
    lab.check(
        "the pid files are unchanged: the pid file names the new master, .oldbin the old one",
        c == Some(new) && o == Some(old),
        format!("pid file {c:?}, .oldbin {o:?}"),
    );
    lab.part("once the old master is gone, the new one accepts USR2");
    quit(lab, old, &oldbin)?;
    let before = group_pids(fleet);
    signal_handled(lab, Signal::SIGUSR2, new, &cur, &|| Ok(()))?;
    // A child caught inside its execve has no command line yet, and would
    // pass for a worker (seen under emulation, matrix --kernel): wait until
    // every new child shows one.
    let born_now = || -> Vec<Proc> {
        procs::children(new)
            .into_iter()
            .filter(|p| !before.contains(&p.pid))
            .collect()
    };
    let born = crate::harness::process::poll_until(
        crate::harness::process::deadline(),
        std::time::Duration::from_millis(5),
        || match born_now() {
            b if !b.is_empty() && b.iter().all(|p| !p.args.is_empty()) => Ok(b),
            b => Err(b),
        },
    )
    .unwrap_or_else(|b| b);
    let o = fleet.oldbin();
    lab.check(
        "with the old master gone, USR2 to the new master forks a new master and renames the pid file to .oldbin",
        born.len() == 1 && !is_worker(&born[0]) && o == Some(new),
        format!(
            "new children {:?}, .oldbin {o:?}",
            born.iter().map(|p| (p.pid, &p.comm)).collect::<Vec<_>>()
        ),
    );
    upgraded(lab, fleet, new, false)?;
    Ok(())
}

pub static U05: Finding = Finding {
    id: "U05",
    slug: "rollback_brings_the_old_generation_back_without_errors",
    claim: "Rollback: HUP to the old master starts old workers again (forked from the old image); QUIT/TERM to the new master; the pid file is renamed back and the old generation serves; no client connection fails.",
    source: NGINX_UPGRADE,
    steps: &[
        "start the server under load; install 2.0.0; USR2; WINCH the old master",
        "HUP the old master: it forks fresh workers from the old image",
        "QUIT the new master: it exits, the old master renames .oldbin back to the pid file",
        "only version 1.0.0 answers; no request failed",
    ],
    experiment: u05,
    scope: Scope::Host,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "Rolling an upgrade back",
        question: "The new version is running and the old workers are gone (after WINCH), but the new version misbehaves. Can the old one come back, without a client noticing?",
        exercise: "After HUP to the old master, whose workers answer, and from which image (see the process table's exe)? Which master does the pid file name after QUIT to the new one?",
        answer: "HUP brings the old master's workers back, forked from the old image: their exe is `(deleted)`. After QUIT to the new master the pid file names the old master again, no `.oldbin` remains, and every answer comes from version 1.0.0, with no failed request.",
    },
    ..Finding::DEFAULTS
};

pub fn u05(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note("the new version is installed; USR2 and WINCH as for an upgrade, then the way back");
    rollback(lab, &mut fleet, &load, old, SETTLE, &mut install_server_2)?;
    let since = load.mark();
    served_by(lab, &load, &fleet, since, old, SETTLE)?;
    let last = load.since(since);
    let vs: Vec<String> = {
        let mut v: Vec<String> = last
            .iter()
            .filter_map(|s| s.answer.as_ref()?.version.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    lab.check_eq(
        "after the rollback every answer comes from version 1.0.0",
        vs,
        vec!["1.0.0".to_string()],
    );
    finish_load(lab, load, &fleet);
    lab.check("the old master still runs", procs::alive(old), "gone");
    drop(s);
    Ok(())
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

/// Shows the lines of a server's log that contain each of `words`, one
/// `grep` per word (so the order does not depend on which process wrote
/// first), without the time stamp; pids are marked.
fn show_log(lab: &mut Lab, log: &Path, words: &[&str]) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for w in words {
        lab.shell(format!(
            "grep -F '{w}' {} | cut -d' ' -f3-",
            lab.sandbox.rel(log)
        ));
        for line in text.lines().filter(|l| l.contains(w)) {
            let rest = line.splitn(3, ' ').nth(2).unwrap_or(line);
            lab.say(mark_pids(rest));
        }
    }
}

/// Marks the numbers in an nginx log line that are pids (`N#N:`, `from N`,
/// `process N`) so they redact as process ids.
fn mark_pids(line: &str) -> String {
    let mut out = Vec::new();
    let words: Vec<&str> = line.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let prev = if i > 0 { words[i - 1] } else { "" };
        let shown = if let Some((a, b)) = w.trim_end_matches(':').split_once('#') {
            match (a.parse::<i32>(), b.parse::<i32>()) {
                (Ok(a), Ok(b)) => format!(
                    "{}#{}{}",
                    pidt(a),
                    pidt(b),
                    if w.ends_with(':') { ":" } else { "" }
                ),
                _ => w.to_string(),
            }
        } else if matches!(prev, "from" | "process") {
            match w.trim_end_matches(',').parse::<i32>() {
                Ok(p) => format!("{}{}", pidt(p), if w.ends_with(',') { "," } else { "" }),
                Err(_) => w.to_string(),
            }
        } else {
            w.to_string()
        };
        out.push(shown);
    }
    out.join(" ")
}

pub static U07: Finding = Finding {
    id: "U07",
    slug: "a_library_update_needs_the_exec_not_a_worker_restart",
    claim: "A library update needs the exec: with libexample replaced on disk, a worker restart by fork (HUP) still runs the old library; USR2 (fork + exec) brings the new one.",
    source: NGINX_UPGRADE,
    steps: &[
        "install libexample v1, start the server under load",
        "install libexample v2 (the server binary stays)",
        "HUP: fresh workers, forked from the master, answer with v1's greeting and map the old library (deleted)",
        "USR2: the new master (fork + execve of the same binary) maps the new library and its workers answer with v2's greeting; no request failed",
    ],
    experiment: u07,
    scope: Scope::Host,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A library update and a server reload",
        question: "nginx has two ways to renew its workers: HUP (reload: the master forks fresh workers) and USR2 (upgrade: fork + exec). After a library update on disk (an OpenSSL fix, say), is a reload enough?",
        exercise: "After libexample is updated, HUP makes the master fork fresh workers. Which library do they map, and what does `swaplab stale` say of them? What changes after USR2?",
        answer: "The fresh workers forked on HUP still answer with the old library and map libexample `(deleted)`; `swaplab stale` flags the old master and tells of each fresh worker to exec or restart the master, `[PID-1]`, instead. After USR2 (fork + exec) the new generation answers with the new library and the new master maps it. No request failed.",
    },
    ..Finding::DEFAULTS
};

pub fn u07(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let (s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note("libexample is updated on disk; the server binary stays as it is");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    lab.note("HUP: the master forks fresh workers (and retires the old ones)");
    let before: Vec<i32> = fleet.workers_of(old);
    lab.kill(Signal::SIGHUP, old, &format!("$(cat {})", fleet.pid_rel))?;
    let n = fleet.workers;
    let fresh = lab.wait_until("only fresh workers run", || {
        let w = fleet.workers_of(old);
        if w.len() == n && w.iter().all(|p| !before.contains(p)) {
            Ok(w)
        } else {
            Err(format!("workers {w:?}, before {before:?}"))
        }
    })?;
    fleet.note_workers(old);
    fleet.table(lab);
    let since = load.mark();
    served_by(lab, &load, &fleet, since, old, SETTLE)?;
    let hup_greetings = greetings(&load.since(since), &fleet, old);
    let m_fresh = lab.maps(fresh[0])?;
    lab.note("which processes must be restarted, and how?");
    let mut asked = vec![old];
    asked.extend(&fresh);
    let r_hup = lab.stale(&asked)?;
    lab.note("USR2: fork + execve of the same binary");
    let since = load.mark();
    let new = usr2(lab, &mut fleet, old, false)?;
    served_by(lab, &load, &fleet, since, new, SETTLE)?;
    let new_greetings = greetings(&load.since(since), &fleet, new);
    let m_new = lab.maps(new)?;
    let mut asked = vec![new];
    asked.extend(fleet.workers_of(new));
    let r_new = lab.stale(&asked)?;
    finish_load(lab, load, &fleet);
    lab.observe("greetings_after_hup", &hup_greetings);
    lab.observe("greetings_after_usr2", &new_greetings);
    lab.check_eq(
        "after HUP the fresh workers (forked) still answer with the old library",
        hup_greetings,
        vec![OLD.to_string()],
    );
    lab.check(
        "a fresh worker maps the old libexample, (deleted)",
        !m_fresh.is_empty() && m_fresh.iter().all(|m| m.deleted && m.inode == ino1),
        format!("{} mappings", m_fresh.len()),
    );
    lab.check_eq(
        "after USR2 the new generation answers with the new library",
        new_greetings,
        vec![NEW.to_string()],
    );
    lab.check(
        "the new master maps the new libexample",
        !m_new.is_empty() && m_new.iter().all(|m| !m.deleted && m.inode == ino2),
        format!("{} mappings", m_new.len()),
    );
    let lib = lab.sandbox.lib_file();
    lab.check_stale(&r_hup, "the old master", old, Stale::replaced(&lib));
    for w in &fresh {
        lab.check_stale(&r_hup, "a fresh worker (HUP)", *w, Stale::replaced(&lib).via(old));
    }
    for p in &asked {
        lab.check_stale(&r_new, "the new generation (USR2)", *p, Stale::Clean);
    }
    Ok(())
}

/// The distinct greetings in answers from `master`'s workers.
fn greetings(samples: &[Sample], fleet: &Fleet, master: i32) -> Vec<String> {
    let mut v: Vec<String> = samples
        .iter()
        .filter(|s| fleet.master_of(s) == Some(master))
        .filter_map(|s| s.answer.as_ref()?.greeting.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

pub static U08: Finding = Finding {
    id: "U08",
    slug: "real_nginx_upgrades_and_rolls_back_without_errors",
    claim: "The same sequence against real nginx (the system's package) shows the article's process tables: the new master's parent is the old master, `.oldbin` appears, the old master's exe is `(deleted)`, both masters hold the same listening socket, and no request fails under load; the rollback path works too.",
    source: NGINX_UPGRADE,
    steps: &[
        "copy nginx into the sandbox (bin/nginx), write a config (daemon on, master_process on, 2 workers, 127.0.0.1 on a free port, pid file, logs and temp folders in the sandbox) and start it; the load client opens new connections continuously",
        "upgrade: install another copy over bin/nginx; USR2 (new master, child of the old; .oldbin; old exe (deleted); one listening socket inode in both masters; the fd numbers the new master logs as inherited through NGINX); both generations serve; WINCH; QUIT the old master",
        "rollback: install another copy; USR2; WINCH; HUP the old master (its workers come back, forked from the old image); QUIT the new master: the pid file is renamed back",
        "stop the load: no request failed; QUIT nginx",
    ],
    experiment: u08,
    scope: Scope::Host,
    needs: &[NGINX, Need::Filesystem],
    lesson: Lesson {
        title: "Real nginx upgraded and rolled back",
        question: "Does real nginx — the system's package (recorded with Debian 12's nginx 1.22.1), not a model of it — behave as the article reads its source, and does it keep every connection through an upgrade and a rollback?",
        exercise: "Follow the process tables and `[load]` lines through the upgrade and the rollback: who is the new master's parent, where does nginx pass the listening fd numbers, and which generation serves at the end of each part?",
        answer: "In both parts the new master's parent is the old master, the old master's exe ends in `(deleted)`, both hold the same listening socket, and the fd numbers travel in the `NGINX` environment variable. After the upgrade gen 2 serves alone; after the rollback the old generation does; no request fails.",
    },
    ..Finding::DEFAULTS
};

pub fn u08(lab: &mut Lab) -> Result<()> {
    let mut ng = nginx::start(lab, 2)?;
    let first = ng.master;
    let load = start_load(lab, &ng.fleet, 4)?;
    served_by(lab, &load, &ng.fleet, load.mark(), first, SETTLE)?;
    lab.part("upgrade: USR2, WINCH, QUIT");
    let second = upgrade(
        lab,
        &mut ng.fleet,
        &load,
        first,
        SETTLE,
        &mut nginx::replace_binary,
    )?;
    lab.part("rollback: USR2, WINCH, HUP the old master, QUIT the new one");
    rollback(
        lab,
        &mut ng.fleet,
        &load,
        second,
        SETTLE,
        &mut nginx::replace_binary,
    )?;
    lab.part("the end");
    finish_load(lab, load, &ng.fleet);
    quit(lab, second, "$(cat run/nginx.pid)")?;
    Ok(())
}
