//! `swaplab bench handover`: every hand-over strategy through its switches
//! under the same load.

use std::path::{Path, PathBuf};

use crate::bench::handover::{self, HandoverOptions};
use crate::commands::bench::{make_out, parse_rate, write_outputs, RunOutcome};
use crate::commands::{bench_json, cores, judged, pretty, Done};
use crate::drivers::comparison::Pace;
use crate::drivers::handover::{Setup, Strategy};
use crate::harness::platform::Platform;

// Its help names the strategies as `Strategy` does ([`about`]).
#[derive(clap::Args)]
#[command(about = about())]
pub struct Args {
    /// New connections per second (each a whole download).
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    rate: f64,
    /// Client threads (enough for the downloads in flight).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=256))]
    connections: u64,
    /// Switches per strategy.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    switches: u64,
    /// Completed downloads before the first switch and after the last.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    settle: u64,
    /// Downloads the new generation completes before the next switch.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    between: u64,
    /// Bytes per download.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..=1 << 30))]
    body: u64,
    /// The server spreads each download over this many ms.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    download_ms: u64,
    /// A new generation takes this many ms to start (reading its
    /// configuration...): the dead time of stop-start.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    startup_ms: u64,
    /// Which strategies.
    #[arg(long, value_enum, value_delimiter = ',', default_value = names(","))]
    strategy: Vec<Strategy>,
    /// Folder for handover.json and the SVG timelines (made if missing).
    #[arg(long, default_value = "swaplab-bench")]
    out: PathBuf,
    /// Print the JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Every strategy's name, joined by `sep`.
fn names(sep: &str) -> String {
    let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
    names.join(sep)
}

/// The command's one-line help, with the strategies' names.
fn about() -> String {
    format!(
        "Every hand-over strategy ({}) through repeated switches under the same constant-rate download load: attempted, completed, refused, reset, truncated and timed-out connections, the refusal window, the switch time, latency before/during/after. Writes handover.json and an SVG timeline per strategy into --out",
        names(", ")
    )
}

impl Args {
    pub fn run(self) -> Done {
        let o = HandoverOptions {
            setup: Setup::new(self.body, self.download_ms, self.startup_ms),
            pace: Pace {
                rate: self.rate,
                threads: self.connections as usize,
                switches: self.switches as usize,
                settle: self.settle as usize,
                between: self.between as usize,
            },
            strategies: self.strategy,
        };
        bench(o, &self.out, self.json)
    }
}

/// Every hand-over strategy through its switches under load: writes an SVG
/// timeline per strategy and handover.json into `out`, prints the table
/// (or the JSON); fails when a run failed or a file cannot be written.
fn bench(o: HandoverOptions, out: &Path, json: bool) -> Done {
    make_out(out)?;
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        println!(
            "swaplab bench handover on {}, {cores} cores\n{} new connections/s on a fixed schedule ({} client threads, more while all are busy; latency counts from the moment a request was due), downloads of {} bytes over {} ms, a new generation starts in {} ms; {} switches per strategy\n",
            platform.one_line(),
            o.pace.rate,
            o.pace.threads,
            o.setup.body,
            o.setup.download_ms,
            o.setup.startup_ms,
            o.pace.switches
        );
    }
    let runs = handover::handover_runs(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let body = serde_json::json!({ "setup": o.setup, "pace": o.pace, "runs": runs });
    let text = pretty(&bench_json(&platform, cores, body));
    let outcomes: Vec<RunOutcome> = runs
        .iter()
        .map(|r| (r.strategy.name(), r.error.as_deref(), r.result.as_ref()))
        .collect();
    let (written, failed) = write_outputs(&outcomes, &text, out, "handover");
    if json {
        println!("{text}");
    } else {
        let rows: Vec<_> = runs.iter().filter_map(|r| r.result.clone()).collect();
        println!("{}", crate::drivers::comparison::table(&rows));
        println!("written:");
        for p in &written {
            println!("  {}", p.display());
        }
    }
    judged(failed)
}
