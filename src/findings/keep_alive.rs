//! Article 002 in the field: requests on keep-alive connections across a
//! hand-over (G08). The listening socket is passed by SCM_RIGHTS, so no new
//! connection can be refused; what a reload can still break is a request on
//! a connection the old process holds, and that depends on how the old
//! process ends its connections (its [`Drain`]) and on the client.

use std::time::Duration;

use anyhow::Result;

use crate::drivers::comparison::{compare, switch_under_load, Comparison};
use crate::drivers::handover::{
    listening_inodes, show_listening, start_keep_alive_load, Service, Setup, Strategy,
};
use crate::drivers::load::{self, Kind, KeepAlive};
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{vol, Lab};
use crate::targets::handover::mono_ns;
use crate::targets::keepalive::Drain;

use super::GRACEFUL_RESTART;

/// Hand-overs per run.
const SWITCHES: usize = 5;
/// Keep-alive clients.
const CLIENTS: usize = 16;
/// The longest pause of a client between an answer and its next request;
/// far below the server's idle timeout (5 s), so that outside a drain no
/// connection is ever closed for idleness.
const THINK: Duration = Duration::from_millis(40);
/// Answers completed before the first hand-over, after each and after the
/// last.
const SETTLE: usize = 100;

pub static G08: Finding = Finding {
    id: "G08",
    slug: "keep_alive_requests_fail_across_a_handover_unless_the_drain_or_the_client_is_careful",
    claim: "Passing the listening socket does not protect requests on established keep-alive connections: a draining server that closes its idle keep-alive connections, at once or with a half-close (`shutdown(SHUT_WR)`) and a linger, makes the next request on each of them fail (reset, or EOF with no response) — at least one per hand-over under a keep-alive load, while no new connection fails. A drain that answers each connection's next request with `Connection: close` before a half-close and a linger, or a client that sends an idempotent request that failed on a reused connection with no answer again on a new connection, brings that count to 0.",
    source: GRACEFUL_RESTART,
    steps: &[
        "for each drain (close, half-close, next-request) with a plain client, and for close with a retrying client: start gen 1 of the hand-over server with keep-alive connections (--keep-alive --drain D)",
        "16 keep-alive clients, each on its own connection, send each next request a random 0 to 40 ms after the last answer, without first looking whether the server closed the connection",
        "hand the listening sockets over by SCM_RIGHTS 5 times; count the requests that failed, on reused connections and on new ones, per hand-over (the clients' view); compare the listening socket inodes of gen 1 and the last generation (/proc/PID/fd); QUIT the last; nothing left",
    ],
    experiment: g08,
    scope: Scope::Host,
    lesson: Lesson {
        title: "Keep-alive connections across a hand-over",
        question: "Passing the listening socket (G03) means no new connection is ever refused. But most HTTP clients do not open a connection per request: they keep one open and send the next request on it. When the old process stops, it holds those connections. What happens to the next request a client sends on one of them — and what, on the server's side or on the client's, makes that request safe?",
        exercise: "Compare the four parts (close drain, half-close drain, next-request drain, retrying client) in the `side by side` table: which failed requests on reused connections, and did any request on a new connection fail?",
        answer: "No request on a new connection failed in any part: the socket was passed. With the close drain and the half-close drain every hand-over made requests on reused keep-alive connections fail (reset or no byte of an answer). The next-request drain (`Connection: close` on the next answer) and the retrying client bring that count to 0.",
    },
    ..Finding::DEFAULTS
};

/// One drain under one client through [`SWITCHES`] hand-overs.
fn drain_run(lab: &mut Lab, drain: Drain, retry: bool) -> Result<Comparison> {
    let client = if retry { "retrying" } else { "plain" };
    let name = format!("{} drain, {client} client", drain.name());
    lab.part(&name);
    let mut setup = Setup::new(64, 0, 0);
    setup.keep_alive = Some(drain);
    let mut svc = Service::start(lab, Strategy::ScmRights, setup)?;
    let first = svc.current.clone();
    let first_listening = listening_inodes(&first);
    let ka = KeepAlive {
        think: THINK,
        retry,
    };
    let load = start_keep_alive_load(lab, svc.addrs(), CLIENTS, ka)?;
    let zero_ns = mono_ns().saturating_sub(load.now().as_nanos() as u64);
    let m = load.mark();
    load.wait_for(m, SETTLE, "an answer completed", |s| {
        s.kind == Kind::Completed
    })?;
    for i in 0..SWITCHES {
        switch_under_load(lab, &mut svc, &load, i, SETTLE, ("hand-over", "an answer"))?;
    }
    let last = svc.current.clone();
    let last_listening = listening_inodes(&last);
    show_listening(lab, &first, &first_listening, "gen 1's listening sockets");
    let what = format!("gen {}'s listening sockets", last.gen);
    show_listening(lab, &last, &last_listening, &what);
    let samples = load.stop();
    let switches = svc.switches.clone();
    let left = svc.finish(lab)?;
    let mut c = compare(&name, Some(Strategy::ScmRights), switches, samples, zero_ns, left);
    c.first_listening = first_listening;
    c.last_listening = last_listening;
    let per = c.per_switch(|s| s.failed_on_reused());
    lab.say(format!(
        "[clients] {} requests: {}; failed on a reused connection, per hand-over: {}",
        vol(c.attempted),
        vol(load::tally(&c.samples)),
        vol(format!("{per:?}"))
    ));
    Ok(c)
}

pub fn g08(lab: &mut Lab) -> Result<()> {
    lab.note(format!(
        "the listening sockets are passed by SCM_RIGHTS ({SWITCHES} hand-overs per run): no new connection can be refused; each answer is 64 bytes, and the server keeps an idle connection 5 s"
    ));
    let runs = [
        (Drain::Close, false),
        (Drain::HalfClose, false),
        (Drain::NextRequest, false),
        (Drain::Close, true),
    ];
    let mut rows = Vec::new();
    for (drain, retry) in runs {
        rows.push((drain, retry, drain_run(lab, drain, retry)?));
    }
    lab.part("side by side");
    lab.say("drain, client                      requests  failed  on reused  retried  per hand-over");
    for (_, _, c) in &rows {
        lab.say(format!(
            "{:<33} {}  {}  {}  {}  {}",
            c.name,
            vol(format!("{:>8}", c.attempted)),
            vol(format!("{:>6}", c.failed())),
            vol(format!("{:>9}", c.failed_on_reused)),
            vol(format!("{:>7}", c.retried)),
            vol(format!("{:?}", c.per_switch(|s| s.failed_on_reused())))
        ));
    }
    let comparisons: Vec<&Comparison> = rows.iter().map(|r| &r.2).collect();
    lab.observe("runs", &comparisons);
    for (drain, retry, c) in &rows {
        judge(lab, *drain, *retry, c);
    }
    Ok(())
}

fn judge(lab: &mut Lab, drain: Drain, retry: bool, c: &Comparison) {
    let name = &c.name;
    let per = c.per_switch(|s| s.failed_on_reused());
    let tally = load::tally(&c.samples);
    let (first, last) = (&c.first_listening, &c.last_listening);
    lab.check(
        format!("{name}: the last generation listens on the very sockets of gen 1 (same inodes in /proc/PID/fd)"),
        !first.is_empty() && !first.contains(&0) && first == last,
        format!("gen 1 {first:?}, last {last:?}"),
    );
    let new_failed = c.failed() - c.failed_on_reused;
    lab.check(
        format!("{name}: no request on a new connection fails (the socket was passed)"),
        new_failed == 0,
        format!("{new_failed} failed on new connections: {tally}"),
    );
    match (drain, retry) {
        (Drain::Close | Drain::HalfClose, false) => {
            lab.check(
                format!("{name}: every hand-over makes requests on reused connections fail"),
                per.len() == SWITCHES && per.iter().all(|n| *n >= 1),
                format!("per hand-over {per:?}: {tally}"),
            );
            // What the claim says of each: the server never answered it.
            let unanswered = c
                .samples
                .iter()
                .filter(|s| s.failed_on_reused())
                .all(|s| !s.answered && matches!(s.kind, Kind::Reset | Kind::ShortRead));
            lab.check(
                format!("{name}: each of them was reset or ended with no byte of an answer"),
                unanswered,
                tally,
            );
        }
        (Drain::NextRequest, false) => {
            // The risky moment did come: at every hand-over the old process
            // answered requests on reused connections and closed them.
            let closed = c.per_switch(|s| s.reused && s.closed && s.kind == Kind::Completed);
            lab.check(
                format!("{name}: at every hand-over, requests on reused connections were answered with `Connection: close`"),
                closed.len() == SWITCHES && closed.iter().all(|n| *n >= 1),
                format!("per hand-over {closed:?}"),
            );
            lab.check(
                format!("{name}: no request fails, on a reused connection or a new one"),
                c.failed() == 0,
                format!("per hand-over {per:?}: {tally}"),
            );
        }
        _ => {
            lab.check(
                format!("{name}: no request fails, on a reused connection or a new one"),
                c.failed() == 0,
                format!("per hand-over {per:?}: {tally}"),
            );
        }
    }
    if retry {
        let retried = c.per_switch(|s| s.retried);
        lab.check(
            format!("{name}: the retries did the work: requests were sent again at every hand-over"),
            retried.len() == SWITCHES && retried.iter().all(|n| *n >= 1),
            format!("retried per hand-over {retried:?}"),
        );
    }
    lab.check(
        format!("{name}: nothing left behind"),
        c.left_behind.is_empty(),
        c.left_behind.join("; "),
    );
}
