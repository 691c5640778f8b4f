//! Proving findings in a `cargo test`, swaplab's own and anyone else's: run
//! the finding on every C library it runs on here, fail with everything it
//! saw unless it is Confirmed, and check that its lab sheet and its /proc
//! snapshot still show what the experiment shows (glibc's block, and
//! musl's where it differs).
//!
//! # Getting started
//!
//! A finding ([`crate::finding`]) is proved by one test, named
//! after it ([`Finding::test_name`]), so that `cargo test x01` runs exactly
//! it:
//!
//! ```no_run
//! # use swaplab_harness::finding::Finding;
//! # static X01: Finding = Finding { id: "X01", slug: "", claim: "", source: "",
//! #     steps: &[], experiment: |_| Ok(()), scope: swaplab_harness::finding::Scope::Host,
//! #     ..Finding::DEFAULTS };
//! use swaplab_harness::prove::Proof;
//!
//! #[test]
//! fn x01_a_removed_library_stays_mapped_marked_deleted() {
//!     // the lab sheet `examples/experiments/X01.md`, the snapshot
//!     // `examples/snapshots/X01_proc.snap`
//!     let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
//!     Proof::new(here.join("experiments"), here.join("snapshots")).prove(&X01);
//! }
//! ```
//!
//! `examples/own_finding.rs` is a whole finding proved this way
//! (docs/writing-a-finding.md).
//!
//! # What is checked against what
//!
//! - The lab sheet `ID.md` is prose of one's own around a transcript block:
//!   the lines from [`sheets::BEGIN`] to [`sheets::END`] must be the
//!   experiment's redacted transcript (musl's own block, where the finding
//!   is [`Scope::PerLibc`], starts with [`sheets::begin`]`("musl")`).
//! - The snapshot `ID_proc.snap` (`ID_musl_proc.snap`) holds the /proc
//!   lines the experiment showed with [`crate::lab::Lab::proof`],
//!   redacted; insta keeps it.
//!
//! # Workflow
//!
//! A new sheet starts as prose and the two markers; a deliberate change
//! (or the first run) is written into sheets and snapshots with
//!
//! ```console
//! $ SWAPLAB_BLESS=1 cargo test x01
//! ```
//!
//! (which also has insta write the snapshots in place), and reviewed with
//! `git diff`. On CI (`CI` set) neither is ever written,
//! and a finding that is Skipped, n/a by its experiment's own word, or
//! Confirmed in part fails unless `SWAPLAB_ALLOW_SKIP` names it.

use std::path::{Path, PathBuf};

use crate::ci::{may_skip, on_ci};
use crate::finding::{Finding, Scope};
use crate::lab::Verdict;
use crate::report::{run_all, Outcome};
use crate::runtime::{Libc, Runtime};
use crate::sheets;

/// Where a project keeps what its findings are checked against.
pub struct Proof {
    /// The lab sheets (`ID.md`).
    sheets: PathBuf,
    /// The /proc snapshots (`ID_proc.snap`), kept by insta.
    snapshots: PathBuf,
}

impl Proof {
    /// The project at `root`: sheets in `experiments/`, snapshots in
    /// `tests/snapshots/`.
    pub fn for_project(root: impl AsRef<Path>) -> Proof {
        let root = root.as_ref();
        Proof::new(root.join("experiments"), root.join("tests/snapshots"))
    }

    /// Sheets and snapshots in folders of one's own.
    pub fn new(sheets: impl Into<PathBuf>, snapshots: impl Into<PathBuf>) -> Proof {
        Proof {
            sheets: sheets.into(),
            snapshots: snapshots.into(),
        }
    }

    /// Runs `f` on every C library it runs on here (the host's, and musl's
    /// where `musl-gcc` built the C twins) and judges each: Refuted or Error
    /// panics; Skipped, n/a by its experiment's own word
    /// ([`crate::lab::Lab::not_applicable`]) and Confirmed in part
    /// ([`crate::lab::Lab::show_unjudged`]) panic on CI only
    /// (unless `SWAPLAB_ALLOW_SKIP` lists it), and otherwise say why on
    /// stderr.
    pub fn prove(&self, f: &Finding) {
        let columns = Runtime::available();
        let outcomes = run_all(&[f], &columns, |_, _| None, |_| {});
        let inapplicable = |o: &Outcome| {
            matches!(
                o.verdict,
                Verdict::NotApplicable {
                    declared: false,
                    ..
                }
            )
        };
        if outcomes.iter().all(inapplicable) && columns.iter().all(|c| c.is_ok()) {
            // Nothing ran and nothing is missing: the scope excludes every
            // column this machine has (a glibc-only finding on musl).
            let columns: Vec<&str> = outcomes.iter().map(|o| o.runtime.as_str()).collect();
            let reason = format!(
                "its scope ({:?}) takes none of this machine's columns ({})",
                f.scope,
                columns.join(", ")
            );
            return skipped(f, "all", &reason, "run it where its C library is");
        }
        for (column, o) in columns.iter().zip(&outcomes) {
            match column {
                Err(u) if f.concerns(u.libc) => skipped(f, &u.name, &u.reason, &u.enable),
                Err(_) => {}
                Ok(rt) => self.judge(f, rt, o),
            }
        }
    }

    fn judge(&self, f: &Finding, rt: &Runtime, o: &Outcome) {
        if let Some(why) = o.not_fully_judged() {
            // Its lab sheet shows the claim judged in full: nothing to
            // compare a part with.
            let note = "its lab sheet and snapshot are not compared with this run";
            return excused(f, &rt.name, &format!("{}: {why}\n  ({note})", o.word()));
        }
        match &o.verdict {
            Verdict::Confirmed => {}
            Verdict::Skipped { reason, enable } => return skipped(f, &rt.name, reason, enable),
            Verdict::NotApplicable { .. } => return,
            Verdict::Refuted { .. } | Verdict::Error { .. } => {
                panic!("[on {}]\n{}", rt.label(), explain(f, o))
            }
        }
        let Some(block) = block_for(f, rt) else {
            return;
        };
        self.check_sheet(f, o, block);
        self.check_snapshot(f, rt, o, block);
    }

    /// The /proc lines must be the ones the snapshot holds.
    fn check_snapshot(&self, f: &Finding, rt: &Runtime, o: &Outcome, block: &str) {
        let name = if block.is_empty() {
            format!("{}_proc", f.id)
        } else {
            format!("{}_{block}_proc", f.id)
        };
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(&self.snapshots);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_description(format!(
            "{} on {}: what /proc showed (redacted)",
            f.id,
            rt.libc.name()
        ));
        bless_snapshots();
        settings.bind(|| {
            insta::assert_snapshot!(name, o.evidence.join("\n"));
        });
    }

    /// The sheet's transcript must be the experiment's redacted transcript.
    /// Blessing also fills a block that has only its two markers, so a new
    /// sheet starts as prose and the markers.
    fn check_sheet(&self, f: &Finding, o: &Outcome, block: &str) {
        let path = sheets::sheet_in(&self.sheets, f);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            let help = how_to_start(f, block);
            panic!(
                "{} has no lab sheet at {}: {e}\n{help}",
                f.id,
                path.display()
            )
        });
        let no_block = || -> ! {
            let help = how_to_start(f, block);
            panic!("{} has no transcript block\n{help}", path.display())
        };
        let shown = sheets::transcript_in_block(&text, block);
        if shown.as_ref() == Some(&o.redacted) {
            return;
        }
        if sheets::blessing() {
            let new = sheets::with_transcript_block(&text, block, &o.redacted)
                .unwrap_or_else(|| no_block());
            std::fs::write(&path, new).expect("write the sheet");
            eprintln!("{}: transcript refreshed", path.display());
            return;
        }
        let shown = shown.unwrap_or_else(|| no_block());
        panic!(
            "the lab sheet {} no longer shows what {} shows; if the change is right, refresh it \
             with `SWAPLAB_BLESS=1 cargo test {}`\n{}",
            path.display(),
            f.id,
            f.test_name(),
            first_differences(&shown, &o.redacted)
        );
    }
}

/// Blessing writes the snapshots too: insta has no setting for it, only
/// `INSTA_UPDATE`, which it reads once, at its first assertion. So that
/// `SWAPLAB_BLESS=1` is the one switch, it is set here, before any (an
/// `INSTA_UPDATE` of one's own wins).
fn bless_snapshots() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if sheets::blessing() && std::env::var_os("INSTA_UPDATE").is_none_or(|v| v.is_empty()) {
            // Rust's own readers of the environment hold its lock; nothing
            // else reads INSTA_UPDATE.
            std::env::set_var("INSTA_UPDATE", "always");
        }
    });
}

/// What a sheet without its transcript block needs: the two markers, which
/// blessing then fills.
fn how_to_start(f: &Finding, block: &str) -> String {
    format!(
        "put the transcript markers where the transcript goes:\n\n{}\n{}\n\nthen fill the block \
         with `SWAPLAB_BLESS=1 cargo test {}`",
        sheets::begin(block),
        sheets::END,
        f.test_name()
    )
}

/// Everything a failed run saw, for the test's panic message.
fn explain(f: &Finding, o: &Outcome) -> String {
    let checks: Vec<String> = o
        .checks
        .iter()
        .map(|c| {
            if c.ok {
                format!("  ok   {}", c.what)
            } else {
                format!("  FAIL {} (saw: {})", c.what, c.saw)
            }
        })
        .collect();
    format!(
        "{}: {}\nclaim: {}\nverdict: {:?}\nchecks:\n{}\ntranscript:\n  {}",
        f.id,
        f.test_name(),
        f.claim,
        o.verdict,
        checks.join("\n"),
        o.transcript.join("\n  ")
    )
}

fn skipped(f: &Finding, column: &str, reason: &str, enable: &str) {
    excused(
        f,
        column,
        &format!("Skipped: {reason}\n  to run it: {enable}"),
    );
}

/// A finding not judged in full on `column` (Skipped, n/a by its own
/// experiment's word, confirmed in part): on CI a failure unless
/// `SWAPLAB_ALLOW_SKIP` names it or the column; elsewhere `what` goes to
/// stderr.
fn excused(f: &Finding, column: &str, what: &str) {
    let msg = format!("{} [{column}]: {what}", f.id);
    if on_ci() && !may_skip(f.id) && !may_skip(column) {
        panic!("{msg}\n(on CI every finding must run and be judged in full; SWAPLAB_ALLOW_SKIP lists exceptions)");
    }
    eprintln!("{msg}");
}

/// The sheet block (and snapshot suffix) that shows a run on `rt`: glibc's
/// is the default; musl's exists where musl's expectation differs.
fn block_for(f: &Finding, rt: &Runtime) -> Option<&'static str> {
    match (rt.libc, f.scope) {
        (Libc::Glibc, _) if !rt.twins => Some(""),
        (Libc::Musl, Scope::PerLibc | Scope::Only(_)) => Some("musl"),
        _ => None,
    }
}

/// The first ten lines where the sheet and the run differ.
fn first_differences(shown: &[String], now: &[String]) -> String {
    let diff: Vec<String> = (0..shown.len().max(now.len()))
        .filter_map(|i| {
            let (a, b) = (shown.get(i), now.get(i));
            (a != b).then(|| {
                format!(
                    "line {}:\n  sheet: {}\n  now:   {}",
                    i + 1,
                    a.map(String::as_str).unwrap_or("(none)"),
                    b.map(String::as_str).unwrap_or("(none)")
                )
            })
        })
        .take(10)
        .collect();
    diff.join("\n")
}
