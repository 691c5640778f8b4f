//! G06: handover strategies side by side.

use anyhow::Result;

use crate::drivers::comparison::{run_strategy, Pace};
use crate::drivers::handover::{Setup, Strategy};
use crate::drivers::load;
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{vol, Lab};
use crate::findings::GRACEFUL_RESTART;

pub fn g06_setup() -> (Setup, Pace) {
    (
        Setup::new(256 << 10, 30, 30),
        Pace {
            rate: 200.0,
            threads: 32,
            switches: 3,
            settle: 20,
            between: 10,
        },
    )
}

pub static G06: Finding = Finding {
    id: "G06",
    slug: "handover_strategies_side_by_side",
    claim: "Side by side, under the same load: stop/start, SO_REUSEPORT, SCM_RIGHTS hand-over, exec inheritance (nginx style) and socket activation (`LISTEN_FDS`/`LISTEN_PID`): refused, reset and truncated connections, the refusal window, and latency (p50/p99/max) around the switch.",
    source: GRACEFUL_RESTART,
    steps: &[
        "for each strategy: start gen 1; the load opens 200 connections a second (256 KiB downloads over 30 ms); a new generation takes 30 ms to start",
        "switch generations 3 times: stop-start (TERM, start again), reuseport (a new socket beside the old, QUIT old), scm-rights (take-over), exec (USR2, QUIT old), activation (HUP the holder)",
        "count attempted, refused, reset, truncated and timed-out connections, the refusal window and the switch time; compare the listening socket inodes of the first and the last generation (/proc/PID/fd); QUIT the last generation; no process runs the server any more",
    ],
    experiment: g06,
    scope: Scope::Host,
    lesson: Lesson {
        title: "Five hand-over strategies side by side",
        question: "Five ways to replace a server: which ones lose clients, how many, for how long, and what does each cost in latency?",
        exercise: "The counts in the `side by side` table are redacted (`[N]`, they change from run to run): read the checks under it instead. Which strategies keep the very same sockets from the first generation to the last, which have a refusal window, and which promise no client error of any kind?",
        answer: "Stop-start and reuseport bind sockets of their own in each generation (the last shares no inode with the first); stop-start has a refusal window, while reuseport always has a socket listening, so nothing is refused. SCM-rights and exec listen on the very sockets of the first generation (same inodes), and the socket is never closed, so no client sees an error. Every strategy leaves nothing behind and grows no fds.",
    },
    ..Finding::DEFAULTS
};

pub fn g06(lab: &mut Lab) -> Result<()> {
    let (setup, pace) = g06_setup();
    lab.note(format!(
        "each strategy: {} switches under the same constant-rate load; downloads of {} KiB over {} ms; a new generation takes {} ms to start",
        pace.switches,
        setup.body >> 10,
        setup.download_ms,
        setup.startup_ms
    ));
    let mut rows = Vec::new();
    for s in Strategy::ALL {
        rows.push(run_strategy(lab, s, setup, pace)?);
    }
    lab.part("side by side");
    lab.say(
        "strategy     attempted  refused  reset  truncated  timeout  refusal-window-ms  switch-ms",
    );
    for c in &rows {
        // The padding goes inside the volatile marks: a wider value then
        // changes nothing in the redacted line.
        lab.say(format!(
            "{:<12} {}  {}  {}  {}  {}  {}  {}",
            c.name,
            vol(format!("{:>9}", c.attempted)),
            vol(format!("{:>7}", c.refused)),
            vol(format!("{:>5}", c.reset)),
            vol(format!("{:>9}", c.truncated)),
            vol(format!("{:>7}", c.timed_out)),
            vol(format!("{:>17.1}", c.refusal_window_ms)),
            vol(format!("{:>9.1}", c.switch_ms_median))
        ));
    }
    lab.observe("comparison", &rows);
    for c in &rows {
        let name = &c.name;
        let (first, last) = (&c.first_listening, &c.last_listening);
        let known = !first.is_empty() && !first.contains(&0) && !last.contains(&0);
        if c.strategy.is_some_and(Strategy::shares_the_socket) {
            lab.check(
                format!("{name}: the last generation listens on the very sockets of the first (same inodes in /proc/PID/fd)"),
                known && first == last,
                format!("gen 1 {first:?}, last {last:?}"),
            );
            lab.check(
                format!("{name}: the socket is never closed, so no client error of any kind"),
                c.failed() == 0,
                format!(
                    "{} of {} failed: {}",
                    c.failed(),
                    c.attempted,
                    load::tally(&c.samples)
                ),
            );
        } else {
            lab.check(
                format!("{name}: each generation binds sockets of its own (the last shares no inode with the first)"),
                known && last.len() == first.len() && last.iter().all(|i| !first.contains(i)),
                format!("gen 1 {first:?}, last {last:?}"),
            );
        }
        match c.strategy {
            Some(Strategy::StopStart) => {
                lab.check(
                    "stop-start: refused connections in the dead time (a refusal window)",
                    c.refused > 0 && c.refusal_window_ms > 0.0,
                    format!(
                        "{} refused, window {:.1} ms",
                        c.refused, c.refusal_window_ms
                    ),
                );
            }
            Some(Strategy::Reuseport) => {
                lab.check(
                    "reuseport: some socket always listens, so no refused connection",
                    c.refused == 0,
                    format!("{} refused", c.refused),
                );
            }
            _ => {}
        }
        // Growth is what a leak shows: one more descriptor each generation.
        // Each count keeps only the fds seen in both looks at a generation
        // (at the switch and after its downloads), as a leak would be; a
        // count of 0 is a look that failed, not a process without fds.
        let fds: Vec<usize> = c.switches.iter().map(|s| s.fds).collect();
        lab.check(
            format!("{name}: no fd growth from generation to generation (/proc/PID/fd at the switch and after {} downloads, connections aside)", pace.between),
            fds.iter().all(|&n| n > 0) && fds.windows(2).all(|w| w[1] <= w[0]),
            format!("{fds:?}"),
        );
        lab.check(
            format!("{name}: nothing left behind"),
            c.left_behind.is_empty(),
            c.left_behind.join("; "),
        );
    }
    Ok(())
}
