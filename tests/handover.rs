//! The hand-over's failure paths, the ones users of tableflip, Envoy and
//! HAProxy report: a new process that crashes or hangs before it is ready,
//! and a second restart asked for while one is in progress. In each, the
//! old generation keeps serving and no client sees an error.

use swaplab::experiments::graceful::{start_load, Service, Setup, Strategy};
use swaplab::handover::TAKEOVER_FAILED;
use swaplab::lab::Lab;
use swaplab::load::{self, Kind, Load};
use swaplab::process::{hermetic, Program, Target};

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
        swaplab::process::describe_status(&status),
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
    assert!(svc.finish(&mut lab).unwrap().is_empty());
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
        swaplab::process::describe_status(&status),
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
    assert!(svc.finish(&mut lab).unwrap().is_empty());
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
    assert!(svc.finish(&mut lab).unwrap().is_empty());
}

#[test]
fn the_holder_refuses_a_restart_while_a_generation_is_starting() {
    let mut lab = Lab::new("holder", None).unwrap();
    let mut s = setup(5_000);
    s.startup_ms = 300;
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
    assert!(svc.finish(&mut lab).unwrap().is_empty());
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
