//! `swaplab run`: run findings on the columns asked for, narrate each
//! experiment, then print the verdicts (or the JSON report).

use std::io::Write;

use crate::commands::{first_sentence, judged, pretty, Done, Exit};
use crate::findings;
use crate::harness::finding::Finding;
use crate::harness::lab::{Sink, Verdict};
use crate::harness::platform::Platform;
use crate::harness::report::{self, Columns, Outcome, RunReport};
use crate::harness::runtime::{Runtime, Unavailable};

/// The findings named by `ids` (or every one), or an error message.
pub fn select(ids: &[String], all: bool) -> Result<Vec<&'static Finding>, String> {
    if all || ids.is_empty() {
        return Ok(findings::all().collect());
    }
    ids.iter()
        .map(|id| {
            findings::find(id).ok_or_else(|| {
                format!(
                    "unknown finding ID `{id}`; known IDs are {} (see `swaplab list`)",
                    findings::all().map(|f| f.id).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// A column's name and its C library's name.
fn name_of(c: &Result<Runtime, Unavailable>) -> (String, &'static str) {
    match c {
        Ok(r) => (r.name.clone(), r.libc.name()),
        Err(u) => (u.name.clone(), u.libc.name()),
    }
}

/// The columns `--libc` asks for (a column or a C library name; none: every
/// one here), or an error message.
pub fn columns(libc: &[String]) -> Result<Vec<Result<Runtime, Unavailable>>, String> {
    let all = Runtime::available();
    if libc.is_empty() {
        return Ok(all);
    }
    for want in libc {
        if !all.iter().any(|c| {
            let (n, l) = name_of(c);
            n == *want || l == want
        }) {
            return Err(format!(
                "--libc {want}: no such column; this machine has {}",
                all.iter()
                    .map(|c| {
                        let (n, l) = name_of(c);
                        format!("{n} ({l})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|c| {
            let (n, l) = name_of(c);
            libc.iter().any(|w| *w == n || w == l)
        })
        .collect())
}

/// Run findings and narrate each experiment, then judge it.
#[derive(clap::Args)]
pub struct Args {
    /// Finding IDs (L04, l04, ...).
    #[arg(value_name = "ID", required_unless_present = "all")]
    pub ids: Vec<String>,
    /// Run every finding.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Print a machine-readable report (JSON) on stdout instead of the
    /// narration.
    #[arg(long)]
    pub json: bool,
    /// No narration: only the verdicts.
    #[arg(long, short)]
    pub quiet: bool,
    /// Only these columns: a C library (`glibc`, `musl`) or a column
    /// name (`host`). By default every C library available here.
    #[arg(long, value_delimiter = ',', value_name = "LIBC")]
    pub libc: Vec<String>,
}

impl Args {
    /// Runs the findings asked for (or every one) on the columns `--libc`
    /// asks for: narrates each experiment (unless `--quiet` or `--json`)
    /// and prints the table of the verdicts (`--quiet`: that one table
    /// only, with a line for each verdict the table cannot explain), or
    /// only the JSON report; fails when a finding is refuted or in error.
    pub fn run(self) -> Done {
        let Args {
            ids,
            all,
            json,
            quiet,
            libc,
        } = self;
        let bad = |e: String| Exit::BadInput(format!("swaplab: {e}"));
        let selected = select(&ids, all).map_err(bad)?;
        let cols = columns(&libc).map_err(bad)?;
        let narrate = !json && !quiet;
        if !json {
            print_columns(&cols);
        }
        let live = |f: &Finding, rt: &Runtime| -> Option<Sink> {
            if !narrate {
                return None;
            }
            if f.runs_on(rt).is_ok() {
                println!("\n== {} on {}: {}", f.id, rt.label(), f.claim_for(rt.libc));
            }
            Some(Box::new(|line: &str| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "  {line}");
                let _ = out.flush();
            }))
        };
        let outcomes = report::run_all(&selected, &cols, live, |o| {
            if !json
                && cols
                    .iter()
                    .any(|c| matches!(c, Ok(r) if r.name == o.runtime))
            {
                print_verdict(o);
            }
        });
        let failed = outcomes.iter().any(|o| o.verdict.is_failure());
        if json {
            println!("{}", pretty(&RunReport::new(&cols, outcomes)));
        } else if outcomes.len() > 1 || quiet {
            print_table(&selected, &cols, &outcomes);
        }
        judged(failed)
    }
}

/// The machine, and each column: its C library, or why it cannot run.
fn print_columns(cols: &Columns) {
    println!("swaplab on {}", Platform::detect().one_line());
    for c in cols {
        match c {
            Ok(r) => println!("  column {}: {}, loader {}", r.name, r.label(), r.loader),
            Err(u) => println!(
                "  column {}: Skipped: {}\n    to run it: {}",
                u.name, u.reason, u.enable
            ),
        }
    }
}

/// What the table cannot say of a verdict, as soon as it is judged: why a
/// claim was refuted, skipped or in error, and which parts of a claim
/// confirmed in part were shown, not judged. A confirmation or an n/a has
/// nothing to add: a narrated run has shown it, and `--quiet`'s one table
/// gives it.
fn print_verdict(o: &Outcome) {
    let id = format!("{} [{}]", o.id, o.runtime);
    match &o.verdict {
        Verdict::Confirmed if !o.shown.is_empty() => {
            println!("{id}: Confirmed in part; shown, not judged:");
            for u in &o.shown {
                println!("  - {} (saw: {}; {})", u.part, u.saw, u.reason);
            }
        }
        Verdict::Confirmed | Verdict::NotApplicable { .. } => {}
        Verdict::Refuted { saw } => {
            println!("{id}: Refuted; this machine showed:");
            for s in saw {
                println!("  - {s}");
            }
        }
        Verdict::Skipped { reason, enable } => {
            println!("{id}: Skipped: {reason}\n  to run it: {enable}")
        }
        Verdict::Error { message } => println!("{id}: Error (no verdict): {message}"),
    }
}

/// The verdicts, one column per C library, and their count.
fn print_table(selected: &[&Finding], cols: &Columns, outcomes: &[Outcome]) {
    let names: Vec<String> = cols
        .iter()
        .map(|c| match c {
            Ok(r) => format!("{} ({})", r.name, r.label()),
            Err(u) => format!("{} (-)", u.name),
        })
        .collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(9).max(9);
    let mut head = format!("\n{:<4}", "ID");
    for n in &names {
        head.push_str(&format!("  {n:<width$}"));
    }
    println!("{head}  CLAIM");
    for f in selected {
        let mut row = format!("{:<4}", f.id);
        for c in cols {
            let (name, _) = name_of(c);
            let cell = outcomes
                .iter()
                .find(|o| o.id == f.id && o.runtime == name)
                .map(|o| {
                    if o.millis > 0 {
                        format!("{} {:.1} s", o.word(), o.millis as f64 / 1000.0)
                    } else {
                        o.word().to_string()
                    }
                })
                .unwrap_or_default();
            row.push_str(&format!("  {cell:<width$}"));
        }
        println!("{row}  {}", first_sentence(f.claim, 70));
    }
    let count = |w: &str| outcomes.iter().filter(|o| o.verdict.word() == w).count();
    let in_part = outcomes
        .iter()
        .filter(|o| o.word() == "Confirmed (part)")
        .count();
    println!(
        "\n{} confirmed{}, {} refuted, {} skipped, {} errors, {} not applicable",
        count("Confirmed"),
        match in_part {
            0 => String::new(),
            n => format!(" ({n} in part)"),
        },
        count("Refuted"),
        count("Skipped"),
        count("Error"),
        count("n/a")
    );
}
