//! `swaplab stale --openmetrics`: the report as OpenMetrics text, for
//! Prometheus' node-exporter textfile collector (the way restart-needed
//! state usually reaches dashboards and alerts).
//!
//! Every family is a gauge, declared by `# HELP` and `# TYPE` before its
//! samples, and the text ends with `# EOF`: that is both OpenMetrics and
//! the older Prometheus text format that node-exporter's textfile
//! collector parses (to it `# EOF` is a comment). Label values escape
//! backslash, double quote and newline, as both specify: a process names
//! itself, and must not forge a sample.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::kernel::KernelStatus;
use crate::stale::{StaleReport, Unread};

/// The report (and the kernel's status, when known) as OpenMetrics text,
/// `# EOF` and a newline at the end.
pub fn render(r: &StaleReport, kernel: Option<&KernelStatus>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "swaplab_stale_processes",
        "Processes that run code no longer on disk, by whether a restart is needed.",
        &[
            (vec![("need", "required".into())], r.required as f64),
            (vec![("need", "optional".into())], r.optional as f64),
        ],
    );
    let mut per_process = Vec::new();
    for p in &r.processes {
        // One sample per process and reason: a label set appears once.
        for (reason, files) in by_reason(p.files.iter().map(|f| f.reason)) {
            per_process.push((
                vec![
                    ("pid", p.pid.to_string()),
                    ("command", p.command.clone()),
                    ("user", p.user.clone()),
                    ("need", json_name(p.need)),
                    ("reason", reason),
                ],
                files as f64,
            ));
        }
    }
    family(
        &mut out,
        "swaplab_stale_process",
        "Files a stale process runs that are no longer on disk, by reason (one sample per process and reason).",
        &per_process,
    );
    family(
        &mut out,
        "swaplab_stale_scanned_processes",
        "Processes whose mappings were read.",
        &[(vec![], r.scanned as f64)],
    );
    family(
        &mut out,
        "swaplab_stale_excluded_processes",
        "Processes --exclude left out, not judged.",
        &[(vec![], r.excluded_processes as f64)],
    );
    // Every reason, 0 included: an alert on it needs the series.
    let unread: Vec<Sample> = [Unread::AnotherUser, Unread::Refused]
        .into_iter()
        .map(|why| {
            let n = r.unreadable.iter().filter(|u| u.reason == why).count();
            (vec![("reason", json_name(why))], n as f64)
        })
        .collect();
    family(
        &mut out,
        "swaplab_stale_unreadable_processes",
        "Processes whose mappings could not be read, by reason (another user's, unless root; refused even to root or its own user).",
        &unread,
    );
    let mut unchecked = Vec::new();
    for p in &r.unchecked {
        for (reason, files) in by_reason(p.files.iter().map(|f| f.reason)) {
            unchecked.push((
                vec![
                    ("pid", p.pid.to_string()),
                    ("command", p.command.clone()),
                    ("reason", reason),
                ],
                files as f64,
            ));
        }
    }
    family(
        &mut out,
        "swaplab_stale_unchecked_files",
        "Files mapped as code that could not be judged, in every process (alert on this: a restart may be needed that nobody can tell).",
        &[(vec![], r.unchecked_files as f64)],
    );
    family(
        &mut out,
        "swaplab_stale_unchecked_process",
        "Files a process maps as code that could not be judged, by reason (one sample per process and reason): it may need a restart that nobody can tell.",
        &unchecked,
    );
    if let Some(k) = kernel {
        family(
            &mut out,
            "swaplab_kernel_outdated",
            "1 when a newer kernel than the running one is installed (a reboot runs it).",
            &[(
                vec![
                    ("running", k.running.clone()),
                    ("newest_installed", k.newest_installed.clone()),
                ],
                f64::from(u8::from(k.outdated)),
            )],
        );
    }
    out.push_str("# EOF\n");
    out
}

/// How many of `reasons` there are of each, by its name in `--json`.
fn by_reason<R: serde::Serialize>(reasons: impl Iterator<Item = R>) -> BTreeMap<String, usize> {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *n.entry(json_name(r)).or_default() += 1;
    }
    n
}

/// A value's name in `--json` (`required`, `modified-in-place`), so both
/// outputs name things alike.
fn json_name(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("a unit variant serialises as a string, not {other:?}"),
    }
}

type Sample<'a> = (Vec<(&'a str, String)>, f64);

/// A gauge family: its `# HELP`, `# TYPE` and samples.
fn family(out: &mut String, name: &str, help: &str, samples: &[Sample]) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// A label value as OpenMetrics writes it: `\\`, `\"` and `\n`.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `# HELP` text: `\\` and `\n` (a quote needs no escape there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        assert_eq!(escape_label(r"\n"), r"\\n");
    }
}
