//! Running target programs: a hermetic command, handshakes on stdout lines
//! with deadlines, and a guard that kills the whole process group on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use swaplab_protocol::sentinel::Order;

/// How long any handshake may take before it is a failure. Generous, because
/// the suite must pass with both cores busy; `SWAPLAB_TIMEOUT` (seconds)
/// overrides it.
pub fn deadline() -> Duration {
    std::env::var("SWAPLAB_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(20))
}

/// The tools read every process on the machine: on a busy one that takes
/// longer than a target's answer, so they get this many harness deadlines.
const TOOL_DEADLINE_FACTOR: u32 = 6;

/// What each process running on the machine adds to a tool's deadline.
/// needrestart looks up every stale process outside its ignored paths in
/// dpkg, and D01 takes /tmp out of those paths: `bench stale`'s 1,000
/// sleepers, 500 of them stale, took it 41 s here (41 ms per process on
/// the machine). 3,000 such sleepers of another run beside the suite
/// pushed it past a fixed 120 s and refuted D01.
const TOOL_DEADLINE_PER_PROCESS: Duration = Duration::from_millis(50);

/// The most a tool that reads every process may take, however busy the
/// machine: a tool that hangs is still caught.
const TOOL_DEADLINE_MAX: Duration = Duration::from_secs(15 * 60);

/// How long a tool that reads every process may run (needrestart, in D01
/// and in `bench stale`): the harness's deadlines, and more for each
/// process the machine runs now, so that a busy machine slows the tool
/// down instead of refuting D01 or failing the bench.
pub fn whole_machine_deadline() -> Duration {
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0);
    let base = TOOL_DEADLINE_FACTOR * deadline();
    (base + TOOL_DEADLINE_PER_PROCESS * processes as u32).min(base.max(TOOL_DEADLINE_MAX))
}

/// The folder that holds the target programs (`swaplab-plain`, ...): the
/// folder of the running executable, or its parent when that is cargo's
/// `deps/` (integration tests) or `examples/` (examples and their tests).
/// `SWAPLAB_TARGETS_DIR` overrides it.
///
/// `cargo run` builds only the program it runs, so on a fresh clone the
/// targets are not there yet. When `cargo run` started this process (cargo
/// sets `CARGO` and `CARGO_PKG_NAME` for it), the same cargo builds them
/// once, with the same profile and target folder; otherwise the error says
/// how to build them.
pub fn targets_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SWAPLAB_TARGETS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent folder", exe.display()))?
        .to_path_buf();
    if !dir.join(Program::Plain.file_name()).exists()
        && (dir.ends_with("deps") || dir.ends_with("examples"))
    {
        dir.pop();
    }
    if !dir.join(Program::Plain.file_name()).exists() {
        static BUILT: std::sync::OnceLock<std::result::Result<(), String>> =
            std::sync::OnceLock::new();
        let built =
            BUILT.get_or_init(|| build_targets_with_cargo(&dir).map_err(|e| format!("{e:#}")));
        if let Err(why) = built {
            bail!(
                "the target programs are not beside {} (looked in {}): {why}; build them all \
                 with `cargo build --release` (or `cargo build`) or set SWAPLAB_TARGETS_DIR",
                exe.display(),
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Builds every program of the crate into `dir` (`target/PROFILE`) with the
/// cargo that runs this process, if one does.
fn build_targets_with_cargo(dir: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO");
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR");
    // The package whose programs they are.
    let ours = std::env::var("CARGO_PKG_NAME").is_ok_and(|n| n == "swaplab");
    let (Some(cargo), Some(manifest), true) = (cargo, manifest, ours) else {
        bail!("not started by `cargo run`, which could build them");
    };
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => bail!("{} is not a cargo profile folder", dir.display()),
    };
    let target_dir = dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent folder", dir.display()))?;
    let manifest = Path::new(&manifest).join("Cargo.toml");
    eprintln!(
        "swaplab: building the target programs first (cargo build --bins --profile {profile})"
    );
    let status = Command::new(&cargo)
        .args(["build", "--bins", "--profile", profile, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        // Our stdout may be a JSON report: cargo's words go to stderr.
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("`cargo build --bins` failed ({status})");
    }
    if !dir.join(Program::Plain.file_name()).exists() {
        bail!("`cargo build --bins` put them elsewhere");
    }
    Ok(())
}

/// The target programs built from `src/bin/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Linked against libexample at start-up (DT_NEEDED).
    Plain,
    /// Linked against libexample by its soname `libexample.so.1` (L15).
    Soname,
    /// Linked against libexample; forks children on command.
    Fork,
    /// Not linked against libexample; opens it with dlopen (libloading).
    Dlopen,
    /// A small program that says which build it is (build 1).
    App,
    /// The same program, build 2.
    App2,
    /// The nginx-style master/worker server, version 1.0.0.
    Server,
    /// The same server, version 2.0.0.
    Server2,
    /// The download server that hands its listening sockets over (G).
    Handover,
}

impl Program {
    pub fn file_name(self) -> &'static str {
        match self {
            Program::Plain => "swaplab-plain",
            Program::Soname => "swaplab-soname",
            Program::Fork => "swaplab-fork",
            Program::Dlopen => "swaplab-dlopen",
            Program::App => "swaplab-app",
            Program::App2 => "swaplab-app-2",
            Program::Server => "swaplab-server",
            Program::Server2 => "swaplab-server-2",
            Program::Handover => "swaplab-handover",
        }
    }
}

/// Makes `cmd`'s process die with this one: `PR_SET_PDEATHSIG` (SIGKILL)
/// before it execs, and an exit at once if this process is already gone,
/// so a child spawned in the instant this process dies does not outlive it.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// A command that inherits nothing by accident: cleared environment,
/// `LC_ALL=C`, the sandbox's library folder on `LD_LIBRARY_PATH`, piped
/// standard streams and a process group of its own; it dies with the
/// harness ([`die_with_parent`]).
pub fn hermetic(program: &Path, lib_dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    die_with_parent(&mut cmd);
    // SAFETY: only async-signal-safe calls (syscall, fcntl) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            // No fd but the three standard streams crosses the exec: mark
            // the rest close-on-exec (not closed, so std's own exec-error
            // pipe still works). Fall back to fcntl where close_range is
            // missing (kernels before 5.11).
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    cmd.env_clear()
        .env("LC_ALL", "C")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LD_LIBRARY_PATH", lib_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// Spawns `cmd`, retrying for a moment on ETXTBSY: a file just written by this
/// (multi-threaded) process can be held open for writing by a child that
/// another thread forked and has not yet exec'ed.
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let busy = |e: &std::io::Error| e.raw_os_error() == Some(libc::ETXTBSY);
    poll_until(deadline(), Duration::from_millis(2), || match cmd.spawn() {
        Err(e) if busy(&e) => Err(e),
        other => Ok(other),
    })?
}

/// Asks `probe` every `every` until it answers `Ok`, for at most `limit`;
/// then its last `Err`. Every wait in the harness is one of these: a
/// deadline, never a bare sleep.
pub fn poll_until<T, E>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let until = Instant::now() + limit;
    loop {
        match probe() {
            Err(last) if Instant::now() >= until => return Err(last),
            Err(_) => std::thread::sleep(every),
            done => return done,
        }
    }
}

/// How a wait learns that a child exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waking {
    /// Asks every 200 µs, never rounding a short start up by more: the
    /// experiments' waits. L11's windows were measured with it in every
    /// run; once, on tmpfs, a sleeping wait saw install's second window in
    /// none of 5,000 starts.
    Polling,
    /// Asleep on the child's pidfd until it exits (polling where the
    /// kernel has no pidfds, before 5.3): takes no core from a tool that
    /// uses them all (`bench stale`, which the polls slowed by a tenth).
    Asleep,
}

/// Waits up to `limit` for `child` to exit, learning it as `waking` says:
/// its status, or `None` if it still runs then.
fn wait_within(
    child: &mut Child,
    limit: Duration,
    waking: Waking,
) -> std::io::Result<Option<ExitStatus>> {
    // Reaped already (a daemonizing start command): its pid may be
    // another process's now.
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    let until = Instant::now() + limit;
    if waking == Waking::Asleep {
        match exits_by(child.id(), until) {
            Some(true) => return child.wait().map(Some),
            Some(false) => return Ok(None),
            None => {}
        }
    }
    let left = until.saturating_duration_since(Instant::now());
    let exited = poll_until(left, Duration::from_micros(200), || {
        match child.try_wait() {
            Ok(None) => Err(()),
            Ok(Some(s)) => Ok(Ok(s)),
            Err(e) => Ok(Err(e)),
        }
    });
    match exited {
        Ok(status) => status.map(Some),
        Err(_still_running) => Ok(None),
    }
}

/// Whether the child `pid` (not yet reaped) exits by `until`, asleep on
/// its pidfd; `None` where the kernel has no pidfds or the poll fails.
fn exits_by(pid: u32, until: Instant) -> Option<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: the descriptor was just opened, and is owned here alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    loop {
        let left = until.saturating_duration_since(Instant::now());
        // Whole milliseconds, rounded up: never a busy loop.
        let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) if left.is_zero() => return Some(false),
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return Some(true),
            Err(_) => return None,
        }
    }
}

/// Runs `cmd` in a process group of its own to its end, within `limit`,
/// its output collected in unnamed temporary files (a pipe that fills
/// would stall it): its output, or an error naming the deadline, after
/// killing its group, when it overstays.
pub fn output_within(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    output_by(cmd, limit, Waking::Polling)
}

/// [`output_within`], asleep until `cmd` ends: for a tool timed while it
/// uses every core.
pub fn output_asleep_within(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    output_by(cmd, limit, Waking::Asleep)
}

/// [`output_within`], waiting as `waking` says.
fn output_by(
    cmd: &mut std::process::Command,
    limit: Duration,
    waking: Waking,
) -> std::io::Result<std::process::Output> {
    use std::io::{Read, Seek};
    use std::os::unix::process::CommandExt;
    let (mut out, mut err) = (tempfile::tempfile()?, tempfile::tempfile()?);
    cmd.stdout(out.try_clone()?)
        .stderr(err.try_clone()?)
        .process_group(0);
    let mut child = cmd.spawn()?;
    // Its own group is out of the terminal's reach: Ctrl-C kills it
    // through kill_all.
    let _group = GroupGuard::new(child.id() as i32);
    let Some(status) = wait_or_kill_by(&mut child, limit, waking)? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{:?} did not end within {limit:?}", cmd.get_program()),
        ));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    out.rewind()?;
    out.read_to_end(&mut stdout)?;
    err.rewind()?;
    err.read_to_end(&mut stderr)?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// Waits up to `limit` for `child`, the leader of its own process group (as
/// [`hermetic`] makes it), to exit: its status; or, if it overstays, kills
/// its group, reaps it and returns `None`, so nothing is left behind.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    wait_or_kill_by(child, limit, Waking::Polling)
}

/// [`wait_or_kill`], waiting as `waking` says.
fn wait_or_kill_by(
    child: &mut Child,
    limit: Duration,
    waking: Waking,
) -> std::io::Result<Option<ExitStatus>> {
    let status = wait_within(child, limit, waking)?;
    if status.is_none() {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    Ok(status)
}

/// Process groups of the targets alive now, for [`kill_all`].
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills every target process group still alive (Ctrl-C in the CLI).
/// Set by the CLI's Ctrl-C handler before it kills and removes: the main
/// thread, which may see its work fail meanwhile, leaves the exit to it.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn kill_all() {
    for pgid in live().drain(..) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// The last `n` lines of `text`, each indented: what an error shows of a
/// tool's output.
pub fn last_lines(text: &str, n: usize) -> String {
    let tail: Vec<&str> = text.lines().rev().take(n).collect();
    tail.into_iter()
        .rev()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A process group that left the harness's tree (a daemon's): killed when
/// dropped, and by [`kill_all`] on Ctrl-C.
pub struct GroupGuard(i32);

impl GroupGuard {
    pub fn new(pgid: i32) -> GroupGuard {
        live().push(pgid);
        GroupGuard(pgid)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
        live().retain(|&p| p != self.0);
    }
}

/// `swaplab-sentinel` watching a sandbox: when this guard is dropped, or the
/// harness dies however it dies, the sentinel kills every process whose
/// executable lies in the sandbox; if the harness died, it removes the
/// sandbox too (see `src/bin/swaplab-sentinel.rs` and
/// [`swaplab_protocol::sentinel`]).
pub struct Sentinel {
    child: Child,
}

impl Sentinel {
    pub fn start(sandbox: &Path) -> Result<Sentinel> {
        let exe = targets_dir()?.join("swaplab-sentinel");
        // Not hermetic(): no PR_SET_PDEATHSIG, since it must outlive us.
        let child = Command::new(&exe)
            .arg(sandbox)
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        Ok(Sentinel { child })
    }

    /// Has the sentinel forget process group `pgid` (it ended: its number
    /// may go to another group).
    pub fn forget_group(&mut self, pgid: i32) -> Result<()> {
        self.tell(Order::Forget(pgid))
    }

    /// Has the sentinel kill process group `pgid` too, when it fires.
    pub fn watch_group(&mut self, pgid: i32) -> Result<()> {
        self.tell(Order::Watch(pgid))
    }

    fn tell(&mut self, order: Order) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("the sentinel's stdin")?;
        stdin
            .write_all(format!("{}\n", order.line()).as_bytes())
            .with_context(|| format!("cannot tell the sentinel {order:?}"))
    }
}

impl Drop for Sentinel {
    /// Stops it: it kills what is left in the sandbox, and leaves the
    /// folder to its owner (who is alive: it says `done`).
    fn drop(&mut self) {
        let _ = self.tell(Order::Done);
        drop(self.child.stdin.take());
        let _ = wait_or_kill(&mut self.child, Duration::from_secs(15));
    }
}

enum Event {
    Line(String),
    Eof,
}

/// A running target. Dropping it kills its whole process group (the target
/// and everything it forked) and reaps the target.
pub struct Target {
    label: String,
    shown: String,
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    events: Receiver<Event>,
    backlog: VecDeque<String>,
    stdout_log: Vec<String>,
    stderr: Arc<Mutex<String>>,
    eof: bool,
    status: Option<ExitStatus>,
}

impl Target {
    /// Starts `cmd` (built with [`hermetic`]) and waits for its `ready pid=N`
    /// line. `shown` is the command as a transcript shows it.
    pub fn start(cmd: Command, label: &str, shown: &str) -> Result<Target> {
        let mut target = Target::spawn(cmd, label, shown)?;
        let want = format!("ready pid={}", target.pid);
        target.wait_line(|l| l == want, &format!("`{want}`"))?;
        Ok(target)
    }

    /// Starts `cmd` without waiting for anything (a target expected to fail
    /// or to hang); dropping it still kills its process group.
    pub fn spawn(mut cmd: Command, label: &str, shown: &str) -> Result<Target> {
        let mut child =
            spawn_retrying(&mut cmd).with_context(|| format!("cannot start {label} ({shown})"))?;
        let pid = child.id() as i32;
        live().push(pid);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Event::Line(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::Eof);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Target {
            label: label.to_string(),
            shown: shown.to_string(),
            child,
            pid,
            stdin,
            events,
            backlog: VecDeque::new(),
            stdout_log: Vec::new(),
            stderr,
            eof: false,
            status: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends one command line to the target's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}'s stdin is closed", self.label))?;
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .with_context(|| format!("cannot send `{line}` to {}\n{}", self.label, self.dump()))
    }

    /// Waits until a line matching `pred` arrives (or is already waiting in
    /// the backlog of lines not consumed yet) and returns it. Fails with the
    /// whole output when the deadline passes or the target's output ends.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> Result<String> {
        match self.wait_line_or_end(pred, what)? {
            Some(l) => Ok(l),
            None => bail!(
                "{} ended its output before printing {what}\n{}",
                self.label,
                self.dump()
            ),
        }
    }

    /// Like [`Target::wait_line`], but the end of the output (the target and
    /// its children exited) is an answer too: `None`.
    pub fn wait_line_or_end(
        &mut self,
        pred: impl Fn(&str) -> bool,
        what: &str,
    ) -> Result<Option<String>> {
        if let Some(i) = self.backlog.iter().position(|l| pred(l)) {
            return Ok(self.backlog.remove(i));
        }
        let limit = deadline();
        let until = Instant::now() + limit;
        loop {
            if self.eof {
                return Ok(None);
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Line(l)) => {
                    self.stdout_log.push(l.clone());
                    if pred(&l) {
                        return Ok(Some(l));
                    }
                    self.backlog.push_back(l);
                }
                Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => self.eof = true,
                Err(RecvTimeoutError::Timeout) => bail!(
                    "timed out after {:.1} s waiting for {what} from {}\n{}",
                    limit.as_secs_f64(),
                    self.label,
                    self.dump()
                ),
            }
        }
    }

    /// Waits for the target to exit (deadline applies) and returns how.
    pub fn wait_exit(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let limit = deadline();
        match wait_within(&mut self.child, limit, Waking::Polling)? {
            Some(s) => {
                self.status = Some(s);
                Ok(s)
            }
            None => bail!(
                "timed out after {:.1} s waiting for {} to exit\n{}",
                limit.as_secs_f64(),
                self.label,
                self.dump()
            ),
        }
    }

    /// What the target printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until what the target printed on stderr satisfies `pred` (the
    /// reader thread may still be copying it after the target exited), and
    /// returns it; fails at the deadline with what arrived.
    pub fn wait_stderr(&self, pred: impl Fn(&str) -> bool, what: &str) -> Result<String> {
        let limit = deadline();
        let text = poll_until(limit, Duration::from_millis(2), || {
            let text = self.stderr_text();
            if pred(&text) {
                Ok(text)
            } else {
                Err(())
            }
        });
        text.or_else(|()| {
            bail!(
                "timed out after {:.1} s waiting for {what} on the stderr of {}\n{}",
                limit.as_secs_f64(),
                self.label,
                self.dump()
            )
        })
    }

    /// Everything known about the target, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- {} (pid {}): {} ---\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.pid,
            self.shown,
            self.stdout_log.join("\n"),
            self.stderr_text()
        )
    }
}

/// The other members of process group `pgid` (not its leader).
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.pgrp == pgid && s.pid != pgid && s.state != 'Z')
        .map(|s| s.pid)
        .collect()
}

impl Drop for Target {
    fn drop(&mut self) {
        // The target leads its own process group (process_group(0)). Its
        // children die first, while it is alive to reap them (targets ignore
        // SIGCHLD, so the kernel reaps for them): orphans would go to init,
        // and not every init reaps (a container's often does not).
        if self.status.is_none() {
            let members = group_members(self.pid);
            for &m in &members {
                let _ = nix::sys::signal::kill(Pid::from_raw(m), Signal::SIGKILL);
            }
            let until = Instant::now() + Duration::from_secs(2);
            while !members.is_empty()
                && !group_members(self.pid).is_empty()
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Then the whole group; errors mean it is already gone.
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        live().retain(|&p| p != self.pid);
        if self.status.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// Describes an exit status the way a shell user would read it.
pub fn describe_status(s: &ExitStatus) -> String {
    if let Some(sig) = s.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        format!("killed by {name}")
    } else {
        format!("exit status {}", s.code().unwrap_or(-1))
    }
}
