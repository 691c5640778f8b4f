//! `swaplab bench upgrade`: nginx's binary upgrade and its rollback,
//! under load, on swaplab's server and real nginx.

use crate::bench::upgrade::{self, UpgradeOptions};
use crate::commands::bench::parse_rate;
use crate::commands::{bench_json, cores, judged, pretty, Done};
use crate::harness::platform::Platform;

/// Upgrade (USR2, WINCH, QUIT) and rollback (USR2, WINCH, HUP, QUIT new)
/// of swaplab's server and real nginx under the load client: requests,
/// failures by kind, p50/p99/max latency before, during and after.
#[derive(clap::Args)]
pub struct Args {
    /// Completed requests before the switch, and again after it.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    requests: u64,
    /// Answers each step of the sequence waits for.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    settle: u64,
    /// Load connections, each a thread opening one connection after another.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    connections: u64,
    /// New connections per second, in all (an open loop, as real clients
    /// arrive); without it the clients go flat out.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Workers per master.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: u64,
    /// Which servers.
    #[arg(long, value_delimiter = ',', default_value = "swaplab,nginx", value_parser = ["swaplab", "nginx"])]
    server: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> Done {
        let o = UpgradeOptions {
            requests: self.requests as usize,
            settle: self.settle as usize,
            connections: self.connections as usize,
            rate: self.rate,
            workers: self.workers as usize,
            servers: self.server,
        };
        bench(o, self.json)
    }
}

/// Upgrades and rollbacks of each server under load: prints the table (or
/// JSON); fails when a run failed or refuted an expectation.
fn bench(o: UpgradeOptions, json: bool) -> Done {
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        println!(
            "swaplab bench upgrade on {}, {cores} cores\n{} load connections{}, {} completed requests before and after each switch, {} answers per step, {} workers per master\n",
            platform.one_line(),
            o.connections,
            match o.rate {
                Some(r) => format!(
                    " to start with, {r} new connections/s on a fixed schedule (latency counts from the moment a request was due)"
                ),
                None => " flat out (a closed loop: latency counts from each send)".to_string(),
            },
            o.requests,
            o.settle,
            o.workers
        );
    }
    let runs = upgrade::upgrade_runs(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let failed = runs
        .iter()
        .any(|r| r.error.is_some() || !r.refuted.is_empty());
    if json {
        let body = serde_json::json!({
            "options": {
                "requests": o.requests,
                "settle": o.settle,
                "connections": o.connections,
                "workers": o.workers,
            },
            "runs": runs,
        });
        println!("{}", pretty(&bench_json(&platform, cores, body)));
    } else {
        println!("\n{}", upgrade::table(&runs));
    }
    judged(failed)
}
