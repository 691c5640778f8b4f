//! Running findings and reporting them: the platform, each finding's verdict,
//! checks, observations and transcript, for people and for machines (JSON).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::findings::Finding;
use crate::harness::lab::{Check, Lab, Sink, Verdict};
use crate::harness::runtime::Runtime;

/// The machine the findings were observed on.
#[derive(Clone, Debug, Serialize)]
pub struct Platform {
    /// `PRETTY_NAME` from /etc/os-release.
    pub os: String,
    pub kernel: String,
    pub arch: String,
    /// `glibc` or `musl`: the C library the targets run on.
    pub libc: String,
    pub libc_version: String,
    /// The dynamic loader mapped into this process.
    pub loader: String,
}

impl Platform {
    pub fn detect() -> Platform {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let host = Runtime::host();
        Platform {
            os: os_name(),
            kernel: field(|u| u.release()),
            arch: field(|u| u.machine()),
            libc: host.libc.name().into(),
            libc_version: host.libc_version,
            loader: host.loader,
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{}, kernel {}, {} {} ({}), loader {}",
            self.os, self.kernel, self.libc, self.libc_version, self.arch, self.loader
        )
    }
}

/// `PRETTY_NAME` from os-release (of the root at `root`, `/` for the host).
pub fn os_name_in(root: &std::path::Path) -> String {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown Linux".into())
}

/// The host's `PRETTY_NAME`.
pub fn os_name() -> String {
    os_name_in(std::path::Path::new("/"))
}

/// Whether `what` (a finding ID, a column such as `musl`, or a tool such as
/// `needrestart`) may be missing on CI: `SWAPLAB_ALLOW_SKIP` lists them,
/// comma-separated, for distributions that do not package something (the
/// workflow sets it per distribution). Elsewhere on CI every finding must run.
pub fn may_skip(what: &str) -> bool {
    std::env::var("SWAPLAB_ALLOW_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .any(|w| {
            what.eq_ignore_ascii_case(w)
                || what
                    .split_whitespace()
                    .next()
                    .is_some_and(|first| first.eq_ignore_ascii_case(w))
        })
}

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

/// Runs one finding's experiment in a fresh sandbox, on the host's C
/// library. `live` receives the transcript as it is written.
pub fn run(f: &Finding, live: Option<Sink>) -> Outcome {
    run_on(f, &Runtime::host(), live)
}

impl Outcome {
    /// An outcome with no run behind it yet: `verdict` and nothing seen.
    fn blank(
        f: &Finding,
        runtime: &str,
        libc: crate::harness::runtime::Libc,
        verdict: Verdict,
    ) -> Outcome {
        Outcome {
            id: f.id.into(),
            runtime: runtime.into(),
            libc: libc.name().into(),
            claim: f.claim_for(libc).into(),
            test: f.test_name(),
            verdict,
            checks: Vec::new(),
            observations: BTreeMap::new(),
            transcript: Vec::new(),
            redacted: Vec::new(),
            evidence: Vec::new(),
            millis: 0,
        }
    }
}

/// Runs one finding's experiment with its targets on `rt`. Findings that
/// do not run on that C library come back as NotApplicable.
pub fn run_on(f: &Finding, rt: &Runtime, live: Option<Sink>) -> Outcome {
    let t0 = Instant::now();
    let no_verdict = Verdict::Error {
        message: String::new(),
    };
    let mut outcome = Outcome::blank(f, &rt.name, rt.libc, no_verdict);
    if let Err(reason) = f.runs_on(rt) {
        outcome.verdict = Verdict::NotApplicable { reason };
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
    let verdict = lab.verdict(&result);
    lab.say(format!("verdict: {}", verdict.word()));
    outcome.verdict = verdict;
    outcome.checks = lab.checks().to_vec();
    outcome.observations = lab.observations().clone();
    outcome.transcript = lab.transcript();
    outcome.redacted = lab.redacted();
    outcome.evidence = lab.redacted_evidence();
    outcome.millis = t0.elapsed().as_millis();
    outcome
}

/// A column that could not run here, every finding Skipped for one reason.
pub fn unavailable(f: &Finding, u: &crate::harness::runtime::Unavailable) -> Outcome {
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
        }
    }

    pub fn missing(u: &crate::harness::runtime::Unavailable) -> Column {
        Column {
            name: u.name.clone(),
            libc: u.libc.name().into(),
            libc_version: String::new(),
            loader: String::new(),
            os: String::new(),
            unavailable: u.reason.clone(),
        }
    }
}

/// What `swaplab run --json` prints: the machine, its columns (one per C
/// library the targets ran on), and every finding's outcome in each.
#[derive(Debug, Serialize)]
pub struct Report {
    pub swaplab: &'static str,
    pub platform: Platform,
    pub columns: Vec<Column>,
    pub findings: Vec<Outcome>,
}
