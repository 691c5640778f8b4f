//! An experiment's notebook: what was done and seen (the transcript), what it
//! observed (for the JSON report), and the checks that decide the verdict.
//!
//! An experiment observes first and judges after: every check records what it
//! saw, and the verdict is Confirmed only when every check held. A harness
//! failure (a deadline passed, a file could not be written) is an Error, not a
//! verdict about the platform.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::process::{hermetic, Program, Target};
use crate::replace::Replace;
use crate::sandbox::Sandbox;
use crate::variants::Variant;
use swaplab_protocol::{after_colon, field, field_i32, field_u32, Command, OpenFlag};
use swaplab_stale::maps::{self, Mapping};

/// How an experiment judged its finding on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict")]
pub enum Verdict {
    /// Every check held.
    Confirmed,
    /// At least one check did not hold; `saw` says what was seen instead.
    Refuted { saw: Vec<String> },
    /// Not run here; `enable` is what would make it run.
    Skipped { reason: String, enable: String },
    /// The harness itself failed (deadline, I/O): no verdict.
    Error { message: String },
    /// The claim is not about this column's C library (L10 on glibc), or
    /// the experiment needs programs this column does not have.
    NotApplicable {
        reason: String,
        /// Whether the experiment said so itself ([`Lab::not_applicable`]):
        /// the claim could have been judged here, and was not. Otherwise
        /// the finding's scope excludes the column.
        declared: bool,
    },
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Confirmed => "Confirmed",
            Verdict::Refuted { .. } => "Refuted",
            Verdict::Skipped { .. } => "Skipped",
            Verdict::Error { .. } => "Error",
            Verdict::NotApplicable { .. } => "n/a",
        }
    }

    /// Whether this verdict fails a test or a run (Refuted or Error).
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Refuted { .. } | Verdict::Error { .. })
    }
}

/// A part of the claim that was shown, not judged: what it says, what was
/// seen, and why this machine cannot judge it ([`Lab::show_unjudged`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unjudged {
    pub part: String,
    pub saw: String,
    pub reason: String,
}

/// One part of the claim, checked against what was seen.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub saw: String,
}

/// Marks a value that changes from run to run (a count, a duration): shown as
/// is, redacted to `[N]`.
pub fn vol(v: impl Display) -> String {
    format!("\u{1}{v}\u{2}")
}

/// Marks a pid in a process table: shown as is (padded to 7 columns),
/// redacted to `[PID-k]`, numbered by first appearance, so a redacted table
/// still shows which process is whose parent.
pub fn pidv(pid: i32) -> String {
    format!("\u{3}{pid:>7}\u{4}")
}

/// Like [`pidv`], without padding (inside a sentence).
pub fn pidt(pid: i32) -> String {
    format!("\u{3}{pid}\u{4}")
}

/// Removes the [`vol`] and [`pidv`] marks.
pub fn plain(line: &str) -> String {
    line.replace(['\u{1}', '\u{2}', '\u{3}', '\u{4}'], "")
}

/// What `swaplab stale` should say of a process: built with
/// [`Stale::required`], [`Stale::replaced`], [`Stale::optional`],
/// [`Stale::unchecked`] (each naming the file the experiment changed, as
/// the report names it) and [`Stale::via`].
#[derive(Clone, Debug)]
pub enum Stale {
    /// Nothing: it runs what is on disk.
    Clean,
    /// Flagged for this file, for this reason, with this restart target.
    Flagged(Flagged),
    /// Not flagged, and this file counted unchecked: a same-layout write
    /// after the start, on a filesystem that keeps no birth time, cannot be
    /// told from a file installed after the start and mapped since.
    Unchecked(PathBuf),
}

/// A flagged process: the file the experiment changed, why it is stale,
/// how urgent, and where to restart.
#[derive(Clone, Debug)]
pub struct Flagged {
    pub need: swaplab_stale::stale::Urgency,
    pub reason: swaplab_stale::stale::Reason,
    /// The file, as the report names it (the path the process sees).
    pub path: PathBuf,
    /// The ancestor to exec or restart instead (it was forked from it, and
    /// a fork copies the old code); `None`: the process itself.
    pub via: Option<i32>,
}

impl Stale {
    /// A restart of this very process is required: `path` is stale for
    /// `reason`.
    pub fn required(reason: swaplab_stale::stale::Reason, path: impl Into<PathBuf>) -> Stale {
        Stale::Flagged(Flagged {
            need: swaplab_stale::stale::Urgency::Required,
            reason,
            path: path.into(),
            via: None,
        })
    }

    /// [`Stale::required`] for a file replaced by another.
    pub fn replaced(path: impl Into<PathBuf>) -> Stale {
        Stale::required(swaplab_stale::stale::Reason::Replaced, path)
    }

    /// Listed as optional: `path` was installed again with the same content.
    pub fn optional(path: impl Into<PathBuf>) -> Stale {
        Stale::Flagged(Flagged {
            need: swaplab_stale::stale::Urgency::Optional,
            reason: swaplab_stale::stale::Reason::Reinstalled,
            path: path.into(),
            via: None,
        })
    }

    /// Not flagged, `path` counted unchecked.
    pub fn unchecked(path: impl Into<PathBuf>) -> Stale {
        Stale::Unchecked(path.into())
    }

    /// The same, but to be restarted at the ancestor `top`, which it was
    /// forked from. Only for a flagged process.
    pub fn via(self, top: i32) -> Stale {
        match self {
            Stale::Flagged(f) => Stale::Flagged(Flagged {
                via: Some(top),
                ..f
            }),
            other => panic!("Stale::via on {other:?}: only a flagged process has a restart target"),
        }
    }
}

/// Which column names a process in [`Lab::table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// `comm` (what swaplab's server sets: `swaplab master`).
    Comm,
    /// The command line (nginx rewrites it: `nginx: master process …`).
    Args,
}

/// Receives each transcript line as it is written (`swaplab run`'s live
/// narration).
pub type Sink = Box<dyn FnMut(&str) + Send>;

/// The notebook an experiment writes in, with a sandbox of its own.
///
/// - Narrate: [`Lab::shell`] (`$ …`, the command a person would type for
///   what the experiment does), [`Lab::note`] (`# …`), [`Lab::say`] (a line
///   as is: a command's output). The methods that act ([`Lab::put_lib`],
///   [`Lab::start`], [`Lab::call`], ...) narrate themselves.
/// - Show /proc: [`Lab::proof`] marks a line as /proc evidence, which also
///   goes into the finding's /proc snapshot; [`Lab::maps`], [`Lab::fds`],
///   [`Lab::table`] read and narrate it.
/// - Record: [`Lab::observe`] a value for the JSON report.
/// - Judge: [`Lab::check`], [`Lab::check_eq`]; the verdict is Confirmed
///   only when every check held ([`Lab::verdict`]).
///
/// The transcript, redacted ([`crate::redact`]), is what the lab
/// sheet must show.
pub struct Lab {
    /// The experiment's folder (`lib/`, `bin/`, `build/`, `run/`), removed
    /// when the lab is dropped (kept with `SWAPLAB_KEEP=1`).
    pub sandbox: Sandbox,
    transcript: Vec<String>,
    /// Indexes of transcript lines that show /proc (commands and output).
    evidence: Vec<usize>,
    checks: Vec<Check>,
    /// The parts of the claim shown, not judged.
    unjudged: Vec<Unjudged>,
    observations: BTreeMap<String, Value>,
    live: Option<Sink>,
    /// Why the claim cannot be judged on this column after all (what the
    /// experiment found missing), if it said so.
    inapplicable: Option<String>,
    /// When the last target was seen ready (its start came before).
    last_start: Option<std::time::Instant>,
}

impl Lab {
    /// A lab with a fresh sandbox. `live`, when given, receives each
    /// transcript line as it is written (the CLI's narration).
    pub fn new(id: &str, live: Option<Sink>) -> Result<Lab> {
        Lab::on(id, live, crate::runtime::Runtime::host())
    }

    /// A lab whose targets run on `runtime` (another C library).
    pub fn on(id: &str, live: Option<Sink>, runtime: crate::runtime::Runtime) -> Result<Lab> {
        Ok(Lab {
            sandbox: Sandbox::on(&id.to_ascii_lowercase(), runtime)?,
            transcript: Vec::new(),
            evidence: Vec::new(),
            checks: Vec::new(),
            unjudged: Vec::new(),
            observations: BTreeMap::new(),
            live,
            inapplicable: None,
            last_start: None,
        })
    }

    /// The C library family the targets run on.
    pub fn libc(&self) -> crate::runtime::Libc {
        self.sandbox.runtime().libc
    }

    // ---- the transcript ----------------------------------------------------

    /// Adds one transcript line as is.
    pub fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        if let Some(live) = self.live.as_mut() {
            live(&plain(&line));
        }
        self.transcript.push(line);
    }

    /// Adds a transcript line that shows what /proc says (a command reading
    /// it, or its output): these also make the finding's /proc snapshot.
    pub fn proof(&mut self, line: impl Into<String>) {
        self.evidence.push(self.transcript.len());
        self.say(line);
    }

    /// A shell command, as typed (`$ …`), run in the sandbox folder.
    pub fn shell(&mut self, cmd: impl Display) {
        self.say(format!("$ {cmd}"));
    }

    /// A comment (`# …`): what is about to happen, or why.
    pub fn note(&mut self, text: impl Display) {
        self.say(format!("# {text}"));
    }

    /// Starts a part of a multi-part experiment (`# --- title ---`); inode
    /// tokens are numbered afresh in each part (see [`crate::redact`]).
    pub fn part(&mut self, title: impl Display) {
        self.say(format!("{}{title} ---", crate::redact::PART));
    }

    /// Records an observation for the report.
    pub fn observe(&mut self, key: &str, value: impl Serialize) {
        self.observations.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    /// Judges one part of the claim: `what` says it as it should hold,
    /// `saw` what was seen, shown when it does not. The transcript gets
    /// `ok: what` or `REFUTED: what (saw: saw)`. A failed check does not
    /// stop the experiment, which goes on observing; the verdict is then
    /// Refuted. Returns `ok`.
    pub fn check(&mut self, what: impl Display, ok: bool, saw: impl Display) -> bool {
        let (what, saw) = (what.to_string(), saw.to_string());
        if ok {
            self.say(format!("ok: {what}"));
        } else {
            self.say(format!("REFUTED: {what} (saw: {saw})"));
        }
        self.checks.push(Check { what, ok, saw });
        ok
    }

    /// Shows a part of the claim without judging it, where this machine
    /// cannot (`reason`: under emulation a loop cannot reach the strength
    /// the claim names). The transcript gets `shown, not judged: what
    /// (saw: saw; reason)`; if every check held, the verdict is Confirmed
    /// in part, and the report names the part.
    pub fn show_unjudged(&mut self, what: impl Display, saw: impl Display, reason: impl Display) {
        let u = Unjudged {
            part: what.to_string(),
            saw: saw.to_string(),
            reason: reason.to_string(),
        };
        self.say(format!(
            "shown, not judged: {} (saw: {}; {})",
            u.part, u.saw, u.reason
        ));
        self.unjudged.push(u);
    }

    /// Checks that `got` equals `want`.
    pub fn check_eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl Display,
        got: T,
        want: T,
    ) -> bool {
        let ok = got == want;
        self.check(what, ok, format!("{got:?}, expected {want:?}"))
    }

    // ---- library files -----------------------------------------------------

    /// Puts variant `v` at `lib/libexample.so` by `how`, narrated as the
    /// command that does the same; returns the file's inode afterwards.
    pub fn put_lib(&mut self, v: Variant, how: Replace) -> Result<u64> {
        self.put_variant_at(v, how, "lib/libexample.so", "")?;
        self.lib_inode()
    }

    /// Puts variant `v` at `dst` (relative to the sandbox) by `how`,
    /// narrated as the command that does the same, with the variant's name
    /// and greeting and then `role` in its comment.
    pub fn put_variant_at(
        &mut self,
        v: Variant,
        how: Replace,
        dst: &str,
        role: &str,
    ) -> Result<()> {
        let src = self.sandbox.stage(v)?;
        let src = self.sandbox.rel(&src);
        self.shell(format!(
            "{}   # {} ({}){role}",
            how.shell(&src, dst),
            v.name(),
            v.greeting()
        ));
        self.past_the_last_start();
        how.apply(self.sandbox.root(), &src, dst)
    }

    /// Waits until the last target's start is more than two clock ticks
    /// and a margin ago, so that a file written now is measurably written
    /// after every start (`swaplab stale` knows a start to one tick): what
    /// the lab sheet shows of it must not depend on how fast this machine
    /// got from the start to the write.
    fn past_the_last_start(&self) {
        let Some(seen) = self.last_start else { return };
        let tick = 1_000_000_000 / procfs::ticks_per_second().max(1);
        let enough = std::time::Duration::from_nanos(2 * tick + 50_000_000);
        if let Some(left) = enough.checked_sub(seen.elapsed()) {
            std::thread::sleep(left);
        }
    }

    /// The inode `lib/libexample.so` names now, narrated as `stat`.
    pub fn lib_inode(&mut self) -> Result<u64> {
        self.inode_at("lib/libexample.so")
    }

    /// The inode `rel` (relative to the sandbox) names now, narrated as
    /// `stat`.
    pub fn inode_at(&mut self, rel: &str) -> Result<u64> {
        let ino = inode_of(&self.sandbox.root().join(rel))?;
        self.shell(format!("stat -c 'inode=%i' {rel}"));
        self.say(format!("inode={ino}"));
        Ok(ino)
    }

    // ---- processes ---------------------------------------------------------

    /// Starts a target program from `bin/` as process `label` and waits for
    /// its `ready` line.
    pub fn start(&mut self, program: Program, label: &str) -> Result<Target> {
        self.start_with(program, label, &[], |_| String::new())
    }

    /// Like [`Lab::start`], with arguments and a hook to adjust the command
    /// (another user, say).
    pub fn start_with(
        &mut self,
        program: Program,
        label: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut std::process::Command) -> String,
    ) -> Result<Target> {
        let exe = self.sandbox.program(program)?;
        self.start_exe(&exe, label, args, adjust)
    }

    /// Starts the program at `exe` (in the sandbox) as process `label`.
    /// `adjust` may change the command and returns a prefix for the shown
    /// command line (`sudo -u nobody`, or nothing).
    pub fn start_exe(
        &mut self,
        exe: &Path,
        label: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut std::process::Command) -> String,
    ) -> Result<Target> {
        let mut cmd = hermetic(exe, &self.sandbox.lib_dir());
        cmd.current_dir(self.sandbox.root()).args(args);
        let prefix = adjust(&mut cmd);
        let mut shown = self.sandbox.rel(exe);
        for a in args {
            shown.push(' ');
            shown.push_str(a);
        }
        if !prefix.is_empty() {
            shown = format!("{prefix} {shown}");
        }
        self.shell(format!("{shown} &   # process {label}"));
        let t = Target::start(cmd, label, &plain(&shown))?;
        self.last_start = Some(std::time::Instant::now());
        self.say(format!("[{label}] ready pid={}", t.pid()));
        self.sandbox.runtime().check_loaded(t.pid())?;
        Ok(t)
    }

    /// Sends `cmd` to `t` and waits for its answer (the line that starts
    /// with [`Command::answer`], or an `error` line, which fails).
    pub fn ask(&mut self, t: &mut Target, cmd: Command) -> Result<String> {
        match self.ask_may_fail(t, &cmd)? {
            Ok(line) => Ok(line),
            Err(e) => anyhow::bail!(
                "{} answered `{cmd}` with: error pid={}: {e}\n{}",
                t.label(),
                t.pid(),
                t.dump()
            ),
        }
    }

    /// Waits for a line from `t` that starts with `prefix`, and shows it.
    pub fn expect(&mut self, t: &mut Target, prefix: &str) -> Result<String> {
        let line = t.wait_line(|l| l.starts_with(prefix), &format!("`{prefix}…`"))?;
        self.say(format!("[{}] {line}", t.label()));
        Ok(line)
    }

    /// `exit`: the target says goodbye and exits.
    pub fn stop(&mut self, t: &mut Target) -> Result<()> {
        self.ask(t, Command::Exit)?;
        t.wait_exit()?;
        Ok(())
    }

    /// `call` where the call may kill the process: `Ok(greeting)` if it
    /// answered, `Err(how it ended)` if it died instead.
    pub fn call_may_crash(
        &mut self,
        t: &mut Target,
    ) -> Result<std::result::Result<String, String>> {
        self.say(format!("[{}] < {}", t.label(), Command::Call));
        t.send(&Command::Call.to_string())?;
        let want = format!("greeting pid={}", t.pid());
        match t.wait_line_or_end(|l| l.starts_with(&want), &format!("`{want}…`"))? {
            Some(line) => {
                self.say(format!("[{}] {line}", t.label()));
                Ok(Ok(after_colon(&line)))
            }
            None => {
                let how = crate::process::describe_status(&t.wait_exit()?);
                self.say(format!("# process {} was {how}", t.label()));
                Ok(Err(how))
            }
        }
    }

    /// `call`: the greeting of the library linked at start-up.
    pub fn call(&mut self, t: &mut Target) -> Result<String> {
        let line = self.ask(t, Command::Call)?;
        Ok(after_colon(&line))
    }

    /// `fork` in `p`: the child calls the library; its pid and greeting.
    pub fn fork_child(&mut self, p: &mut Target) -> Result<(i32, String)> {
        let line = self.ask(p, Command::Fork)?;
        let child = field_i32(&line, "child")?;
        let g = self.expect(p, &format!("greeting pid={child}:"))?;
        Ok((child, after_colon(&g)))
    }

    /// `spawn` in `p`: a child that execs `p`'s program and calls the
    /// library; its pid and greeting.
    pub fn spawn_child(&mut self, p: &mut Target) -> Result<(i32, String)> {
        let line = self.ask(p, Command::Spawn)?;
        let child = field_i32(&line, "child")?;
        self.expect(p, &format!("ready pid={child}"))?;
        let g = self.expect(p, &format!("greeting pid={child}:"))?;
        Ok((child, after_colon(&g)))
    }

    /// `callh H`: the greeting through dlopen handle `h`, and the address
    /// of `greeting()`.
    pub fn callh(&mut self, t: &mut Target, h: u32) -> Result<(String, String)> {
        let line = self.ask(t, Command::CallH(h))?;
        Ok((after_colon(&line), field(&line, "fn")?))
    }

    /// `thread H`: the greeting through handle `h`, called on a new thread
    /// that stays alive until [`Lab::join`].
    pub fn thread_call(&mut self, t: &mut Target, h: u32) -> Result<String> {
        let line = self.ask(t, Command::Thread(h))?;
        Ok(after_colon(&line))
    }

    /// `join`: the threads of [`Lab::thread_call`] exit; how many did.
    pub fn join(&mut self, t: &mut Target) -> Result<u32> {
        let line = self.ask(t, Command::Join)?;
        field_u32(&line, "threads")
    }

    /// Sends `cmd` to `t` and waits for its answer: `Ok(line)`, or
    /// `Err(the error's text)` when `t` answered with an error (a command
    /// that may fail, as a dlopen).
    pub fn ask_may_fail(
        &mut self,
        t: &mut Target,
        cmd: &Command,
    ) -> Result<std::result::Result<String, String>> {
        self.say(format!("[{}] < {cmd}", t.label()));
        let got = answer_of(t, cmd)?;
        let line = match &got {
            Ok(line) => line.clone(),
            Err(e) => format!("error pid={}: {e}", t.pid()),
        };
        self.say(format!("[{}] {line}", t.label()));
        Ok(got)
    }

    /// `mopen PATH` (dlmopen into a new namespace): the handle number and
    /// the namespace's id, or the loader's words if it failed.
    pub fn mopen(
        &mut self,
        t: &mut Target,
        path: &Path,
    ) -> Result<std::result::Result<(u32, i64), String>> {
        let line = match self.ask_may_fail(t, &Command::MOpen(path.to_path_buf()))? {
            Ok(line) => line,
            Err(e) => return Ok(Err(e)),
        };
        let lmid = field(&line, "lmid")?
            .parse()
            .map_err(|_| anyhow::anyhow!("bad lmid in `{line}`"))?;
        Ok(Ok((field_u32(&line, "h")?, lmid)))
    }

    /// `open PATH` (dlopen) where it may fail: the handle number, or the
    /// loader's words.
    pub fn try_open(
        &mut self,
        t: &mut Target,
        path: &Path,
    ) -> Result<std::result::Result<u32, String>> {
        match self.ask_may_fail(t, &Command::Open(path.to_path_buf(), vec![]))? {
            Ok(line) => Ok(Ok(field_u32(&line, "h")?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// `open PATH [opts]` (dlopen); returns the handle number and value.
    pub fn open(&mut self, t: &mut Target, path: &Path, opts: &str) -> Result<(u32, String)> {
        let flags = opts
            .split_whitespace()
            .map(OpenFlag::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        let line = self.ask(t, Command::Open(path.to_path_buf(), flags))?;
        Ok((field_u32(&line, "h")?, field(&line, "handle")?))
    }

    /// `close H` (dlclose).
    pub fn close(&mut self, t: &mut Target, h: u32) -> Result<()> {
        self.ask(t, Command::Close(h)).map(|_| ())
    }

    /// Whether `p` is one of this sandbox's libexample files (`lib/libexample*`).
    pub fn is_example(&self, p: &Path) -> bool {
        p.parent() == Some(self.sandbox.lib_dir().as_path())
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libexample"))
    }

    /// `grep libexample /proc/PID/maps`, narrated; returns the mappings of
    /// the sandbox's libexample files (`lib/libexample*`).
    pub fn maps(&mut self, pid: i32) -> Result<Vec<Mapping>> {
        let found = maps::mappings_where(pid, |p| self.is_example(p))?;
        self.proof(format!("$ grep libexample /proc/{pid}/maps"));
        for m in &found {
            self.proof(m.line());
        }
        if found.is_empty() {
            self.proof("(no lines)");
        }
        Ok(found)
    }

    /// `grep libexample /proc/*/maps` (the article's detection command),
    /// limited to this sandbox's library; narrated.
    pub fn grep_all(&mut self) -> Result<Vec<(i32, Vec<Mapping>)>> {
        let found = maps::scan_all(|p| self.is_example(p))?;
        self.proof("$ grep libexample /proc/*/maps 2> /dev/null");
        for (pid, ms) in &found {
            for m in ms {
                self.proof(format!("/proc/{pid}/maps:{}", m.line()));
            }
        }
        Ok(found)
    }

    /// The article's process table for process group `pgid`: PID, PPID,
    /// command and executable, read from /proc, oldest first.
    pub fn table(&mut self, pgid: i32, shown: Shown) -> Vec<crate::procs::Proc> {
        let rows = crate::procs::group(pgid);
        let col = match shown {
            Shown::Comm => "comm",
            Shown::Args => "args",
        };
        self.proof(format!(
            "$ ps -o pid,ppid,{col} -g {}   # and readlink /proc/PID/exe",
            pidt(pgid)
        ));
        self.proof(format!(
            "{:>7} {:>7}  {:<16} EXE",
            "PID",
            "PPID",
            col.to_ascii_uppercase()
        ));
        for p in &rows {
            let exe = p
                .exe
                .as_ref()
                .map(|e| self.sandbox.rel(e))
                .unwrap_or_else(|| "?".into());
            let cmd = match shown {
                Shown::Comm => p.comm.clone(),
                Shown::Args => p.args.clone(),
            };
            self.proof(format!(
                "{} {}  {:<16} {exe}",
                pidv(p.pid),
                pidv(p.ppid),
                cmd
            ));
        }
        rows
    }

    /// `ls -l /proc/PID/fd`, narrated; returns (fd, target).
    pub fn fds(&mut self, pid: i32) -> Vec<(i32, String)> {
        let fds = crate::procs::fds(pid);
        self.proof(format!(
            "$ ls -l /proc/{pid}/fd | awk '{{print $9, $10, $11}}'"
        ));
        for (fd, t) in &fds {
            self.proof(format!("{fd} -> {t}"));
        }
        fds
    }

    /// `kill -SIG PID`, narrated with how the pid was found (`$(cat
    /// run/x.pid)`, say).
    pub fn kill(&mut self, sig: nix::sys::signal::Signal, pid: i32, how: &str) -> Result<()> {
        let name = sig.as_str().trim_start_matches("SIG");
        self.shell(format!("kill -{name} {how}   # {}", pidt(pid)));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .with_context(|| format!("kill -{name} {pid}"))
    }

    /// Polls `probe` until it returns `Some`, or fails at the deadline with
    /// `what` and the last thing the probe saw (`last`).
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        probe: impl FnMut() -> std::result::Result<T, String>,
    ) -> Result<T> {
        let limit = crate::process::deadline();
        let every = std::time::Duration::from_millis(2);
        crate::process::poll_until(limit, every, probe).map_err(|last| {
            anyhow::anyhow!(
                "timed out after {:.1} s waiting until {what} (last seen: {last})\n(sandbox: {})",
                limit.as_secs_f64(),
                self.sandbox.root().display()
            )
        })
    }

    /// Waits until none of `pids` is alive (zombies count as gone), or
    /// fails at the deadline naming `what` and the pid still there.
    pub fn wait_until_exited(&mut self, what: &str, pids: &[i32]) -> Result<()> {
        self.wait_until(what, || {
            match pids.iter().find(|p| crate::procs::alive(**p)) {
                Some(p) => Err(format!("pid {p} still alive")),
                None => Ok(()),
            }
        })
    }

    // ---- swaplab stale -----------------------------------------------------

    /// `swaplab stale --pid …` on these processes, narrated with its report.
    pub fn stale(&mut self, pids: &[i32]) -> Result<swaplab_stale::stale::StaleReport> {
        self.stale_with(pids, &[], false)
    }

    /// `swaplab stale [--plan] [--package-root DIR…] --pid …`, narrated with
    /// its report (or its plan).
    pub fn stale_with(
        &mut self,
        pids: &[i32],
        package_roots: &[PathBuf],
        plan: bool,
    ) -> Result<swaplab_stale::stale::StaleReport> {
        let mut args: Vec<String> = Vec::new();
        if plan {
            args.push("--plan".into());
        }
        for r in package_roots {
            args.push(format!("--package-root {}", self.sandbox.rel(r)));
        }
        args.extend(pids.iter().map(|p| format!("--pid {}", pidt(*p))));
        self.proof(format!("$ swaplab stale {}", args.join(" ")));
        let r = swaplab_stale::stale::scan(&swaplab_stale::stale::ScanOptions {
            pids: pids.to_vec(),
            package_roots: package_roots.to_vec(),
            ..Default::default()
        })?;
        let marks = swaplab_stale::stale::Marks {
            pid: pidt,
            vol: |s| vol(s),
        };
        let lines = if plan {
            swaplab_stale::stale::render_plan(&r, &marks)
        } else {
            swaplab_stale::stale::render(&r, &marks)
        };
        for line in lines {
            self.proof(line);
        }
        Ok(r)
    }

    /// Checks the detector's verdict on process `pid` (`who`) against what
    /// the experiment saw: the file it changed, the reason, the urgency and
    /// where to restart.
    pub fn check_stale(
        &mut self,
        r: &swaplab_stale::stale::StaleReport,
        who: &str,
        pid: i32,
        want: Stale,
    ) -> bool {
        let (what, ok, saw) = judge_stale(r, who, pid, &want, &|p| self.sandbox.rel(p));
        self.check(what, ok, saw)
    }

    /// Whether the sandbox's filesystem keeps files' birth times (statx):
    /// `swaplab stale` needs them to call a same-layout write a change.
    pub fn birth_times_kept(&self) -> bool {
        std::fs::metadata(self.sandbox.root())
            .and_then(|m| m.created())
            .is_ok()
    }

    // ---- the judgement -----------------------------------------------------

    /// Says that the claim cannot be judged on this column after all:
    /// what the experiment found it lacks (a build its C library has no
    /// compiler for). The verdict is n/a unless a check failed.
    pub fn not_applicable(&mut self, reason: impl Display) {
        let reason = reason.to_string();
        self.note(format!("n/a here: {reason}"));
        self.inapplicable = Some(reason);
    }

    /// The verdict from the checks (and the experiment's result).
    pub fn verdict(&self, result: &Result<()>) -> Verdict {
        if let Err(e) = result {
            return Verdict::Error {
                message: format!("{e:#}\n(sandbox: {})", self.sandbox.root().display()),
            };
        }
        let saw: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: saw {}", c.what, c.saw))
            .collect();
        if !saw.is_empty() {
            return Verdict::Refuted { saw };
        }
        if let Some(reason) = &self.inapplicable {
            return Verdict::NotApplicable {
                reason: reason.clone(),
                declared: true,
            };
        }
        if self.checks.is_empty() {
            return Verdict::Error {
                message: "the experiment made no check".into(),
            };
        }
        Verdict::Confirmed
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The parts of the claim shown, not judged ([`Lab::show_unjudged`]).
    pub fn unjudged(&self) -> &[Unjudged] {
        &self.unjudged
    }

    pub fn observations(&self) -> &BTreeMap<String, Value> {
        &self.observations
    }

    /// The transcript as shown to a person (volatile marks removed).
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.iter().map(|l| plain(l)).collect()
    }

    /// The transcript with everything that changes between runs redacted.
    pub fn redacted(&self) -> Vec<String> {
        crate::redact::redact(&self.transcript, self.sandbox.root())
    }

    /// The redacted lines that show /proc (redacted together with the whole
    /// transcript, so inode tokens agree with it).
    pub fn redacted_evidence(&self) -> Vec<String> {
        let all = self.redacted();
        self.evidence
            .iter()
            .filter_map(|&i| all.get(i).cloned())
            .collect()
    }
}

/// Sends `cmd` to `t` and waits for its answer (the line that starts with
/// [`Command::answer`]), not narrated (a loop's worth of commands):
/// `Ok(line)`, or `Err(the error's text)` when `t` answered with an error.
pub fn answer_of(t: &mut Target, cmd: &Command) -> Result<std::result::Result<String, String>> {
    t.send(&cmd.to_string())?;
    let (ok, err) = (
        format!("{} pid={}", cmd.answer(), t.pid()),
        format!("error pid={}", t.pid()),
    );
    let line = t.wait_line(
        |l| l.starts_with(&ok) || l.starts_with(&err),
        &format!("`{ok}…`"),
    )?;
    Ok(if line.starts_with(&err) {
        Err(after_colon(&line))
    } else {
        Ok(line)
    })
}

/// The inode a path names now.
pub fn inode_of(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("cannot stat {}", p.display()))?
        .ino())
}

/// [`Lab::check_stale`]'s judgement: what is checked, whether it held, and
/// what was seen (`rel` shows a path as the transcript does).
fn judge_stale(
    r: &swaplab_stale::stale::StaleReport,
    who: &str,
    pid: i32,
    want: &Stale,
    rel: &dyn Fn(&Path) -> String,
) -> (String, bool, String) {
    use swaplab_stale::stale::Urgency;
    let got = r.get(pid);
    let saw = match got {
        None => "not flagged".to_string(),
        Some(p) => format!(
            "{:?}, restart at {}: {}",
            p.need,
            p.restart.at,
            p.files
                .iter()
                .map(|f| format!("{} {} ({})", rel(&f.path), f.reason.word(), f.evidence))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    match want {
        Stale::Clean => (
            format!("swaplab stale does not flag {who}"),
            got.is_none(),
            saw,
        ),
        Stale::Flagged(f) => {
            let what = match (f.need, f.via) {
                (Urgency::Optional, via) => format!(
                    "swaplab stale lists {who} as restart optional: {} reinstalled (same content on disk), {}",
                    rel(&f.path),
                    via.map_or("at the process itself".to_string(), |top| format!("at {}", pidt(top)))
                ),
                (_, None) => format!(
                    "swaplab stale flags {who}: {} {}, restart required, at the process itself",
                    rel(&f.path),
                    f.reason.word()
                ),
                (_, Some(top)) => format!(
                    "swaplab stale flags {who}: {} {}, and says to exec or restart {} instead: a fork from it copies the old code",
                    rel(&f.path),
                    f.reason.word(),
                    pidt(top)
                ),
            };
            let copies_old = f.need == Urgency::Required && f.via.is_some();
            let ok = got.is_some_and(|p| {
                p.need == f.need
                    && p.restart.at == f.via.unwrap_or(pid)
                    && (!copies_old || !p.restart.fork_is_enough)
                    && p.files
                        .iter()
                        .any(|g| g.path == f.path && g.reason == f.reason)
                    && (f.need == Urgency::Required || p.files.iter().all(|g| g.reason == f.reason))
            });
            (what, ok, saw)
        }
        Stale::Unchecked(path) => {
            let unchecked: Vec<&swaplab_stale::stale::UncheckedFile> = r
                .unchecked
                .iter()
                .filter(|u| u.pid == pid)
                .flat_map(|u| u.files.iter())
                .collect();
            (
                format!("where the filesystem keeps no birth time, swaplab stale does not flag {who} but counts {} unchecked (the write cannot be told from an install before the mapping)", rel(path)),
                got.is_none() && unchecked.iter().any(|u| &u.path == path),
                format!(
                    "{saw}; unchecked: {}",
                    unchecked
                        .iter()
                        .map(|u| format!("{} {:?}", rel(&u.path), u.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
        }
    }
}
