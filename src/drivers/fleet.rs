//! The nginx upgrade sequence on a master/worker server (swaplab's or real
//! nginx), seen through its pid file and /proc: a [`Fleet`], the signal
//! steps ([`usr2`], [`winch`], [`hup`], [`quit`]), the sequences built of
//! them ([`upgrade`], [`rollback`]) and the load client on it. Every step
//! waits on evidence (pid files, the process tree in /proc), never on a
//! sleep. U03–U08 and `swaplab bench upgrade` share it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;

use crate::detector::maps::split_deleted;
use crate::drivers::load::{self, Load, Mark, Sample};
use crate::harness::lab::{pidt, vol, Lab, Shown};
use crate::harness::process::{Program, Target};
use crate::harness::procs::{self, Proc};
use crate::harness::replace::Replace;
use crate::targets::generation::LISTEN_FDS;
use crate::targets::protocol::field;
use crate::targets::server::WORKER_COMM;

/// Answers to wait for after each step in the experiments (the benchmark
/// waits for more).
pub const SETTLE: usize = 20;

// ---- executables: the one a process runs, the one installed ----------------

/// `readlink /proc/PID/exe`, narrated; returns (path, deleted).
pub fn exe_of(lab: &mut Lab, pid: i32) -> Result<(PathBuf, bool)> {
    let exe = procfs::process::Process::new(pid)
        .and_then(|p| p.exe())
        .with_context(|| format!("cannot read /proc/{pid}/exe"))?;
    lab.proof(format!("$ readlink /proc/{}/exe", pidt(pid)));
    lab.proof(exe.display().to_string());
    Ok(split_deleted(&exe))
}

/// `install -m 755 build/<next> bin/<prog>`, narrated.
pub fn install_program(lab: &mut Lab, next: Program, prog: Program, how: Replace) -> Result<()> {
    let src = lab.sandbox.stage_program(next)?;
    let src = lab.sandbox.rel(&src);
    let dst = format!("bin/{}", prog.file_name());
    lab.shell(format!(
        "{}   # the new build, {}",
        how.shell(&src, &dst),
        next.file_name()
    ));
    how.apply(lab.sandbox.root(), &src, &dst)
}

// ---- the fleet: a master/worker server seen through /proc -----------------

/// A running master/worker server (swaplab's or nginx), seen through its
/// pid file and /proc.
pub struct Fleet {
    /// The pid file, relative to the sandbox (`run/swaplab.pid`).
    pub pid_rel: String,
    pub pid_file: PathBuf,
    pub workers: usize,
    /// The process group every generation shares.
    pub pgid: i32,
    pub shown: Shown,
    pub addr: SocketAddr,
    /// The variable that passes the listening fds to a new binary.
    pub env_var: &'static str,
    /// Where the new master's value of it shows.
    pub passed: Passed,
    /// Worker pid → its master, as seen in /proc after each step.
    pub who: HashMap<i32, i32>,
    /// Master pid → generation (1 for the first).
    pub gens: HashMap<i32, u32>,
}

/// Where the fd numbers a new master received can be seen.
#[derive(Clone, Debug)]
pub enum Passed {
    /// `/proc/PID/environ` (swaplab's server leaves its environment alone).
    Environ,
    /// The error log (nginx writes its process title over the memory that
    /// `/proc/PID/environ` shows, and logs `using inherited sockets from`).
    ErrorLog(PathBuf),
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A worker, by its title. A process that has begun to exit has dropped its
/// memory, so /proc shows it with no command line (nginx's "worker process"
/// title is gone) until it becomes a zombie: it still counts as a worker, or
/// a wait for the workers to be gone would end while the process table
/// still lists it (and it would count as a master).
pub fn is_worker(p: &Proc) -> bool {
    p.comm == WORKER_COMM || p.args.starts_with("nginx: worker process") || p.args.is_empty()
}

impl Fleet {
    pub fn current(&self) -> Option<i32> {
        read_pid(&self.pid_file)
    }

    pub fn oldbin_path(&self) -> PathBuf {
        let mut s = self.pid_file.as_os_str().to_owned();
        s.push(".oldbin");
        PathBuf::from(s)
    }

    pub fn oldbin(&self) -> Option<i32> {
        read_pid(&self.oldbin_path())
    }

    pub fn workers_of(&self, master: i32) -> Vec<i32> {
        procs::children(master)
            .iter()
            .filter(|p| is_worker(p))
            .map(|p| p.pid)
            .collect()
    }

    /// Records the workers `master` has now; returns them.
    pub fn note_workers(&mut self, master: i32) -> Vec<i32> {
        let w = self.workers_of(master);
        for p in &w {
            self.who.insert(*p, master);
        }
        w
    }

    /// The master whose worker answered `s`.
    pub fn master_of(&self, s: &Sample) -> Option<i32> {
        s.answer
            .as_ref()
            .and_then(|a| self.who.get(&a.pid))
            .copied()
    }

    fn gen(&self, master: i32) -> u32 {
        self.gens.get(&master).copied().unwrap_or(0)
    }

    /// Waits until the first master runs all its workers, records them, and
    /// shows the pid file and the process table.
    pub fn first_look(&mut self, lab: &mut Lab, master: i32) -> Result<()> {
        let want = self.workers;
        lab.wait_until("the workers run", || {
            let n = self.workers_of(master).len();
            if n == want {
                Ok(())
            } else {
                Err(format!("{n} workers"))
            }
        })?;
        self.note_workers(master);
        self.show_pid_files(lab);
        self.table(lab);
        Ok(())
    }

    /// The article's process table of every generation, narrated.
    pub fn table(&self, lab: &mut Lab) -> Vec<Proc> {
        lab.table(self.pgid, self.shown)
    }

    /// `cat` of the pid file and `.oldbin`, narrated.
    pub fn show_pid_files(&self, lab: &mut Lab) {
        lab.shell(format!(
            "grep -H . {0} {0}.oldbin 2>/dev/null",
            self.pid_rel
        ));
        for p in [self.pid_file.clone(), self.oldbin_path()] {
            if let Some(pid) = read_pid(&p) {
                lab.say(format!("{}:{}", lab.sandbox.rel(&p), pidt(pid)));
            }
        }
    }
}

/// USR2 to `old`: waits until the new master runs with all its workers;
/// checks the article's evidence; returns the new master.
pub fn usr2(lab: &mut Lab, fleet: &mut Fleet, old: i32, replaced: bool) -> Result<i32> {
    lab.kill(Signal::SIGUSR2, old, &format!("$(cat {})", fleet.pid_rel))?;
    upgraded(lab, fleet, old, replaced)
}

/// After USR2 to `old`: waits until the new master runs with all its
/// workers; checks the article's evidence; returns the new master.
pub fn upgraded(lab: &mut Lab, fleet: &mut Fleet, old: i32, replaced: bool) -> Result<i32> {
    let n = fleet.workers;
    // The new master is the process the pid file names (it writes it
    // itself), whoever its parent is: the parent is checked below.
    let new = lab.wait_until("the new master runs with its workers", || {
        let m = match fleet.current() {
            Some(p) if p != old && procs::alive(p) => p,
            other => return Err(format!("pid file says {other:?}")),
        };
        let w = fleet.workers_of(m);
        if w.len() < n {
            return Err(format!("new master {m} has {} workers", w.len()));
        }
        Ok(m)
    })?;
    fleet.note_workers(new);
    fleet.gens.insert(new, fleet.gen(old) + 1);
    fleet.show_pid_files(lab);
    fleet.table(lab);
    let oldbin = fleet.oldbin();
    lab.check(
        "USR2 renamed the pid file to .oldbin, which names the old master",
        oldbin == Some(old),
        format!("{:?}", oldbin),
    );
    let ppid = procs::get(new).map(|p| p.ppid);
    lab.check(
        "the new master's parent is the old master",
        ppid == Some(old),
        format!("ppid {ppid:?}, old master {old}"),
    );
    let (old_exe, old_deleted) = exe_of(lab, old)?;
    let (new_exe, new_deleted) = exe_of(lab, new)?;
    let (what, ok) = if replaced {
        (
            "the old master's exe ends in (deleted); the new one's is the file on disk",
            old_deleted && !new_deleted && old_exe == new_exe,
        )
    } else {
        (
            "the binary was not replaced: both masters run the file on disk",
            !old_deleted && !new_deleted && old_exe == new_exe,
        )
    };
    lab.check(
        what,
        ok,
        format!(
            "old {} deleted={old_deleted}, new {} deleted={new_deleted}",
            old_exe.display(),
            new_exe.display()
        ),
    );
    same_socket(lab, fleet, old, new);
    Ok(new)
}

/// Checks that `old` and `new` hold the one listening socket, and shows how
/// the fd numbers were passed.
fn same_socket(lab: &mut Lab, fleet: &Fleet, old: i32, new: i32) {
    let port = fleet.addr.port();
    let listening = procs::listening_inode(fleet.addr);
    lab.proof(format!(
        "$ awk '$2 ~ /:{}$/ && $4 == \"0A\" {{print \"inode=\" $10}}' /proc/net/tcp   # who listens on 127.0.0.1:[PORT]",
        vol(format!("{port:04X}"))
    ));
    lab.proof(format!(
        "inode={}",
        listening
            .map(|i| i.to_string())
            .unwrap_or_else(|| "(none)".into())
    ));
    let mut holders = Vec::new();
    for pid in [old, new] {
        let socks = procs::sockets(pid);
        lab.proof(format!("$ ls -l /proc/{}/fd | grep socket", pidt(pid)));
        for (fd, ino) in &socks {
            lab.proof(format!("{fd} -> socket:[{ino}]"));
        }
        holders.push(
            socks
                .iter()
                .find(|(_, i)| Some(*i) == listening)
                .map(|(fd, _)| *fd),
        );
    }
    lab.check(
        "both masters hold the same listening socket (one inode in both /proc/PID/fd)",
        listening.is_some() && holders.iter().all(|h| h.is_some()),
        format!("listening inode {listening:?}; held at fds {holders:?}"),
    );
    let passed = match &fleet.passed {
        Passed::Environ => {
            let v = procs::environ_var(new, fleet.env_var);
            lab.proof(format!(
                "$ tr '\\0' '\\n' < /proc/{}/environ | grep ^{}=",
                pidt(new),
                fleet.env_var
            ));
            lab.proof(format!(
                "{}={}",
                fleet.env_var,
                v.clone().unwrap_or_default()
            ));
            v
        }
        Passed::ErrorLog(path) => {
            let what = format!("{new}#{new}: using inherited sockets from \"");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let v = text
                .lines()
                .filter_map(|l| l.split_once(&what))
                .map(|(_, rest)| rest.trim_end_matches('"').to_string())
                .next_back();
            lab.say(format!(
                "$ grep -o '{}#{}: using inherited sockets.*' {}",
                pidt(new),
                pidt(new),
                lab.sandbox.rel(path)
            ));
            lab.say(format!(
                "{}#{}: using inherited sockets from \"{}\"",
                pidt(new),
                pidt(new),
                v.clone().unwrap_or_default()
            ));
            v
        }
    };
    let want = holders[1].map(|fd| format!("{fd};"));
    lab.check(
        format!(
            "the new master got the fd number in {} from the old one",
            fleet.env_var
        ),
        passed.is_some() && passed == want,
        format!("{passed:?}, socket at fd {:?}", holders[1]),
    );
}

/// WINCH to `old`: waits until its workers are gone; it stays.
pub fn winch(lab: &mut Lab, fleet: &mut Fleet, old: i32) -> Result<()> {
    lab.kill(
        Signal::SIGWINCH,
        old,
        &format!("$(cat {}.oldbin)", fleet.pid_rel),
    )?;
    lab.wait_until("the old workers are gone", || {
        let w = fleet.workers_of(old);
        if w.is_empty() {
            Ok(())
        } else {
            Err(format!("{} old workers", w.len()))
        }
    })?;
    fleet.table(lab);
    let alive = procs::alive(old);
    lab.check(
        "after WINCH its workers are gone but the old master stays",
        alive,
        format!("old master alive={alive}"),
    );
    Ok(())
}

/// HUP to `master`: waits until it has its workers again.
pub fn hup(lab: &mut Lab, fleet: &mut Fleet, master: i32, how: &str) -> Result<()> {
    lab.kill(Signal::SIGHUP, master, how)?;
    let n = fleet.workers;
    lab.wait_until("the workers are back", || {
        let w = fleet.workers_of(master);
        if w.len() >= n {
            Ok(())
        } else {
            Err(format!("{} workers", w.len()))
        }
    })?;
    fleet.note_workers(master);
    fleet.table(lab);
    Ok(())
}

/// QUIT to `pid`: waits until it has exited.
pub fn quit(lab: &mut Lab, pid: i32, how: &str) -> Result<()> {
    lab.kill(Signal::SIGQUIT, pid, how)?;
    lab.wait_until_exited("the master has exited", &[pid])
}

/// Waits until `n` requests that started after `since` were answered by
/// workers of `master`; narrates it.
pub fn served_by(
    lab: &mut Lab,
    load: &Load,
    fleet: &Fleet,
    since: Mark,
    master: i32,
    n: usize,
) -> Result<()> {
    let gen = fleet.gen(master);
    load.wait_for(since, n, &format!("gen {gen} answered"), |s| {
        fleet.master_of(s) == Some(master)
    })
    .with_context(|| format!("(sandbox: {})", lab.sandbox.root().display()))?;
    lab.say(format!(
        "[load] gen {gen} (master {}) answers",
        pidt(master)
    ));
    Ok(())
}

/// Waits for `n` answers after a new mark, then checks that every request
/// since the mark was answered by `master`'s workers.
pub fn only(
    lab: &mut Lab,
    load: &Load,
    fleet: &Fleet,
    master: i32,
    n: usize,
    what: &str,
) -> Result<()> {
    let since = load.mark();
    served_by(lab, load, fleet, since, master, n)?;
    let seen = load.since(since);
    let others: Vec<i32> = seen
        .iter()
        .filter(|s| s.answer.is_some() && fleet.master_of(s) != Some(master))
        .filter_map(|s| s.answer.as_ref().map(|a| a.pid))
        .collect();
    lab.check(
        what,
        others.is_empty(),
        format!(
            "{} answers from other workers: {:?}",
            others.len(),
            &others[..others.len().min(5)]
        ),
    );
    Ok(())
}

/// How fast the upgrade experiments' clients open connections, in all.
/// An open loop at a fixed rate covers every step of a sequence evenly, also
/// on a busy machine, where a closed loop would back off just when a step is
/// slow; and it leaves the CPU to the processes under test (flat out, the
/// clients took two cores and slowed every step down).
pub const LOAD_RATE: f64 = 2000.0;

/// The load client on `fleet`'s address at [`LOAD_RATE`], narrated.
pub fn start_load(lab: &mut Lab, fleet: &Fleet, connections: usize) -> Result<Load> {
    let mut o = load::LoadOptions::new(fleet.addr);
    o.connections = connections;
    o.rate = Some(LOAD_RATE);
    // The whole experiment, however slow the machine (an emulated guest
    // took over a minute for U03): the count still bounds it.
    o.max_duration = Duration::from_secs(600);
    lab.note(format!(
        "load: {connections} clients open {LOAD_RATE} new connections per second to http://{}/, each request on its own connection, {}; every outcome is recorded",
        fleet.addr,
        o.pace().says()
    ));
    Load::start(o)
}

/// Stops the load and checks that no request failed.
pub fn finish_load(lab: &mut Lab, load: Load, fleet: &Fleet) -> Vec<Sample> {
    let samples = load.stop();
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind != load::Kind::Completed)
        .collect();
    let mut by_gen: std::collections::BTreeMap<u32, usize> = Default::default();
    for s in &samples {
        if let Some(m) = fleet.master_of(s) {
            *by_gen.entry(fleet.gen(m)).or_default() += 1;
        }
    }
    let answered: Vec<String> = by_gen
        .iter()
        .map(|(g, n)| format!("gen {g}: {}", vol(n)))
        .collect();
    lab.say(format!(
        "[load] {} requests, {} failed; answered by {}",
        vol(samples.len()),
        failed.len(),
        answered.join(", ")
    ));
    lab.observe("requests", samples.len());
    lab.observe("failed", failed.len());
    lab.observe("by_kind", load::tally(&samples));
    lab.observe(
        "answered_by_generation",
        by_gen
            .iter()
            .map(|(g, n)| (g.to_string(), *n))
            .collect::<HashMap<_, _>>(),
    );
    let first: Vec<String> = failed
        .iter()
        .take(5)
        .map(|s| format!("{:?} {}", s.kind, s.detail.clone().unwrap_or_default()))
        .collect();
    lab.check(
        "no request failed through the whole sequence",
        failed.is_empty() && !samples.is_empty(),
        format!(
            "{} of {}: {} ({})",
            failed.len(),
            samples.len(),
            load::tally(&samples),
            first.join("; ")
        ),
    );
    samples
}

/// How both sequences begin: the new binary on disk, USR2, both
/// generations serve, WINCH, only the new workers answer. Returns the new
/// master.
fn hand_over(
    lab: &mut Lab,
    fleet: &mut Fleet,
    load: &Load,
    old: i32,
    settle: usize,
    replace: &mut dyn FnMut(&mut Lab) -> Result<()>,
) -> Result<i32> {
    replace(lab)?;
    let since = load.mark();
    let new = usr2(lab, fleet, old, true)?;
    // A generation that never answers (until the deadline) refutes the
    // claim; it is not a harness failure.
    let old_served = served_by(lab, load, fleet, since, old, 1);
    let new_served = served_by(lab, load, fleet, since, new, 1);
    lab.check(
        "both generations serve after USR2",
        old_served.is_ok() && new_served.is_ok(),
        format!("old: {old_served:?}; new: {new_served:?}"),
    );
    winch(lab, fleet, old)?;
    let what = "after WINCH only the new workers answer";
    only(lab, load, fleet, new, settle, what)?;
    Ok(new)
}

/// The article's sequence: USR2, WINCH, QUIT old. `replace` puts the new
/// binary on disk first. Returns the new master.
pub fn upgrade(
    lab: &mut Lab,
    fleet: &mut Fleet,
    load: &Load,
    old: i32,
    settle: usize,
    replace: &mut dyn FnMut(&mut Lab) -> Result<()>,
) -> Result<i32> {
    let new = hand_over(lab, fleet, load, old, settle, replace)?;
    quit(lab, old, &format!("$(cat {}.oldbin)", fleet.pid_rel))?;
    fleet.show_pid_files(lab);
    fleet.table(lab);
    let (cur, ob) = (fleet.current(), fleet.oldbin());
    lab.check(
        "once the old master has exited, the pid file names the new one, no .oldbin",
        cur == Some(new) && ob.is_none(),
        format!("pid file {cur:?}, .oldbin {ob:?}"),
    );
    only(
        lab,
        load,
        fleet,
        new,
        settle,
        "the new generation serves alone",
    )?;
    Ok(new)
}

/// The rollback: USR2, WINCH old, HUP old (its workers come back, forked
/// from the old image), QUIT new; the pid file is renamed back. Returns the
/// new master that was retired.
pub fn rollback(
    lab: &mut Lab,
    fleet: &mut Fleet,
    load: &Load,
    old: i32,
    settle: usize,
    replace: &mut dyn FnMut(&mut Lab) -> Result<()>,
) -> Result<i32> {
    let new = hand_over(lab, fleet, load, old, settle, replace)?;
    lab.note("roll back: HUP to the old master brings its workers back");
    let since = load.mark();
    hup(lab, fleet, old, &format!("$(cat {}.oldbin)", fleet.pid_rel))?;
    let back = fleet.workers_of(old);
    served_by(lab, load, fleet, since, old, 1)?;
    let exes: Vec<bool> = back
        .iter()
        .filter_map(|w| procfs::process::Process::new(*w).and_then(|p| p.exe()).ok())
        .map(|e| split_deleted(&e).1)
        .collect();
    lab.check(
        "the old master's fresh workers are forks of the old image (exe (deleted))",
        exes.len() == back.len() && !exes.is_empty() && exes.iter().all(|d| *d),
        format!("{exes:?}"),
    );
    quit(lab, new, &format!("$(cat {})", fleet.pid_rel))?;
    let renamed = lab.wait_until("the pid file is renamed back", || {
        match (fleet.current(), fleet.oldbin()) {
            (Some(p), None) => Ok(p),
            other => Err(format!("pid file, .oldbin: {other:?}")),
        }
    })?;
    fleet.show_pid_files(lab);
    fleet.table(lab);
    lab.check(
        "after QUIT to the new master the pid file names the old master again, no .oldbin",
        renamed == old,
        format!("pid file {renamed}"),
    );
    only(
        lab,
        load,
        fleet,
        old,
        settle,
        "the old generation serves alone again",
    )?;
    Ok(new)
}

// ---- swaplab's server ------------------------------------------------------

/// Starts swaplab's server (version 1.0.0) from `bin/` with `workers`
/// workers on an ephemeral loopback port.
pub fn start_server(lab: &mut Lab, workers: usize) -> Result<(Target, Fleet)> {
    let exe = lab.sandbox.program(Program::Server)?;
    let w = workers.to_string();
    let mut t = lab.start_exe(
        &exe,
        "S",
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            &w,
            "--pid-file",
            "run/swaplab.pid",
            "--exit-with-stdin",
        ],
        |_| String::new(),
    )?;
    let master = t.pid();
    let line = lab.expect(&mut t, &format!("notice pid={master}: listening"))?;
    let addr: SocketAddr = field(&line, "addr")?
        .parse()
        .map_err(|e| anyhow!("bad address in `{line}`: {e}"))?;
    let mut fleet = Fleet {
        pid_rel: "run/swaplab.pid".into(),
        pid_file: lab.sandbox.run_dir().join("swaplab.pid"),
        workers,
        pgid: master,
        shown: Shown::Comm,
        addr,
        env_var: LISTEN_FDS,
        passed: Passed::Environ,
        who: HashMap::new(),
        gens: HashMap::from([(master, 1)]),
    };
    fleet.first_look(lab, master)?;
    Ok((t, fleet))
}

pub fn install_server_2(lab: &mut Lab) -> Result<()> {
    install_program(lab, Program::Server2, Program::Server, Replace::Install)
}
