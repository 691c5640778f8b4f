//! `swaplab bench stale`: `swaplab stale` against the other tools on the
//! same sleepers.

use crate::bench::stale::{self, StaleOptions};
use crate::commands::{bench_json, cores, pretty, Done, Exit};
use crate::harness::platform::Platform;

/// `swaplab stale` against `grep -l '(deleted)' /proc/*/maps` and
/// `needrestart -b` on the same processes: sleepers linked against
/// libexample, half of them left on a replaced library; wall time of
/// each, and whether its answer is right.
#[derive(clap::Args)]
pub struct Args {
    /// Sleepers to start (half on the replaced library).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    processes: u64,
    /// One in this many sleepers on the new library also maps a memfd
    /// executable (as JIT compilers do); 0 for none.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    jit_every: u64,
    /// Timed runs of swaplab stale and grep (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
    /// Leave needrestart -b out (it takes tens of seconds).
    #[arg(long)]
    no_needrestart: bool,
    /// Keep the sleepers as children of the bench instead of daemons
    /// (needrestart then judges them by their parent, once).
    #[arg(long)]
    children: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> Done {
        let o = StaleOptions {
            processes: self.processes as usize,
            jit_every: self.jit_every as usize,
            runs: self.runs as usize,
            needrestart: !self.no_needrestart,
            daemons: !self.children,
        };
        bench(o, self.json)
    }
}

/// `swaplab stale` against the other tools on the same sleepers: prints the
/// table (or JSON); fails when the sleepers cannot be set up.
fn bench(o: StaleOptions, json: bool) -> Done {
    let platform = Platform::detect();
    let uid = nix::unistd::geteuid();
    if !json {
        println!(
            "swaplab bench stale on {}, {} cores, as uid {uid}\n{} sleepers, half of them on a replaced libexample; one in {} of the others maps a memfd executable\n",
            platform.one_line(),
            cores(),
            o.processes,
            o.jit_every
        );
    }
    let b = stale::stale_bench(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    })
    .map_err(|e| Exit::Aborted(format!("swaplab bench stale: {e:#}")))?;
    if json {
        let body = serde_json::json!({ "uid": uid.as_raw(), "bench": b });
        println!("{}", pretty(&bench_json(&platform, cores(), body)));
    } else {
        println!(
            "\n{} stale, {} on the new library ({} with a memfd); started in {:.1} s\n",
            b.stale, b.fresh, b.jit, b.setup_seconds
        );
        print!("{}", stale::stale_table(&b));
    }
    Ok(())
}
