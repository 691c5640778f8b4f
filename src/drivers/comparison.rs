//! Each hand-over strategy under the same load: [`run_strategy`] switches
//! a [`Service`] `pace.switches` times while the load client runs, and
//! [`Comparison`] is how the clients saw it (failures by kind, the refusal
//! window, latency before, during and after). G06 judges it;
//! `swaplab bench handover` tabulates it ([`table`]).

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::drivers::handover::{
    listening_inodes, show_listening, start_load, Service, Setup, Strategy, Switch,
};
use crate::drivers::load::{late_line, Kind, Sample, Stats};
use crate::harness::lab::{pidt, Lab};
use crate::targets::handover::mono_ns;

/// How the load saw one strategy (or one server's reloads).
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The row's name: the strategy's, or the server's.
    pub name: String,
    /// The hand-over strategy, for swaplab's own server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    pub switches: Vec<Switch>,
    pub attempted: usize,
    pub completed: usize,
    pub refused: usize,
    pub reset: usize,
    pub truncated: usize,
    pub timed_out: usize,
    pub other: usize,
    /// Requests that failed on a connection that had carried one before
    /// (keep-alive: the server closed it under the client).
    pub failed_on_reused: usize,
    /// Requests the client sent again on a new connection after such a
    /// failure (they count by the retry's outcome).
    pub retried: usize,
    /// The longest span, in one switch, from the first refused connection
    /// to the end of the last.
    pub refusal_window_ms: f64,
    pub switch_ms_median: f64,
    pub switch_ms_max: f64,
    pub before: Stats,
    pub during: Stats,
    pub after: Stats,
    /// What the old generations and the control socket left behind.
    pub left_behind: Vec<String>,
    /// The socket inodes behind the listening fds of the first generation
    /// and of the last (from /proc/PID/fd).
    pub first_listening: Vec<u64>,
    pub last_listening: Vec<u64>,
    /// CLOCK_MONOTONIC of the load's start (to place switches on its clock).
    #[serde(skip)]
    pub zero_ns: u64,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl Comparison {
    pub fn failed(&self) -> usize {
        self.attempted - self.completed
    }

    /// Per switch, the requests that started from its signal to the next
    /// switch's (the last: to the end) and satisfy `pred`.
    pub fn per_switch(&self, pred: impl Fn(&Sample) -> bool) -> Vec<usize> {
        let starts: Vec<Duration> = self.switches.iter().map(|s| self.at(s.signal_ns)).collect();
        (0..starts.len())
            .map(|i| {
                let to = starts.get(i + 1).copied().unwrap_or(Duration::MAX);
                self.samples
                    .iter()
                    .filter(|s| s.start >= starts[i] && s.start < to && pred(s))
                    .count()
            })
            .collect()
    }

    /// A switch's times on the load's clock.
    pub fn at(&self, ns: u64) -> Duration {
        Duration::from_nanos(ns.saturating_sub(self.zero_ns))
    }
}

pub fn compare(
    name: &str,
    strategy: Option<Strategy>,
    switches: Vec<Switch>,
    samples: Vec<Sample>,
    zero_ns: u64,
    left_behind: Vec<String>,
) -> Comparison {
    let at = |ns: u64| Duration::from_nanos(ns.saturating_sub(zero_ns));
    let count = |k: Kind| samples.iter().filter(|s| s.kind == k).count();
    let first = switches.first().map(|s| at(s.signal_ns));
    let last = switches.last().map(|s| at(s.done_ns));
    let pick = |f: &dyn Fn(&Sample) -> bool| -> Stats {
        let v: Vec<&Sample> = samples.iter().filter(|s| f(s)).collect();
        Stats::of(&v)
    };
    let (before, during, after) = match (first, last) {
        (Some(a), Some(b)) => (
            pick(&|s| s.start < a),
            pick(&|s| s.start >= a && s.start < b),
            pick(&|s| s.start >= b),
        ),
        _ => (pick(&|_| true), Stats::default(), Stats::default()),
    };
    let mut window = 0.0f64;
    for (i, sw) in switches.iter().enumerate() {
        let from = at(sw.signal_ns);
        let to = switches
            .get(i + 1)
            .map(|n| at(n.signal_ns))
            .unwrap_or(Duration::MAX);
        let refused: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.kind == Kind::Refused && s.start >= from && s.start < to)
            .collect();
        if let (Some(a), Some(b)) = (
            refused.iter().map(|s| s.sent()).min(),
            refused.iter().map(|s| s.end()).max(),
        ) {
            window = window.max((b - a).as_secs_f64() * 1000.0);
        }
    }
    let mut ms: Vec<f64> = switches.iter().map(Switch::switch_ms).collect();
    ms.sort_by(f64::total_cmp);
    Comparison {
        name: name.to_string(),
        strategy,
        failed_on_reused: samples.iter().filter(|s| s.failed_on_reused()).count(),
        retried: samples.iter().filter(|s| s.retried).count(),
        attempted: samples.len(),
        completed: count(Kind::Completed),
        refused: count(Kind::Refused),
        reset: count(Kind::Reset),
        truncated: count(Kind::ShortRead),
        timed_out: count(Kind::Timeout),
        other: count(Kind::Other),
        refusal_window_ms: window,
        switch_ms_median: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
        switch_ms_max: ms.last().copied().unwrap_or(0.0),
        before,
        during,
        after,
        left_behind,
        first_listening: Vec::new(),
        last_listening: Vec::new(),
        zero_ns,
        samples,
        switches,
    }
}

/// How hard the comparison pushes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Pace {
    /// New connections per second.
    pub rate: f64,
    /// Client threads.
    pub threads: usize,
    pub switches: usize,
    /// Completed downloads before the first switch and after the last.
    pub settle: usize,
    /// Downloads the new generation completes after each switch.
    pub between: usize,
}

/// Runs one strategy through `pace.switches` switches under the load.
pub fn run_strategy(
    lab: &mut Lab,
    strategy: Strategy,
    setup: Setup,
    pace: Pace,
) -> Result<Comparison> {
    lab.part(strategy.name());
    let mut svc = Service::start(lab, strategy, setup)?;
    let first = svc.current.clone();
    let first_listening = listening_inodes(&first);
    show_listening(lab, &first, &first_listening, "gen 1's listening sockets");
    let load = start_load(lab, svc.addrs(), pace.rate, pace.threads)?;
    let zero_ns = mono_ns().saturating_sub(load.now().as_nanos() as u64);
    let m = load.mark();
    load.wait_for(m, pace.settle, "a download completed", |s| {
        s.kind == Kind::Completed
    })?;
    for i in 0..pace.switches {
        switch_under_load(
            lab,
            &mut svc,
            &load,
            i,
            pace.between,
            ("switch", "a download"),
        )?;
    }
    let m = load.mark();
    load.wait_for(m, pace.settle, "a download completed", |s| {
        s.kind == Kind::Completed
    })?;
    let last = svc.current.clone();
    let last_listening = listening_inodes(&last);
    show_listening(
        lab,
        &last,
        &last_listening,
        &format!("gen {}'s listening sockets", last.gen),
    );
    let samples = load.stop();
    let switches = svc.switches.clone();
    let left = svc.finish(lab)?;
    let mut c = compare(
        strategy.name(),
        Some(strategy),
        switches,
        samples,
        zero_ns,
        left,
    );
    c.first_listening = first_listening;
    c.last_listening = last_listening;
    Ok(c)
}

/// Switch `i` (from 0) of `svc` under `load`, narrated as `words.0` (the
/// first one step by step, the others in a line); then waits until
/// `between` answers (`words.1`) from the new generation have completed.
pub fn switch_under_load(
    lab: &mut Lab,
    svc: &mut Service,
    load: &crate::drivers::load::Load,
    i: usize,
    between: usize,
    words: (&str, &str),
) -> Result<Switch> {
    let sw = svc.switch(lab, i == 0)?;
    if i > 0 {
        lab.say(format!(
            "{} {}: gen {} {} -> gen {} {}",
            words.0,
            i + 1,
            sw.gen - 1,
            pidt(sw.from),
            sw.gen,
            pidt(sw.to)
        ));
    }
    let m = load.mark();
    let gen = sw.gen;
    load.wait_for(
        m,
        between,
        &format!("{} from gen {gen} completed", words.1),
        |s| s.kind == Kind::Completed && s.answer.as_ref().and_then(|a| a.gen) == Some(gen),
    )?;
    svc.look_again_at_fds();
    Ok(svc.switches.last().cloned().unwrap_or(sw))
}

/// The comparison table (Markdown), one row per strategy.
pub fn table(rows: &[Comparison]) -> String {
    let mut out = String::from(
        "| strategy | switches | attempted | completed | refused | reset | truncated | timed out | failed on reused | refusal window ms | switch ms (median/max) | p50/p99/max ms before | during | after |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let lat = |s: &Stats| format!("{:.1}/{:.1}/{:.1}", s.p50_ms, s.p99_ms, s.max_ms);
    for c in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1}/{:.1} | {} | {} | {} |\n",
            c.name,
            c.switches.len(),
            c.attempted,
            c.completed,
            c.refused,
            c.reset,
            c.truncated,
            c.timed_out,
            c.failed_on_reused,
            c.refusal_window_ms,
            c.switch_ms_median,
            c.switch_ms_max,
            lat(&c.before),
            lat(&c.during),
            lat(&c.after),
        ));
    }
    let late: Vec<String> = rows
        .iter()
        .filter_map(|c| {
            let phases = [
                ("before", &c.before),
                ("during", &c.during),
                ("after", &c.after),
            ];
            late_line(&c.name, &phases)
        })
        .collect();
    if !late.is_empty() {
        out.push_str(&format!("\n{}\n", late.join("\n")));
    }
    out
}
