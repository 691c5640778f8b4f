//! A server run by the shell commands a user would type ([`Commands`]):
//! started (in the foreground, or a daemon that detaches), reloaded,
//! stopped, and followed to the processes that listen on its port, so that
//! nothing of it is left whatever happens. The user's own server of
//! `swaplab bench reload`, and the real servers of its presets and of G10.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::drivers::handover::Switch;
use crate::drivers::load::{self, Answer, Load, Mark};
use crate::drivers::reload::{listening_inodes, Ready, Reloadable, Url};
use crate::harness::lab::{pidt, Lab};
use crate::harness::process::{die_with_parent, output_within, GroupGuard, Sentinel};
use crate::harness::procs;
use crate::targets::handover::mono_ns;

/// The shell commands that run a server.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Commands {
    /// Where the commands run.
    pub dir: PathBuf,
    /// Starts it (in the foreground, or a daemon that detaches); `None`:
    /// attach to a server that runs already.
    pub start: Option<String>,
    /// Reloads it; `{pid}` is the server's pid (from the pid file, else the
    /// start command's process).
    pub reload: String,
    /// Run once the reload is ready, with `{pid}` the pid before it (an
    /// nginx binary upgrade QUITs the old master).
    pub after: Option<String>,
    /// Stops it; without it, the harness TERMs what its start command left.
    pub stop: Option<String>,
    pub pid_file: Option<PathBuf>,
    /// After each reload, wait until every process that answered before it
    /// has exited (haproxy's master takes a second USR2 that comes before
    /// its old worker is gone for no reload at all).
    pub drained: bool,
    /// Before each reload, wait until the server's pid catches this signal
    /// (`SigCgt` in /proc/PID/status): haproxy's master, after its start
    /// and after each reload, execs itself once more and ignores USR2 until
    /// it is set up, so a USR2 sent meanwhile is lost.
    #[serde(skip)]
    pub catches: Option<nix::sys::signal::Signal>,
    /// The server's own log, shown when a reload fails.
    pub log: Option<PathBuf>,
    /// What the narration shows for the folder (the sandbox's path varies).
    pub shown_dir: Option<String>,
}

/// A server run by shell commands.
pub struct ShellServer {
    cmds: Commands,
    url: Url,
    ready: Ready,
    /// The start command, if it still runs (a server in the foreground).
    child: Option<Child>,
    /// Process groups the start command left (the daemon's), killed on
    /// drop; none when attached.
    groups: Vec<GroupGuard>,
    pgids: Vec<i32>,
    sentinel: Option<Sentinel>,
    /// When the start command was spawned (clock ticks since boot, as
    /// /proc/PID/stat counts): only processes started since are adopted.
    spawned_at: u64,
    /// The start command has ended (its pid may be anyone's now).
    start_ended: bool,
    /// Processes that answered so far, and how far the load was read.
    seen: HashSet<i32>,
    read_to: Option<Mark>,
}

impl ShellServer {
    /// Runs the start command (if any) and waits until the URL answers.
    pub fn start(lab: &mut Lab, cmds: Commands, url: Url, ready: Ready) -> Result<ShellServer> {
        let sentinel = Some(Sentinel::start(lab.sandbox.root())?);
        let mut s = ShellServer {
            cmds,
            url,
            ready,
            child: None,
            groups: Vec::new(),
            pgids: Vec::new(),
            sentinel,
            spawned_at: 0,
            start_ended: false,
            seen: HashSet::new(),
            read_to: None,
        };
        if let Some(start) = s.cmds.start.clone() {
            // The load must measure the server this command starts, and
            // the end must stop nothing else.
            if load::get_once(s.url.addr, &s.url.path, Duration::from_secs(2)).is_ok() {
                bail!(
                    "something already answers at {}; stop it first, or leave out the start command to measure it (attach)",
                    s.url.addr
                );
            }
            s.spawn_start(lab, &start)?;
        }
        let answered = s.wait_answer(lab);
        if s.cmds.start.is_some() {
            // Also when it never answered: a daemon it left must go too.
            s.adopt_groups()?;
        }
        answered.with_context(|| s.server_log(lab))?;
        if s.ready == Ready::NewPid {
            let first = load::get_once(s.url.addr, &s.url.path, Duration::from_secs(5));
            if !matches!(first, Ok(Some(_))) {
                bail!(
                    "its answers do not name the process that answers (a body beginning `pid=N`), so a reload cannot be seen by them: say when one has finished with --ready pid-file, log:PATH:TEXT or settle:MS"
                );
            }
        }
        Ok(s)
    }

    fn shown(&self, cmd: &str) -> String {
        match &self.cmds.shown_dir {
            Some(shown) => cmd.replace(&self.cmds.dir.display().to_string(), shown),
            None => cmd.to_string(),
        }
    }

    fn spawn_start(&mut self, lab: &mut Lab, start: &str) -> Result<()> {
        lab.shell(self.shown(start));
        let out = lab.sandbox.run_dir().join("start.log");
        let log = std::fs::File::create(&out)?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(start)
            .current_dir(&self.cmds.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        die_with_parent(&mut cmd);
        self.spawned_at = boot_ticks();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run the start command `{start}`"))?;
        let pgid = child.id() as i32;
        self.groups.push(GroupGuard::new(pgid));
        self.pgids.push(pgid);
        if let Some(s) = self.sentinel.as_mut() {
            s.watch_group(pgid)?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Waits until a request to the URL gets a whole 200 answer, or fails
    /// if the start command ended with an error first.
    fn wait_answer(&mut self, lab: &mut Lab) -> Result<()> {
        let url = self.url.clone();
        let log = lab.sandbox.run_dir().join("start.log");
        let child = &mut self.child;
        let ended = &mut self.start_ended;
        lab.wait_until(&format!("{}{} answers", url.addr, url.path), || {
            if let Some(c) = child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    *ended = true;
                    if !st.success() {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        let said = match crate::harness::process::last_lines(&text, 10) {
                            t if t.trim().is_empty() => "(it printed nothing)".to_string(),
                            t => t,
                        };
                        return Ok(Err(format!("the start command failed ({st}): {said}")));
                    }
                }
            }
            load::get_once(url.addr, &url.path, Duration::from_secs(2)).map(|_| Ok(()))
        })?
        .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The process groups of the processes that listen on the URL's
    /// address (a daemon leaves the start command's group): watched, and
    /// killed when the server is dropped.
    fn adopt_groups(&mut self) -> Result<()> {
        let own = nix::unistd::getpgrp().as_raw();
        let inodes = listening_inodes(self.url.addr);
        if inodes.is_empty() {
            return Ok(());
        }
        for p in procs::all() {
            // Only what started after the start command: never a process
            // that was there before (another user's server on the port).
            if p.start < self.spawned_at {
                continue;
            }
            let holds = procs::sockets(p.pid)
                .iter()
                .any(|(_, i)| inodes.contains(i));
            if holds && p.pgrp != own && p.pgrp > 1 && !self.pgids.contains(&p.pgrp) {
                self.groups.push(GroupGuard::new(p.pgrp));
                self.pgids.push(p.pgrp);
                if let Some(s) = self.sentinel.as_mut() {
                    s.watch_group(p.pgrp)?;
                }
            }
        }
        Ok(())
    }

    /// The server's pid: the pid file's, else the start command's.
    fn pid(&self) -> Option<i32> {
        match &self.cmds.pid_file {
            Some(f) => std::fs::read_to_string(self.cmds.dir.join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            None if self.start_ended => None,
            None => self.child.as_ref().map(|c| c.id() as i32),
        }
    }

    /// Runs one command (`{pid}` replaced) in the folder, to its end.
    fn run(&self, lab: &mut Lab, template: &str, pid: Option<i32>, narrate: bool) -> Result<()> {
        let cmd = match pid {
            Some(p) => template.replace("{pid}", &p.to_string()),
            None if template.contains("{pid}") => {
                bail!("`{template}` names {{pid}}, but there is no pid file and the start command has ended")
            }
            None => template.to_string(),
        };
        if narrate {
            let shown = match pid {
                Some(p) => template.replace("{pid}", &pidt(p)),
                None => template.to_string(),
            };
            lab.shell(self.shown(&shown));
        }
        let out = output_within(
            Command::new("/bin/sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(&self.cmds.dir)
                .stdin(Stdio::null()),
            crate::harness::process::deadline(),
        )
        .with_context(|| format!("`{cmd}`"))?;
        if !out.status.success() {
            bail!(
                "`{cmd}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Waits until the server's pid has a handler for `sig` (`SigCgt` in
    /// /proc/PID/status): a signal sent before is lost, or kills it.
    fn wait_catches(&self, lab: &mut Lab, sig: nix::sys::signal::Signal) -> Result<()> {
        let what = format!(
            "the server catches {} (SigCgt in /proc/PID/status)",
            sig.as_str()
        );
        lab.wait_until(&what, || match self.pid() {
            Some(p) if catches(p, sig) => Ok(()),
            Some(p) => Err(format!("pid {p} does not catch it")),
            None => Err("no pid yet".to_string()),
        })
    }

    /// Records who answered since the last look.
    fn look(&mut self, load: &Load) {
        let from = self.read_to.unwrap_or(load.origin());
        let now = load.mark();
        for s in load.since(from) {
            if let Some(a) = &s.answer {
                self.seen.insert(a.pid);
            }
        }
        self.read_to = Some(now);
    }

    fn wait_ready(
        &mut self,
        lab: &mut Lab,
        load: &Load,
        since: Mark,
        before: usize,
        old: Option<i32>,
        holders: &[i32],
    ) -> Result<Option<i32>> {
        match self.ready.clone() {
            Ready::PidFile => {
                if self.cmds.pid_file.is_none() {
                    bail!("--ready pid-file needs --pid-file");
                }
                lab.wait_until("the pid file names another process, alive", || {
                    match self.pid() {
                        Some(p) if Some(p) != old && procs::alive(p) => Ok(()),
                        other => Err(format!("pid file: {other:?}")),
                    }
                })?;
                Ok(None)
            }
            Ready::NewPid => {
                // Not new: a process that answered before, or one that
                // already held the listening socket (an old worker that
                // happens to answer for the first time).
                let mut seen = self.seen.clone();
                seen.extend(holders.iter().copied());
                let s = load.wait_for(
                    since,
                    1,
                    "an answer from a process that had not answered before the reload",
                    |s| s.answer.as_ref().is_some_and(|a| !seen.contains(&a.pid)),
                )?;
                Ok(s.answer.map(|a: Answer| a.pid))
            }
            Ready::Log { path, text } => {
                let path = self.cmds.dir.join(path);
                lab.wait_until(
                    &format!("{} holds one more `{text}`", path.display()),
                    || match count_lines(&path, &text) {
                        n if n > before => Ok(()),
                        n => Err(format!("{n} such lines")),
                    },
                )?;
                Ok(None)
            }
            Ready::Settle(d) => {
                // The user's choice: a server that gives no evidence.
                std::thread::sleep(d);
                Ok(None)
            }
        }
    }
}

/// Whether `pid` has a handler for `sig` (its bit in `SigCgt`).
fn catches(pid: i32, sig: nix::sys::signal::Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig as i32 - 1)) != 0)
}

/// How many lines of `path` hold `text` (0 if it cannot be read).
fn count_lines(path: &std::path::Path, text: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter(|l| l.contains(text)).count())
        .unwrap_or(0)
}

impl Reloadable for ShellServer {
    fn url(&self) -> Url {
        self.url.clone()
    }

    fn reload(&mut self, lab: &mut Lab, load: &Load, narrate: bool) -> Result<Switch> {
        let result = self.reload_once(lab, load, narrate);
        result.with_context(|| self.server_log(lab))
    }

    fn finish(&mut self, lab: &mut Lab) -> Result<Vec<String>> {
        self.stop(lab)
    }
}

impl ShellServer {
    /// The last lines of the server's log (and of what its start command
    /// printed), for an error: why a reload did not finish is usually there.
    fn server_log(&self, lab: &Lab) -> String {
        let mut out = String::from("the server's last words:");
        let logs = self.cmds.log.iter().map(|l| self.cmds.dir.join(l));
        for path in logs.chain([lab.sandbox.run_dir().join("start.log")]) {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let tail = crate::harness::process::last_lines(&text, 8);
                out.push_str(&format!("\n{}:\n{tail}", path.display()));
            }
        }
        out
    }

    fn reload_once(&mut self, lab: &mut Lab, load: &Load, narrate: bool) -> Result<Switch> {
        self.look(load);
        if let Some(sig) = self.cmds.catches {
            self.wait_catches(lab, sig)?;
        }
        let old = self.pid();
        let before = match &self.ready {
            Ready::Log { path, text } => count_lines(&self.cmds.dir.join(path), text),
            _ => 0,
        };
        let holders = listener_holders(self.url.addr);
        let since = load.mark();
        let signal_ns = mono_ns();
        let reload = self.cmds.reload.clone();
        self.run(lab, &reload, old, narrate)?;
        let answered = self.wait_ready(lab, load, since, before, old, &holders)?;
        let accepting_ns = mono_ns();
        if let Some(after) = self.cmds.after.clone() {
            self.run(lab, &after, old, narrate)?;
        }
        if self.cmds.drained {
            let before: Vec<i32> = self.seen.iter().copied().collect();
            lab.wait_until_exited(
                "every process that answered before the reload has exited",
                &before,
            )?;
        }
        let new = self.pid();
        if let (Some(o), Some(n)) = (old, new) {
            if o != n {
                lab.wait_until_exited("the old process has exited", &[o])?;
            }
        }
        if self.cmds.start.is_some() {
            // A reload may leave the server in another process group.
            self.adopt_groups()?;
        }
        if narrate {
            if let Some(p) = answered {
                lab.say(format!(
                    "[load] an answer from {}, which was not serving before the reload",
                    pidt(p)
                ));
            }
        }
        Ok(Switch {
            from: old.unwrap_or(0),
            to: answered.or(new).unwrap_or(0),
            gen: 0,
            signal_ns,
            accepting_ns,
            done_ns: mono_ns(),
            received: None,
            fds: 0,
            lasting: Default::default(),
        })
    }

    fn stop(&mut self, lab: &mut Lab) -> Result<Vec<String>> {
        if self.cmds.start.is_none() {
            return Ok(Vec::new()); // attached: the server is the user's
        }
        if let Some(stop) = self.cmds.stop.clone() {
            let pid = self.pid();
            self.run(lab, &stop, pid, true)?;
        } else {
            for g in &self.pgids {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*g),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let pgids = self.pgids.clone();
        let gone = lab.wait_until("every process of the server has exited", || {
            let left: Vec<i32> = pgids
                .iter()
                .flat_map(|g| procs::group(*g))
                .map(|p| p.pid)
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        });
        if gone.is_err() {
            // What did not stop is killed: nothing of it outlives the run.
            for g in &self.pgids {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*g),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(c) = self.child.as_mut() {
            let _ = crate::harness::process::wait_or_kill(c, Duration::from_secs(5));
        }
        if let Some(s) = self.sentinel.as_mut() {
            for g in self.pgids.iter().filter(|g| procs::group(**g).is_empty()) {
                s.forget_group(*g)?;
            }
        }
        Ok(match gone {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("{e:#}")],
        })
    }
}

/// The processes that hold a socket listening on `addr`'s port.
pub fn listener_holders(addr: std::net::SocketAddr) -> Vec<i32> {
    let inodes = listening_inodes(addr);
    procs::all()
        .into_iter()
        .filter(|p| {
            procs::sockets(p.pid)
                .iter()
                .any(|(_, i)| inodes.contains(i))
        })
        .map(|p| p.pid)
        .collect()
}

/// Now, in clock ticks since boot (the unit of a process's start time in
/// /proc/PID/stat).
fn boot_ticks() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let hz = procfs::ticks_per_second() as f64;
    // A tick early: a process started in the same tick counts as after.
    ((secs * hz) as u64).saturating_sub(1)
}
