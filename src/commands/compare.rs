//! `swaplab compare`: the platform × finding table of several reports.
//!
//! Reports are read leniently (as JSON values), so a report written by
//! another swaplab version still compares: what a cell needs is the
//! finding's ID, its column and its verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::commands::{judged, Done, Exit};
use crate::findings;
use crate::harness::finding::Scope;

/// One report file, parsed.
pub struct Loaded {
    pub path: PathBuf,
    pub json: Value,
}

/// Print the platform × finding table (Markdown) of `swaplab run --json`
/// reports, marking every cell that differs from the expectation.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Report files (`swaplab run --all --json > report.json`).
    #[arg(value_name = "REPORT", required = true)]
    pub reports: Vec<PathBuf>,
}

const HELP: &str = "\
Each report gives one column per C library it ran on (the host's, musl's,
a Debian root's). A cell is the verdict, with the C library whose expectation
held where the findings differ by C library (L06-L10). Refuted and Error
cells are marked; the findings that behave differently across the columns
are named under the table.

Exit status: 0 every cell as expected, 1 some cell marked, 2 bad input.

Example:
  swaplab run --all --json > host.json
  swaplab compare host.json swaplab-matrix/*.json";

impl Args {
    /// Prints the table of the reports given; fails when a cell is marked.
    pub fn run(self) -> Done {
        print(&self.reports, "compare")
    }
}

/// Prints the table of `paths` (for the command `who`): fails when a cell
/// is marked, or with bad input when a report cannot be read.
pub fn print(paths: &[PathBuf], who: &str) -> Done {
    let reports = load(paths).map_err(|e| Exit::BadInput(format!("swaplab {who}: {e:#}")))?;
    let c = Comparison::of(&reports);
    print!("{}", c.markdown());
    let unknown: Vec<&String> = c
        .ids
        .iter()
        .filter(|id| findings::find(id).is_none())
        .collect();
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "swaplab {who}: findings this swaplab does not know, with nothing to expect of them: {}",
            list.join(", ")
        );
    }
    judged(c.marked() > 0)
}

/// Reads every report; fails on a missing file, one that is not a report,
/// and a report given twice (its columns would be compared with
/// themselves, and a table of one machine would pass for two).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Loaded>> {
    let mut out: Vec<Loaded> = Vec::new();
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in paths {
        let file = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if let Some((first, _)) = files.iter().find(|(_, f)| *f == file) {
            bail!(
                "{} is given twice (first as {}): each report makes its own columns",
                p.display(),
                first.display()
            );
        }
        files.push((p.clone(), file));
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let json: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not JSON (write reports with `swaplab run --all --json > FILE`)",
                p.display()
            )
        })?;
        judgeable(&json).with_context(|| {
            format!(
                "{} cannot be judged (write reports with `swaplab run --all --json > FILE`)",
                p.display()
            )
        })?;
        if let Some(same) = out.iter().find(|l| l.json == json) {
            bail!(
                "{} and {} hold the same report: its columns would be compared with themselves",
                same.path.display(),
                p.display()
            );
        }
        out.push(Loaded {
            path: p.clone(),
            json,
        });
    }
    Ok(out)
}

/// The verdicts a report may hold (`Verdict`'s names in JSON).
const VERDICTS: [&str; 5] = ["Confirmed", "Refuted", "Skipped", "NotApplicable", "Error"];

/// A report can be judged when it lists at least one finding, every entry
/// names a finding and one of the known verdicts, and no column or finding
/// in a column is listed twice (one cell would hide the other): a report
/// that says nothing, or something unknown, must not compare as "as
/// expected".
fn judgeable(json: &Value) -> Result<()> {
    let Some(findings) = json.get("findings").and_then(Value::as_array) else {
        bail!("it is not a swaplab run report (no `findings` list)");
    };
    if findings.is_empty() {
        bail!("its `findings` list is empty");
    }
    for (i, o) in findings.iter().enumerate() {
        let id = text(o, "id");
        if id.is_empty() {
            bail!("finding #{} has no `id`", i + 1);
        }
        let verdict = text(o, "verdict");
        if !VERDICTS.contains(&verdict.as_str()) {
            bail!(
                "{id} has the verdict {verdict:?}, which is none of {}",
                VERDICTS.join(", ")
            );
        }
    }
    let columns = json.get("columns").and_then(Value::as_array);
    let mut names = BTreeSet::new();
    for c in columns.into_iter().flatten() {
        let name = text(c, "name");
        if !names.insert(name.clone()) {
            bail!("its column {name:?} is listed twice");
        }
    }
    let mut cells = BTreeSet::new();
    for o in findings {
        let (id, runtime) = (text(o, "id"), text(o, "runtime"));
        if !cells.insert((id.clone(), runtime.clone())) {
            bail!("{id} is listed twice in its column {runtime:?}");
        }
    }
    Ok(())
}

/// One column of the table: one C library on one machine.
#[derive(Clone, Debug)]
pub struct Col {
    /// `Debian 12 (bookworm) · glibc 2.36`.
    pub title: String,
    /// Kernel, loader and the report it came from.
    pub detail: String,
    /// The column's key inside its report.
    runtime: String,
    report: usize,
    /// The kernel it ran on.
    kernel: String,
    /// The filesystem its sandboxes were on (`ext4`), empty when the report
    /// does not say.
    filesystem: String,
}

/// One cell: a finding in a column.
#[derive(Clone, Debug)]
pub struct Cell {
    pub verdict: String,
    /// The C library whose expectation was checked.
    pub libc: String,
    /// Why it was skipped or refuted, shortly.
    pub why: String,
    /// Whether this swaplab knows the finding: of one it does not know
    /// (a newer swaplab's report) nothing is expected.
    pub known: bool,
    /// The parts of the claim shown, not judged, and why (`part; part
    /// (reason)`); empty when it was judged in full.
    pub shown: String,
    /// An n/a its experiment declared (the claim could have been judged
    /// here), not its scope's.
    pub declared: bool,
}

impl Cell {
    /// Whether the cell differs from the expectation: a refutation, a
    /// harness error, or a finding this swaplab does not know (there is no
    /// expectation to be as).
    pub fn marked(&self) -> bool {
        !self.known || matches!(self.verdict.as_str(), "Refuted" | "Error")
    }

    /// What the platform showed, for telling columns apart: the verdict, and
    /// for a finding whose expectation depends on the C library, which one
    /// held.
    fn behaviour(&self, id: &str) -> Option<String> {
        let only = findings::find(id).is_some_and(|f| matches!(f.scope, Scope::Only(_)));
        match self.verdict.as_str() {
            "Skipped" => None,
            // Not run: a column without the programs says nothing.
            "n/a" if !only && !self.declared => None,
            "n/a" if self.declared => Some("n/a: not judged here".into()),
            "n/a" => Some("not this C library's behaviour".into()),
            "Confirmed" if !self.shown.is_empty() => Some("Confirmed in part".into()),
            "Confirmed" if per_libc(id) => Some(format!("as on {}", self.libc)),
            v => Some(v.to_string()),
        }
    }
}

pub struct Comparison {
    pub cols: Vec<Col>,
    /// Finding IDs, in the order of the registry, then any others.
    pub ids: Vec<String>,
    pub cells: BTreeMap<(String, usize), Cell>,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn short_os(os: &str) -> String {
    os.replace("GNU/Linux ", "")
}

fn per_libc(id: &str) -> bool {
    findings::find(id).is_some_and(|f| matches!(f.scope, Scope::PerLibc | Scope::Only(_)))
}

impl Comparison {
    pub fn of(reports: &[Loaded]) -> Comparison {
        let mut cols = Vec::new();
        for (i, r) in reports.iter().enumerate() {
            let platform = r.json.get("platform").cloned().unwrap_or(Value::Null);
            let file = r
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut listed: Vec<Value> = r
                .json
                .get("columns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if listed.is_empty() {
                // A report from before columns: one column, the host's.
                listed.push(serde_json::json!({
                    "name": "host",
                    "libc": text(&platform, "libc"),
                    "libc_version": text(&platform, "libc_version"),
                    "loader": text(&platform, "loader"),
                    "os": text(&platform, "os"),
                }));
            }
            for c in listed {
                let os = match text(&c, "os") {
                    o if o.is_empty() => text(&platform, "os"),
                    o => o,
                };
                let missing = text(&c, "unavailable");
                let kernel = match text(&c, "kernel") {
                    k if k.is_empty() => text(&platform, "kernel"),
                    k => k,
                };
                let libc = format!("{} {}", text(&c, "libc"), text(&c, "libc_version"));
                let fs = platform.get("filesystem").cloned().unwrap_or(Value::Null);
                let sandboxes = match text(&fs, "type") {
                    t if t.is_empty() => String::new(),
                    t => format!(
                        ", sandboxes on {t} (`{}` at `{}`)",
                        text(&fs, "source"),
                        text(&fs, "mount_point")
                    ),
                };
                cols.push(Col {
                    title: format!("{} · {}", short_os(&os), libc.trim()),
                    detail: if missing.is_empty() {
                        format!(
                            "kernel {} {}, loader `{}`{sandboxes} ({})",
                            kernel,
                            text(&platform, "arch"),
                            text(&c, "loader"),
                            file
                        )
                    } else {
                        format!("not run: {missing} ({file})")
                    },
                    runtime: text(&c, "name"),
                    report: i,
                    kernel,
                    filesystem: text(&fs, "type"),
                });
            }
        }
        // Columns on several kernels (matrix --kernel) are told apart by it.
        let kernels: BTreeSet<&String> = cols.iter().map(|c| &c.kernel).collect();
        if kernels.len() > 1 {
            for c in &mut cols {
                c.title = format!("{} · Linux {}", c.title, c.kernel);
            }
        }
        // And columns on several filesystems (matrix --fs) by theirs.
        let filesystems: BTreeSet<&String> = cols.iter().map(|c| &c.filesystem).collect();
        if filesystems.len() > 1 {
            for c in cols.iter_mut().filter(|c| !c.filesystem.is_empty()) {
                c.title = format!("{} · {}", c.title, c.filesystem);
            }
        }
        // Columns that still look alike (the host's ext4 and a fresh one)
        // are told apart by their names.
        let titles: Vec<String> = cols.iter().map(|c| c.title.clone()).collect();
        for c in &mut cols {
            if titles.iter().filter(|t| **t == c.title).count() > 1 {
                c.title = format!("{} ({})", c.title, c.runtime);
            }
        }
        let mut cells = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (ci, col) in cols.iter().enumerate() {
            let findings = reports[col.report]
                .json
                .get("findings")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for o in findings {
                let runtime = match text(&o, "runtime") {
                    r if r.is_empty() => "host".to_string(),
                    r => r,
                };
                if runtime != col.runtime {
                    continue;
                }
                let id = text(&o, "id");
                let verdict = text(&o, "verdict");
                let why = match verdict.as_str() {
                    "Skipped" => text(&o, "reason"),
                    "NotApplicable" => text(&o, "reason"),
                    "Error" => text(&o, "message"),
                    "Refuted" => o
                        .get("saw")
                        .and_then(Value::as_array)
                        .and_then(|s| s.first())
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    _ => String::new(),
                };
                seen.insert(id.clone());
                let known = findings::find(&id).is_some();
                let declared = o.get("declared").and_then(Value::as_bool) == Some(true);
                cells.insert(
                    (id, ci),
                    Cell {
                        verdict: if verdict == "NotApplicable" {
                            "n/a".into()
                        } else {
                            verdict
                        },
                        libc: text(&o, "libc"),
                        why,
                        known,
                        shown: shown_parts(&o),
                        declared,
                    },
                );
            }
        }
        let mut ids: Vec<String> = findings::all()
            .map(|f| f.id.to_string())
            .filter(|id| seen.contains(id))
            .collect();
        ids.extend(seen.into_iter().filter(|id| findings::find(id).is_none()));
        Comparison { cols, ids, cells }
    }

    /// How many cells differ from the expectation.
    pub fn marked(&self) -> usize {
        self.cells.values().filter(|c| c.marked()).count()
    }

    /// The findings whose behaviour differs between the columns that ran
    /// them, with what each column showed.
    pub fn differing(&self) -> Vec<(String, Vec<(usize, String)>)> {
        let mut out = Vec::new();
        for id in &self.ids {
            let shown: Vec<(usize, String)> = (0..self.cols.len())
                .filter_map(|ci| {
                    let c = self.cells.get(&(id.clone(), ci))?;
                    Some((ci, c.behaviour(id)?))
                })
                .collect();
            let kinds: BTreeSet<&String> = shown.iter().map(|(_, b)| b).collect();
            if kinds.len() > 1 {
                out.push((id.clone(), shown));
            }
        }
        out
    }

    /// The table, in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| finding |");
        for c in &self.cols {
            s.push_str(&format!(" {} |", c.title));
        }
        s.push_str("\n|---|");
        for _ in &self.cols {
            s.push_str("---|");
        }
        s.push('\n');
        let mut notes: Vec<String> = Vec::new();
        for id in &self.ids {
            s.push_str(&format!("| {id} |"));
            for ci in 0..self.cols.len() {
                let cell = match self.cells.get(&(id.clone(), ci)) {
                    None => " |".to_string(),
                    Some(c) => format!(" {} |", cell_text(id, ci, c, &mut notes)),
                };
                s.push_str(&cell);
            }
            s.push('\n');
        }
        s.push_str("\nColumns:\n");
        for (i, c) in self.cols.iter().enumerate() {
            s.push_str(&format!("{}. {}: {}\n", i + 1, c.title, c.detail));
        }
        if !notes.is_empty() {
            s.push_str("\nNotes:\n");
            for (i, n) in notes.iter().enumerate() {
                s.push_str(&format!("[{}] {}\n", i + 1, n.replace('|', "\\|")));
            }
        }
        let diff = self.differing();
        s.push_str("\nFindings that differ across these columns: ");
        if diff.is_empty() {
            s.push_str("none.\n");
        } else {
            s.push('\n');
            for (id, shown) in &diff {
                let by: Vec<String> = shown
                    .iter()
                    .map(|(ci, b)| format!("{}: {b}", ci + 1))
                    .collect();
                s.push_str(&format!("- {id} ({})\n", by.join("; ")));
            }
        }
        let marked = self.marked();
        s.push_str(&format!(
            "\n{marked} cell{} differ{} from the expectation.\n",
            if marked == 1 { "" } else { "s" },
            if marked == 1 { "s" } else { "" }
        ));
        s
    }
}

/// A cell as the table shows it: the verdict (marked where it differs from
/// the expectation), and the number of its note, if it has one, which goes
/// into `notes`.
fn cell_text(id: &str, ci: usize, c: &Cell, notes: &mut Vec<String>) -> String {
    let mut t = match c.verdict.as_str() {
        "Confirmed" if !c.shown.is_empty() && per_libc(id) => {
            format!("Confirmed ({}, part)", c.libc)
        }
        "Confirmed" if !c.shown.is_empty() => "Confirmed (part)".into(),
        "Confirmed" if per_libc(id) => format!("Confirmed ({})", c.libc),
        "Refuted" => "**✗ Refuted**".into(),
        "Error" => "**✗ Error**".into(),
        v => v.to_string(),
    };
    let why = if !c.known {
        t = format!("**? {t}**");
        format!(
            "{id} is not a finding this swaplab knows, so nothing is expected of it (a newer \
             swaplab's report? compare with that swaplab)"
        )
    } else if !c.shown.is_empty() {
        format!("{id} in column {}: shown, not judged: {}", ci + 1, c.shown)
    } else if (c.declared || matches!(c.verdict.as_str(), "Refuted" | "Error" | "Skipped"))
        && !c.why.is_empty()
    {
        format!(
            "{id} in column {}: {}",
            ci + 1,
            c.why.lines().next().unwrap_or_default()
        )
    } else {
        String::new()
    };
    if !why.is_empty() {
        let n = match notes.iter().position(|x| *x == why) {
            Some(n) => n + 1,
            None => {
                notes.push(why);
                notes.len()
            }
        };
        t.push_str(&format!(" [{n}]"));
    }
    t.replace('|', "\\|")
}

/// The parts of a claim an outcome shows without judging them, and why:
/// `part; part (reason)`, empty if it judged every part.
fn shown_parts(o: &Value) -> String {
    let shown = o.get("shown").and_then(Value::as_array);
    let parts: Vec<String> = shown
        .into_iter()
        .flatten()
        .map(|u| text(u, "part"))
        .collect();
    let mut reasons: Vec<String> = shown
        .into_iter()
        .flatten()
        .map(|u| text(u, "reason"))
        .collect();
    reasons.dedup();
    match parts.is_empty() {
        true => String::new(),
        false => format!("{} ({})", parts.join("; "), reasons.join("; ")),
    }
}

/// A report file's default name for a column set (`report-host.json`).
pub fn file_name(label: &str) -> String {
    format!("report-{label}.json")
}
