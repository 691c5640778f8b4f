//! `swaplab stale`: the running processes whose code is no longer on disk.

use regex::Regex;
use schemars::JsonSchema;
use serde::Serialize;

use crate::commands::{judged, pretty, Done, Exit};
use crate::detector::kernel::{self, KernelStatus};
use crate::detector::openmetrics;
use crate::detector::stale::{self, Options, Report};

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    OpenMetrics,
    /// What to restart, grouped (`--plan`).
    Plan,
}

/// `--json`: the scan's report and the kernel's status beside it (`null`
/// when it cannot tell). The kernel is the machine's, not the scan's: the
/// lab's sandboxed scans (and their sheets) never show it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "SwaplabStale")]
struct WithKernel<'a> {
    #[serde(flatten)]
    report: &'a Report,
    kernel: Option<KernelStatus>,
}

/// The JSON Schema of `--json` as the report's types derive it; the file
/// in the repository ([`SCHEMA`]) must say the same (a test checks).
pub fn derived_schema() -> String {
    let schema = schemars::schema_for!(WithKernel<'static>);
    format!("{}\n", pretty(&schema))
}

/// `src/detector/stale.schema.json`, which `--json-schema` prints: the
/// schema that tools reading `--json` validate against.
pub const SCHEMA: &str = include_str!("../detector/stale.schema.json");

/// Scans the processes `pids`, `user` and `pattern` select and prints the
/// report (text, JSON or OpenMetrics), with the kernel's status; fails when
/// a process needs a restart (the kernel never changes the status).
pub fn command(
    pids: Vec<i32>,
    user: Option<String>,
    pattern: Option<String>,
    package_roots: Vec<std::path::PathBuf>,
    output: Output,
) -> Done {
    let bad = |msg: String| Exit::BadInput(format!("swaplab stale: {msg}"));
    let user = user
        .as_deref()
        .map(stale::parse_user)
        .transpose()
        .map_err(bad)?;
    let pattern = pattern
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| bad(format!("--match: not a valid regular expression: {e}")))?;
    if let Some(pid) = pids
        .iter()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        return Err(bad(format!("--pid {pid}: no such process")));
    }
    // Maps names files by their resolved path: so must the roots be.
    let package_roots = package_roots
        .iter()
        .map(|r| match std::fs::canonicalize(r) {
            Ok(real) if real.join("var/lib/dpkg").is_dir() => Ok(real),
            _ => Err(bad(format!(
                "--package-root {}: no dpkg database there (var/lib/dpkg)",
                r.display()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        pids,
        user,
        pattern,
        package_roots,
        skip_packages: false,
    };
    let r = stale::scan(&opts).map_err(|e| bad(format!("{e:#}")))?;
    let kernel = kernel::status_here();
    match output {
        Output::Json => println!("{}", pretty(&WithKernel { report: &r, kernel })),
        Output::OpenMetrics => print!("{}", openmetrics::render(&r, kernel.as_ref())),
        Output::Plan => {
            for line in kernel.iter().filter_map(KernelStatus::line) {
                println!("{line}");
            }
            for line in stale::render_plan(&r, &stale::PLAIN) {
                println!("{line}");
            }
        }
        Output::Text => {
            for line in kernel.iter().filter_map(KernelStatus::line) {
                println!("{line}");
            }
            for line in stale::render(&r, &stale::PLAIN) {
                println!("{line}");
            }
        }
    }
    match r.exit_code() {
        0 => Ok(()),
        3 => Err(Exit::Unknown),
        _ => judged(true),
    }
}
