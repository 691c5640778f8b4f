//! The restart detectors people use, run on a scenario's processes and
//! judged against what each process really runs (D01, D02): the article's
//! `grep '(deleted)' /proc/*/maps`, `lsof` (its `DEL` entries, and `+L1`),
//! needrestart's per-process verdicts, and debian-goodies' checkrestart.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use crate::detector::stale::Urgency;
use crate::harness::lab::{pidt, Lab, Stale};
use crate::harness::process::{output_within, whole_machine_deadline};

/// What the process really needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Truth {
    Required,
    Optional,
    Clean,
}

impl Truth {
    pub fn word(self) -> &'static str {
        match self {
            Truth::Required => "required",
            Truth::Optional => "optional",
            Truth::Clean => "-",
        }
    }
}

/// One case of the scenario: a process and what it really needs.
pub struct Case {
    pub key: &'static str,
    pub title: &'static str,
    pub truth: Truth,
    pub expect: Stale,
    pub pid: i32,
}

/// A tool's answer: the pids it flags, or why it did not run.
pub type Answer = std::result::Result<BTreeSet<i32>, String>;

/// Runs a tool, narrated as `shown`; returns its stdout, or why it could not
/// run (with the command that installs it).
pub fn tool(
    lab: &mut Lab,
    argv: &[&str],
    shown: &str,
    package: &str,
) -> std::result::Result<String, String> {
    lab.proof(format!("$ {shown}"));
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .current_dir(lab.sandbox.root())
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    let out = output_within(&mut cmd, whole_machine_deadline());
    match out {
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = format!("{} is not installed: apt-get install -y {package}", argv[0]);
            lab.say(format!("# skipped: {why}"));
            Err(why)
        }
        Err(e) => Err(format!("cannot run {}: {e}", argv[0])),
    }
}

/// Shows a tool's lines about `pids` in the order `pids` come (the order the
/// experiment started them), not the tool's: lsof and checkrestart sort by
/// pid, and pids wrap around (at 32768 on many machines), which would move
/// lines of a lab sheet. Lines of one process keep their own order.
fn show_in_order(lab: &mut Lab, pids: &[i32], mut lines: Vec<(i32, String)>) {
    lines.sort_by_key(|(pid, _)| pids.iter().position(|p| p == pid));
    for (_, line) in lines {
        lab.proof(line);
    }
}

/// `grep -l '(deleted)' /proc/PID/maps …`: the article's detection.
pub fn grep_deleted(lab: &mut Lab, pids: &[i32]) -> Answer {
    let files: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/maps")).collect();
    let shown: Vec<String> = pids.iter().map(|p| pidt(*p)).collect();
    let mut argv = vec!["grep", "-l", "(deleted)"];
    argv.extend(files.iter().map(String::as_str));
    let out = tool(
        lab,
        &argv,
        &format!("grep -l '(deleted)' /proc/{{{}}}/maps", shown.join(",")),
        "grep",
    )?;
    let mut flagged = BTreeSet::new();
    for line in out.lines() {
        if let Some(pid) = line
            .strip_prefix("/proc/")
            .and_then(|r| r.strip_suffix("/maps"))
            .and_then(|p| p.parse::<i32>().ok())
        {
            lab.proof(format!("/proc/{}/maps", pidt(pid)));
            flagged.insert(pid);
        }
    }
    Ok(flagged)
}

/// `lsof -p …` lines with FD `DEL` (a deleted mapped file) or a name marked
/// `(deleted)`; or, with `plus_l1`, every file `lsof +L1` lists (open files
/// with no link left).
pub fn lsof(lab: &mut Lab, pids: &[i32], plus_l1: bool) -> Answer {
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let list = list.join(",");
    let shown: Vec<String> = pids.iter().map(|p| pidt(*p)).collect();
    let shown = shown.join(",");
    let (argv, shown): (Vec<&str>, String) = if plus_l1 {
        (
            vec!["lsof", "-nP", "-w", "-a", "+L1", "-p", &list],
            format!("lsof -nP -a +L1 -p {shown}"),
        )
    } else {
        (
            vec!["lsof", "-nP", "-w", "-p", &list],
            format!("lsof -nP -p {shown} | grep -E ' DEL |\\(deleted\\)'"),
        )
    };
    let out = tool(lab, &argv, &shown, "lsof")?;
    let mut flagged = BTreeSet::new();
    let mut lines = Vec::new();
    for line in out.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = cols.get(1).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let hit = plus_l1 || cols.get(3) == Some(&"DEL") || line.ends_with("(deleted)");
        if hit {
            let name = cols.last().copied().unwrap_or("");
            let name = if line.ends_with("(deleted)") {
                format!("{} (deleted)", cols[cols.len().saturating_sub(2)])
            } else {
                name.to_string()
            };
            lines.push((
                pid,
                format!(
                    "{} {} {} {}",
                    cols[0],
                    pidt(pid),
                    cols.get(3).unwrap_or(&""),
                    name
                ),
            ));
            flagged.insert(pid);
        }
    }
    show_in_order(lab, pids, lines);
    if flagged.is_empty() {
        lab.proof("(no lines)");
    }
    Ok(flagged)
}

/// needrestart's configuration for D01: its stock list of mappings to pass
/// over (`/etc/needrestart/needrestart.conf` on Debian 12), entry for entry,
/// but for the `/tmp`, `/var/tmp` and `/run` entries, where the sandbox
/// lives; everything else is needrestart's defaults (`-c` reads no
/// `conf.d`).
const NEEDRESTART_CONF: &str = r"$nrconf{blacklist_mappings} = [
    qr(^/(SYSV00000000( \(deleted\))?|drm(\s|$)|dev/)),
    qr(^/memfd:),
    qr(^/\[aio\]),
    qr#/orcexec\.[\w\d]+( \(deleted\))?$#,
    qr(/#\d+( \(deleted\))?$),
    qr#/jna\d+\.tmp( \(deleted\))?$#,
];";

/// needrestart's verdict on each process, `-v` (what it prints per process
/// before it groups them by service or session, which these processes
/// belong to none of): the pids it finds using an obsolete or deleted file.
pub fn needrestart(lab: &mut Lab, pids: &[i32]) -> Answer {
    let conf = lab.sandbox.root().join("needrestart.conf");
    lab.shell("cat > needrestart.conf   # needrestart's own pseudo-file list, without /tmp, /var/tmp and /run (the sandbox is there)");
    for line in NEEDRESTART_CONF.lines() {
        lab.proof(line.to_string());
    }
    std::fs::write(&conf, NEEDRESTART_CONF).map_err(|e| e.to_string())?;
    let shown: Vec<String> = pids.iter().map(|p| pidt(*p)).collect();
    lab.proof(format!(
        "$ needrestart -v -b -l -r l -c needrestart.conf 2>&1 | grep -E '#({}) uses'",
        shown.join("|")
    ));
    let Some(exe) = crate::harness::programs::find("needrestart") else {
        let why = "needrestart is not installed: apt-get install -y needrestart".to_string();
        lab.say(format!("# skipped: {why}"));
        return Err(why);
    };
    let mut cmd = Command::new(&exe);
    cmd.args(["-v", "-b", "-l", "-r", "l", "-c"])
        .arg(&conf)
        .current_dir(lab.sandbox.root())
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    let out = output_within(&mut cmd, whole_machine_deadline())
        .map_err(|e| format!("cannot run needrestart: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let mut flagged = BTreeSet::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("[main] #") else {
            continue;
        };
        let Some((pid, what)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if pids.contains(&pid) && what.starts_with("uses ") && flagged.insert(pid) {
            lines.push((pid, format!("[main] #{} {what}", pidt(pid))));
        }
    }
    show_in_order(lab, pids, lines);
    if flagged.is_empty() {
        lab.proof("(no lines)");
    }
    Ok(flagged)
}

/// debian-goodies' checkrestart, `-a -v -m` (every deleted file, not only
/// those outside /tmp or owned by a package; one `file PID PROGRAM PATH`
/// line each): the pids it lists among `pids`. It reads every process and
/// refuses to run but as root.
pub fn checkrestart(lab: &mut Lab, pids: &[i32]) -> Answer {
    let out = tool(
        lab,
        &["checkrestart", "-a", "-v", "-m"],
        "checkrestart -a -v -m | grep '^file'",
        "debian-goodies",
    )?;
    let mut flagged = BTreeSet::new();
    let mut lines = Vec::new();
    for line in out.lines() {
        let mut cols = line.split('\t');
        if cols.next() != Some("file") {
            continue;
        }
        let Some(pid) = cols.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pids.contains(&pid) {
            let rest: Vec<&str> = cols.collect();
            lines.push((pid, format!("file {} {}", pidt(pid), rest.join(" "))));
            flagged.insert(pid);
        }
    }
    show_in_order(lab, pids, lines);
    if flagged.is_empty() {
        lab.proof("(no lines)");
    }
    Ok(flagged)
}

/// What the claim says of the other tools on the cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Others {
    /// Each gets some case wrong (D01: cases made to catch them).
    EachErrs,
    /// Each flags exactly the processes that need a restart, and none
    /// other (D02: the clean upgrade they were made for).
    EachRight,
}

/// Judges `swaplab stale` case by case, prints the table, and checks every
/// other tool that ran against what the claim says of it (`others`); on
/// CI, that each ran.
pub fn judge(
    lab: &mut Lab,
    cases: &[Case],
    r: &crate::detector::stale::StaleReport,
    answers: &[(&str, Answer)],
    others: Others,
) {
    for c in cases {
        lab.check_stale(
            r,
            &format!("{} ({})", c.key, c.title),
            c.pid,
            c.expect.clone(),
        );
    }
    let wrong = table(lab, cases, r, answers);
    for (name, a) in answers {
        if a.is_ok() {
            let (miss, alarm) = wrong.get(name).copied().unwrap_or_default();
            let (what, ok) = match others {
                Others::EachErrs => (
                    format!("{name} gets some of these cases wrong"),
                    miss + alarm > 0,
                ),
                Others::EachRight => (
                    format!("{name} flags exactly the processes that need a restart"),
                    miss + alarm == 0,
                ),
            };
            lab.check(what, ok, format!("{miss} missed, {alarm} false alarms"));
        }
    }
    let ci = std::env::var_os("CI").is_some();
    for (name, a) in answers {
        if let Err(why) = a {
            if ci && !crate::harness::ci::may_skip(name) {
                lab.check(format!("{name} runs on CI"), false, why);
            }
        }
    }
}

/// Prints the case × tool table; returns each tool's (missed, false alarms).
fn table<'a>(
    lab: &mut Lab,
    cases: &[Case],
    r: &crate::detector::stale::StaleReport,
    answers: &[(&'a str, Answer)],
) -> BTreeMap<&'a str, (usize, usize)> {
    let mut head = format!("{:<34} {:<9} {:<13}", "CASE", "TRUTH", "swaplab stale");
    for (name, _) in answers {
        head.push_str(&format!(" {name:<15}"));
    }
    lab.say(head.trim_end().to_string());
    let mut wrong: BTreeMap<&'a str, (usize, usize)> = BTreeMap::new();
    for c in cases {
        let unchecked = r.unchecked.iter().any(|u| u.pid == c.pid);
        let s = match r.get(c.pid).map(|p| p.need) {
            Some(Urgency::Required) => "required",
            Some(Urgency::Optional) => "optional",
            None if unchecked => "cannot tell",
            None => "-",
        };
        let s_ok = s == c.truth.word();
        let mut line = format!(
            "{:<34} {:<9} {:<13}",
            format!("{} {}", c.key, c.title),
            c.truth.word(),
            if s_ok {
                s.to_string()
            } else {
                format!("{s} ✗")
            }
        );
        for (name, a) in answers {
            let cell = match a {
                Err(_) => "skipped".to_string(),
                Ok(flagged) => {
                    let yes = flagged.contains(&c.pid);
                    let should = c.truth == Truth::Required;
                    let e = wrong.entry(name).or_default();
                    if yes && !should {
                        e.1 += 1;
                    } else if !yes && should {
                        e.0 += 1;
                    }
                    match (yes, yes == should) {
                        (true, true) => "flagged".into(),
                        (true, false) => "flagged ✗".into(),
                        (false, true) => "-".into(),
                        (false, false) => "- ✗".into(),
                    }
                }
            };
            line.push_str(&format!(" {cell:<15}"));
        }
        lab.say(line.trim_end().to_string());
    }
    let mut tally = Vec::new();
    for (name, a) in answers {
        match a {
            Ok(_) => {
                let (miss, alarm) = wrong.get(name).copied().unwrap_or_default();
                tally.push(format!("{name}: {miss} missed, {alarm} false alarms"));
                lab.observe(&format!("{name}: missed, false alarms"), (miss, alarm));
            }
            Err(why) => tally.push(format!("{name}: skipped ({why})")),
        }
    }
    lab.say(format!(
        "# ✗ = wrong against the truth; {}",
        tally.join("; ")
    ));
    if answers.iter().any(|(name, _)| *name == "needrestart") {
        lab.note("needrestart: its per-process verdicts (-v); -b alone names only services and sessions, which these processes belong to none of, and its stock configuration passes over files under /tmp and /run");
    }
    wrong
}
