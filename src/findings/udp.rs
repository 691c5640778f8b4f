//! Article 002 in the field: UDP services (G09).
//!
//! The hand-over server in its UDP mode
//! ([`handover_udp`](crate::targets::handover_udp)) echoes numbered
//! datagrams, and [`Service`] drives it through its hand-overs as it drives
//! the TCP mode. The [`UdpLoad`] client judges what was lost: a datagram is
//! lost when no answer with its number comes back, whatever the server says
//! of itself.

use anyhow::{bail, Result};

use crate::drivers::handover::{listening_inodes, show_listening, Service, Setup, Strategy, Switch};
use crate::drivers::udp_load::{
    Datagram, QueueWatch, Tally, UdpLoad, UdpMode, UdpOptions, UdpReport,
};
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{pidt, vol, Lab};

use super::GRACEFUL_RESTART;

/// Hand-overs per strategy.
const HANDOVERS: usize = 5;
/// Datagrams per second, in all. A reuseport hand-over should lose about
/// RATE × FINISH_MS × the old socket's share of the flows: 50 for half of
/// them, 6 for one flow of 16, so "at least one per hand-over" fails only
/// if the hash puts no flow on the old socket (1 run in 65,536). Not more:
/// the shared socket of scm-rights must hold what arrives while no one
/// reads (the `ready`/`released` exchange, a process descheduled on a busy
/// or emulated machine), and its default buffer holds about 256 small
/// datagrams, half a second at this rate; an emulated guest queued 92 at
/// 1,000 a second.
const RATE: f64 = 500.0;
/// Client sockets: as many flows for the SO_REUSEPORT hash to spread.
const FLOWS: usize = 16;
/// How long a stopping generation finishes its work before it closes its
/// sockets (both strategies): long enough that a client stalled for a
/// while still sends into it.
const FINISH_MS: u64 = 200;
/// Answers from a new generation to see before going on: the evidence
/// that it serves (at 500 a second, 100 ms).
const SETTLE: usize = 50;

pub static G09: Finding = Finding {
    id: "G09",
    slug: "a_reuseport_handover_loses_the_datagrams_queued_on_the_old_socket_and_scm_rights_none",
    claim: "UDP: with `SO_REUSEPORT` sockets, the datagrams the kernel queues on the old process's socket while it finishes its work (no longer reading) are lost when it closes it: every hand-over loses some, only on the flows the kernel steers to the old socket, and only while the old process lives; passing the same socket over SCM_RIGHTS loses none: every numbered datagram is answered, across every hand-over (measured with 500 numbered datagrams a second from 16 client sockets, 5 hand-overs each, a 200 ms finish in both).",
    source: GRACEFUL_RESTART,
    steps: &[
        "for each of reuseport and scm-rights: start gen 1 in UDP mode (`--udp`: it echoes `seq=N` as `seq=N pid=P gen=G`) on 127.0.0.1 and ::1",
        "16 client sockets send 500 numbered datagrams a second in all; 5 hand-overs: reuseport (gen N+1 binds its own socket with SO_REUSEPORT, QUIT to gen N) or scm-rights (gen N+1 takes the very socket over); the old generation stops reading, finishes its work for 200 ms, closes its sockets and exits",
        "stop the clients; a datagram unanswered 2 s after the last one is lost; count sent, answered and lost per hand-over (by send time), and the flows that lost",
        "compare the socket inodes in /proc/PID/fd from generation to generation; QUIT the last; no process runs the server any more",
    ],
    experiment: g09,
    scope: Scope::Host,
    lesson: Lesson {
        title: "A UDP service handed over",
        question: "A UDP server has no listening queue and no connections, so does it matter how the new process gets its socket? If the old and the new process each bind their own socket with SO_REUSEPORT, is anything lost while the old one shuts down?",
        exercise: "Compare the `reuseport` and `scm-rights` summaries under `what the clients saw`: how many datagrams were lost per hand-over, and when? Which sockets did the generations read?",
        answer: "With reuseport each generation binds sockets of its own and every hand-over loses datagrams, only while an old process lives and only on flows the kernel steered to the old socket. With scm-rights all 6 generations read the very same sockets (same inodes) and no datagram is lost. In both no datagram is answered twice.",
    },
    ..Finding::DEFAULTS
};

/// One strategy through its hand-overs, as the clients saw it.
struct Run {
    strategy: Strategy,
    report: UdpReport,
    switches: Vec<Switch>,
    /// The socket inodes of each generation, gen 1 first (/proc/PID/fd).
    inodes: Vec<Vec<u64>>,
    /// The largest receive queue seen per socket inode (/proc/net/udp).
    queues: std::collections::BTreeMap<u64, u32>,
    left: Vec<String>,
}

impl Run {
    /// Hand-over `i`'s span of send times: from its start to the next one's
    /// (the last one's to the end).
    fn span(&self, i: usize) -> (u64, u64) {
        let from = self.switches[i].signal_ns;
        let to = self.switches.get(i + 1).map_or(u64::MAX, |s| s.signal_ns);
        (from, to)
    }

    fn tally(&self, i: usize) -> Tally {
        let (from, to) = self.span(i);
        self.report.tally(from, to)
    }

    /// The datagrams sent from `from` (included) to `to` (excluded) that
    /// were lost.
    fn lost(&self, from: u64, to: u64) -> Vec<&Datagram> {
        self.report
            .lost()
            .filter(|d| d.sent_ns >= from && d.sent_ns < to)
            .collect()
    }

    fn lost_in(&self, i: usize) -> Vec<&Datagram> {
        let (from, to) = self.span(i);
        self.lost(from, to)
    }

    /// The client sockets (flows) that lost datagrams sent in a span.
    fn flows_lost(&self, from: u64, to: u64) -> std::collections::BTreeSet<usize> {
        self.lost(from, to).iter().map(|d| d.socket).collect()
    }
}

fn handovers(lab: &mut Lab, strategy: Strategy) -> Result<Run> {
    lab.part(strategy.name());
    let mut setup = Setup::new(64, 0, 0);
    setup.udp = Some(UdpMode {
        finish_ms: FINISH_MS,
    });
    let mut svc = Service::start(lab, strategy, setup)?;
    let mut inodes = vec![listening_inodes(&svc.current)];
    show_listening(lab, &svc.current, &inodes[0], "gen 1: its UDP sockets");
    let addr = svc.addrs()[0];
    lab.note(format!(
        "clients: {FLOWS} UDP sockets (as many source ports) send {RATE} numbered datagrams a second to 127.0.0.1, in turn; `seq=N` is answered `seq=N pid=P gen=G`"
    ));
    let load = UdpLoad::start(UdpOptions::new(addr, FLOWS, RATE))?;
    load.wait_answered(0, SETTLE, "gen 1 answered", |a| a.gen == Some(1))?;
    let watch = QueueWatch::start(addr.port());
    let mut switches = Vec::new();
    for i in 0..HANDOVERS {
        if i == 0 {
            lab.note("hand-over 1");
        }
        let sw = svc.switch(lab, i == 0)?;
        let now = listening_inodes(&svc.current);
        if i == 0 {
            show_listening(lab, &svc.current, &now, "gen 2: its UDP sockets");
        } else {
            lab.say(format!(
                "hand-over {}: gen {} {} -> gen {} {}",
                i + 1,
                sw.gen - 1,
                pidt(sw.from),
                sw.gen,
                pidt(sw.to)
            ));
        }
        inodes.push(now);
        // Evidence, not a pause: the new generation answers what was sent
        // after the old one had gone.
        let gen = sw.gen;
        load.wait_answered(sw.done_ns, SETTLE, &format!("gen {gen} answered"), |a| {
            a.gen == Some(gen)
        })?;
        switches.push(sw);
    }
    let watched = watch.stop();
    if watched.dropped() > 0 {
        // A full receive buffer drops datagrams too: then the losses
        // cannot be told from losses on close, and nothing is judged.
        bail!(
            "the kernel dropped {} datagrams on full receive buffers (drops in /proc/net/udp: {:?}); a loss on close cannot be told from it on this run",
            watched.dropped(),
            watched.drops
        );
    }
    let queues = watched.queues;
    show_queues(lab, &inodes, &queues);
    let report = load.stop();
    let left = svc.finish(lab)?;
    Ok(Run {
        strategy,
        report,
        switches,
        inodes,
        queues,
        left,
    })
}

/// The largest receive queue of each generation's socket on 127.0.0.1
/// (its first), as the sampler saw it in /proc/net/udp; generations that
/// share a socket share a line.
fn show_queues(lab: &mut Lab, inodes: &[Vec<u64>], queues: &std::collections::BTreeMap<u64, u32>) {
    lab.proof("$ cat /proc/net/udp   # sampled every 5 ms through the hand-overs: the largest rx_queue of each socket on 127.0.0.1");
    let mut gens: Vec<(u64, usize, usize)> = Vec::new();
    for (g, ino) in inodes.iter().filter_map(|v| v.first()).enumerate() {
        match gens.last_mut() {
            Some(last) if last.0 == *ino => last.2 = g + 1,
            _ => gens.push((*ino, g + 1, g + 1)),
        }
    }
    for (ino, a, b) in gens {
        let who = if a == b {
            format!("gen {a}")
        } else {
            format!("gens {a}-{b}")
        };
        let q = queues.get(&ino).copied().unwrap_or(0);
        lab.proof(format!(
            "socket:[{ino}] ({who}) rx_queue up to {} bytes",
            vol(q)
        ));
    }
}

/// A count as shown: `0` as is (the claim's), others run-to-run.
fn count(v: usize, width: usize) -> String {
    if v == 0 {
        format!("{:>width$}", 0)
    } else {
        vol(format!("{v:>width$}"))
    }
}

/// The clients' counts, overall and per hand-over.
fn show(lab: &mut Lab, r: &Run) {
    let all = r.report.tally(0, u64::MAX);
    lab.say(format!(
        "[clients] sent {}, answered {}, lost {} (slowest answer {} ms)",
        vol(all.sent),
        vol(all.answered),
        count(all.lost, 1),
        vol(format!("{:.1}", r.report.slowest_ms()))
    ));
    lab.say("span         gens    sent  answered  lost  flows that lost  lost were sent within");
    let first = r.switches.first().map_or(u64::MAX, |s| s.signal_ns);
    let before = r.report.tally(0, first);
    lab.say(format!(
        "before       1       {}  {}  {}  {}",
        vol(format!("{:>4}", before.sent)),
        vol(format!("{:>8}", before.answered)),
        count(before.lost, 4),
        count(r.flows_lost(0, first).len(), 15),
    ));
    for (i, sw) in r.switches.iter().enumerate() {
        let t = r.tally(i);
        let lost = r.lost_in(i);
        let within = match (lost.first(), lost.last()) {
            (Some(a), Some(b)) => vol(format!(
                "{:>6.1} ms",
                b.sent_ns.saturating_sub(a.sent_ns) as f64 / 1e6
            )),
            _ => format!("{:>9}", "-"),
        };
        lab.say(format!(
            "hand-over {}  {} -> {}  {}  {}  {}  {} of {FLOWS}  {within}",
            i + 1,
            sw.gen - 1,
            sw.gen,
            vol(format!("{:>4}", t.sent)),
            vol(format!("{:>8}", t.answered)),
            count(t.lost, 4),
            count(r.flows_lost(r.span(i).0, r.span(i).1).len(), 9),
        ));
    }
}

pub fn g09(lab: &mut Lab) -> Result<()> {
    lab.note(format!(
        "each strategy: {HANDOVERS} hand-overs under {RATE} datagrams a second; a stopping generation stops reading, finishes its work for {FINISH_MS} ms, then closes its sockets"
    ));
    let reuseport = handovers(lab, Strategy::Reuseport)?;
    let scm = handovers(lab, Strategy::ScmRights)?;
    lab.part("what the clients saw");
    for r in [&reuseport, &scm] {
        lab.say(format!("# {}", r.strategy.name()));
        show(lab, r);
        let tallies: Vec<Tally> = (0..r.switches.len()).map(|i| r.tally(i)).collect();
        lab.observe(&format!("{}_per_handover", r.strategy.name()), &tallies);
        lab.observe(
            &format!("{}_overall", r.strategy.name()),
            r.report.tally(0, u64::MAX),
        );
        lab.observe(
            &format!("{}_slowest_answer_ms", r.strategy.name()),
            r.report.slowest_ms(),
        );
        lab.observe(&format!("{}_largest_rx_queue", r.strategy.name()), &r.queues);
    }
    judge_reuseport(lab, &reuseport);
    judge_both(lab, &reuseport);
    judge_scm_rights(lab, &scm);
    judge_both(lab, &scm);
    Ok(())
}

fn judge_reuseport(lab: &mut Lab, r: &Run) {
    let known = r.inodes.iter().all(|g| !g.is_empty() && !g.contains(&0));
    let distinct = r
        .inodes
        .iter()
        .enumerate()
        .all(|(i, a)| r.inodes[i + 1..].iter().all(|b| a.iter().all(|x| !b.contains(x))));
    lab.check(
        "reuseport: each generation binds UDP sockets of its own (no inode in /proc/PID/fd shared by two generations)",
        known && distinct,
        format!("{:?}", r.inodes),
    );
    let lost: Vec<usize> = (0..r.switches.len()).map(|i| r.tally(i).lost).collect();
    lab.check(
        format!("reuseport: every hand-over loses datagrams (each of the {HANDOVERS} lost at least one)"),
        lost.len() == HANDOVERS && lost.iter().all(|n| *n > 0),
        format!("lost per hand-over: {lost:?}"),
    );
    let outside: Vec<&Datagram> = r
        .report
        .lost()
        .filter(|d| {
            !r.switches
                .iter()
                .any(|s| d.sent_ns >= s.signal_ns && d.sent_ns <= s.done_ns)
        })
        .collect();
    lab.check(
        "reuseport: datagrams are lost only while an old process lives through a hand-over (sent between its start and the old process's exit); none before the first, none once the old socket is closed",
        outside.is_empty(),
        format!(
            "{} lost outside, first seq {:?}",
            outside.len(),
            outside.first().map(|d| d.seq)
        ),
    );
    // The kernel steers each flow (its 4-tuple's hash) to one socket of the
    // group: a flow that lost a datagram was steered to the old socket, so
    // none of its datagrams in that hand-over reached the new process
    // before the loss.
    let mut mixed = Vec::new();
    for i in 0..r.switches.len() {
        let (from, _) = r.span(i);
        let gen = r.switches[i].gen;
        for d in r.lost_in(i) {
            let crossed = r.report.datagrams.iter().any(|e| {
                e.socket == d.socket
                    && e.sent_ns >= from
                    && e.sent_ns < d.sent_ns
                    && e.answer.as_ref().is_some_and(|a| a.gen == Some(gen))
            });
            if crossed {
                mixed.push(format!("hand-over {} seq={}", i + 1, d.seq));
            }
        }
    }
    lab.check(
        "reuseport: the lost datagrams travelled on flows the kernel steered to the old socket: no earlier datagram of theirs in the same hand-over was answered by the new process",
        mixed.is_empty(),
        mixed.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
    );
}

fn judge_scm_rights(lab: &mut Lab, r: &Run) {
    let first = &r.inodes[0];
    lab.check(
        format!(
            "scm-rights: all {} generations read the very same UDP sockets (the same inodes in /proc/PID/fd)",
            r.inodes.len()
        ),
        !first.is_empty() && !first.contains(&0) && r.inodes.iter().all(|g| g == first),
        format!("{:?}", r.inodes),
    );
    let all = r.report.tally(0, u64::MAX);
    let lost: Vec<usize> = (0..r.switches.len()).map(|i| r.tally(i).lost).collect();
    lab.check(
        "scm-rights: no datagram lost: every numbered datagram answered, in every hand-over",
        all.sent > 0 && all.lost == 0 && all.answered == all.sent && lost.iter().all(|n| *n == 0),
        format!(
            "sent {}, answered {}, lost {} (per hand-over {lost:?}), first lost seq {:?}",
            all.sent,
            all.answered,
            all.lost,
            r.report.lost().next().map(|d| d.seq)
        ),
    );
}

fn judge_both(lab: &mut Lab, r: &Run) {
    let name = r.strategy.name();
    let rep = &r.report;
    lab.check(
        format!("{name}: no answer twice, none that matches no datagram sent, no send or receive error (some socket is bound to the port at every moment)"),
        rep.duplicates == 0 && rep.strange.is_empty() && rep.errors == 0,
        format!(
            "{} duplicates, strange {:?}, {} errors {:?}",
            rep.duplicates,
            rep.strange.iter().take(3).collect::<Vec<_>>(),
            rep.errors,
            rep.first_errors
        ),
    );
    lab.check(
        format!("{name}: nothing left behind: no process runs bin/swaplab-handover (the process table), no control socket file"),
        r.left.is_empty(),
        r.left.join("; "),
    );
}
