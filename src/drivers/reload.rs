//! Reloading a server under load: swaplab's own hand-over server through a
//! [`Service`], or any server through the shell commands that start, reload
//! and stop it ([`ShellServer`]: the user's own, and the real servers of
//! G10 and `swaplab bench reload --preset`). [`run_reloads`] drives the
//! same load through every reload, waiting each time for the evidence that
//! the reload finished ([`Ready`]), and tells what the clients saw as a
//! [`Comparison`].

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::drivers::comparison::{compare, Comparison};
use crate::drivers::handover::{Service, Switch};
use crate::drivers::load::{self, Answer, KeepAlive, Kind, Load, Mark, Sample, Stats};
use crate::harness::lab::{pidt, vol, Lab};
use crate::harness::process::{die_with_parent, output_within, GroupGuard, Sentinel};
use crate::harness::procs;
use crate::targets::handover::mono_ns;

/// A loopback HTTP URL: `http://127.0.0.1:8080/path`, `http://[::1]:8080/`,
/// `http://localhost:8080/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Url {
    pub addr: SocketAddr,
    pub path: String,
}

impl Url {
    /// Parses `text`; refuses any address outside loopback (127.0.0.0/8,
    /// ::1), any scheme but http, and a URL without a port.
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {text}: only http:// URLs (plain HTTP/1.1)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p),
            _ => {
                return Err(format!(
                    "--url {text}: give the port (http://127.0.0.1:PORT/)"
                ))
            }
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("--url {text}: `{port}` is not a port"))?;
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    format!("--url {text}: `{h}` is not an IP address (loopback only: 127.0.0.0/8, ::1, localhost)")
                })?,
        };
        if !ip.is_loopback() {
            return Err(format!(
                "--url {text}: swaplab sends traffic to loopback only (127.0.0.0/8, ::1), not {ip}"
            ));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("--url {text}: the path holds spaces"));
        }
        Ok(Url {
            addr: SocketAddr::new(ip, port),
            path: path.to_string(),
        })
    }
}

/// The evidence that a reload has finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ready {
    /// An answer names (`pid=N` in its body) a process that had answered
    /// no request before the reload.
    NewPid,
    /// The pid file names another process, alive (a new master: keep-alive
    /// clients may go on talking to the old one's workers until it quits).
    PidFile,
    /// The log file has one more line holding `text` than before the reload.
    Log { path: PathBuf, text: String },
    /// A fixed time after the reload command ended (the user's word).
    Settle(Duration),
}

impl Ready {
    /// `new-pid`, `log:PATH:TEXT` or `settle:MS`.
    pub fn parse(text: &str) -> Result<Ready, String> {
        match text {
            "new-pid" => return Ok(Ready::NewPid),
            "pid-file" => return Ok(Ready::PidFile),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("log:") {
            return match rest.split_once(':') {
                Some((p, t)) if !p.is_empty() && !t.is_empty() => Ok(Ready::Log {
                    path: PathBuf::from(p),
                    text: t.to_string(),
                }),
                _ => Err(format!("--ready {text}: log:PATH:TEXT")),
            };
        }
        if let Some(ms) = text.strip_prefix("settle:") {
            return match ms.parse::<u64>() {
                Ok(ms @ 1..=600_000) => Ok(Ready::Settle(Duration::from_millis(ms))),
                _ => Err(format!("--ready {text}: settle:MS, 1 to 600000 ms")),
            };
        }
        Err(format!(
            "--ready {text}: new-pid, pid-file, log:PATH:TEXT or settle:MS"
        ))
    }
}

/// How the load drives the reloads.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReloadPace {
    pub reloads: usize,
    /// New connections per second (without keep-alive).
    pub rate: f64,
    /// Client threads (keep-alive: connections).
    pub threads: usize,
    pub keep_alive: Option<KeepAlive>,
    /// Answers completed before the first reload, after each and after the
    /// last.
    pub settle: usize,
}

/// A server the harness reloads.
pub trait Reloadable {
    fn url(&self) -> Url;
    /// One reload, returned once it finished; `narrate`: show each step.
    fn reload(&mut self, lab: &mut Lab, load: &Load, narrate: bool) -> Result<Switch>;
    /// Stops the server (if the harness started it): what is left behind.
    fn finish(&mut self, lab: &mut Lab) -> Result<Vec<String>>;
    fn strategy(&self) -> Option<crate::drivers::handover::Strategy> {
        None
    }
}

impl Reloadable for Service {
    fn url(&self) -> Url {
        Url {
            addr: self.addrs()[0],
            path: "/".into(),
        }
    }

    fn reload(&mut self, lab: &mut Lab, _load: &Load, narrate: bool) -> Result<Switch> {
        self.switch(lab, narrate)
    }

    fn finish(&mut self, lab: &mut Lab) -> Result<Vec<String>> {
        Service::finish(self, lab)
    }

    fn strategy(&self) -> Option<crate::drivers::handover::Strategy> {
        Some(self.strategy)
    }
}

/// `127.0.0.1:[PORT]/path` for the narration: the port varies by run.
fn shown_url(url: &Url) -> String {
    let host = match url.addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("{host}:{}{}", vol(url.addr.port()), url.path)
}

/// Starts the load of `pace` on `url`.
fn start_load(lab: &mut Lab, url: &Url, pace: &ReloadPace) -> Result<Load> {
    let mut o = load::Options::new(url.addr);
    o.path = url.path.clone();
    o.connections = pace.threads;
    o.max_duration = Duration::from_secs(1800);
    o.max_requests = 10_000_000;
    match pace.keep_alive {
        Some(ka) => {
            o.keep_alive = Some(ka);
            lab.note(format!(
                "load: {} keep-alive clients on {}, each on a connection of its own; the next request goes a random 0 to {} ms after the last answer, without first looking whether the server closed the connection",
                pace.threads,
                shown_url(url),
                ka.think.as_millis()
            ));
        }
        None => {
            o.rate = Some(pace.rate);
            lab.note(format!(
                "load: {} new connections a second on {} (constant rate, {} clients), one request each",
                pace.rate,
                shown_url(url),
                pace.threads
            ));
        }
    }
    Load::start(o)
}

/// Reloads `server` `pace.reloads` times under the load; `name` names the
/// row.
pub fn run_reloads(
    lab: &mut Lab,
    name: &str,
    server: &mut dyn Reloadable,
    pace: &ReloadPace,
) -> Result<Comparison> {
    let url = server.url();
    let load = start_load(lab, &url, pace)?;
    let zero_ns = mono_ns().saturating_sub(load.now().as_nanos() as u64);
    let completed = |s: &load::Sample| s.kind == Kind::Completed;
    let m = load.mark();
    load.wait_for(m, pace.settle, "an answer completed", completed)?;
    let mut switches = Vec::new();
    for i in 0..pace.reloads {
        let sw = server
            .reload(lab, &load, i == 0)
            .with_context(|| format!("reload {} of {}", i + 1, pace.reloads))?;
        if i == 0 {
            lab.note(format!(
                "the next {} reloads the same way, each once the one before has finished and {} answers completed after it",
                pace.reloads.saturating_sub(1),
                pace.settle
            ));
        }
        switches.push(sw);
        let m = load.mark();
        load.wait_for(
            m,
            pace.settle,
            "an answer completed after the reload",
            completed,
        )?;
    }
    let samples = load.stop();
    let left = server.finish(lab)?;
    let c = compare(name, server.strategy(), switches, samples, zero_ns, left);
    lab.say(format!(
        "[load] {} reloads, {} requests: {}",
        c.switches.len(),
        vol(c.attempted),
        vol(load::tally(&c.samples))
    ));
    Ok(c)
}

/// What the clients saw of one server's reloads: failures on new
/// connections by kind, apart from those on reused ones.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub reloads: usize,
    pub requests: usize,
    /// Requests on new connections that failed, by kind.
    pub new_connections: BTreeMap<String, usize>,
    /// Requests that failed on a reused (keep-alive) connection.
    pub failed_on_reused: usize,
    pub retried: usize,
    pub before: Stats,
    pub during: Stats,
    pub after: Stats,
}

/// The figures of `c`: failures on new connections by kind apart from
/// those on reused ones.
pub fn summary(c: &Comparison) -> Summary {
    let mut new_connections = BTreeMap::new();
    for k in [
        Kind::Refused,
        Kind::Reset,
        Kind::ShortRead,
        Kind::Timeout,
        Kind::Other,
    ] {
        let n = c
            .samples
            .iter()
            .filter(|s: &&Sample| !s.reused && s.kind == k)
            .count();
        new_connections.insert(k.name().to_string(), n);
    }
    Summary {
        reloads: c.switches.len(),
        requests: c.attempted,
        new_connections,
        failed_on_reused: c.failed_on_reused,
        retried: c.retried,
        before: c.before.clone(),
        during: c.during.clone(),
        after: c.after.clone(),
    }
}

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
            seen: HashSet::new(),
            read_to: None,
        };
        if let Some(start) = s.cmds.start.clone() {
            s.spawn_start(lab, &start)?;
        }
        s.wait_answer(lab)?;
        if s.cmds.start.is_some() {
            s.adopt_groups()?;
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
        lab.wait_until(&format!("{}{} answers", url.addr, url.path), || {
            if let Some(c) = child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    if !st.success() {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        return Ok(Err(format!(
                            "the start command failed ({st}): {}",
                            crate::harness::process::last_lines(&text, 10)
                        )));
                    }
                }
            }
            probe(&url).map(Ok)
        })?
        .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The process groups of the processes that listen on the URL's
    /// address (a daemon leaves the start command's group): watched, and
    /// killed when the server is dropped.
    fn adopt_groups(&mut self) -> Result<()> {
        let own = nix::unistd::getpgrp().as_raw();
        let Some(inode) = procs::listening_inode(self.url.addr) else {
            return Ok(());
        };
        for p in procs::all() {
            let holds = procs::sockets(p.pid).iter().any(|(_, i)| *i == inode);
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
                let seen = self.seen.clone();
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
        let since = load.mark();
        let signal_ns = mono_ns();
        let reload = self.cmds.reload.clone();
        self.run(lab, &reload, old, narrate)?;
        let answered = self.wait_ready(lab, load, since, before, old)?;
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
        if narrate {
            if let Some(p) = answered {
                lab.say(format!(
                    "[load] an answer from {}, which had not answered before",
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
        if let Some(c) = self.child.as_mut() {
            let _ = c.wait();
        }
        Ok(match gone {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("{e:#}")],
        })
    }
}

/// One GET of `url`: Ok when a whole 200 answer came.
pub fn probe(url: &Url) -> std::result::Result<(), String> {
    let limit = Duration::from_secs(2);
    let mut c =
        TcpStream::connect_timeout(&url.addr, limit).map_err(|e| format!("connect: {e}"))?;
    let _ = c.set_read_timeout(Some(limit));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: swaplab-load\r\nConnection: close\r\n\r\n",
        url.path, url.addr
    );
    c.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    c.take(1 << 20)
        .read_to_end(&mut got)
        .map_err(|e| format!("receive: {e}"))?;
    let head = String::from_utf8_lossy(&got);
    match head.lines().next() {
        Some(l) if l.starts_with("HTTP/1.1 200") || l.starts_with("HTTP/1.0 200") => Ok(()),
        other => Err(format!("answer `{}`", other.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_only() {
        let u = Url::parse("http://127.0.0.1:8080/x?y=1").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (8080, "/x?y=1"));
        assert_eq!(Url::parse("http://[::1]:81").unwrap().path, "/");
        assert!(Url::parse("http://localhost:80/").is_ok());
        assert!(Url::parse("http://127.0.0.2:80/").is_ok());
        for bad in [
            "http://192.0.2.1:80/",
            "http://example.com:80/",
            "https://127.0.0.1:443/",
            "http://127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://[2001:db8::1]:80/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readiness_is_parsed() {
        assert_eq!(Ready::parse("new-pid"), Ok(Ready::NewPid));
        assert_eq!(
            Ready::parse("settle:250"),
            Ok(Ready::Settle(Duration::from_millis(250)))
        );
        assert!(matches!(
            Ready::parse("log:run/e.log:resuming"),
            Ok(Ready::Log { .. })
        ));
        for bad in ["", "settle:0", "settle:x", "log:only", "soon"] {
            assert!(Ready::parse(bad).is_err(), "{bad}");
        }
    }
}
