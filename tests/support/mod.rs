//! What every finding test does: run the experiment, fail with everything it
//! saw unless it is Confirmed, and check that the lab sheet and the /proc
//! snapshot still show what the experiment shows.

use swaplab::findings::{self, Finding};
use swaplab::lab::Verdict;
use swaplab::report::{self, Outcome};
use swaplab::sheets;

fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The finding a test proves, from its name (`l04_…` → L04); the name must be
/// the one the finding's definition gives.
fn finding_of(test: &str) -> &'static Finding {
    let id = test.split('_').next().unwrap_or_default();
    let f = findings::find(id).unwrap_or_else(|| panic!("no finding {id} for test {test}"));
    assert_eq!(
        test,
        f.test_name(),
        "the test for {} must be named after its definition in src/findings.rs",
        f.id
    );
    f
}

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

/// Runs the finding the test is named after and judges it.
pub fn prove(test: &str) {
    let f = finding_of(test);
    let o = report::run(f, None);
    match &o.verdict {
        Verdict::Confirmed => {}
        Verdict::Skipped { reason, enable } => {
            let msg = format!("{}: Skipped: {reason}\n  to run it: {enable}", f.id);
            if on_ci() {
                panic!("{msg}\n(on CI every finding must run)");
            }
            eprintln!("{msg}");
            return;
        }
        Verdict::Refuted { .. } | Verdict::Error { .. } => panic!("{}", explain(f, &o)),
    }
    check_sheet(f, &o);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!("{}: what /proc showed (redacted)", f.id));
    settings.bind(|| {
        insta::assert_snapshot!(format!("{}_proc", f.id), o.evidence.join("\n"));
    });
}

/// The sheet's transcript must be the experiment's redacted transcript.
fn check_sheet(f: &Finding, o: &Outcome) {
    let path = sheets::sheet_path(f);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} has no lab sheet at {}: {e}", f.id, path.display()));
    let shown = sheets::transcript_in(&text).unwrap_or_else(|| {
        panic!(
            "{} has no transcript block (between `{}` and `{}`)",
            path.display(),
            sheets::BEGIN,
            sheets::END
        )
    });
    if shown == o.redacted {
        return;
    }
    if sheets::blessing() && !on_ci() {
        let new = sheets::with_transcript(&text, &o.redacted).expect("block found above");
        std::fs::write(&path, new).expect("write the sheet");
        eprintln!("{}: transcript refreshed", path.display());
        return;
    }
    let diff: Vec<String> = (0..shown.len().max(o.redacted.len()))
        .filter_map(|i| {
            let (a, b) = (shown.get(i), o.redacted.get(i));
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
    panic!(
        "the lab sheet {} no longer shows what {} shows; if the change is right, refresh it \
         with `SWAPLAB_BLESS=1 cargo test {}`\n{}",
        path.display(),
        f.id,
        f.test_name(),
        diff.join("\n")
    );
}
