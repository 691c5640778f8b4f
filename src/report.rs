//! Running findings and reporting them: the platform, each finding's verdict,
//! checks, observations and transcript, for people and for machines (JSON).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::findings::Finding;
use crate::lab::{Check, Lab, Sink, Verdict};

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
        let (libc, libc_version) = libc_version();
        Platform {
            os: os_name(),
            kernel: field(|u| u.release()),
            arch: field(|u| u.machine()),
            libc,
            libc_version,
            loader: loader_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "unknown".into()),
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{}, kernel {}, {} {} ({}), loader {}",
            self.os, self.kernel, self.libc, self.libc_version, self.arch, self.loader
        )
    }
}

fn os_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown Linux".into())
}

#[cfg(target_env = "gnu")]
fn libc_version() -> (String, String) {
    // SAFETY: returns a pointer to a static string.
    let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    ("glibc".into(), v.to_string_lossy().into_owned())
}

#[cfg(not(target_env = "gnu"))]
fn libc_version() -> (String, String) {
    ("musl".into(), "unknown".into())
}

/// The loader mapped into this very process (`ld-linux…`, `ld-musl…`).
fn loader_path() -> Option<PathBuf> {
    let me = nix::unistd::getpid().as_raw();
    crate::maps::file_mappings(me)
        .ok()?
        .into_iter()
        .map(|m| m.path)
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ld-"))
        })
}

/// One finding, run and judged.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
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

/// Runs one finding's experiment in a fresh sandbox. `live` receives the
/// transcript as it is written. Planned findings come back as Skipped.
pub fn run(f: &Finding, live: Option<Sink>) -> Outcome {
    let t0 = Instant::now();
    let mut outcome = Outcome {
        id: f.id.into(),
        claim: f.claim.into(),
        test: f.test_name(),
        verdict: Verdict::Error {
            message: String::new(),
        },
        checks: Vec::new(),
        observations: BTreeMap::new(),
        transcript: Vec::new(),
        redacted: Vec::new(),
        evidence: Vec::new(),
        millis: 0,
    };
    let Some(experiment) = f.experiment else {
        outcome.verdict = Verdict::Skipped {
            reason: format!("not implemented yet: planned in {}", f.planned),
            enable: "a later swaplab release".into(),
        };
        return outcome;
    };
    let mut lab = match Lab::new(f.id, live) {
        Ok(lab) => lab,
        Err(e) => {
            outcome.verdict = Verdict::Error {
                message: format!("{e:#}"),
            };
            return outcome;
        }
    };
    let result = experiment(&mut lab);
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

/// What `swaplab run --json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub swaplab: &'static str,
    pub platform: Platform,
    pub findings: Vec<Outcome>,
}
