//! `swaplab bench stale`: how fast, and how right, each detector is on the
//! same set of processes.

use anyhow::{Context, Result};
use nix::sys::resource::UsageWho;
use serde::Serialize;

use crate::harness::replace::Replace;
use crate::harness::variants::Variant;

#[derive(Clone, Debug, Serialize)]
pub struct StaleOptions {
    /// Sleepers started in all.
    pub processes: usize,
    /// Of the sleepers on the new library, one in `jit_every` also maps a
    /// memfd executable (a `(deleted)` mapping that is not stale code); 0
    /// for none.
    pub jit_every: usize,
    /// Timed runs of each fast tool (the median is reported).
    pub runs: usize,
    /// Whether to run `needrestart -b` (tens of seconds on 1,000 processes).
    pub needrestart: bool,
    /// Start the sleepers as daemons (their parent is init), as services
    /// are; otherwise they stay children of the bench.
    pub daemons: bool,
}

/// One tool's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ToolRun {
    pub tool: &'static str,
    pub command: String,
    /// Why it did not run, with the command that installs it.
    pub skipped: Option<String>,
    /// Wall time of each run, in seconds.
    pub seconds: Vec<f64>,
    pub median_seconds: Option<f64>,
    /// CPU time of each run, in seconds, the tool's and its children's:
    /// its own code (user) and the kernel's work for it (system), which
    /// for every tool here is mostly producing each process's mappings.
    pub user_seconds: Vec<f64>,
    pub system_seconds: Vec<f64>,
    pub median_user_seconds: Option<f64>,
    pub median_system_seconds: Option<f64>,
    /// Its answer, judged; none for a tool skipped, or for the reads
    /// alone, which answer nothing.
    #[serde(flatten)]
    pub answer: Option<Answer>,
}

/// A tool's answer, judged on the bench's sleepers.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub flagged: usize,
    pub missed: usize,
    pub false_alarms: usize,
    pub correct: bool,
}

/// The row that times swaplab's reads of /proc without its judging.
pub const READS_ALONE: &str = "swaplab stale's reads alone";

/// What that row times.
const READS_ALONE_ARE: &str = "the per-process reads of /proc a scan makes (stat, file mappings, mount namespace; command line, root, cgroup and owner of what it reports), timed in the bench's process, nothing judged or printed: no scan of this design can be faster here";

/// The one case the bench's answers are judged on (D01 judges the others).
pub const JUDGED_ON: &str = "one case: libexample replaced by install under running processes (D01's case a), beside processes that map a memfd executable (D01's case l); every other case (removed, forked, written in place, reinstalled, dlopen, mounts, overlays) is judged by D01: swaplab run D01";

#[derive(Clone, Debug, Serialize)]
pub struct StaleBench {
    pub options: StaleOptions,
    /// What "correct" means here: [`JUDGED_ON`].
    pub judged_on: &'static str,
    /// Sleepers on the replaced library (the truth: these need a restart).
    pub stale: usize,
    /// Sleepers on the new library, and how many of them map a memfd.
    pub fresh: usize,
    pub jit: usize,
    /// Seconds spent starting the sleepers.
    pub setup_seconds: f64,
    pub tools: Vec<ToolRun>,
}

/// The sleepers, one process group, killed and reaped on drop.
struct Sleepers {
    /// The sleepers (from their `ready` lines).
    pids: Vec<i32>,
    /// The bench's own children among them (not daemons), reaped on drop.
    children: Vec<i32>,
    guard: Option<crate::harness::process::GroupGuard>,
    pgid: i32,
    lines: std::io::BufReader<std::fs::File>,
    writer: Option<std::os::fd::OwnedFd>,
}

impl Sleepers {
    /// Starts `n` sleepers from `exe` with `lib` as their library folder;
    /// every `jit_every`-th maps a memfd; waits until each said `ready`.
    fn start(
        &mut self,
        exe: &std::path::Path,
        lib: &std::path::Path,
        n: usize,
        jit_every: usize,
        daemons: bool,
    ) -> Result<Vec<i32>> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let me = std::process::id().to_string();
        let writer = self.writer.as_ref().expect("pipe open");
        let mut started = Vec::with_capacity(n);
        for k in 0..n {
            let mut cmd = std::process::Command::new(exe);
            cmd.arg(&me)
                .env_clear()
                .env("LC_ALL", "C")
                .env("LD_LIBRARY_PATH", lib)
                .stdin(std::process::Stdio::null())
                .stdout(writer.try_clone()?)
                .stderr(std::process::Stdio::null())
                .process_group(self.pgid);
            if jit_every > 0 && k % jit_every == jit_every - 1 {
                cmd.arg("--jit");
            }
            if daemons {
                cmd.arg("--daemon");
            }
            let mut child = crate::harness::process::spawn_retrying(&mut cmd)
                .with_context(|| format!("cannot start {}", exe.display()))?;
            let pid = child.id() as i32;
            if self.pgid == 0 {
                self.pgid = pid;
                self.guard = Some(crate::harness::process::GroupGuard::new(pid));
            }
            if daemons {
                // The first process exits at once, leaving the daemon.
                child.wait()?;
            } else {
                // Reaped by pid on drop, after the group is killed.
                self.children.push(pid);
            }
        }
        let until = std::time::Instant::now() + crate::harness::process::deadline() * 4;
        let mut ready = 0;
        let mut line = String::new();
        while ready < n {
            line.clear();
            // Every sleeper holds the pipe open: wait for a line only as
            // long as the deadline leaves, so that a sleeper that never
            // speaks fails the bench instead of hanging it.
            let left = until.saturating_duration_since(std::time::Instant::now());
            if self.lines.buffer().is_empty() && !readable_within(self.lines.get_ref(), left)? {
                anyhow::bail!("only {ready} of {n} sleepers said ready before the deadline");
            }
            if self.lines.read_line(&mut line)? == 0 {
                anyhow::bail!("the sleepers' pipe closed after {ready} of {n} ready lines");
            }
            if let Some(pid) = line
                .strip_prefix("ready ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse::<i32>().ok())
            {
                ready += 1;
                started.push(pid);
            }
        }
        self.pids.extend(&started);
        Ok(started)
    }
}

/// Whether `file` has something to read (or its end) within `left`.
fn readable_within(file: &std::fs::File, left: std::time::Duration) -> Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = left.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(file),
        PollFlags::POLLIN,
    )];
    let ready = loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    Ok(ready > 0)
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        drop(self.guard.take());
        for &pid in &self.children {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

/// What each timed run of a tool took: wall time, and CPU time in user
/// space and in the kernel, in seconds.
#[derive(Debug, Default)]
struct Timed {
    wall: Vec<f64>,
    user: Vec<f64>,
    system: Vec<f64>,
}

impl Timed {
    fn extend(&mut self, other: Timed) {
        self.wall.extend(other.wall);
        self.user.extend(other.user);
        self.system.extend(other.system);
    }
}

/// The CPU time (user, system) of `who`: this process, or the children
/// waited for so far.
fn cpu_of(who: UsageWho) -> (f64, f64) {
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    nix::sys::resource::getrusage(who)
        .map(|u| (secs(u.user_time()), secs(u.system_time())))
        .unwrap_or_default()
}

/// Times `argv` (stdout captured), `runs` times; returns the times of each
/// run and the last run's stdout. The CPU time is what the waited-for
/// children used between the start and the end of the run: the tool and
/// what it waited for (grep under its `sh`). A run that overstays the
/// deadline of a tool that reads every process fails the bench.
fn time_runs(argv: &[String], runs: usize) -> Result<(Timed, String)> {
    let mut timed = Timed::default();
    let mut last = String::new();
    let limit = crate::harness::process::whole_machine_deadline();
    for _ in 0..runs.max(1) {
        let mut cmd = std::process::Command::new(&argv[0]);
        // A bench killed mid-run takes the tool it times with it
        // (needrestart runs for minutes beside many processes).
        crate::harness::process::die_with_parent(&mut cmd);
        cmd.args(&argv[1..]).stdin(std::process::Stdio::null());
        let (user0, system0) = cpu_of(UsageWho::RUSAGE_CHILDREN);
        let t0 = std::time::Instant::now();
        // Asleep until it ends: a wait that polls takes a core from it.
        let out = crate::harness::process::output_asleep_within(&mut cmd, limit)
            .with_context(|| format!("cannot run {}", argv[0]))?;
        timed.wall.push(t0.elapsed().as_secs_f64());
        let (user1, system1) = cpu_of(UsageWho::RUSAGE_CHILDREN);
        timed.user.push(user1 - user0);
        timed.system.push(system1 - system0);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Ok((timed, last))
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied()
}

/// Runs the bench: starts the sleepers, replaces the library under half of
/// them, and times each detector on the whole machine, judging each against
/// the truth on the sleepers.
pub fn stale_bench(o: &StaleOptions, progress: impl Fn(&str)) -> Result<StaleBench> {
    let sandbox = crate::harness::sandbox::Sandbox::new("bench-stale")?;
    // The sleepers are daemons, out of the bench's process tree: if the
    // bench dies, even by SIGKILL, the sentinel kills them and removes the
    // sandbox.
    let sentinel = crate::harness::process::Sentinel::start(sandbox.root())?;
    let population = start_sleepers(o, &sandbox, &progress)?;
    let mut tools = time_fast_tools(o, &population, &progress)?;
    tools.extend(time_needrestart(o, &sandbox, &population, &progress)?);
    let bench = StaleBench {
        options: o.clone(),
        judged_on: JUDGED_ON,
        stale: population.stale.len(),
        fresh: population.fresh,
        jit: population.fresh.checked_div(o.jit_every).unwrap_or(0),
        setup_seconds: population.setup_seconds,
        tools,
    };
    drop(population);
    drop(sentinel);
    drop(sandbox);
    Ok(bench)
}

/// A set of process ids.
type Pids = std::collections::BTreeSet<i32>;

/// The running sleepers, and the truth each tool is judged against.
struct Population {
    /// Held while the tools run: dropping it ends the sleepers.
    sleepers: Sleepers,
    /// The sleepers started on v1 before v2 was installed over it: exactly
    /// these need a restart.
    stale: Pids,
    /// How many sleepers started on v2.
    fresh: usize,
    setup_seconds: f64,
}

impl Population {
    /// Every sleeper (the tools scan the whole machine).
    fn ours(&self) -> Pids {
        self.sleepers.pids.iter().copied().collect()
    }

    /// Judges the pids a tool flagged on the whole machine: (sleepers
    /// flagged, stale sleepers missed, false alarms among the sleepers).
    fn judge(&self, flagged: &Pids) -> (usize, usize, usize) {
        let mine: Pids = flagged.intersection(&self.ours()).copied().collect();
        let missed = self.stale.difference(&mine).count();
        let alarms = mine.difference(&self.stale).count();
        (mine.len(), missed, alarms)
    }
}

/// Starts half the sleepers on libexample v1, installs v2 over it, and
/// starts the other half (every `jit_every`-th mapping a memfd).
fn start_sleepers(
    o: &StaleOptions,
    sandbox: &crate::harness::sandbox::Sandbox,
    progress: &impl Fn(&str),
) -> Result<Population> {
    let root = sandbox.root();
    let exe = sandbox.bin_dir().join("swaplab-sleeper");
    std::fs::copy(crate::harness::variants::SLEEPER, &exe)
        .context("cannot copy the sleeper into the sandbox")?;
    let v1 = sandbox.rel(&sandbox.stage(Variant::V1)?);
    let v2 = sandbox.rel(&sandbox.stage(Variant::V2)?);
    Replace::Install.apply(root, &v1, "lib/libexample.so")?;
    let (r, w) = nix::unistd::pipe()?;
    let mut s = Sleepers {
        pids: Vec::new(),
        children: Vec::new(),
        guard: None,
        pgid: 0,
        lines: std::io::BufReader::new(std::fs::File::from(r)),
        writer: Some(w),
    };
    let half = o.processes / 2;
    let t0 = std::time::Instant::now();
    progress(&format!("starting {half} sleepers on libexample v1"));
    let stale: Pids = s
        .start(&exe, &sandbox.lib_dir(), half, 0, o.daemons)?
        .into_iter()
        .collect();
    progress("install v2 over it (the old sleepers now run a replaced library)");
    Replace::Install.apply(root, &v2, "lib/libexample.so")?;
    let fresh = o.processes - half;
    progress(&format!("starting {fresh} sleepers on v2"));
    s.start(&exe, &sandbox.lib_dir(), fresh, o.jit_every, o.daemons)?;
    s.writer = None;
    let setup_seconds = t0.elapsed().as_secs_f64();
    Ok(Population {
        sleepers: s,
        stale,
        fresh,
        setup_seconds,
    })
}

/// Times `swaplab stale --json`, its reads alone and the article's grep,
/// each run once untimed and then `runs` times in turn; judges the tools'
/// last answers.
fn time_fast_tools(
    o: &StaleOptions,
    population: &Population,
    progress: &impl Fn(&str),
) -> Result<Vec<ToolRun>> {
    let me = std::env::current_exe()?.display().to_string();
    let swaplab = vec![me, "stale".into(), "--json".into()];
    let grep = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        "grep -l '(deleted)' /proc/*/maps 2>/dev/null".into(),
    ];
    progress("timing swaplab stale, its reads alone and grep, one run each untimed, then in turn");
    let (_, first) = time_runs(&swaplab, 1)?;
    let reported = listed_by_swaplab(&first)?;
    let sleepers = population.sleepers.pids.len();
    time_reads_alone(&reported, sleepers)?;
    time_runs(&grep, 1)?;
    let (mut s_secs, mut r_secs, mut g_secs) =
        (Timed::default(), Timed::default(), Timed::default());
    let (mut s_out, mut g_out) = (String::new(), String::new());
    for _ in 0..o.runs.max(1) {
        let (t, out) = time_runs(&swaplab, 1)?;
        s_secs.extend(t);
        s_out = out;
        r_secs.extend(time_reads_alone(&reported, sleepers)?);
        let (t, out) = time_runs(&grep, 1)?;
        g_secs.extend(t);
        g_out = out;
    }
    let swaplab_flagged = flagged_by_swaplab(&s_out)?;
    let reads = tool_run(READS_ALONE, READS_ALONE_ARE, r_secs, None);
    Ok(vec![
        tool_run(
            "swaplab stale",
            "swaplab stale --json",
            s_secs,
            Some(population.judge(&swaplab_flagged)),
        ),
        reads,
        tool_run(
            "grep",
            "grep -l '(deleted)' /proc/*/maps",
            g_secs,
            Some(population.judge(&flagged_by_grep(&g_out))),
        ),
    ])
}

/// Times [`crate::detector::stale::reads_only`] once, in this process: the
/// reads a scan makes of every process, and of `reported` what the
/// report shows, without judging or printing: the floor of the scan's
/// design here. Fails unless it read at least the bench's `sleepers`.
fn time_reads_alone(reported: &Pids, sleepers: usize) -> Result<Timed> {
    let (user0, system0) = cpu_of(UsageWho::RUSAGE_SELF);
    let t0 = std::time::Instant::now();
    let read = crate::detector::stale::reads_only(reported)?;
    let wall = t0.elapsed().as_secs_f64();
    let (user1, system1) = cpu_of(UsageWho::RUSAGE_SELF);
    anyhow::ensure!(
        read >= sleepers,
        "{READS_ALONE}: {read} processes read, fewer than the bench's {sleepers} sleepers"
    );
    Ok(Timed {
        wall: vec![wall],
        user: vec![user1 - user0],
        system: vec![system1 - system0],
    })
}

/// Every process `swaplab stale --json` reported (to restart, or not).
fn listed_by_swaplab(json: &str) -> Result<Pids> {
    swaplab_pids(json, |_| true)
}

/// The processes `swaplab stale --json` says must restart.
fn flagged_by_swaplab(json: &str) -> Result<Pids> {
    swaplab_pids(json, |p| p["need"] == "required")
}

/// The processes of `swaplab stale --json`'s report that `keep` keeps.
fn swaplab_pids(json: &str, keep: impl Fn(&serde_json::Value) -> bool) -> Result<Pids> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("swaplab stale --json gave no JSON")?;
    Ok(v["processes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| keep(p))
                .filter_map(|p| p["pid"].as_i64().map(|x| x as i32))
                .collect()
        })
        .unwrap_or_default())
}

/// The processes whose maps `grep -l '(deleted)' /proc/*/maps` listed.
fn flagged_by_grep(out: &str) -> Pids {
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("/proc/")?
                .strip_suffix("/maps")?
                .parse()
                .ok()
        })
        .collect()
}

/// Times `needrestart -b` as shipped, and again without its /tmp and /run
/// exclusions; skipped where it is missing or left out.
fn time_needrestart(
    o: &StaleOptions,
    sandbox: &crate::harness::sandbox::Sandbox,
    population: &Population,
    progress: &impl Fn(&str),
) -> Result<Vec<ToolRun>> {
    let nr = ["/usr/sbin/needrestart", "/sbin/needrestart"]
        .iter()
        .find(|p| std::path::Path::new(p).is_file());
    // needrestart's default configuration ignores mappings under /tmp and
    // /run, where the sandbox is: it is timed as shipped, and again with
    // those two rules taken out of the same configuration.
    let open_conf = sandbox.run_dir().join("needrestart-tmp-not-ignored.conf");
    let variants: [(&'static str, Vec<String>); 2] = [
        ("needrestart -b", vec![]),
        (
            "needrestart -b, /tmp not ignored",
            vec!["-c".into(), open_conf.display().to_string()],
        ),
    ];
    let mut tools = Vec::new();
    for (name, extra) in variants {
        let Some(p) = nr.filter(|_| o.needrestart) else {
            tools.push(skipped(
                name,
                if o.needrestart {
                    "needrestart is not installed: apt-get install -y needrestart".into()
                } else {
                    "left out (--no-needrestart)".into()
                },
            ));
            continue;
        };
        if !extra.is_empty() {
            let base =
                std::fs::read_to_string("/etc/needrestart/needrestart.conf").unwrap_or_default();
            std::fs::write(
                &open_conf,
                format!(
                    "{base}\n# swaplab bench: every default but the /tmp and /run exclusions\n@{{$nrconf{{blacklist_mappings}}}} = grep {{ \"$_\" !~ m{{tmp|run}} }} @{{$nrconf{{blacklist_mappings}}}};\n"
                ),
            )?;
        }
        progress(&format!("timing {name} (slow)"));
        let mut argv = vec![p.to_string(), "-b".into(), "-r".into(), "l".into()];
        argv.extend(extra.iter().cloned());
        let (secs, out) = time_runs(&argv, 1)?;
        let flagged = flagged_by_needrestart(&out, &population.ours());
        let shown = if extra.is_empty() {
            "needrestart -b -r l".to_string()
        } else {
            "needrestart -b -r l -c run/needrestart-tmp-not-ignored.conf".to_string()
        };
        tools.push(tool_run(
            name,
            &shown,
            secs,
            Some(population.judge(&flagged)),
        ));
    }
    Ok(tools)
}

/// The sleepers needrestart's batch output (`-b`) names for a restart:
/// it names services and sessions, not processes, so a sleeper counts as
/// flagged when its cgroup lies in one of them.
fn flagged_by_needrestart(out: &str, ours: &Pids) -> Pids {
    let units: Vec<String> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("NEEDRESTART-SVC:")
                .or_else(|| l.strip_prefix("NEEDRESTART-SESS:"))
                .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
        })
        .collect();
    ours.iter()
        .copied()
        .filter(|pid| {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            units
                .iter()
                .any(|u| !u.is_empty() && cg.contains(u.as_str()))
        })
        .collect()
}

/// A tool's row: its times, and its answer judged as `judged` gives it
/// (sleepers flagged, missed, false alarms), if it answers.
fn tool_run(
    tool: &'static str,
    command: &str,
    t: Timed,
    judged: Option<(usize, usize, usize)>,
) -> ToolRun {
    ToolRun {
        tool,
        command: command.into(),
        skipped: None,
        median_seconds: median(&t.wall),
        seconds: t.wall,
        median_user_seconds: median(&t.user),
        median_system_seconds: median(&t.system),
        user_seconds: t.user,
        system_seconds: t.system,
        answer: judged.map(|(flagged, missed, false_alarms)| Answer {
            flagged,
            missed,
            false_alarms,
            correct: missed == 0 && false_alarms == 0,
        }),
    }
}

fn skipped(tool: &'static str, why: String) -> ToolRun {
    ToolRun {
        tool,
        command: String::new(),
        skipped: Some(why),
        seconds: Vec::new(),
        median_seconds: None,
        user_seconds: Vec::new(),
        system_seconds: Vec::new(),
        median_user_seconds: None,
        median_system_seconds: None,
        answer: None,
    }
}

/// The bench as a table, with each tool's time relative to grep's.
pub fn stale_table(b: &StaleBench) -> String {
    let grep = b
        .tools
        .iter()
        .find(|t| t.tool == "grep")
        .and_then(|t| t.median_seconds);
    let mut out = format!(
        "{:<33} {:>10} {:>9} {:>9} {:>9} {:>8} {:>7} {:>13}  ANSWER\n",
        "TOOL", "WALL (s)", "× grep", "USER (s)", "SYS (s)", "FLAGGED", "MISSED", "FALSE ALARMS"
    );
    let cpu = |c: Option<f64>| c.map_or_else(|| "-".to_string(), |c| format!("{c:.4}"));
    for t in &b.tools {
        match (&t.skipped, t.median_seconds) {
            (Some(why), _) => out.push_str(&format!("{:<33} skipped: {why}\n", t.tool)),
            (None, Some(s)) => {
                let ratio = grep
                    .map(|g| format!("{:.2}", s / g))
                    .unwrap_or_else(|| "-".into());
                let (flagged, missed, false_alarms, answer) = match &t.answer {
                    None => {
                        let none = || "-".to_string();
                        (none(), none(), none(), "none: the floor of its design")
                    }
                    Some(a) => (
                        a.flagged.to_string(),
                        a.missed.to_string(),
                        a.false_alarms.to_string(),
                        if a.correct { "correct" } else { "wrong" },
                    ),
                };
                out.push_str(&format!(
                    "{:<33} {:>10.4} {:>9} {:>9} {:>9} {:>8} {:>7} {:>13}  {answer}\n",
                    t.tool,
                    s,
                    ratio,
                    cpu(t.median_user_seconds),
                    cpu(t.median_system_seconds),
                    flagged,
                    missed,
                    false_alarms,
                ));
            }
            (None, None) => {}
        }
    }
    out.push_str(
        "USER and SYS: CPU time of the tool and its children (median), in its own code and in the kernel; on more than one core it may exceed WALL\n",
    );
    if b.tools.iter().any(|t| t.tool == READS_ALONE) {
        out.push_str(&format!("{READS_ALONE}: {READS_ALONE_ARE}\n"));
    }
    out.push_str(&format!("ANSWER is judged on {}\n", b.judged_on));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table says which case "correct" covers.
    #[test]
    fn the_table_names_the_one_case_it_judges() {
        let b = StaleBench {
            options: StaleOptions {
                processes: 2,
                jit_every: 0,
                runs: 1,
                needrestart: false,
                daemons: false,
            },
            judged_on: JUDGED_ON,
            stale: 1,
            fresh: 1,
            jit: 0,
            setup_seconds: 0.0,
            tools: vec![
                tool_run(
                    "grep",
                    "grep",
                    Timed {
                        wall: vec![0.1],
                        user: vec![0.01],
                        system: vec![0.09],
                    },
                    Some((1, 0, 0)),
                ),
                tool_run(
                    READS_ALONE,
                    READS_ALONE_ARE,
                    Timed {
                        wall: vec![0.05],
                        user: vec![0.0],
                        system: vec![0.09],
                    },
                    None,
                ),
            ],
        };
        let t = stale_table(&b);
        assert!(t.contains("correct"), "{t}");
        assert!(
            t.contains("ANSWER is judged on one case: libexample replaced by install"),
            "{t}"
        );
        assert!(t.contains("swaplab run D01"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("grep") && l.contains(" 0.0100 ") && l.contains(" 0.0900 ")),
            "user and system time shown: {t}"
        );
        // No answer, so neither right nor wrong.
        let reads = t.lines().find(|l| l.starts_with(READS_ALONE)).unwrap();
        assert!(reads.ends_with("none: the floor of its design"), "{t}");
        assert!(
            !reads.contains("correct") && !reads.contains("wrong"),
            "{t}"
        );
    }
}
