//! `swaplab bench`: figures for a whole sequence under load, one module
//! per bench (its arguments, and what it prints and writes around the runs
//! of `crate::bench`), and what they share.

pub mod handover;
pub mod reload;
pub mod stale;
pub mod upgrade;

use std::path::{Path, PathBuf};

use crate::commands::{Done, Exit};

/// Measure: figures for a whole sequence under load.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Bench,
}

#[derive(clap::Subcommand)]
enum Bench {
    Stale(stale::Args),
    Upgrade(upgrade::Args),
    Handover(handover::Args),
    Reload(reload::Args),
}

impl Args {
    pub fn run(self) -> Done {
        match self.what {
            Bench::Stale(a) => a.run(),
            Bench::Upgrade(a) => a.run(),
            Bench::Handover(a) => a.run(),
            Bench::Reload(a) => a.run(),
        }
    }
}

/// A rate of new connections per second: above 0, at most 100,000.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}`: give a rate above 0 and at most 100000 connections/s"
        )),
    }
}

/// One run's name, why it has no figures, and its figures.
pub(super) type RunOutcome<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a crate::drivers::comparison::Comparison>,
);

/// Names each failed run on stderr and writes each run's SVG timeline
/// (`STEM-NAME.svg`), then `json` as `STEM.json`, into `out`: the paths
/// written, and whether a run failed or a file could not be written (named
/// on stderr).
pub(super) fn write_outputs(
    runs: &[RunOutcome],
    json: &str,
    out: &Path,
    stem: &str,
) -> (Vec<PathBuf>, bool) {
    let mut written = Vec::new();
    let mut failed = false;
    let mut write = |path: PathBuf, text: &str| match std::fs::write(&path, text) {
        Ok(()) => written.push(path),
        Err(e) => {
            failed = true;
            eprintln!("swaplab: cannot write {}: {e}", path.display());
        }
    };
    for (name, error, c) in runs {
        if let Some(e) = error {
            eprintln!("swaplab: {name}: {e}");
        }
        if let Some(c) = c {
            let path = out.join(format!("{stem}-{name}.svg"));
            write(path, &crate::bench::timeline::svg(c));
        }
    }
    write(out.join(format!("{stem}.json")), json);
    let run_failed = runs.iter().any(|r| r.1.is_some());
    (written, failed || run_failed)
}

pub(super) fn make_out(out: &Path) -> Result<(), Exit> {
    std::fs::create_dir_all(out).map_err(|e| {
        Exit::BadInput(format!(
            "swaplab: cannot make the output folder {}: {e}",
            out.display()
        ))
    })
}
