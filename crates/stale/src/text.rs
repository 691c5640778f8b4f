//! `swaplab stale`'s report for people: one block per process, the plan
//! (`--plan`), and the summary line.

use std::collections::BTreeMap;

use crate::packages::{Manager, Package};
use crate::plan;
use crate::report::{Group, Marks, Role, StaleReport, Unread, Urgency};

/// The report for people: one block per process, then the summary.
pub fn render(r: &StaleReport, marks: &Marks) -> Vec<String> {
    let mut out = Vec::new();
    for p in &r.processes {
        let who = match &p.service {
            Some(s) => format!("user {}, {s}", p.user),
            None => format!("user {}", p.user),
        };
        let need = match p.need {
            Urgency::Required => "restart required",
            Urgency::Optional => "restart optional",
        };
        out.push(format!(
            "{} {} ({who}): {need}: {}",
            (marks.pid)(p.pid),
            p.command,
            plan::advice(p, marks)
        ));
        if let Some(root) = &p.root {
            out.push(format!(
                "  its own root: {} ({}): files judged there, named as it sees them",
                root_text(p.pid, root, marks),
                // Which cgroup, if any, is the machine's doing, not the
                // process's: marked as a changing value.
                (marks.vol)(match &p.cgroup {
                    Some(c) => format!("cgroup {c}"),
                    None => "no cgroup of its own".to_string(),
                })
            ));
        }
        for f in &p.files {
            let role = role_word(f.role);
            let detail = if ["mtime", "ctime", "btime"].contains(&f.evidence.as_str()) {
                ms_vol(&f.detail, marks)
            } else {
                f.detail.clone()
            };
            let package = f
                .package
                .as_ref()
                .map_or(String::new(), |p| package_text(p, marks));
            out.push(format!(
                "  {role} {}: {}: {detail}{package}",
                f.path.to_string_lossy(),
                f.reason.word()
            ));
        }
    }
    out.extend(unchecked(r, marks));
    for d in &r.unread_databases {
        out.push(format!(
            "packages not named from {}: {}",
            d.path.to_string_lossy(),
            d.why
        ));
    }
    out.push(summary(r, marks));
    out.into_iter().map(one_line).collect()
}

/// The processes with files that could not be judged: one block each,
/// every such file with its reason.
fn unchecked(r: &StaleReport, marks: &Marks) -> Vec<String> {
    let mut out = Vec::new();
    // One line each while they fit a screen; the summary names them all.
    if r.unreadable.len() <= UNREADABLE_LINES {
        for u in &r.unreadable {
            out.push(format!(
                "{} {}: could not tell: its mappings could not be read ({})",
                (marks.pid)(u.pid),
                u.command,
                unread_word(u.reason)
            ));
        }
    }
    for p in &r.unchecked {
        let n = p.files.len();
        out.push(format!(
            "{} {}: could not tell: {n} file{} not judged",
            (marks.pid)(p.pid),
            p.command,
            if n == 1 { "" } else { "s" }
        ));
        for f in &p.files {
            out.push(format!(
                "  {} {}: {}: {}",
                role_word(f.role),
                f.path.to_string_lossy(),
                f.reason.word(),
                ms_vol(&f.detail, marks)
            ));
        }
    }
    out
}

/// Up to eight command names, each with its count (`sshd ×3`).
pub fn names_counted(names: &[&str]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        *counts.entry(n).or_default() += 1;
    }
    let mut shown: Vec<String> = counts
        .iter()
        .take(8)
        .map(|(n, k)| {
            if *k > 1 {
                format!("{n} ×{k}")
            } else {
                n.to_string()
            }
        })
        .collect();
    if counts.len() > 8 {
        shown.push("…".into());
    }
    shown.join(", ")
}

/// How many unreadable processes get a line of their own.
const UNREADABLE_LINES: usize = 20;

fn unread_word(why: Unread) -> &'static str {
    match why {
        Unread::AnotherUser => "another user's; run as root to read them",
        Unread::Refused => {
            "refused even to root or its own user: another user namespace, or a process that forbids it"
        }
    }
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Executable => "executable",
        Role::Library => "library",
        Role::Script => "script",
    }
}

/// A line of the report with every control character shown as maps shows
/// a newline (`\012`): a process names itself, its files, its cgroup, and
/// must not forge a line (a fake command in `--plan`). JSON carries the
/// names as they are. The marks the lab's redaction puts around changing
/// values (`\x01`…`\x04`) stay.
pub fn one_line(line: String) -> String {
    let forging = |c: char| c.is_control() && !('\u{1}'..='\u{4}').contains(&c);
    if !line.chars().any(forging) {
        return line;
    }
    line.chars()
        .map(|c| {
            if forging(c) {
                format!("\\{:03o}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `/proc/PID/root` with the pid marked; a chroot's folder as it is.
fn root_text(pid: i32, root: &std::path::Path, marks: &Marks) -> String {
    if root == std::path::Path::new(&format!("/proc/{pid}/root")) {
        format!("/proc/{}/root", (marks.pid)(pid))
    } else {
        root.display().to_string()
    }
}

/// `--plan`: each thing to restart once, what it fixes, and the command
/// where one is known; then the summary.
pub fn render_plan(r: &StaleReport, marks: &Marks) -> Vec<String> {
    let mut out = Vec::new();
    for (n, g) in r.groups.iter().enumerate() {
        out.push(format!("{}. {}", n + 1, group_head(g, marks)));
        let pids: Vec<String> = g.pids.iter().map(|&p| (marks.pid)(p)).collect();
        out.push(format!("   processes: {}", pids.join(" ")));
        for f in &g.fixes {
            out.push(format!("   fixes: {f}"));
        }
        if let Some(c) = &g.command {
            out.push(format!("   $ {c}"));
        }
    }
    // The plan does not list what could not be judged: say where it is.
    out.push(summary(r, marks).replace("(listed above)", "(listed without --plan)"));
    out.into_iter().map(one_line).collect()
}

fn group_head(g: &Group, marks: &Marks) -> String {
    let need = match g.need {
        Urgency::Required => "required",
        Urgency::Optional => "optional",
    };
    format!("[{need}] {}", plan::action(g, marks))
}

fn ms_vol(detail: &str, marks: &Marks) -> String {
    match detail.split_once(" ms after") {
        Some((head, tail)) => match head.rsplit_once(' ') {
            Some((pre, n)) => format!("{pre} {} ms after{tail}", (marks.vol)(n.to_string())),
            None => detail.to_string(),
        },
        None => detail.to_string(),
    }
}

/// ` [package NAME VERSION, …]`: what the package database told of a
/// file: the version installed now, and the one the process runs (dpkg's
/// log) or whether the version installed now came after it started (rpm's
/// install time).
fn package_text(p: &Package, marks: &Marks) -> String {
    let mut s = format!(" [package {}", p.name);
    if let Some(v) = &p.version {
        s.push_str(&format!(" {v}"));
    }
    if p.manager == Manager::Rpm {
        s.push_str(" (rpm)");
    }
    if let Some(v) = &p.upgraded_from {
        s.push_str(&format!(", upgraded from {v}"));
    }
    if let Some(after) = p.installed_after_start {
        let when = p.installed_at.clone().unwrap_or_default();
        s.push_str(&if after {
            format!(
                ", installed {} after the process started: it runs an earlier version",
                (marks.vol)(when)
            )
        } else {
            format!(
                ", installed {} before the process started",
                (marks.vol)(when)
            )
        });
    }
    s.push(']');
    s
}

/// The summary line.
pub fn summary(r: &StaleReport, marks: &Marks) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = format!(
        "{} a restart, {} (same content on disk); {} scanned",
        plural(r.required, "process needs", "processes need"),
        plural(r.optional, "process may have one", "processes may have one"),
        plural(r.scanned, "process", "processes"),
    );
    if r.unreadable.is_empty() {
        s.push_str(", none unreadable");
    }
    if r.excluded_processes > 0 {
        s.push_str(&format!(
            ", {} left out by --exclude",
            (marks.vol)(plural(r.excluded_processes, "process", "processes"))
        ));
    }
    for why in [Unread::AnotherUser, Unread::Refused] {
        let these: Vec<&str> = r
            .unreadable
            .iter()
            .filter(|u| u.reason == why)
            .map(|u| u.command.as_str())
            .collect();
        if these.is_empty() {
            continue;
        }
        s.push_str(&format!(
            ", {} unreadable ({}: {})",
            (marks.vol)(these.len().to_string()),
            unread_word(why),
            (marks.vol)(names_counted(&these))
        ));
    }
    let mut left: Vec<String> = r
        .excluded
        .iter()
        .map(|e| format!("{} {}", e.mappings, e.kind))
        .collect();
    if r.data_files > 0 {
        left.push(format!("{} data files", r.data_files));
    }
    if !left.is_empty() {
        s.push_str(&format!(
            "; not checked: {} (pseudo-files and data: no code on disk to compare)",
            (marks.vol)(left.join(", "))
        ));
    }
    if r.unchecked_files > 0 {
        s.push_str(&format!(
            "; {} in {} not judged (listed above)",
            plural(r.unchecked_files, "file", "files"),
            plural(r.unchecked.len(), "process", "processes"),
        ));
    }
    s
}
