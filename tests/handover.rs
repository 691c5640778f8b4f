//! The hand-over's failure paths, the ones users of tableflip, Envoy and
//! HAProxy report: a new process that crashes or hangs before it is ready,
//! and a second restart asked for while one is in progress. In each, the
//! old generation keeps serving and no client sees an error.

use swaplab::drivers::handover::{start_load, Service, Setup, Strategy};
use swaplab::drivers::load::{self, Kind, Load};
use swaplab::harness::lab::Lab;
use swaplab::harness::process::{hermetic, spawn_retrying, Program, Target};
use swaplab::targets::handover::TAKEOVER_FAILED;

fn setup(handover_timeout_ms: u64) -> Setup {
    let mut s = Setup::new(64 << 10, 20, 0);
    s.handover_timeout_ms = handover_timeout_ms;
    s
}

/// A new process asking the current one for its sockets, with `extra`
/// arguments; not waited for.
fn newcomer(lab: &mut Lab, label: &str, extra: &[&str]) -> Target {
    let exe = lab.sandbox.program(Program::Handover).unwrap();
    let mut cmd = hermetic(&exe, &lab.sandbox.lib_dir());
    cmd.current_dir(lab.sandbox.root())
        .args(["--takeover", "run/handover.sock", "--body", "65536"])
        .args(extra);
    Target::spawn(cmd, label, "bin/swaplab-handover --takeover …").unwrap()
}

/// Waits for `n` more downloads served by generation `gen`.
fn served_by(load: &Load, gen: u32, n: usize) {
    let m = load.mark();
    load.wait_for(m, n, &format!("a download from gen {gen}"), |s| {
        s.kind == Kind::Completed && s.answer.as_ref().and_then(|a| a.gen) == Some(gen)
    })
    .unwrap();
}

fn no_failures(load: Load) {
    let samples = load.stop();
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| s.kind != Kind::Completed)
        .collect();
    assert!(
        failed.is_empty() && !samples.is_empty(),
        "{} of {} failed: {}; first: {:?}",
        failed.len(),
        samples.len(),
        load::tally(&samples),
        failed.first()
    );
}

#[test]
fn a_new_process_that_crashes_before_ready_leaves_the_old_one_serving() {
    let mut lab = Lab::new("crash", None).unwrap();
    let mut svc = Service::start(&mut lab, Strategy::ScmRights, setup(5_000)).unwrap();
    let old = svc.current.pid;
    let load = start_load(&mut lab, svc.addrs(), 100.0, 8).unwrap();
    served_by(&load, 1, 5);
    let mut crasher = newcomer(&mut lab, "crasher", &["--fault", "crash-before-ready"]);
    let status = crasher.wait_exit().unwrap();
    assert_eq!(
        swaplab::harness::process::describe_status(&status),
        "killed by SIGABRT"
    );
    svc.expect(
        &mut lab,
        &format!("notice pid={old}: take-over by pid={} failed: it closed the connection before ready; still serving", crasher.pid()),
    )
    .unwrap();
    served_by(&load, 1, 10);
    // The failed attempt left the old process able to hand over.
    let sw = svc.switch(&mut lab, true).unwrap();
    assert_eq!((sw.from, sw.gen), (old, 2));
    served_by(&load, 2, 5);
    no_failures(load);
    let left = svc.finish(&mut lab).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_new_process_that_hangs_is_killed_after_the_timeout_and_the_old_one_keeps_serving() {
    let mut lab = Lab::new("hang", None).unwrap();
    let mut svc = Service::start(&mut lab, Strategy::ScmRights, setup(300)).unwrap();
    let old = svc.current.pid;
    let load = start_load(&mut lab, svc.addrs(), 100.0, 8).unwrap();
    served_by(&load, 1, 5);
    let mut hanger = newcomer(&mut lab, "hanger", &["--fault", "hang-before-ready"]);
    let status = hanger.wait_exit().unwrap();
    assert_eq!(
        swaplab::harness::process::describe_status(&status),
        "killed by SIGKILL"
    );
    svc.expect(
        &mut lab,
        &format!(
            "notice pid={old}: take-over by pid={} failed: no ready within 300 ms; killed it; still serving",
            hanger.pid()
        ),
    )
    .unwrap();
    served_by(&load, 1, 10);
    no_failures(load);
    let left = svc.finish(&mut lab).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_second_takeover_during_one_in_progress_is_refused_cleanly() {
    let mut lab = Lab::new("busy", None).unwrap();
    let mut svc = Service::start(&mut lab, Strategy::ScmRights, setup(20_000)).unwrap();
    let old = svc.current.pid;
    let load = start_load(&mut lab, svc.addrs(), 100.0, 8).unwrap();
    served_by(&load, 1, 5);
    let mut first = newcomer(&mut lab, "first", &["--fault", "hang-before-ready"]);
    first
        .wait_line(
            |l| l.contains("fault: hanging before ready"),
            "the first newcomer hangs",
        )
        .unwrap();
    let mut second = newcomer(&mut lab, "second", &[]);
    let status = second.wait_exit().unwrap();
    assert_eq!(status.code(), Some(TAKEOVER_FAILED), "{}", second.dump());
    // The refusal it printed (read by the harness's stderr thread, which
    // may lag the exit).
    let busy = format!("busy pid={old} taking-over={}", first.pid());
    second
        .wait_stderr(|t| t.contains(&busy), &format!("`{busy}`"))
        .unwrap();
    svc.expect(
        &mut lab,
        &format!(
            "notice pid={old}: take-over request from pid={} refused: pid={} is taking over",
            second.pid(),
            first.pid()
        ),
    )
    .unwrap();
    // The one in progress fails too (it hangs); the old one keeps serving.
    drop(first);
    svc.expect(&mut lab, &format!("notice pid={old}: take-over by pid="))
        .unwrap();
    served_by(&load, 1, 10);
    no_failures(load);
    let left = svc.finish(&mut lab).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_holder_refuses_a_restart_while_a_generation_is_starting() {
    let mut lab = Lab::new("holder", None).unwrap();
    let mut s = setup(5_000);
    s.startup_ms = 1000;
    let mut svc = Service::start(&mut lab, Strategy::Activation, s).unwrap();
    let holder = svc.signal_pid();
    let load = start_load(&mut lab, svc.addrs(), 100.0, 8).unwrap();
    served_by(&load, 1, 5);
    lab.kill(nix::sys::signal::Signal::SIGHUP, holder, "$HOLDER")
        .unwrap();
    svc.expect(
        &mut lab,
        &format!("notice pid={holder}: holder: started generation gen=2"),
    )
    .unwrap();
    lab.kill(nix::sys::signal::Signal::SIGHUP, holder, "$HOLDER")
        .unwrap();
    svc.expect(
        &mut lab,
        &format!("notice pid={holder}: holder: signal HUP received from pid={}, refused: generation gen=2", std::process::id()),
    )
    .unwrap();
    svc.expect(&mut lab, "accepting pid=").unwrap();
    served_by(&load, 2, 10);
    no_failures(load);
    let left = svc.finish(&mut lab).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn the_exec_strategy_ignores_a_second_usr2_while_the_new_binary_runs() {
    let mut lab = Lab::new("usr2", None).unwrap();
    let mut svc = Service::start(&mut lab, Strategy::Exec, setup(5_000)).unwrap();
    let old = svc.current.pid;
    let load = start_load(&mut lab, svc.addrs(), 100.0, 8).unwrap();
    served_by(&load, 1, 5);
    lab.kill(nix::sys::signal::Signal::SIGUSR2, old, "$OLD")
        .unwrap();
    let line = svc.expect(&mut lab, "accepting pid=").unwrap();
    lab.kill(nix::sys::signal::Signal::SIGUSR2, old, "$OLD")
        .unwrap();
    svc.expect(
        &mut lab,
        &format!(
            "notice pid={old}: signal USR2 received from pid={}, ignoring: the new binary",
            std::process::id()
        ),
    )
    .unwrap();
    assert!(line.contains(" gen=2 "), "{line}");
    served_by(&load, 2, 5);
    no_failures(load);
}

#[test]
fn the_holder_ignores_ready_from_a_process_it_did_not_start() {
    use std::os::linux::net::SocketAddrExt;
    let mut lab = Lab::new("notify", None).unwrap();
    let mut s = setup(5_000);
    // Gen 2 takes this long to start: the forged READY=1 arrives while it
    // is starting, when believing it would QUIT gen 1 with nobody to take
    // over.
    s.startup_ms = 1000;
    let mut svc = Service::start(&mut lab, Strategy::Activation, s).unwrap();
    let holder = svc.signal_pid();
    let gen1 = svc.current.pid;
    let load = start_load(&mut lab, svc.addrs(), 100.0, 8).unwrap();
    served_by(&load, 1, 5);
    lab.kill(nix::sys::signal::Signal::SIGHUP, holder, "$HOLDER")
        .unwrap();
    let started = svc
        .expect(
            &mut lab,
            &format!("notice pid={holder}: holder: started generation gen=2"),
        )
        .unwrap();
    let (_, rest) = started.split_once("gen=2 ").unwrap();
    let gen2 = swaplab::targets::protocol::field_i32(rest, "pid").unwrap();
    // This test process is not a generation: it claims to be gen 2.
    let forged = format!("READY=1\nMAINPID={gen2}\n");
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(format!("swaplab-notify-{holder}"))
            .unwrap();
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to_addr(forged.as_bytes(), &addr)
        .unwrap();
    // What the clients and /proc show: had the holder believed it, gen 1
    // would stop accepting now, and downloads begun from here on would
    // wait for gen 2. Gen 1 still serves them, alive.
    served_by(&load, 1, 3);
    assert!(
        swaplab::harness::procs::alive(gen1),
        "gen 1 (pid {gen1}) is gone after a forged READY=1"
    );
    let me = std::process::id();
    let ignored = svc
        .expect(
            &mut lab,
            &format!("notice pid={holder}: holder: ignored READY=1 from pid="),
        )
        .unwrap();
    assert!(ignored.contains(&format!("from pid={me}:")), "{ignored}");
    // Gen 1 is told to stop only once gen 2 itself said READY=1, after it
    // accepts.
    let accepting = svc.expect(&mut lab, "accepting pid=").unwrap();
    assert!(
        accepting.contains(&format!("pid={gen2} gen=2 ")),
        "{accepting}"
    );
    svc.expect(
        &mut lab,
        &format!("notice pid={holder}: holder: generation gen=2 pid={gen2} is ready"),
    )
    .unwrap();
    svc.expect(
        &mut lab,
        &format!("notice pid={holder}: holder: QUIT to the previous generation gen=1 pid={gen1}"),
    )
    .unwrap();
    served_by(&load, 2, 10);
    no_failures(load);
    let left = svc.finish(&mut lab).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_inherited_fd_list_that_names_one_fd_twice_is_refused() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let lab = Lab::new("dupfds", None).unwrap();
    let exe = lab.sandbox.program(Program::Handover).unwrap();
    let l =
        swaplab::targets::handover::bind_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let src = l.as_raw_fd();
    let mut cmd = hermetic(&exe, &lab.sandbox.lib_dir());
    cmd.current_dir(lab.sandbox.root())
        .env("SWAPLAB_LISTEN_FDS", "3;3;")
        .stdin(std::process::Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; fd 3 of the child is a real
    // listening socket, so only the duplicate name can make it fail.
    unsafe {
        cmd.pre_exec(move || {
            // (dup2 onto itself keeps close-on-exec: clear it.)
            if libc::dup2(src, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Retried on ETXTBSY: another test's thread may fork while the program
    // is still open for writing here (its spawn failed once in the whole
    // suite run as a user; that is the known way it fails).
    let out = spawn_retrying(&mut cmd)
        .unwrap()
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains("SWAPLAB_LISTEN_FDS=\"3;3;\": fd 3 is named twice"),
        "stderr: {err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("accepting"),
        "it must not serve"
    );
}
