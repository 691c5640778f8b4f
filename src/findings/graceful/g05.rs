//! G05: an SO_REUSEPORT overlap drops queued connections unless migrated.

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::drivers::handover::socket_inode;
use crate::harness::finding::{Finding, Need, OlderKernels, Scope, Lesson};
use crate::harness::lab::{vol, Lab};
use crate::harness::netns::NetNs;
use crate::harness::process::{Program, Target};
use crate::targets::protocol::field_i32;
use crate::findings::GRACEFUL_RESTART;

use super::common::{accept_queue, listening_addr, queue_clients, read_all, show_queue};

const G05_CLIENTS: usize = 200;

/// What one G05 run saw: connections queued on the old socket (from
/// /proc/net/tcp), served by B and reset (from the clients), and the
/// namespace's tcp_migrate_req as read inside it.
struct Overlap {
    on_a: usize,
    served: usize,
    reset: usize,
    inside: String,
}

fn reuseport_drop(lab: &mut Lab, migrate: bool) -> Result<Overlap> {
    let setting = if migrate { "1" } else { "0" };
    lab.shell(format!(
        "unshare --net   # a fresh network namespace; inside it: ip link set lo up; sysctl -w net.ipv4.tcp_migrate_req={setting}"
    ));
    let ns = NetNs::new(&[("net.ipv4.tcp_migrate_req", setting)])?;
    let inside = ns
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req"))??
        .trim()
        .to_string();
    lab.proof("$ nsenter --net=$NS sysctl net.ipv4.tcp_migrate_req");
    lab.proof(format!("net.ipv4.tcp_migrate_req = {inside}"));
    let args_a = [
        "--reuseport",
        "--paused",
        "--listen",
        "127.0.0.1:0",
        "--body",
        "256",
    ];
    let exe = lab.sandbox.program(Program::Handover)?;
    let start_in_ns = |lab: &mut Lab, label: &str, args: &[&str]| -> Result<Target> {
        let exe = exe.clone();
        lab.start_exe(&exe, label, args, |c| {
            ns.enter_on_exec(c);
            "nsenter --net=$NS".into()
        })
    };
    let mut a = start_in_ns(lab, "A", &args_a)?;
    let line = a.wait_line(|l| l.contains(": listening fd="), "`listening`")?;
    let addr = listening_addr(&line)?;
    let listen = addr.to_string();
    let args_b = [
        "--reuseport",
        "--paused",
        "--listen",
        &listen,
        "--body",
        "256",
    ];
    let mut b = start_in_ns(lab, "B", &args_b)?;
    lab.note(format!(
        "{G05_CLIENTS} clients connect (inside the namespace) and send a request; neither accepts"
    ));
    let clients = ns.run(|| queue_clients(addr, G05_CLIENTS))??;
    let (pa, pb) = (a.pid(), b.pid());
    let queues = lab.wait_until("every connection waits in one of the two queues", || {
        let q = accept_queue(Some(&ns), addr).map_err(|e| format!("{e:#}"))?;
        let total: u32 = q.iter().map(|(_, n)| n).sum();
        if total as usize >= G05_CLIENTS {
            Ok(q)
        } else {
            Err(format!("{q:?}"))
        }
    })?;
    let fd_a = field_i32(&line, "fd")?;
    let on_a_ino = socket_inode(pa, fd_a);
    let on_a = queues
        .iter()
        .find(|(i, _)| *i == on_a_ino)
        .map(|(_, n)| *n as usize)
        .unwrap_or(0);
    show_queue(lab, Some(&ns), addr)?;
    lab.say(format!(
        "# {} queued on A's socket, {} on B's",
        vol(on_a),
        vol(G05_CLIENTS - on_a)
    ));
    lab.note("A closes its socket (QUIT: stop accepting, exit); then B accepts");
    lab.kill(Signal::SIGQUIT, pa, "$A")?;
    a.wait_exit()?;
    b.send("resume")?;
    lab.say("[B] < resume");
    lab.expect(&mut b, &format!("accepting pid={pb}"))?;
    let got = read_all(clients);
    let served = got.iter().filter(|r| r.as_ref().ok() == Some(&pb)).count();
    let reset = got
        .iter()
        .filter(|r| matches!(r, Err(e) if e.contains("reset")))
        .count();
    lab.say(format!(
        "[clients] {} served by B, {} reset, {} other",
        vol(served),
        vol(reset),
        G05_CLIENTS - served - reset
    ));
    drop(b);
    Ok(Overlap {
        on_a,
        served,
        reset,
        inside,
    })
}

pub static G05: Finding = Finding {
    id: "G05",
    slug: "a_reuseport_overlap_drops_queued_connections_unless_migrated",
    claim: "SO_REUSEPORT overlap with separate sockets: closing the old process's socket resets exactly the connections queued on it (the HAProxy reload problem), unless `net.ipv4.tcp_migrate_req=1` migrates them to the socket that stays: then none is reset and every one is served (set inside a fresh network namespace — the setting is per namespace, the host's stays untouched).",
    source: GRACEFUL_RESTART,
    steps: &[
        "in a fresh network namespace (tcp_migrate_req=0, read back inside it): A and B listen on one port with SO_REUSEPORT, neither accepting; 200 clients connect and send a request; `ss -lt` (sock_diag) shows how many wait on each socket",
        "A closes its socket; B accepts: exactly the connections queued on A's socket were reset, B served the rest",
        "again in another fresh namespace with tcp_migrate_req=1: none reset, B serves every one",
        "the host's net.ipv4.tcp_migrate_req is unchanged",
    ],
    experiment: g05,
    scope: Scope::Host,
    // Request migration came with Linux 5.14. Debian 11's 5.10.223 has the
    // setting all the same (it reads back 1), measured by matrix --kernel.
    older_kernels: &[OlderKernels {
        before: (5, 14),
        claim: "SO_REUSEPORT overlap with separate sockets: closing the old process's socket resets exactly the connections queued on it (the HAProxy reload problem). Before Linux 5.14 (measured on Debian 11's 5.10.223, which has the setting) `net.ipv4.tcp_migrate_req=1` does not help: it is accepted and reads back 1 (inside a fresh network namespace; the host's stays untouched), yet every connection queued on the closed socket is reset all the same.",
    }],
    needs: &[Need::NetNs("changes net.ipv4.tcp_migrate_req")],
    lesson: Lesson {
        title: "Overlapping SO_REUSEPORT sockets",
        question: "If a restart uses SO_REUSEPORT — the new process binds its own socket beside the old one, then the old one closes — is that as safe as passing the socket?",
        exercise: "With `tcp_migrate_req=0`, how many clients were queued on A's socket, and what happened to them when A closed it? And with `tcp_migrate_req=1`?",
        answer: "With 0, exactly the connections the kernel had queued on A's socket are reset when A closes it; B serves only its own. With 1 they migrate to B's socket: none is reset, all are served. The setting was made inside a fresh network namespace; the host's stays untouched.",
    },
    ..Finding::DEFAULTS
};

pub fn g05(lab: &mut Lab) -> Result<()> {
    lab.proof("$ sysctl net.ipv4.tcp_migrate_req   # the host's, left untouched".to_string());
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .unwrap_or_default()
        .trim()
        .to_string();
    lab.proof(format!("net.ipv4.tcp_migrate_req = {}", vol(&host)));
    lab.part("tcp_migrate_req=0");
    let d = reuseport_drop(lab, false)?;
    lab.observe("queued_on_old_0", d.on_a);
    lab.observe("reset_0", d.reset);
    lab.check(
        "closing the old SO_REUSEPORT socket resets exactly the connections the kernel had queued on it (tcp_migrate_req=0 inside the namespace)",
        d.inside == "0" && d.on_a > 0 && d.reset == d.on_a && d.served == G05_CLIENTS - d.on_a,
        format!(
            "tcp_migrate_req={} inside; {} queued on the old socket, {} reset, {} served",
            d.inside, d.on_a, d.reset, d.served
        ),
    );
    lab.part("tcp_migrate_req=1");
    let d = reuseport_drop(lab, true)?;
    lab.observe("queued_on_old_1", d.on_a);
    lab.observe("reset_1", d.reset);
    let older = crate::harness::platform::kernel_version().and_then(|v| G05.on_kernel(v));
    let (what, ok) = if older.is_some() {
        (
            "before Linux 5.14, net.ipv4.tcp_migrate_req=1 is accepted but migrates nothing: every connection queued on the old socket is reset",
            d.inside == "1" && d.on_a > 0 && d.reset == d.on_a && d.served == G05_CLIENTS - d.on_a,
        )
    } else {
        (
            "with net.ipv4.tcp_migrate_req=1 they migrate to the other socket: none reset, all served",
            d.inside == "1" && d.on_a > 0 && d.reset == 0 && d.served == G05_CLIENTS,
        )
    };
    lab.check(
        what,
        ok,
        format!(
            "tcp_migrate_req={} inside; {} queued on the old socket, {} reset, {} served",
            d.inside, d.on_a, d.reset, d.served
        ),
    );
    let after = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .unwrap_or_default()
        .trim()
        .to_string();
    lab.check_eq("the host's setting is untouched", after, host);
    Ok(())
}
