//! Running findings and reporting them: the platform, each finding's verdict,
//! checks, observations and transcript, for people and for machines (JSON).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::finding::Finding;
use crate::lab::{Check, Lab, Sink, Unjudged, Verdict};
use crate::platform::{Header, Platform};
use crate::runtime::{Runtime, Unavailable};

/// One finding, run and judged.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    /// The column it ran in ([`Runtime::name`]: `host`, `musl`, ...).
    pub runtime: String,
    /// The C library the targets ran on, whose expectation was checked.
    pub libc: String,
    /// The claim as expected on that C library.
    pub claim: String,
    pub test: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    /// The parts of the claim shown, not judged (with what was seen and
    /// why): a Confirmed verdict holds for the rest only.
    pub shown: Vec<Unjudged>,
    pub observations: BTreeMap<String, Value>,
    pub transcript: Vec<String>,
    /// The transcript as the lab sheet shows it (redacted).
    #[serde(skip)]
    pub redacted: Vec<String>,
    /// The redacted lines that show /proc.
    #[serde(skip)]
    pub evidence: Vec<String>,
    pub millis: u128,
}

impl Outcome {
    /// An outcome with no run behind it yet: `verdict` and nothing seen.
    fn blank(f: &Finding, runtime: &str, libc: crate::runtime::Libc, verdict: Verdict) -> Outcome {
        Outcome {
            id: f.id.into(),
            runtime: runtime.into(),
            libc: libc.name().into(),
            claim: f.claim_for(libc).into(),
            test: f.test_name(),
            verdict,
            checks: Vec::new(),
            shown: Vec::new(),
            observations: BTreeMap::new(),
            transcript: Vec::new(),
            redacted: Vec::new(),
            evidence: Vec::new(),
            millis: 0,
        }
    }

    /// The verdict as people read it: `Confirmed (part)` where parts of
    /// the claim were shown, not judged.
    pub fn word(&self) -> &'static str {
        match self.verdict {
            Verdict::Confirmed if !self.shown.is_empty() => "Confirmed (part)",
            ref v => v.word(),
        }
    }

    /// Why the claim was not judged in full, though it could have been
    /// here: its experiment said n/a itself, or showed parts without
    /// judging them. On CI this fails the test unless `SWAPLAB_ALLOW_SKIP`
    /// names the finding ([`crate::prove`]).
    pub fn not_fully_judged(&self) -> Option<String> {
        match &self.verdict {
            Verdict::NotApplicable {
                reason,
                declared: true,
            } => Some(format!("n/a, as its experiment says: {reason}")),
            Verdict::Confirmed if !self.shown.is_empty() => {
                let parts: Vec<String> = self
                    .shown
                    .iter()
                    .map(|u| format!("{} (saw: {}; {})", u.part, u.saw, u.reason))
                    .collect();
                Some(format!(
                    "confirmed in part; shown, not judged:\n  - {}",
                    parts.join("\n  - ")
                ))
            }
            _ => None,
        }
    }
}

/// Runs one finding's experiment with its targets on `rt`, in a fresh
/// sandbox. A finding that does not run on that C library comes back as
/// NotApplicable; one whose needs this machine lacks, as Skipped (with what
/// would enable it) before anything starts.
pub fn run_on(f: &Finding, rt: &Runtime, live: Option<Sink>) -> Outcome {
    let t0 = Instant::now();
    let no_verdict = Verdict::Error {
        message: String::new(),
    };
    let mut outcome = Outcome::blank(f, &rt.name, rt.libc, no_verdict);
    if let Err(reason) = f.runs_on(rt) {
        outcome.verdict = Verdict::NotApplicable {
            reason,
            declared: false,
        };
        return outcome;
    }
    if let Err(missing) = f.ready() {
        outcome.verdict = Verdict::Skipped {
            reason: missing.reason,
            enable: missing.enable,
        };
        return outcome;
    }
    let mut lab = match Lab::on(f.id, live, rt.clone()) {
        Ok(lab) => lab,
        Err(e) => {
            outcome.verdict = Verdict::Error {
                message: format!("{e:#}"),
            };
            return outcome;
        }
    };
    let result = (f.experiment)(&mut lab);
    outcome.verdict = lab.verdict(&result);
    outcome.shown = lab.unjudged().to_vec();
    lab.say(format!("verdict: {}", outcome.word()));
    outcome.checks = lab.checks().to_vec();
    outcome.observations = lab.observations().clone();
    outcome.transcript = lab.transcript();
    outcome.redacted = lab.redacted();
    outcome.evidence = lab.redacted_evidence();
    outcome.millis = t0.elapsed().as_millis();
    outcome
}

/// A column that could not run here, every finding Skipped for one reason.
pub fn unavailable(f: &Finding, u: &Unavailable) -> Outcome {
    let skipped = Verdict::Skipped {
        reason: u.reason.clone(),
        enable: u.enable.clone(),
    };
    Outcome::blank(f, &u.name, u.libc, skipped)
}

/// One column of a report: the C library the targets ran on.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Column {
    /// `host`, `musl`, `debian-bullseye`.
    pub name: String,
    pub libc: String,
    pub libc_version: String,
    pub loader: String,
    /// The system the C library comes from.
    pub os: String,
    /// Empty when the column ran; otherwise why it could not.
    #[serde(default)]
    pub unavailable: String,
    /// The kernel it ran on (`uname -r`): a column of `matrix --kernel`
    /// runs in a guest.
    #[serde(default)]
    pub kernel: String,
}

impl Column {
    pub fn of(rt: &Runtime) -> Column {
        Column {
            name: rt.name.clone(),
            libc: rt.libc.name().into(),
            libc_version: rt.libc_version.clone(),
            loader: rt.loader.clone(),
            os: rt.os.clone(),
            unavailable: String::new(),
            kernel: crate::platform::kernel_release(),
        }
    }

    pub fn missing(u: &Unavailable) -> Column {
        Column {
            name: u.name.clone(),
            libc: u.libc.name().into(),
            libc_version: String::new(),
            loader: String::new(),
            os: String::new(),
            unavailable: u.reason.clone(),
            kernel: crate::platform::kernel_release(),
        }
    }
}

/// The columns a run may use: a runtime here, or why it is missing.
pub type Columns = [Result<Runtime, Unavailable>];

/// The one run loop, for `swaplab run`, `swaplab matrix` and the tests:
/// every finding in `selected` on every column, finding by finding. `live`
/// gives each run on a column that is here the sink its narration goes to
/// (or none); `each` sees every outcome as soon as it is judged.
pub fn run_all(
    selected: &[&Finding],
    columns: &Columns,
    mut live: impl FnMut(&Finding, &Runtime) -> Option<Sink>,
    mut each: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for f in selected {
        for c in columns {
            let o = match c {
                Err(u) => unavailable(f, u),
                Ok(rt) => run_on(f, rt, live(f, rt)),
            };
            each(&o);
            outcomes.push(o);
        }
    }
    outcomes
}

/// What `swaplab run --json` prints: the machine, its columns (one per C
/// library the targets ran on), and every finding's outcome in each.
#[derive(Debug, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub header: Header,
    pub columns: Vec<Column>,
    pub findings: Vec<Outcome>,
}

impl RunReport {
    /// The report of `findings`, run on `columns` on this machine.
    pub fn new(columns: &Columns, findings: Vec<Outcome>) -> RunReport {
        RunReport {
            header: Header::here(Platform::detect()),
            columns: columns
                .iter()
                .map(|c| match c {
                    Ok(r) => Column::of(r),
                    Err(u) => Column::missing(u),
                })
                .collect(),
            findings,
        }
    }
}
