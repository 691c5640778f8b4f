//! What every finding test does: run the experiment on every C library it
//! runs on here, fail with everything it saw unless it is Confirmed, and
//! check that the lab sheet and the /proc snapshot still show what the
//! experiment shows (glibc's block, and musl's where it differs).

use swaplab::findings::{self, Finding, Scope};
use swaplab::harness::lab::Verdict;
use swaplab::harness::report::{self, Outcome};
use swaplab::harness::runtime::{Libc, Runtime};
use swaplab::harness::sheets;

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

/// Runs the finding the test is named after on every C library it runs on
/// here (the host's, and musl's where `musl-gcc` built the C twins) and
/// judges each: Refuted or Error fails; Skipped fails on CI only.
pub fn prove(test: &str) {
    let f = finding_of(test);
    for column in Runtime::available() {
        match column {
            Err(u) => {
                let concerned = match f.scope {
                    Scope::AnyLibc | Scope::PerLibc => true,
                    Scope::Only(l) => l == u.libc,
                    Scope::Host => false,
                };
                if concerned {
                    skipped(f, &u.name, &u.reason, &u.enable);
                }
            }
            Ok(rt) => {
                if f.runs_on(&rt).is_ok() {
                    judge(f, &rt, &report::run_on(f, &rt, None));
                }
            }
        }
    }
}

fn skipped(f: &Finding, column: &str, reason: &str, enable: &str) {
    let msg = format!(
        "{} [{column}]: Skipped: {reason}\n  to run it: {enable}",
        f.id
    );
    if on_ci() && !report::may_skip(f.id) && !report::may_skip(column) {
        panic!("{msg}\n(on CI every finding must run; SWAPLAB_ALLOW_SKIP lists exceptions)");
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

fn judge(f: &Finding, rt: &Runtime, o: &Outcome) {
    match &o.verdict {
        Verdict::Confirmed => {}
        Verdict::Skipped { reason, enable } => return skipped(f, &rt.name, reason, enable),
        Verdict::NotApplicable { reason } => panic!("{}: n/a on {}: {reason}", f.id, rt.name),
        Verdict::Refuted { .. } | Verdict::Error { .. } => {
            panic!("[on {}]\n{}", rt.label(), explain(f, o))
        }
    }
    let Some(block) = block_for(f, rt) else {
        return;
    };
    check_sheet(f, o, block);
    let name = if block.is_empty() {
        format!("{}_proc", f.id)
    } else {
        format!("{}_{block}_proc", f.id)
    };
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!(
        "{} on {}: what /proc showed (redacted)",
        f.id,
        rt.libc.name()
    ));
    settings.bind(|| {
        insta::assert_snapshot!(name, o.evidence.join("\n"));
    });
}

/// The sheet's transcript must be the experiment's redacted transcript.
fn check_sheet(f: &Finding, o: &Outcome, block: &str) {
    let path = sheets::sheet_path(f);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} has no lab sheet at {}: {e}", f.id, path.display()));
    let shown = sheets::transcript_in_block(&text, block).unwrap_or_else(|| {
        panic!(
            "{} has no transcript block (between `{}` and `{}`)",
            path.display(),
            sheets::begin(block),
            sheets::END
        )
    });
    if shown == o.redacted {
        return;
    }
    if sheets::blessing() && !on_ci() {
        let new =
            sheets::with_transcript_block(&text, block, &o.redacted).expect("block found above");
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
