//! `--monitoring-plugin`: one line and the exit status of a monitoring
//! plugin (Nagios, Icinga, Naemon, Sensu's checks): OK 0, WARNING 1,
//! CRITICAL 2, UNKNOWN 3, and performance data after `|`.

use crate::kernel::KernelStatus;
use crate::report::StaleReport;

/// A plugin's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    /// The plugin's exit status for it.
    pub fn status(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// The state the report puts the machine in: CRITICAL when a process needs
/// a restart; else UNKNOWN when a process or a file could not be judged
/// (as an ordinary user, another user's processes); else WARNING when a
/// restart is optional or a newer kernel is installed; else OK.
pub fn state(r: &StaleReport, kernel: Option<&KernelStatus>) -> State {
    if r.required > 0 {
        State::Critical
    } else if !r.unreadable.is_empty() || !r.unchecked.is_empty() {
        State::Unknown
    } else if r.optional > 0 || kernel.is_some_and(|k| k.outdated) {
        State::Warning
    } else {
        State::Ok
    }
}

/// The plugin's line: the state, what it is about, and the counts as
/// performance data.
pub fn line(r: &StaleReport, kernel: Option<&KernelStatus>) -> (State, String) {
    let state = state(r, kernel);
    let mut what = match state {
        State::Critical => format!("{} to restart", needing(r, true)),
        State::Unknown => {
            // `N WHAT (names)`, or `0 WHAT`.
            let named = |what: &str, names: Vec<&str>| match names.len() {
                0 => format!("0 {what}"),
                n => format!("{n} {what} ({})", crate::text::names_counted(&names)),
            };
            let unread = r.unreadable.iter().map(|u| u.command.as_str()).collect();
            let unchecked = r.unchecked.iter().map(|u| u.command.as_str()).collect();
            format!(
                "not judged: {}, {}",
                named("unreadable", unread),
                named("with files it could not judge", unchecked)
            )
        }
        State::Warning if r.optional > 0 => format!("{} may be restarted", needing(r, false)),
        State::Warning => String::new(),
        State::Ok if r.excluded_processes > 0 => format!(
            "no process judged runs code that is gone; {} scanned, {} left out",
            r.scanned, r.excluded_processes
        ),
        State::Ok => format!("no process runs code that is gone; {} scanned", r.scanned),
    };
    if let Some(k) = kernel.filter(|k| k.outdated) {
        if !what.is_empty() {
            what.push_str("; ");
        }
        what.push_str(&format!(
            "kernel {} installed, {} running",
            k.newest_installed, k.running
        ));
    }
    let perf = format!(
        "required={} optional={} unreadable={} unchecked={} excluded={} scanned={}",
        r.required,
        r.optional,
        r.unreadable.len(),
        r.unchecked.len(),
        r.excluded_processes,
        r.scanned
    );
    (
        state,
        format!("STALE {} - {} | {perf}", state.word(), text(&what)),
    )
}

/// The line of a plugin that could not run: UNKNOWN, and why.
pub fn unknown_line(why: &str) -> String {
    format!("STALE UNKNOWN - {}", text(why))
}

/// `s` as the text of a plugin's line: a process names itself, and a
/// pattern is the user's: nothing in it may end the line or open the
/// performance data.
fn text(s: &str) -> String {
    s.replace(['\n', '\r', '|'], " ")
}

/// Parses the command line as `C::parse` does, except that with
/// `--monitoring-plugin` among the arguments, an argument clap refuses is
/// the plugin's UNKNOWN (one line, status 3), not clap's status 2 (which a
/// monitoring system reads as CRITICAL).
pub fn parse_args<C: clap::Parser>() -> C {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match C::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() && args.iter().any(|a| a == "--monitoring-plugin") => {
            let why = e.to_string();
            let first = why.lines().next().unwrap_or_default();
            println!("{}", unknown_line(first.trim_start_matches("error: ")));
            std::process::exit(State::Unknown.status().into())
        }
        Err(e) => e.exit(),
    }
}

/// `N processes (nginx ×2, sshd)`: the processes of one urgency and their
/// commands.
fn needing(r: &StaleReport, required: bool) -> String {
    let names: Vec<&str> = r
        .processes
        .iter()
        .filter(|p| (p.need == crate::report::Urgency::Required) == required)
        .map(|p| p.command.as_str())
        .collect();
    let noun = if names.len() == 1 {
        "process"
    } else {
        "processes"
    };
    format!(
        "{} {noun} ({})",
        names.len(),
        crate::text::names_counted(&names)
    )
}
