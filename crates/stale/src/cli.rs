//! `swaplab stale`: the running processes whose code is no longer on disk.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use regex::Regex;
use schemars::JsonSchema;
use serde::Serialize;

use crate::command::{judged, pretty, Done, Exit};
use crate::exclude::Exclusion;
use crate::kernel::{self, KernelStatus};
use crate::openmetrics;
use crate::plugin;
use crate::stale::{self, ScanOptions, StaleReport};

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    OpenMetrics,
    /// What to restart, grouped (`--plan`).
    Plan,
    /// One line and a plugin's status (`--monitoring-plugin`).
    Plugin,
    /// The plan when a restart is needed, else nothing; status 0
    /// (`--apt-hook`).
    AptHook,
}

/// `--json`: the scan's report, the kernel's status beside it (`null` when
/// it cannot tell), and where and when it was made, for collecting from
/// many machines. The kernel is the machine's, not the scan's: the lab's
/// sandboxed scans (and their sheets) never show it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "SwaplabStale")]
struct WithKernel<'a> {
    /// The version of this format: it grows when a field changes meaning
    /// or goes; new fields may come without it.
    format_version: u32,
    /// The machine's host name.
    host: String,
    /// When the scan ended, in UTC (RFC 3339).
    time: String,
    #[serde(flatten)]
    report: &'a StaleReport,
    kernel: Option<KernelStatus>,
}

/// [`WithKernel::format_version`] of this build.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON Schema of `--json` as the report's types derive it; the file
/// in the repository ([`SCHEMA`]) must say the same (a test checks).
pub fn derived_schema() -> String {
    let schema = schemars::schema_for!(WithKernel<'static>);
    format!("{}\n", pretty(&schema))
}

/// `crates/stale/src/stale.schema.json`, which `--json-schema` prints: the
/// schema that tools reading `--json` validate against.
pub const SCHEMA: &str = include_str!("stale.schema.json");

/// Which running processes run code that is no longer on disk (an
/// executable or library replaced, removed, or modified in place), and
/// how to restart them.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Only this process (repeatable).
    #[arg(long = "pid", value_name = "PID", value_parser = clap::value_parser!(i32).range(1..))]
    pub pids: Vec<i32>,
    /// Only processes of this user (name or uid).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only processes whose name or command line matches this regular
    /// expression.
    #[arg(long = "match", value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// Print JSON instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Print OpenMetrics text instead of the report, for node-exporter's
    /// textfile collector.
    #[arg(long, conflicts_with = "json")]
    pub openmetrics: bool,
    /// Print what to restart instead: each service, container or
    /// process tree once, what it fixes, and its command.
    #[arg(long, conflicts_with_all = ["json", "openmetrics"])]
    pub plan: bool,
    /// Act as apt's hook (DPkg::Post-Invoke): print the plan when a
    /// process needs a restart, nothing otherwise, and exit 0 whatever the
    /// scan finds or fails on (saying why on stderr), so that apt never
    /// fails for it.
    #[arg(long, conflicts_with_all = ["json", "openmetrics", "plan"])]
    pub apt_hook: bool,
    /// Act as a monitoring plugin (Nagios, Icinga, Sensu): one line, and
    /// the status OK 0, WARNING 1, CRITICAL 2 or UNKNOWN 3.
    #[arg(long, conflicts_with_all = ["json", "openmetrics", "plan", "apt_hook"])]
    pub monitoring_plugin: bool,
    /// Write the report into FILE instead of printing it: a new file in
    /// FILE's folder, renamed over FILE once whole, so that a reader (node-
    /// exporter's textfile collector) never sees half of one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["apt_hook", "monitoring_plugin"])]
    pub output: Option<std::path::PathBuf>,
    /// Leave processes out: `name=REGEX` (command name or executable
    /// path), `user=USER`, or `unit=UNIT` (the systemd service they run
    /// in). Repeatable; they are counted, not judged.
    #[arg(long, value_name = "KIND=VALUE", value_parser = Exclusion::parse)]
    pub exclude: Vec<Exclusion>,
    /// A folder with a package database of its own (`dpkg --root DIR`,
    /// `rpm --root DIR`): files under it are attributed from DIR/var/lib/dpkg
    /// or rpm's DIR/var/lib/rpm/rpmdb.sqlite (repeatable).
    #[arg(long = "package-root", value_name = "DIR")]
    pub package_roots: Vec<std::path::PathBuf>,
    /// Print the JSON Schema of --json's output and scan nothing.
    #[arg(long, conflicts_with_all = ["json", "openmetrics", "plan", "apt_hook", "monitoring_plugin", "output", "pids", "user", "pattern", "package_roots", "exclude"])]
    pub json_schema: bool,
}

const HELP: &str = "\
Exit status:
  0  no process needs a restart (some may be listed as optional: the file on
     disk has the same content)
  1  at least one process needs a restart
  2  bad arguments, /proc could not be read, or the report could not be
     written
  3  nothing needs a restart, but a process or a file could not be judged
With --monitoring-plugin: 0 OK, 1 WARNING (an optional restart, or a newer
kernel installed), 2 CRITICAL (a restart needed), 3 UNKNOWN (something could
not be judged, or bad arguments: one line says which).

The kernel does not change the status (needrestart too keeps it apart): when
a newer kernel than the running one is installed (/boot/vmlinuz-*,
/usr/lib/modules/*/vmlinuz), one line says so, and --json's \"kernel\" field
tells (null when the running kernel is not among the installed ones, as in a
VM booted with a kernel from outside: then nothing can be told).

Not reported (counted in the summary): pseudo-files (memfd, SysV shared
memory, /dev, huge pages, [aio]), anonymous memory, and files mapped without
execute permission. Another user's processes cannot be read without root:
they are counted and named as unreadable.

Examples:
  swaplab stale
  sudo swaplab stale --json
  swaplab stale --user www-data --match nginx
  swaplab stale --exclude unit=postgresql --exclude 'name=^/opt/'
  sudo swaplab stale --monitoring-plugin

For node-exporter's textfile collector (the whole text is written with
status 1 or 3 too, into a new file renamed over the old one):
  swaplab stale --openmetrics --output DIR/swaplab_stale.prom
As apt's hook (DPkg::Post-Invoke), quiet unless a restart is needed:
  swaplab stale --apt-hook
Gauges: swaplab_stale_processes{need}, swaplab_stale_process{pid,command,user,
need,reason} (stale files), swaplab_stale_scanned_processes,
swaplab_stale_excluded_processes, swaplab_stale_unreadable_processes,
swaplab_kernel_outdated (when known).";

impl Args {
    /// How the report is printed (the flags conflict with each other).
    fn output(&self) -> Output {
        match (
            self.json,
            self.openmetrics,
            self.plan,
            self.monitoring_plugin,
            self.apt_hook,
        ) {
            (true, ..) => Output::Json,
            (_, true, ..) => Output::OpenMetrics,
            (_, _, true, ..) => Output::Plan,
            (_, _, _, true, _) => Output::Plugin,
            (.., true) => Output::AptHook,
            _ => Output::Text,
        }
    }
}

impl Args {
    /// Scans the processes the arguments select and prints the report (text,
    /// JSON, OpenMetrics or the plan), with the kernel's status, or only the
    /// schema (`--json-schema`); fails when a process needs a restart (the
    /// kernel never changes the status).
    pub fn run(self) -> Done {
        if self.json_schema {
            print!("{SCHEMA}");
            return Ok(());
        }
        let output = self.output();
        match self.scan_and_print(output) {
            // A plugin that cannot run says UNKNOWN, on its one line.
            Err(Exit::BadInput(why)) if output == Output::Plugin => {
                println!("{}", plugin::unknown_line(&why));
                Err(Exit::Unknown)
            }
            // apt's hook must never fail apt: it says why on stderr.
            Err(e) if output == Output::AptHook => {
                if let Some(why) = e.message() {
                    eprintln!("{why}");
                }
                Ok(())
            }
            done => done,
        }
    }

    fn scan_and_print(self, output: Output) -> Done {
        let Args {
            pids,
            user,
            pattern,
            package_roots,
            exclude,
            output: output_file,
            ..
        } = self;
        let bad = |msg: String| Exit::BadInput(format!("swaplab stale: {msg}"));
        let user = user
            .as_deref()
            .map(crate::users::parse_user)
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
                Ok(real) if crate::packages::has_database(&real) => Ok(real),
                _ => Err(bad(format!(
                    "--package-root {}: no dpkg or rpm database there (var/lib/dpkg, var/lib/rpm, usr/lib/sysimage/rpm)",
                    r.display()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let opts = ScanOptions {
            pids,
            user,
            pattern,
            package_roots,
            skip_packages: false,
            exclude,
        };
        let r = stale::scan(&opts).map_err(|e| bad(format!("{e:#}")))?;
        let kernel = kernel::status_here();
        // Written as it is made: the JSON of 10,000 processes is 9 MB.
        let write = |out: &mut dyn Write| write_report(out, output, &r, kernel.as_ref());
        match &output_file {
            Some(file) => write_atomically(file, write).map_err(bad)?,
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                write(&mut out)
                    .and_then(|()| out.flush())
                    .map_err(|e| bad(format!("cannot print the report: {e}")))?
            }
        }
        match output {
            Output::AptHook => Ok(()),
            Output::Plugin => match plugin::line(&r, kernel.as_ref()).0 {
                plugin::State::Ok => Ok(()),
                plugin::State::Warning => Err(Exit::Failed),
                plugin::State::Critical => Err(Exit::Critical),
                plugin::State::Unknown => Err(Exit::Unknown),
            },
            _ => match r.exit_code() {
                0 => Ok(()),
                3 => Err(Exit::Unknown),
                _ => judged(true),
            },
        }
    }
}

/// Writes the report to `out` as `output` prints it, with the kernel's
/// status where that form shows it.
fn write_report(
    out: &mut dyn Write,
    output: Output,
    r: &StaleReport,
    kernel: Option<&KernelStatus>,
) -> std::io::Result<()> {
    let lines = |lines: Vec<String>| -> String { lines.iter().map(|l| format!("{l}\n")).collect() };
    let kernel_lines = || -> Vec<String> { kernel.iter().filter_map(|k| k.line()).collect() };
    let text = match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &with_kernel(r, kernel.cloned()))?;
            "\n".to_string()
        }
        Output::Plugin => format!("{}\n", plugin::line(r, kernel).1),
        Output::OpenMetrics => openmetrics::render(r, kernel),
        Output::AptHook if r.required == 0 => String::new(),
        Output::AptHook => {
            let mut out = vec![format!(
                "swaplab-stale: {} running code that is no longer on disk; what to restart:",
                if r.required == 1 {
                    "1 process is".to_string()
                } else {
                    format!("{} processes are", r.required)
                }
            )];
            out.extend(stale::render_plan(r, &stale::PLAIN));
            lines(out)
        }
        Output::Plan => lines([kernel_lines(), stale::render_plan(r, &stale::PLAIN)].concat()),
        Output::Text => lines([kernel_lines(), stale::render(r, &stale::PLAIN)].concat()),
    };
    out.write_all(text.as_bytes())
}

/// Writes a new file beside `file` with `write` and renames it over
/// `file`: a reader sees the old file or the new one, whole.
fn write_atomically(
    file: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let why = |e: &dyn std::fmt::Display| format!("--output {}: {e}", file.display());
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".swaplab-stale.")
        .tempfile_in(dir)
        .map_err(|e| why(&e))?;
    let mut out = std::io::BufWriter::new(tmp.as_file_mut());
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| why(&e))?;
    drop(out);
    // Readable by the collector, whichever user it runs as.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| why(&e))?;
    tmp.as_file().sync_all().map_err(|e| why(&e))?;
    tmp.persist(file).map_err(|e| why(&e.error))?;
    Ok(())
}

/// The JSON's envelope around `r`: this machine's name and the time now.
fn with_kernel(r: &StaleReport, kernel: Option<KernelStatus>) -> WithKernel<'_> {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    WithKernel {
        format_version: FORMAT_VERSION,
        host,
        time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        report: r,
        kernel,
    }
}
