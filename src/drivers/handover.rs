//! The hand-over server driven through its switches: [`Service`] starts
//! `swaplab::targets::handover` under one of five [`Strategy`]s and hands
//! its listening sockets to each next generation, waiting on evidence (a
//! log line, an exit, a refused request), never on a sleep. G02, G03 and
//! G06, `swaplab bench handover` and the hand-over tests share it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::drivers::load::{self, Load};
use crate::harness::lab::{vol, Lab};
use crate::harness::process::{Program, Target};
use crate::harness::procs;
use crate::targets::generation::GENERATION;
use crate::targets::handover::mono_ns;
use crate::targets::keepalive::Drain;
use crate::targets::protocol::{field, field_i32, field_u32};

/// The control socket of the SCM_RIGHTS strategy, in the sandbox.
pub const CONTROL: &str = "run/handover.sock";

/// How a new generation gets the listening sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    StopStart,
    ScmRights,
    Reuseport,
    Exec,
    Activation,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::StopStart,
        Strategy::Reuseport,
        Strategy::ScmRights,
        Strategy::Exec,
        Strategy::Activation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::StopStart => "stop-start",
            Strategy::ScmRights => "scm-rights",
            Strategy::Reuseport => "reuseport",
            Strategy::Exec => "exec",
            Strategy::Activation => "activation",
        }
    }

    /// Whether every generation serves the very same listening socket.
    pub fn shares_the_socket(self) -> bool {
        matches!(
            self,
            Strategy::ScmRights | Strategy::Exec | Strategy::Activation
        )
    }
}

/// `--strategy NAME`: the names of [`Strategy::name`], in the order of
/// [`Strategy::ALL`].
impl clap::ValueEnum for Strategy {
    fn value_variants<'a>() -> &'a [Self] {
        &Strategy::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// The workload and the server's behaviour.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Setup {
    /// Bytes per download.
    pub body: u64,
    /// How long the server spreads each download over.
    pub download_ms: u64,
    /// How long a new generation takes to start.
    pub startup_ms: u64,
    /// How long an old process waits for the new one's `ready`.
    pub handover_timeout_ms: u64,
    /// Keep-alive connections, ended by this drain when a process stops
    /// (instead of one download per connection).
    pub keep_alive: Option<Drain>,
    /// The UDP mode instead of downloads (G09).
    pub udp: Option<crate::drivers::udp_load::UdpMode>,
}

impl Setup {
    pub fn new(body: u64, download_ms: u64, startup_ms: u64) -> Setup {
        Setup {
            body,
            download_ms,
            startup_ms,
            handover_timeout_ms: 5_000,
            keep_alive: None,
            udp: None,
        }
    }
}

/// Whether `::1` can be bound here (containers often disable IPv6).
pub fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The two listeners every hand-over server gets: 127.0.0.1 and ::1 on one
/// port, or 127.0.0.1 and 127.0.0.2 where IPv6 is off.
fn listen_args() -> Vec<String> {
    let second = if ipv6_loopback() {
        "[::1]:0"
    } else {
        "127.0.0.2:0"
    };
    ["--listen", "127.0.0.1:0", "--listen", second]
        .map(String::from)
        .to_vec()
}

/// What an `accepting pid=N gen=G at_ns=T fd=4 addr=…, fd=5 addr=…` line
/// says.
#[derive(Clone, Debug, Serialize)]
pub struct Accepting {
    pub pid: i32,
    pub gen: u32,
    pub at_ns: u64,
    pub fds: Vec<(i32, SocketAddr)>,
}

impl Accepting {
    pub fn parse(line: &str) -> Result<Accepting> {
        let mut fds = Vec::new();
        for part in line.split(", ") {
            let fd = field_i32(part, "fd")?;
            let addr: SocketAddr = field(part, "addr")?
                .trim_end_matches(',')
                .parse()
                .with_context(|| format!("bad address in `{line}`"))?;
            fds.push((fd, addr));
        }
        Ok(Accepting {
            pid: field_i32(line, "pid")?,
            gen: field_u32(line, "gen")?,
            at_ns: field(line, "at_ns")?
                .parse()
                .with_context(|| format!("bad at_ns in `{line}`"))?,
            fds,
        })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.fds.iter().map(|(_, a)| *a).collect()
    }
}

/// One switch from a generation to the next.
#[derive(Clone, Debug, Serialize)]
pub struct Switch {
    pub from: i32,
    pub to: i32,
    pub gen: u32,
    /// CLOCK_MONOTONIC: the signal (or the start of the new process).
    pub signal_ns: u64,
    /// The new generation accepting.
    pub accepting_ns: u64,
    /// The old generation gone (drained, or cut).
    pub done_ns: u64,
    /// `(fds, messages)` the new process received (SCM_RIGHTS).
    pub received: Option<(usize, usize)>,
    /// The new generation's fds that are not client connections, in every
    /// look at it so far (see [`Service::look_again_at_fds`]).
    pub fds: usize,
    /// Those fds, as (number, target).
    #[serde(skip)]
    pub lasting: FdSet,
}

/// A process's fds as (number, target as `ls -l` shows it).
pub type FdSet = std::collections::BTreeSet<(i32, String)>;

impl Switch {
    /// Signal to new process accepting.
    pub fn switch_ms(&self) -> f64 {
        self.accepting_ns.saturating_sub(self.signal_ns) as f64 / 1e6
    }
}

/// The fds of `pid` that are not client connections: everything but
/// sockets, plus the listening sockets (by fd number, as the server logged
/// them) and Unix sockets (from /proc/net/unix). A leak of any kind shows
/// as growth; connections in flight do not count.
pub fn lasting_fds(pid: i32, listening: &[i32]) -> FdSet {
    let unix: std::collections::HashSet<u64> = procfs::net::unix()
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.inode)
        .collect();
    procs::fds(pid)
        .into_iter()
        .filter(|(fd, t)| {
            let Some(ino) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.trim_end_matches(']').parse::<u64>().ok())
            else {
                return true;
            };
            listening.contains(fd) || unix.contains(&ino)
        })
        .collect()
}

/// A hand-over server running under one strategy.
pub struct Service {
    pub strategy: Strategy,
    setup: Setup,
    /// Targets the harness started, oldest first (exec and activation: one,
    /// whose process group holds every generation).
    targets: Vec<Target>,
    pub current: Accepting,
    pub switches: Vec<Switch>,
    /// The holder (activation).
    pub holder: Option<i32>,
}

fn common_args(setup: &Setup) -> Vec<String> {
    let mut a = vec![
        "--body".to_string(),
        setup.body.to_string(),
        "--download-ms".to_string(),
        setup.download_ms.to_string(),
    ];
    if setup.handover_timeout_ms != 5_000 {
        a.push("--handover-timeout-ms".into());
        a.push(setup.handover_timeout_ms.to_string());
    }
    if setup.startup_ms > 0 {
        a.push("--startup-ms".into());
        a.push(setup.startup_ms.to_string());
    }
    if let Some(d) = setup.keep_alive {
        a.extend(["--keep-alive", "--drain", d.name()].map(String::from));
    }
    a.extend(setup.udp.iter().flat_map(|u| u.args()));
    a
}

fn start_gen(lab: &mut Lab, label: &str, gen: u32, args: &[String]) -> Result<Target> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_with(Program::Handover, label, &args, |c| {
        c.env(GENERATION, gen.to_string());
        format!("{GENERATION}={gen}")
    })
}

pub fn accepting_line(lab: &mut Lab, t: &mut Target, gen: u32) -> Result<Accepting> {
    let line = t.wait_line(
        |l| l.starts_with("accepting pid=") && l.contains(&format!(" gen={gen} ")),
        &format!("`accepting … gen={gen}`"),
    )?;
    lab.say(format!("[{}] {line}", t.label()));
    Accepting::parse(&line)
}

impl Service {
    /// Starts generation 1.
    pub fn start(lab: &mut Lab, strategy: Strategy, setup: Setup) -> Result<Service> {
        let mut args = Vec::new();
        match strategy {
            Strategy::Activation => args.push("--holder".to_string()),
            Strategy::Reuseport => args.push("--reuseport".to_string()),
            Strategy::ScmRights => {
                args.push("--control".to_string());
                args.push(CONTROL.to_string());
            }
            _ => {}
        }
        args.extend(listen_args());
        args.extend(common_args(&setup));
        let label = if strategy == Strategy::Activation {
            "holder"
        } else {
            "gen 1"
        };
        let mut t = start_gen(lab, label, 1, &args)?;
        let current = accepting_line(lab, &mut t, 1)?;
        let holder = (strategy == Strategy::Activation).then(|| t.pid());
        Ok(Service {
            strategy,
            setup,
            targets: vec![t],
            current,
            switches: Vec::new(),
            holder,
        })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.current.addrs()
    }

    fn listening_fds(&self) -> Vec<i32> {
        self.current.fds.iter().map(|(fd, _)| *fd).collect()
    }

    /// Waits for a line of the newest target (the current generation, or
    /// the one whose process group holds it) that starts with `prefix`, and
    /// narrates it.
    pub fn expect(&mut self, lab: &mut Lab, prefix: &str) -> Result<String> {
        let t = self.newest();
        lab.expect(t, prefix)
    }

    /// The pid signals go to: the holder, or the current generation.
    pub fn signal_pid(&self) -> i32 {
        self.holder.unwrap_or(self.current.pid)
    }

    fn newest(&mut self) -> &mut Target {
        self.targets.last_mut().expect("a target")
    }

    /// Stop/start, first half: TERM the current process and wait until it
    /// is gone (its downloads are cut). Returns when the signal went.
    pub fn stop_now(&mut self, lab: &mut Lab) -> Result<u64> {
        let old = self.current.pid;
        let t_sig = mono_ns();
        lab.kill(Signal::SIGTERM, old, "$OLD")?;
        let t = self.newest();
        let line = t.wait_line(
            |l| l.starts_with(&format!("notice pid={old}: signal SIGTERM")),
            "`signal SIGTERM received`",
        )?;
        let label = t.label().to_string();
        t.wait_exit()?;
        lab.say(format!("[{label}] {line}"));
        Ok(t_sig)
    }

    /// Stop/start, second half: start the next generation on the same
    /// addresses.
    pub fn start_again(&mut self, lab: &mut Lab) -> Result<()> {
        let gen = self.current.gen + 1;
        let mut args = Vec::new();
        for a in self.current.addrs() {
            args.push("--listen".to_string());
            args.push(a.to_string());
        }
        args.extend(common_args(&self.setup));
        let mut t = start_gen(lab, &format!("gen {gen}"), gen, &args)?;
        self.current = accepting_line(lab, &mut t, gen)?;
        self.targets.retain(|t| procs::alive(t.pid()));
        self.targets.push(t);
        Ok(())
    }

    /// Follows the old generation's log through `steps` (line prefixes
    /// after `notice pid=OLD: `) to its exit, then makes `new` the newest
    /// target.
    fn retire(
        &mut self,
        lab: &mut Lab,
        old: i32,
        steps: &[String],
        new: Target,
        narrate: bool,
    ) -> Result<()> {
        let o = self.newest();
        for step in steps {
            let want = format!("notice pid={old}: {step}");
            let line = o.wait_line(|l| l.starts_with(&want), &format!("`{want}…`"))?;
            if narrate {
                lab.say(format!("[{}] {line}", o.label()));
            }
        }
        o.wait_exit()?;
        self.targets.retain(|t| procs::alive(t.pid()));
        self.targets.push(new);
        Ok(())
    }

    /// One switch to the next generation. `narrate`: show each log line
    /// (otherwise only the commands and a summary).
    pub fn switch(&mut self, lab: &mut Lab, narrate: bool) -> Result<Switch> {
        let old = self.current.clone();
        let gen = old.gen + 1;
        let mut received = None;
        let t_sig;
        match self.strategy {
            Strategy::StopStart => {
                t_sig = self.stop_now(lab)?;
                self.start_again(lab)?;
            }
            Strategy::ScmRights => {
                let mut args = vec![
                    "--takeover".to_string(),
                    CONTROL.to_string(),
                    "--control".to_string(),
                    CONTROL.to_string(),
                ];
                args.extend(common_args(&self.setup));
                t_sig = mono_ns();
                let mut t = start_gen(lab, &format!("gen {gen}"), gen, &args)?;
                let new = t.pid();
                let got = t.wait_line(
                    |l| l.starts_with(&format!("notice pid={new}: received ")),
                    "`received N fds`",
                )?;
                if narrate {
                    lab.say(format!("[gen {gen}] {got}"));
                }
                let n: usize = got
                    .split("received ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let m: usize = got
                    .split(" fds in ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                received = Some((n, m));
                self.current = accepting_line(lab, &mut t, gen)?;
                let released = t.wait_line(
                    |l| l.starts_with(&format!("notice pid={new}: control socket")),
                    "`control socket …` (the old process released the sockets)",
                )?;
                if narrate {
                    lab.say(format!("[gen {gen}] {released}"));
                }
                let steps = [
                    format!("take-over request from pid={new}"),
                    format!("pid={new} is ready"),
                    "drain".to_string(),
                ];
                self.retire(lab, old.pid, &steps, t, narrate)?;
            }
            Strategy::Reuseport => {
                let mut args = vec!["--reuseport".to_string()];
                for a in old.addrs() {
                    args.push("--listen".to_string());
                    args.push(a.to_string());
                }
                args.extend(common_args(&self.setup));
                t_sig = mono_ns();
                let mut t = start_gen(lab, &format!("gen {gen}"), gen, &args)?;
                self.current = accepting_line(lab, &mut t, gen)?;
                lab.kill(Signal::SIGQUIT, old.pid, "$OLD")?;
                let steps = ["signal QUIT".to_string(), "drain".to_string()];
                self.retire(lab, old.pid, &steps, t, narrate)?;
            }
            Strategy::Exec => {
                t_sig = mono_ns();
                lab.kill(Signal::SIGUSR2, old.pid, "$OLD")?;
                let t = self.targets.last_mut().expect("the target");
                self.current = accepting_line(lab, t, gen)?;
                let new = self.current.pid;
                let t = self.targets.last_mut().expect("the target");
                let inherited = t.wait_line(
                    |l| l.starts_with(&format!("notice pid={new}: using inherited")),
                    "`using inherited listening sockets`",
                )?;
                if narrate {
                    lab.say(format!("[{}] {inherited}", t.label()));
                }
                lab.kill(Signal::SIGQUIT, old.pid, "$OLD")?;
                let t = self.targets.last_mut().expect("the target");
                let want = format!("notice pid={}: drain", old.pid);
                let line = t.wait_line(|l| l.starts_with(&want), &format!("`{want}…`"))?;
                if narrate {
                    lab.say(format!("[{}] {line}", t.label()));
                }
                lab.wait_until_exited("the old generation has exited", &[old.pid])?;
            }
            Strategy::Activation => {
                let holder = self.holder.expect("a holder");
                t_sig = mono_ns();
                lab.kill(Signal::SIGHUP, holder, "$HOLDER")?;
                let t = self.targets.last_mut().expect("the holder");
                self.current = accepting_line(lab, t, gen)?;
                let t = self.targets.last_mut().expect("the holder");
                for want in [
                    format!("notice pid={holder}: holder: generation gen={gen} "),
                    format!(
                        "notice pid={holder}: holder: generation gen={} pid={} exited",
                        old.gen, old.pid
                    ),
                ] {
                    let line = t.wait_line(|l| l.starts_with(&want), &format!("`{want}…`"))?;
                    if narrate {
                        lab.say(format!("[holder] {line}"));
                    }
                }
            }
        }
        let done = mono_ns();
        let lasting = self.generation_fds();
        let s = Switch {
            from: old.pid,
            to: self.current.pid,
            gen,
            signal_ns: t_sig,
            accepting_ns: self.current.at_ns,
            done_ns: done,
            received,
            fds: lasting.len(),
            lasting,
        };
        self.switches.push(s.clone());
        Ok(s)
    }

    /// The current generation's lasting fds, and the holder's (whose fds
    /// are all lasting: it serves no client), the holder's numbered from -1
    /// down so the two never mix.
    fn generation_fds(&self) -> FdSet {
        let mut fds = lasting_fds(self.current.pid, &self.listening_fds());
        if let Some(h) = self.holder {
            fds.extend(procs::fds(h).into_iter().map(|(fd, t)| (-1 - fd, t)));
        }
        fds
    }

    /// Looks at the current generation's fds again, some time after the
    /// switch: the switch's count keeps only the fds seen both times. A
    /// leaked fd stays, so it is in both looks; a descriptor that was only
    /// passing through in one look (seen in an emulated guest, where a
    /// moment lasts long: counts of [10, 11, 10]) is no leak.
    pub fn look_again_at_fds(&mut self) {
        let now = self.generation_fds();
        if let Some(s) = self.switches.last_mut() {
            s.lasting.retain(|f| now.contains(f));
            s.fds = s.lasting.len();
        }
    }

    /// Ends the service gracefully (QUIT: stop accepting, drain) and checks
    /// what it leaves: no process, no control socket file.
    pub fn finish(&mut self, lab: &mut Lab) -> Result<Vec<String>> {
        let mut left = Vec::new();
        let pid = self.holder.unwrap_or(self.current.pid);
        lab.kill(Signal::SIGQUIT, pid, "$CURRENT")?;
        lab.wait_until_exited("every generation has exited", &[self.current.pid, pid])?;
        for t in &mut self.targets {
            if t.pid() == pid {
                t.wait_exit()?;
            }
        }
        let sock = lab.sandbox.root().join(CONTROL);
        if sock.exists() {
            left.push(format!("{CONTROL} is still there"));
        }
        // The process table, not only the pids waited for above: an old
        // generation, an exec child or a holder's generation that outlives
        // the service by the deadline shows here. (A holder SIGKILLs its
        // generations as it exits: they may take a moment to go.)
        let exe = lab.sandbox.program(Program::Handover)?;
        let gone = lab.wait_until("no process runs bin/swaplab-handover", || {
            match running(&exe).as_slice() {
                [] => Ok(()),
                pids => Err(format!("{pids:?}")),
            }
        });
        if gone.is_err() {
            for p in running(&exe) {
                left.push(format!("pid {p} still runs bin/swaplab-handover"));
            }
        }
        Ok(left)
    }
}

/// The live processes whose executable is `exe`.
fn running(exe: &std::path::Path) -> Vec<i32> {
    procs::all()
        .into_iter()
        .filter(|p| p.exe.as_deref() == Some(exe))
        .map(|p| p.pid)
        .collect()
}

/// The load of the graceful-restart experiments: constant rate, every
/// listener in turn, each request a whole download.
pub fn start_load(
    lab: &mut Lab,
    addrs: Vec<SocketAddr>,
    rate: f64,
    threads: usize,
) -> Result<Load> {
    let mut o = load::LoadOptions::new(addrs[0]);
    o.addrs = addrs;
    o.rate = Some(rate);
    o.connections = threads;
    o.max_duration = Duration::from_secs(600);
    o.max_requests = 10_000_000;
    lab.note(format!(
        "load: {} new connections a second ({} clients, every listener in turn), {}; each downloads the whole body",
        vol(rate),
        vol(threads),
        o.pace().says()
    ));
    Load::start(o)
}

/// The keep-alive load of G08 and `bench reload --keep-alive`: `threads`
/// clients, each on a connection of its own, sending each next request a
/// random moment (up to `think`) after the last answer.
pub fn start_keep_alive_load(
    lab: &mut Lab,
    addrs: Vec<SocketAddr>,
    threads: usize,
    ka: load::KeepAlive,
) -> Result<Load> {
    let mut o = load::LoadOptions::new(addrs[0]);
    o.addrs = addrs;
    o.connections = threads;
    o.keep_alive = Some(ka);
    o.max_duration = Duration::from_secs(600);
    o.max_requests = 10_000_000;
    lab.note(format!(
        "load: {} keep-alive clients, each on a connection of its own; the next request goes a random 0 to {} ms after the last answer, without first looking whether the server closed the connection (a closed loop: latency counts from each send){}",
        threads,
        ka.think.as_millis(),
        if ka.retry {
            "; a request that fails on a reused connection before any byte of an answer is sent again on a new one"
        } else {
            ""
        }
    ));
    Load::start(o)
}

/// The socket inodes behind a generation's listening fds.
pub fn listening_inodes(a: &Accepting) -> Vec<u64> {
    a.fds
        .iter()
        .map(|(fd, _)| socket_inode(a.pid, *fd))
        .collect()
}

pub fn show_listening(lab: &mut Lab, a: &Accepting, inodes: &[u64], what: &str) {
    lab.proof(format!("$ ls -l /proc/{}/fd   # {what}", a.pid));
    for ((fd, _), ino) in a.fds.iter().zip(inodes) {
        lab.proof(format!("{fd} -> socket:[{ino}]"));
    }
}

/// The inode of the socket at `/proc/PID/fd/FD` (0 if none).
pub fn socket_inode(pid: i32, fd: i32) -> u64 {
    procs::sockets(pid)
        .into_iter()
        .find(|(f, _)| *f == fd)
        .map(|(_, i)| i)
        .unwrap_or(0)
}
