//! `swaplab stale` as a user meets it: a replaced executable flagged with
//! exit status 1, an identical reinstall listed as optional, pseudo-files
//! and data left out but counted, bad input refused with exit status 2,
//! another user's processes counted as unreadable, and the bench on a small
//! set of sleepers.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;

use swaplab::harness::process::spawn_retrying;

use crate::cli::swaplab;

/// A process killed and reaped when the test ends, however it ends.
pub(crate) struct Guarded(pub(crate) Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guarded {
    pub(crate) fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

/// A sandbox folder others may enter (for the unprivileged test).
pub(crate) fn sandbox() -> swaplab::harness::sandbox::Scratch {
    let dir = swaplab::harness::sandbox::scratch("stale-test").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Waits, with a deadline, until `probe` holds.
pub(crate) fn wait_for(what: &str, mut probe: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !probe() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Spawns `cmd` so that it dies with this test (PR_SET_PDEATHSIG) and is
/// killed and reaped when the guard drops.
pub(crate) fn spawn_guarded(mut cmd: std::process::Command) -> Guarded {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Guarded(spawn_retrying(&mut cmd).unwrap())
}

/// Runs `cmd` to its end and returns what it printed. It starts a program
/// this test binary has just copied, so it may meet ETXTBSY while another
/// test's fork still holds the copy's write end: the start is retried.
pub(crate) fn output_of(mut cmd: std::process::Command) -> std::process::Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn_retrying(&mut cmd)
        .unwrap()
        .wait_with_output()
        .unwrap()
}

/// Starts a copy of `sleep` at `dir/name` (as `uid` if given) and waits
/// until the exec is done (its /proc/PID/exe names the copy).
pub(crate) fn sleeper(dir: &Path, name: &str, uid: Option<(u32, u32)>) -> (Guarded, PathBuf) {
    let exe = dir.join(name);
    if !exe.exists() {
        std::fs::copy("/bin/sleep", &exe).unwrap();
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("600").stdin(Stdio::null()).stdout(Stdio::null());
    if let Some((u, g)) = uid {
        cmd.uid(u).gid(g);
    }
    let child = spawn_guarded(cmd);
    let pid = child.pid();
    wait_for(&format!("{pid} runs {}", exe.display()), || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
    });
    // The exec is done, but the loader may still be laying out libc (its
    // first mapping reserves the whole span, beyond the file's end): wait
    // until sleep sleeps, its libraries mapped for good.
    wait_for(&format!("{pid} sleeps"), || asleep(pid));
    (child, exe)
}

/// Whether process `pid` waits in nanosleep (its current system call).
fn asleep(pid: i32) -> bool {
    let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let nr = call.split(' ').next().and_then(|n| n.parse::<i64>().ok());
    nr == Some(libc::SYS_clock_nanosleep) || nr == Some(libc::SYS_nanosleep)
}

/// `install -m 755 SRC DST`: the real tool, a new inode at DST.
pub(crate) fn install(src: &str, dst: &Path) {
    let st = std::process::Command::new("install")
        .args(["-m", "755", src])
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
}

pub(crate) fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(out)))
}

#[test]
fn stale_flags_a_replaced_executable_and_exits_1() {
    let dir = sandbox();
    let (p, exe) = sleeper(dir.path(), "old-sleep", None);
    install("/bin/true", &exe);
    let pid = p.pid().to_string();
    swaplab()
        .args(["stale", "--pid", &pid])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!("{pid} old-sleep")))
        .stdout(predicate::str::contains("restart required"))
        .stdout(predicate::str::contains("executable"))
        .stdout(predicate::str::contains(": replaced:"))
        .stdout(predicate::str::contains("1 process needs a restart"));
    let out = swaplab()
        .args(["stale", "--json", "--pid", &pid])
        .assert()
        .code(1);
    let v = json(&out.get_output().stdout);
    let f = &v["processes"][0]["files"][0];
    assert_eq!(v["processes"][0]["pid"], p.pid());
    assert_eq!(f["role"], "executable");
    assert_eq!(f["reason"], "replaced");
    assert_eq!(f["need"], "required");
    assert_eq!(f["deleted"], true);
    assert!(f["evidence"].as_str().unwrap().contains("build-id"), "{f}");
}

#[test]
fn stale_lists_an_identical_reinstall_as_optional_and_exits_0() {
    let dir = sandbox();
    let (p, exe) = sleeper(dir.path(), "same-sleep", None);
    install("/bin/sleep", &exe);
    let pid = p.pid().to_string();
    let out = swaplab()
        .args(["stale", "--json", "--pid", &pid])
        .assert()
        .code(0);
    let v = json(&out.get_output().stdout);
    assert_eq!(v["required"], 0, "{v}");
    assert_eq!(v["optional"], 1, "{v}");
    assert_eq!(v["processes"][0]["need"], "optional");
    assert_eq!(v["processes"][0]["files"][0]["reason"], "reinstalled");
}

#[test]
fn without_a_build_id_only_root_can_tell_an_identical_reinstall() {
    // The `short` build of libexample has no build-id: the old content can
    // be compared with the new file only byte by byte, and only root may
    // open the mapped file itself (/proc/PID/map_files). So root lists the
    // identical reinstall as optional; a user, who cannot compare, must
    // call it required and say why, never guess "the same".
    let dir = sandbox();
    let lib = dir.path().join("libexample.so");
    let short = swaplab::harness::variants::Variant::Short.built_path();
    install(short.to_str().unwrap(), &lib);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("swaplab-plain"));
    cmd.env_clear()
        .env("LD_LIBRARY_PATH", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let p = spawn_guarded(cmd);
    let pid = p.pid();
    let maps = format!("/proc/{pid}/maps");
    wait_for(&format!("{pid} maps {}", lib.display()), || {
        std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(lib.to_str().unwrap()))
    });
    install(short.to_str().unwrap(), &lib);
    let out = swaplab()
        .args(["stale", "--json", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    let f = &v["processes"][0]["files"][0];
    let evidence = f["evidence"].as_str().unwrap_or_default();
    if nix::unistd::geteuid().is_root() {
        assert_eq!(out.status.code(), Some(0), "{v}");
        assert_eq!(f["reason"], "reinstalled", "{v}");
        assert_eq!(f["need"], "optional", "{v}");
        assert!(evidence.contains("same bytes"), "{v}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{v}");
        assert_eq!(f["need"], "required", "{v}");
        assert!(evidence.contains("not compared"), "{v}");
    }
}

#[test]
fn stale_leaves_pseudo_files_and_data_out_and_counts_them() {
    let dir = sandbox();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, vec![7u8; 8192]).unwrap();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("swaplab-dlopen"));
    cmd.env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut t = Guarded(cmd.spawn().unwrap());
    let pid = t.pid();
    let mut stdin = t.0.stdin.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(t.0.stdout.take().unwrap()));
    let mut ask = |cmd: &str, answer: &str| {
        use std::io::Write;
        writeln!(stdin, "{cmd}").unwrap();
        loop {
            let l = lines.next().expect("the target answered").unwrap();
            if l.starts_with(answer) {
                return l;
            }
        }
    };
    let pseudo = ask("pseudo", "pseudo");
    assert!(
        pseudo.contains("memfd=yes")
            && pseudo.contains("sysv=yes")
            && pseudo.contains("devzero=yes"),
        "{pseudo}"
    );
    ask(&format!("map {}", data.display()), "mapped");
    std::fs::remove_file(&data).unwrap();
    // The article's grep flags this process: the memfd, the SysV segment
    // and the data file are (deleted); /dev/zero is too on older kernels.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for what in ["/memfd:", "/SYSV", "/dev/zero", "data.bin (deleted)"] {
        assert!(maps.contains(what), "{what} missing from maps:\n{maps}");
    }
    let out = swaplab()
        .args(["stale", "--json", "--pid", &pid.to_string()])
        .assert()
        .code(0);
    let v = json(&out.get_output().stdout);
    assert_eq!(v["processes"].as_array().unwrap().len(), 0, "{v}");
    let kinds: Vec<&str> = v["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in ["memfd", "sysv-shm", "dev"] {
        assert!(kinds.contains(&k), "{k} not counted as excluded: {v}");
    }
    assert!(v["data_files"].as_u64().unwrap() >= 1, "{v}");
    swaplab()
        .args(["stale", "--pid", &pid.to_string()])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("not checked:"))
        .stdout(predicate::str::contains("memfd"));
}

#[test]
fn stale_rejects_bad_input_with_exit_code_2() {
    swaplab()
        .args(["stale", "--pid", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--pid"));
    swaplab()
        .args(["stale", "--pid", "4194304"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no such process"));
    swaplab()
        .args(["stale", "--user", "no-such-user-swaplab"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no such user"));
    swaplab()
        .args(["stale", "--match", "("])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a valid regular expression"));
    swaplab().args(["stale", "--frobnicate"]).assert().code(2);
    let empty = tempfile::tempdir().unwrap();
    swaplab()
        .arg("stale")
        .arg("--package-root")
        .arg(empty.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no dpkg or rpm database there"));
    swaplab()
        .args(["stale", "--plan", "--json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    swaplab()
        .args(["stale", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit status"));
}

/// The unprivileged user: `swaplab` if it exists (CI makes it), else `nobody`.
pub(crate) fn other_user() -> Option<nix::unistd::User> {
    ["swaplab", "nobody"]
        .iter()
        .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
}

#[test]
fn stale_as_an_unprivileged_user_reports_its_own_and_counts_the_rest() {
    let ci = std::env::var_os("CI").is_some();
    if !nix::unistd::geteuid().is_root() {
        assert!(!ci, "on CI this test must run as root");
        eprintln!(
            "skipped: needs root to start processes as two users (sudo -E cargo test stale_as)"
        );
        return;
    }
    let Some(user) = other_user() else {
        assert!(!ci, "on CI the user `swaplab` must exist");
        eprintln!("skipped: no user `swaplab` or `nobody` (useradd --system swaplab)");
        return;
    };
    let dir = sandbox();
    let (root_p, root_exe) = sleeper(dir.path(), "swl-unpriv-root", None);
    let ids = (user.uid.as_raw(), user.gid.as_raw());
    let (user_p, user_exe) = sleeper(dir.path(), "swl-unpriv-user", Some(ids));
    install("/bin/true", &root_exe);
    install("/bin/true", &user_exe);
    let mut cmd = crate::cli::swaplab_as(&user, dir.path());
    cmd.args(["stale", "--json", "--match", "swl-unpriv"]);
    let out = output_of(cmd);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    let flagged: Vec<i64> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(flagged, vec![user_p.pid() as i64], "{v}");
    assert_eq!(v["processes"][0]["files"][0]["reason"], "replaced", "{v}");
    let unreadable: Vec<i64> = v["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(unreadable, vec![root_p.pid() as i64], "{v}");
    let mut cmd = crate::cli::swaplab_as(&user, dir.path());
    cmd.args(["stale", "--match", "swl-unpriv"]);
    let text = output_of(cmd);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("1 unreadable (another user's; run as root to read them: swl-unpriv-root)"),
        "{text}"
    );
    assert_eq!(v["unreadable"][0]["reason"], "another-user", "{v}");
    // Asked for by pid, another user's process cannot be judged: exit 3,
    // never an all-clear.
    let mut cmd = crate::cli::swaplab_as(&user, dir.path());
    cmd.args(["stale", "--pid", &root_p.pid().to_string()]);
    let out = output_of(cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!(
            "{} swl-unpriv-root: could not tell: its mappings could not be read (another user's",
            root_p.pid()
        )),
        "{text}"
    );
}

#[test]
fn bench_stale_times_each_tool_and_judges_its_answer() {
    // It runs needrestart twice over the whole machine: as long as that
    // takes on this one (the bench's own deadline for each run), and more.
    let whole_machine = swaplab::harness::process::whole_machine_deadline();
    let out = swaplab()
        .timeout(std::time::Duration::from_secs(120) + 2 * whole_machine)
        .args([
            "bench",
            "stale",
            "--processes",
            "20",
            "--runs",
            "1",
            "--json",
        ])
        .assert()
        .success();
    let v = json(&out.get_output().stdout);
    let b = &v["bench"];
    let judged_on = b["judged_on"].as_str().unwrap_or_default();
    assert!(
        judged_on.starts_with("one case: libexample replaced by install")
            && judged_on.contains("D01"),
        "what \"correct\" covers: {v}"
    );
    assert_eq!(b["stale"], 10, "{v}");
    assert_eq!(b["jit"], 1, "{v}");
    let tool = |name: &str| {
        b["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
    };
    let s = tool("swaplab stale");
    assert_eq!(s["correct"], true, "{s}");
    assert_eq!(s["flagged"], 10, "{s}");
    let g = tool("grep");
    assert_eq!(g["missed"], 0, "{g}");
    assert_eq!(g["false_alarms"], 1, "the memfd sleeper: {g}");
    assert!(s["median_seconds"].as_f64().unwrap() > 0.0);
    // The reads alone (the bench fails if they read fewer processes than
    // its sleepers): timed, answering nothing, so neither right nor wrong.
    let r = tool("swaplab stale's reads alone");
    assert!(r["median_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        r.get("correct").is_none() && r.get("flagged").is_none(),
        "{r}"
    );
    // The kernel splits a run's exact CPU time into user and system by
    // its samples: a run's two add up to the time it ran, never 0, so
    // their medians cannot both be 0.
    let cpu = |t: &serde_json::Value| {
        t["median_user_seconds"].as_f64().unwrap() + t["median_system_seconds"].as_f64().unwrap()
    };
    assert!(cpu(&s) > 0.0 && cpu(&g) > 0.0, "CPU time of each run: {v}");
    swaplab()
        .args(["bench", "stale", "--processes", "1"])
        .assert()
        .code(2);
}

#[test]
fn a_killed_bench_takes_the_tool_it_times_with_it() {
    // needrestart runs for minutes beside many processes: a bench killed
    // meanwhile must not leave it running. The check runs in a test binary
    // of its own, which becomes the reaper of the bench's orphans and so
    // learns how needrestart ended.
    if !Path::new("/usr/sbin/needrestart").exists() {
        assert!(
            !swaplab::harness::ci::on_ci(),
            "needrestart is missing: sudo apt-get install needrestart"
        );
        eprintln!("skipped: needrestart is not installed (sudo apt-get install needrestart)");
        return;
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "stale::a_bench_to_kill", "--ignored"])
        .stdin(Stdio::null());
    let out = swaplab::harness::process::output_within(
        &mut cmd,
        3 * swaplab::harness::process::deadline(),
    )
    .expect("the inner test ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Not a claim: run by `a_killed_bench_takes_the_tool_it_times_with_it` in
/// a test binary of its own.
#[test]
#[ignore = "run by a_killed_bench_takes_the_tool_it_times_with_it"]
fn a_bench_to_kill() {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    use swaplab::harness::process::deadline;
    // SAFETY: prctl with integer arguments only.
    let made = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(made, 0, "PR_SET_CHILD_SUBREAPER");
    let mut bench = std::process::Command::new(assert_cmd::cargo::cargo_bin!("swaplab"))
        .args(["bench", "stale", "--processes", "20", "--runs", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bench_pid = bench.id() as i32;
    let until = Instant::now() + deadline() * 4;
    let timed = loop {
        let nr = swaplab::harness::procs::children(bench_pid)
            .into_iter()
            .find(|p| p.comm == "needrestart");
        if let Some(p) = nr {
            break p.pid;
        }
        assert!(
            bench.try_wait().unwrap().is_none() && Instant::now() < until,
            "the bench ran no needrestart before it ended or the deadline passed"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    kill(Pid::from_raw(bench_pid), Signal::SIGKILL).unwrap();
    bench.wait().unwrap();
    // needrestart is this process's child now: how did it end?
    let until = Instant::now() + deadline();
    loop {
        match waitpid(Pid::from_raw(timed), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => return,
            Ok(WaitStatus::StillAlive) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(2))
            }
            other => {
                let _ = kill(Pid::from_raw(timed), Signal::SIGKILL);
                panic!("needrestart {timed} outlived the killed bench: {other:?}");
            }
        }
    }
}

/// `swaplab stale --json --pid PID`: the status and the report, checked
/// against the JSON Schema in the repository.
pub(crate) fn stale_json(pid: i32) -> (Option<i32>, serde_json::Value) {
    let out = swaplab()
        .args(["stale", "--json", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    valid_report(&v);
    (out.status.code(), v)
}

/// Fails unless `v` is valid under `crates/stale/src/stale.schema.json`.
pub(crate) fn valid_report(v: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(swaplab::commands::stale::SCHEMA).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid under the schema: {errors:#?}\n{v}"
    );
}

#[test]
fn stale_json_schema_is_the_one_the_report_derives_and_the_cli_prints() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/stale/src/stale.schema.json");
    let derived = swaplab::commands::stale::derived_schema();
    if swaplab::harness::sheets::blessing() && swaplab::commands::stale::SCHEMA != derived {
        // The binary prints the file it was built with: the next build
        // carries this one.
        std::fs::write(&file, &derived).unwrap();
        return;
    }
    assert_eq!(
        swaplab::commands::stale::SCHEMA, derived,
        "{} is not what the report's types derive: refresh it with SWAPLAB_BLESS=1 cargo test stale_json_schema",
        file.display()
    );
    swaplab()
        .args(["stale", "--json-schema"])
        .assert()
        .success()
        .stdout(predicate::eq(derived.as_str()));
    // A report of every kind the suite makes is checked in stale_json; the
    // schema must also refuse what is not a report.
    let schema: serde_json::Value = serde_json::from_str(&derived).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({"processes": "none"})));
}

/// The one file flagged in `v`, with its path as the report names it.
pub(crate) fn only_file(v: &serde_json::Value) -> (&serde_json::Value, PathBuf) {
    let files = v["processes"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{v}");
    let path = files[0]["path"].as_str().unwrap();
    (&files[0], PathBuf::from(path))
}

/// `swaplab stale --json --pid PID` must exit 1 and flag exactly `path`, for
/// `reason`; returns the report and that file's entry.
pub(crate) fn flagged_only(
    pid: i32,
    path: &Path,
    reason: &str,
) -> (serde_json::Value, serde_json::Value) {
    let (code, v) = stale_json(pid);
    assert_eq!(code, Some(1), "{v}");
    let (f, named) = only_file(&v);
    assert_eq!(named, path, "{v}");
    assert_eq!(f["reason"], reason, "{v}");
    let f = f.clone();
    (v, f)
}

/// `swaplab stale --json --pid PID` must exit 0 and flag nothing; returns
/// the report.
pub(crate) fn flagged_none(pid: i32, what: &str) -> serde_json::Value {
    let (code, v) = stale_json(pid);
    assert_eq!(code, Some(0), "{what}: {v}");
    assert_eq!(v["processes"].as_array().unwrap().len(), 0, "{what}: {v}");
    v
}

#[test]
fn a_current_file_named_like_a_deleted_one_is_not_flagged_and_hides_nothing() {
    // maps prints a deleted file's name with ` (deleted)` after it: a file
    // whose real name ends so is current, and must not be called removed.
    let dir = sandbox();
    let (p, _) = sleeper(dir.path(), "swl-named (deleted)", None);
    flagged_none(p.pid(), "current");
    // Nor can such a name hide a deleted file: `swl-gone` is removed, and
    // a current, different file is named `swl-gone (deleted)`.
    let (p, exe) = sleeper(dir.path(), "swl-gone", None);
    std::fs::remove_file(&exe).unwrap();
    install("/bin/true", &dir.path().join("swl-gone (deleted)"));
    let (v, f) = flagged_only(p.pid(), &exe, "removed");
    assert_eq!(f["deleted"], true, "{v}");
}

#[test]
fn names_with_a_newline_a_space_and_a_tab_are_read_as_the_kernel_means_them() {
    // maps escapes a newline as `\012` and ends each line after the name,
    // spaces and tabs included: these names are current, not removed.
    let dir = sandbox();
    for name in ["swl-new\nline", "swl-space ", "swl-tab\t", "swl-both \t"] {
        let (p, _) = sleeper(dir.path(), name, None);
        flagged_none(p.pid(), &format!("{name:?}"));
    }
    // And when replaced, the file is named as it is on disk.
    let (p, exe) = sleeper(dir.path(), "swl-gone\nline", None);
    install("/bin/true", &exe);
    let (v, f) = flagged_only(p.pid(), &exe, "replaced");
    assert_eq!(f["deleted"], true, "{v}");
    let evidence = f["evidence"].as_str().unwrap();
    assert!(evidence.contains("build-id"), "{v}");
}

/// Starts the C sleeper on libexample v1 from `dir`, with `args`, and waits
/// for its `ready` line.
pub(crate) fn c_sleeper(dir: &Path, args: &[&str]) -> Guarded {
    c_sleeper_preloading(dir, args, None)
}

/// [`c_sleeper`], with `preload` in its `LD_PRELOAD`.
fn c_sleeper_preloading(dir: &Path, args: &[&str], preload: Option<&Path>) -> Guarded {
    let lib = dir.join("libexample.so");
    let v1 = swaplab::harness::variants::Variant::V1.built_path();
    install(v1.to_str().unwrap(), &lib);
    let mut cmd = std::process::Command::new(swaplab::harness::variants::SLEEPER);
    cmd.arg(std::process::id().to_string())
        .args(args)
        .env_clear()
        .env("LD_LIBRARY_PATH", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(preload) = preload {
        cmd.env("LD_PRELOAD", preload);
    }
    let mut p = spawn_guarded(cmd);
    let mut line = String::new();
    let mut out = std::io::BufReader::new(p.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("ready"), "the sleeper said {line:?}");
    p
}

#[test]
fn a_library_mapped_again_as_data_is_not_modified_in_place() {
    // rustc maps each proc-macro library it loads a second time, whole and
    // read-only, to read its metadata: that view is no segment of the
    // loaded image, and no evidence of a write.
    let dir = sandbox();
    let p = c_sleeper(dir.path(), &["--data-view"]);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
    let lib = dir.path().join("libexample.so");
    let lib = lib.to_str().unwrap();
    let views = maps
        .lines()
        .filter(|l| l.ends_with(lib) && l.contains(" 00000000 "));
    assert_eq!(views.count(), 2, "the image and the data view:\n{maps}");
    flagged_none(p.pid(), "current");
}

#[test]
fn the_loader_s_holes_between_segments_are_not_modified_in_place() {
    // glibc maps a library's whole span from its first segment, then makes
    // the gaps between its segments inaccessible (`---p`): qemu's libslirp
    // showed one, and was called modified in place. gold leaves such a gap
    // when the code ends late in its last page, before the data's page.
    let dir = sandbox();
    let src = dir.path().join("hole.c");
    let lib = dir.path().join("libhole.so");
    let holed = |maps: &str| {
        maps.lines()
            .any(|l| l.ends_with(lib.to_str().unwrap()) && l.contains(" ---p "))
    };
    for pad in (6100..=6500).step_by(100) {
        let code = format!(
            "const char holed_pad[{pad}] = {{1}};\nint holed_get(int i) {{ return holed_pad[i]; }}\n"
        );
        std::fs::write(&src, code).unwrap();
        let mut gcc = std::process::Command::new("gcc");
        gcc.args(["-shared", "-fPIC", "-fuse-ld=gold", "-o"])
            .arg(&lib)
            .arg(&src);
        let built = output_of(gcc);
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let p = c_sleeper_preloading(dir.path(), &[], Some(&lib));
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
        if holed(&maps) {
            flagged_none(p.pid(), "current");
            return;
        }
    }
    panic!("gold left no hole in libhole.so with 6100 to 6500 bytes of code and data");
}

#[test]
fn the_detector_reads_segments_and_build_ids_of_the_variants() {
    use swaplab::detector::elf::{read, Elf, Where};
    use swaplab::harness::variants::Variant;
    let variant = |v: Variant| -> Elf {
        read(&std::fs::File::open(v.built_path()).unwrap(), Where::File).unwrap()
    };
    let (v1, v2, short) = (
        variant(Variant::V1),
        variant(Variant::V2),
        variant(Variant::Short),
    );
    assert!(v1.loads.iter().any(|s| s.executable()));
    assert_eq!(v1.loads, v2.loads, "v1 and v2 share a layout");
    assert!(v1.build_id.is_some() && v2.build_id.is_some());
    assert_ne!(v1.build_id, v2.build_id);
    assert_eq!(short.build_id, None, "short is built with --build-id=none");
    let dir = sandbox();
    let script = dir.path().join("script");
    std::fs::write(&script, b"#!/bin/sh\n").unwrap();
    assert!(read(&std::fs::File::open(script).unwrap(), Where::File).is_none());
}

/// A fake root with kernel images named `boot` in `/boot`, and modules
/// folders (holding an image when the flag is set) in `/usr/lib/modules`.
fn kernel_root(boot: &[&str], modules: &[(&str, bool)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    for name in boot {
        std::fs::write(dir.path().join("boot").join(name), b"image").unwrap();
    }
    for (release, image) in modules {
        let m = dir.path().join("usr/lib/modules").join(release);
        std::fs::create_dir_all(&m).unwrap();
        if *image {
            std::fs::write(m.join("vmlinuz"), b"image").unwrap();
        }
    }
    dir
}

#[test]
fn stale_kernel_a_newer_installed_kernel_makes_the_running_one_outdated() {
    use swaplab::detector::kernel::status;
    // Debian: 18 is newer than 9 (as numbers, not as text); a config file
    // of a newer release is no kernel.
    let root = kernel_root(
        &[
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-18-amd64",
            "config-6.1.0-20-amd64",
        ],
        &[],
    );
    let s = status(root.path(), "6.1.0-9-amd64").unwrap();
    assert!(s.outdated, "{s:?}");
    assert_eq!(s.newest_installed, "6.1.0-18-amd64");
    let line = s.line().unwrap();
    assert!(
        line.contains("6.1.0-9-amd64") && line.contains("6.1.0-18-amd64"),
        "{line}"
    );
    // Fedora, Arch: the image lives in the modules folder.
    let root = kernel_root(
        &[],
        &[
            ("6.5.6-300.fc39.x86_64", true),
            ("6.5.12-300.fc39.x86_64", true),
        ],
    );
    let s = status(root.path(), "6.5.6-300.fc39.x86_64").unwrap();
    assert!(s.outdated, "{s:?}");
    assert_eq!(s.newest_installed, "6.5.12-300.fc39.x86_64");
}

#[test]
fn stale_kernel_the_newest_running_kernel_is_current_and_has_no_line() {
    use swaplab::detector::kernel::status;
    let root = kernel_root(&["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-18-amd64"], &[]);
    let s = status(root.path(), "6.1.0-18-amd64").unwrap();
    assert!(!s.outdated, "{s:?}");
    assert_eq!(s.line(), None);
    // A modules folder a removed package left behind is no kernel.
    let root = kernel_root(&["vmlinuz-6.1.0-9-amd64"], &[("6.1.0-18-amd64", false)]);
    let s = status(root.path(), "6.1.0-9-amd64").unwrap();
    assert!(!s.outdated, "{s:?}");
}

#[test]
fn stale_kernel_a_running_kernel_that_is_not_installed_tells_nothing() {
    use swaplab::detector::kernel::status;
    // This machine's case: a VM booted with a kernel from outside, its
    // /boot empty or holding other kernels.
    let root = kernel_root(&["vmlinuz-6.1.0-18-amd64"], &[]);
    assert_eq!(status(root.path(), "6.18.44-fc"), None);
    assert_eq!(status(kernel_root(&[], &[]).path(), "6.18.44-fc"), None);
    let nothing = tempfile::tempdir().unwrap();
    assert_eq!(status(nothing.path(), "6.18.44-fc"), None);
}

#[test]
fn stale_json_carries_the_kernel_and_the_text_names_it_only_when_outdated() {
    let here = swaplab::detector::kernel::status_here();
    let dir = sandbox();
    let (p, exe) = sleeper(dir.path(), "kernel-sleep", None);
    install("/bin/true", &exe);
    let (code, v) = stale_json(p.pid());
    // The kernel never changes the status: one stale process, status 1.
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["kernel"], serde_json::to_value(&here).unwrap(), "{v}");
    let out = output_of({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swaplab"));
        c.args(["stale", "--pid", &p.pid().to_string()]);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    let outdated = here.as_ref().is_some_and(|k| k.outdated);
    assert_eq!(
        text.lines().any(|l| l.starts_with("kernel ")),
        outdated,
        "{here:?}\n{text}"
    );
}

/// A sample: its name, its labels (unescaped) and its value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks `text` line by line as an OpenMetrics parser would: every family
/// declared by `# TYPE` (after its `# HELP`) before its samples, and each
/// family's samples together; every sample `name{labels} value` with
/// well-formed, escaped label values and a number; a label set at most
/// once per family; `# EOF` last. Returns the samples: (name, labels
/// unescaped, value).
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    assert!(text.ends_with("# EOF\n"), "no `# EOF` at the end:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    let body = &lines[..lines.len() - 1];
    let mut declared: Vec<String> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in body {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(
                name_ok(name) && !helped.contains(&name.to_string()),
                "{line}"
            );
            helped.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(name_ok(name), "bad family name: {line}");
            assert_eq!(kind, "gauge", "{line}");
            assert!(
                !declared.contains(&name.to_string()),
                "declared twice: {line}"
            );
            declared.push(name.to_string());
            current = Some(name.to_string());
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "a comment OpenMetrics does not know: {line}"
        );
        let (name, rest) = line
            .split_once(['{', ' '])
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample outside its family: {line}"
        );
        let mut labels = Vec::new();
        let mut rest = rest;
        if line[name.len()..].starts_with('{') {
            // name="value" pairs, values escaped: \\ \" \n only.
            loop {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(
                    name_ok(label) && !label.contains(':'),
                    "bad label name: {line}"
                );
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => panic!("bad escape {other:?}: {line}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {line}"),
                    }
                };
                labels.push((label.to_string(), value));
                rest = &after[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else {
                    rest = rest.strip_prefix("} ").unwrap_or_else(|| panic!("{line}"));
                    break;
                }
            }
        }
        let value: f64 = rest
            .parse()
            .unwrap_or_else(|_| panic!("not a number {rest:?}: {line}"));
        assert!(
            seen.insert((name.to_string(), labels.clone())),
            "label set twice: {line}"
        );
        samples.push((name.to_string(), labels, value));
    }
    assert_eq!(
        helped, declared,
        "each family has one # HELP before its # TYPE"
    );
    samples
}

#[test]
fn stale_openmetrics_is_well_formed_and_escapes_what_a_process_names_itself() {
    // The command name is the executable's: a quote, a newline and a
    // backslash in it must not end the label value or forge a sample.
    let dir = sandbox();
    let name = "om\"q\nl\\x";
    let (p, exe) = sleeper(dir.path(), name, None);
    install("/bin/true", &exe);
    let pid = p.pid().to_string();
    let out = output_of({
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swaplab"));
        c.args(["stale", "--openmetrics", "--pid", &pid]);
        c
    });
    let text = String::from_utf8(out.stdout).unwrap();
    // The exit status stays the report's: a process needs a restart.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(r#"command="om\"q\nl\\x""#),
        "label value not escaped:\n{text}"
    );
    let samples = parse_openmetrics(&text);
    let value = |metric: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == metric
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    };
    assert_eq!(
        value("swaplab_stale_processes", &[("need", "required")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("swaplab_stale_processes", &[("need", "optional")]),
        Some(0.0),
        "{text}"
    );
    let mine = [
        ("pid", pid.as_str()),
        ("command", name),
        ("need", "required"),
        ("reason", "replaced"),
    ];
    assert_eq!(value("swaplab_stale_process", &mine), Some(1.0), "{text}");
    assert_eq!(
        value("swaplab_stale_scanned_processes", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("swaplab_stale_unreadable_processes", &[]),
        Some(0.0),
        "{text}"
    );
    let kernel = swaplab::detector::kernel::status_here();
    assert_eq!(
        value("swaplab_kernel_outdated", &[]),
        kernel.map(|k| f64::from(u8::from(k.outdated))),
        "{text}"
    );
    // --json and --openmetrics are one or the other.
    swaplab()
        .args(["stale", "--json", "--openmetrics", "--pid", &pid])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

/// Starts `interpreter` with `args` in `dir`, stdin a pipe it waits on, and
/// waits for the `ready` line its code prints once running.
fn interpreter(dir: &Path, interpreter: &Path, args: &[&str]) -> Guarded {
    let mut cmd = std::process::Command::new(interpreter);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = spawn_guarded(cmd);
    let mut line = String::new();
    let mut out = std::io::BufReader::new(p.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n", "{} said {line:?}", interpreter.display());
    p
}

/// A shell script that says `ready` and waits on its standard input.
const SH_SCRIPT: &str = "echo ready\nread line\n";

#[test]
fn stale_script_a_replaced_shell_script_is_flagged_from_the_descriptor_it_reads() {
    // dash (and bash) read a script as they run it, from a descriptor kept
    // open: that file is no longer the one at the path.
    let dir = sandbox();
    let script = dir.path().join("swl-run.sh");
    std::fs::write(&script, SH_SCRIPT).unwrap();
    let p = interpreter(dir.path(), Path::new("/bin/sh"), &["swl-run.sh"]);
    install("/bin/true", &script);
    let (v, f) = flagged_only(p.pid(), &script, "script-replaced");
    assert_eq!(f["role"], "script", "{v}");
    assert_eq!(f["deleted"], true, "{v}");
    assert!(f["evidence"].as_str().unwrap().starts_with("fd "), "{v}");
    let pid = p.pid().to_string();
    swaplab()
        .args(["stale", "--pid", &pid])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "  script {}: replaced since the process started: the interpreter reads it from fd",
            script.display()
        )));
    let out = swaplab()
        .args(["stale", "--openmetrics", "--pid", &pid])
        .assert()
        .code(1);
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let samples = parse_openmetrics(&text);
    assert!(
        samples
            .iter()
            .any(|(name, labels, value)| name == "swaplab_stale_process"
                && labels.contains(&("reason".into(), "script-replaced".into()))
                && *value == 1.0),
        "{text}"
    );
}

/// The `python3` on `PATH`, if any.
fn python3() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
}

#[test]
fn stale_script_a_replaced_python_script_is_flagged_from_its_birth_time() {
    // Python reads the script and closes it: the file at the path, born
    // after the process started, is not the one it runs.
    let Some(python) = python3() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "on CI python3 must be installed"
        );
        eprintln!("skipped: no python3 on PATH");
        return;
    };
    let dir = sandbox();
    let script = dir.path().join("swl-run.py");
    std::fs::write(
        &script,
        "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n",
    )
    .unwrap();
    let p = interpreter(dir.path(), &python, &["-u", script.to_str().unwrap()]);
    swaplab::detector::stale::wait_until_measurably_started(p.pid(), Duration::from_secs(20))
        .unwrap();
    install("/bin/true", &script);
    let (v, f) = flagged_only(p.pid(), &script, "script-replaced");
    assert_eq!(f["role"], "script", "{v}");
    assert_eq!(f["evidence"], "btime", "{v}");
}

#[test]
fn stale_script_inline_code_names_no_script_and_an_untouched_script_is_current() {
    let dir = sandbox();
    // `sh -c CODE`: CODE is no file, even when a file of that name is
    // there, and replaced.
    let code = "echo ready; read line";
    std::fs::write(dir.path().join(code), SH_SCRIPT).unwrap();
    let inline = interpreter(dir.path(), Path::new("/bin/sh"), &["-c", code]);
    // A script left as it was, judged once its start is measurable.
    let script = dir.path().join("swl-kept.sh");
    std::fs::write(&script, SH_SCRIPT).unwrap();
    let kept = interpreter(dir.path(), Path::new("/bin/sh"), &["swl-kept.sh"]);
    for p in [&inline, &kept] {
        swaplab::detector::stale::wait_until_measurably_started(p.pid(), Duration::from_secs(20))
            .unwrap();
    }
    install("/bin/true", &dir.path().join(code));
    for p in [&inline, &kept] {
        let v = flagged_none(p.pid(), "an inline or untouched script");
        assert_eq!(v["scanned"], 1, "{v}");
    }
}

/// `swaplab stale ARGS --pid P…` for these processes: the status and what
/// it printed.
pub(crate) fn stale_of(pids: &[i32], args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = swaplab();
    cmd.arg("stale").args(args);
    for p in pids {
        cmd.args(["--pid", &p.to_string()]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The children of `pid` the kernel lists.
pub(crate) fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect()
}

/// A master (a copy of sh, `swl-master`, in `dir`) that forked `n`
/// workers; they read from a descriptor of its stdin, so they end when
/// the test does, and name themselves `swl-worker` (the shell's builtin
/// echo writes their own comm), as nginx's do. The master, its copy of
/// sh, and the workers.
fn master_with_workers(dir: &Path, n: usize) -> (Guarded, PathBuf, Vec<i32>) {
    let sh = dir.join("swl-master");
    std::fs::copy("/bin/sh", &sh).unwrap();
    let forks = "w & ".repeat(n);
    let script = format!(
        "exec 3<&0; w() {{ echo swl-worker > /proc/self/comm; read a <&3; }}; {forks}echo ready; wait"
    );
    let master = interpreter(dir, &sh, &["-c", &script]);
    let m = master.pid();
    wait_for("the master forked its workers", || children(m).len() == n);
    let workers = children(m);
    (master, sh, workers)
}

#[test]
fn stale_plan_lists_a_master_and_its_forked_workers_once_and_asks_for_an_exec() {
    // A master and two workers; then the master's copy of sh is replaced
    // under all three: the master and what it forked run the same old
    // code, and a fork from it (a reload by HUP) would copy it. Only the
    // master is `swl-master`.
    let dir = sandbox();
    let (master, sh, workers) = master_with_workers(dir.path(), 2);
    let m = master.pid();
    let (lone, lone_exe) = sleeper(dir.path(), "swl-lone", None);
    install("/bin/true", &sh);
    install("/bin/true", &lone_exe);
    let all = [m, workers[0], workers[1], lone.pid()];
    let (code, text) = stale_of(&all, &["--json"]);
    assert_eq!(code, Some(1), "{text}");
    let v = json(text.as_bytes());
    valid_report(&v);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    let tree = groups
        .iter()
        .find(|g| g["top"] == m)
        .expect("the master's group");
    let mut pids: Vec<i64> = tree["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    pids.sort();
    let mut want: Vec<i64> = [m, workers[0], workers[1]]
        .iter()
        .map(|&p| p as i64)
        .collect();
    want.sort();
    assert_eq!(pids, want, "{v}");
    assert_eq!(tree["kind"], "process-tree", "{v}");
    assert_eq!(tree["exec_needed"], true, "{v}");
    let single = groups
        .iter()
        .find(|g| g["top"] == lone.pid())
        .expect("the lone process's group");
    assert_eq!(single["pids"], serde_json::json!([lone.pid()]), "{v}");
    assert_eq!(single["exec_needed"], false, "{v}");
    // The plan for people: each once, the master's with the exec advice.
    let (code, plan) = stale_of(&all, &["--plan"]);
    assert_eq!(code, Some(1), "{plan}");
    let heads = plan
        .lines()
        .filter(|l| {
            l.split_once(". [")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(heads, 2, "two groups:\n{plan}");
    assert!(
        plan.contains(&format!("restart process {m} (swl-master) and the 2 forked from it; a reload that only forks new workers from it (nginx HUP) copies the old code")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("restart process {} (swl-lone)\n", lone.pid())),
        "{plan}"
    );
    // A worker asked for alone: its master is outside what was asked, and
    // is read anyway; restarting the worker by a fork would copy the code.
    let (code, text) = stale_of(&[workers[0]], &["--json"]);
    assert_eq!(code, Some(1), "{text}");
    let v = json(text.as_bytes());
    valid_report(&v);
    let restart = &v["processes"][0]["restart"];
    assert_eq!(restart["at"], m, "{v}");
    assert_eq!(restart["fork_is_enough"], false, "{v}");
    assert_eq!(v["processes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["groups"][0]["top"], m, "{v}");
    assert_eq!(v["groups"][0]["top_command"], "swl-master", "{v}");
    // The master left out by --exclude, and nothing else asked for: it is
    // still read as the workers' parent, never taken for a clean one.
    let out = swaplab()
        .args(["stale", "--json", "--exclude", "name=^swl-master$"])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    let worker = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == workers[0])
        .unwrap_or_else(|| panic!("no worker {} in {v}", workers[0]));
    assert_eq!(worker["restart"]["at"], m, "{worker}");
    assert_eq!(worker["restart"]["fork_is_enough"], false, "{worker}");
    assert!(
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pid"] != m),
        "{v}"
    );
}

/// A root folder for a chroot with a copy of `sleep` at `/bin/sleep` and
/// the libraries `ldd` names, at their own paths, and a dpkg database
/// whose package `sleeper-pkg` 2.0 owns `/bin/sleep`.
fn chroot_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    copy_with_libraries(&root, "/bin/sleep");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::write(
        admin.join("info/sleeper-pkg.list"),
        "/.\n/bin\n/bin/sleep\n",
    )
    .unwrap();
    std::fs::write(
        admin.join("status"),
        "Package: sleeper-pkg\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0\n",
    )
    .unwrap();
    root
}

/// Copies `exe` into `root` at its own path, with the libraries `ldd`
/// names, at theirs.
fn copy_with_libraries(root: &Path, exe: &str) {
    let ldd = output_of({
        let mut c = std::process::Command::new("ldd");
        c.arg(exe);
        c
    });
    let words = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libraries = words.split_whitespace().filter(|w| w.starts_with('/'));
    for file in std::iter::once(exe).chain(libraries) {
        let to = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, &to).unwrap();
    }
}

/// Whether this machine lets this user make user and mount namespaces of
/// its own (Ubuntu's AppArmor, a sysctl may forbid them): where it does
/// not, the test says so and passes; on CI it must.
fn own_namespaces() -> bool {
    let mut cmd = std::process::Command::new("/bin/true");
    swaplab::harness::userns::in_own_namespaces(&mut cmd, &Default::default()).unwrap();
    let ok = cmd.status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "no namespaces of its own here ({})",
            swaplab::harness::userns::WHY_IT_MAY_FAIL
        );
        eprintln!(
            "skipped: no namespaces of its own here ({})",
            swaplab::harness::userns::WHY_IT_MAY_FAIL
        );
    }
    ok
}

#[test]
fn stale_a_chrooted_process_is_judged_in_its_root_and_named_as_it_sees_its_files() {
    // A chroot as `sudo chroot` makes it (the scanner's mount namespace),
    // and one in a mount namespace of its own, as containers run.
    if !own_namespaces() {
        return;
    }
    for keep_mounts in [true, false] {
        chrooted_sleep_replaced(keep_mounts);
    }
}

/// Starts `cmd` chrooted into `root`, in user and mount namespaces of
/// its own (a chroot needs root, or a user namespace of its own), and
/// with `keep_mounts` in the scanner's mounts, as `sudo chroot` runs.
fn spawn_chrooted(mut cmd: std::process::Command, root: &Path, keep_mounts: bool) -> Guarded {
    let inside = swaplab::harness::userns::Inside {
        chroot: Some(root.to_path_buf()),
        keep_mounts,
        ..Default::default()
    };
    swaplab::harness::userns::in_own_namespaces(&mut cmd, &inside).unwrap();
    spawn_guarded(cmd)
}

fn chrooted_sleep_replaced(keep_mounts: bool) {
    let dir = sandbox();
    let root = chroot_root(dir.path());
    let mut cmd = std::process::Command::new("/bin/sleep");
    cmd.arg("600").stdin(Stdio::null()).stdout(Stdio::null());
    let p = spawn_chrooted(cmd, &root, keep_mounts);
    let pid = p.pid();
    let real = std::fs::canonicalize(&root).unwrap();
    wait_for("the chrooted sleep runs", || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == real.join("bin/sleep"))
    });
    // Its files are its root's copies, not the host's /bin/sleep and libc.
    flagged_none(pid, "current in its root");
    install("/bin/true", &root.join("bin/sleep"));
    let (v, f) = flagged_only(pid, Path::new("/bin/sleep"), "replaced");
    assert_eq!(
        f["path_in_maps"].as_str().map(PathBuf::from),
        Some(real.join("bin/sleep")),
        "{v}"
    );
    let root_shown = if keep_mounts {
        real.clone()
    } else {
        PathBuf::from(format!("/proc/{pid}/root"))
    };
    assert_eq!(
        v["processes"][0]["root"].as_str().map(PathBuf::from),
        Some(root_shown),
        "{v}"
    );
    // The package comes from the chroot's own database.
    assert_eq!(f["package"]["name"], "sleeper-pkg", "{v}");
    assert_eq!(f["package"]["version"], "2.0", "{v}");
    let (_, plan) = stale_of(&[pid], &["--plan"]);
    assert!(plan.contains("restart the container or chroot"), "{plan}");
    assert!(plan.contains("fixes: /bin/sleep (sleeper-pkg)"), "{plan}");
}

#[test]
fn stale_a_chrooted_script_behind_an_absolute_link_is_judged_in_its_root() {
    // `/opt/tool.sh` links to an absolute name, as Debian's alternatives
    // do. From the scanner's root that name holds another file (here a
    // decoy in the sandbox): only the process's own root may decide.
    if !own_namespaces() {
        return;
    }
    for keep_mounts in [true, false] {
        chrooted_script_behind_a_link(keep_mounts);
    }
}

fn chrooted_script_behind_a_link(keep_mounts: bool) {
    let dir = sandbox();
    let root = dir.path().join("root");
    copy_with_libraries(&root, "/bin/sh");
    let decoy = dir.path().join("alternatives/tool.sh");
    let own = root.join(decoy.strip_prefix("/").unwrap());
    for f in [&decoy, &own] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, SH_SCRIPT).unwrap();
    }
    std::fs::create_dir_all(root.join("opt")).unwrap();
    std::os::unix::fs::symlink(&decoy, root.join("opt/tool.sh")).unwrap();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("/opt/tool.sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut p = spawn_chrooted(cmd, &root, keep_mounts);
    let mut line = String::new();
    let mut out = std::io::BufReader::new(p.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n", "the chrooted sh said {line:?}");
    let pid = p.pid();
    swaplab::detector::stale::wait_until_measurably_started(pid, Duration::from_secs(20)).unwrap();
    install("/bin/true", &decoy);
    flagged_none(
        pid,
        "the scanner's file of the linked name changed, not its own",
    );
    install("/bin/true", &own);
    let (v, f) = flagged_only(pid, Path::new("/opt/tool.sh"), "script-replaced");
    assert_eq!(f["role"], "script", "{v}");
}

#[test]
fn stale_a_process_in_its_own_mount_namespace_is_never_judged_by_the_hosts_file() {
    // In its namespace, lib/ is lib-a/ bound over it; on the host, lib/
    // holds another library of the same name. Its own is current.
    if !own_namespaces() {
        return;
    }
    let dir = sandbox();
    let (own, host) = (dir.path().join("lib-a"), dir.path().join("lib"));
    std::fs::create_dir_all(&own).unwrap();
    std::fs::create_dir_all(&host).unwrap();
    let v1 = swaplab::harness::variants::Variant::V1.built_path();
    let v2 = swaplab::harness::variants::Variant::V2.built_path();
    install(v1.to_str().unwrap(), &own.join("libexample.so"));
    install(v2.to_str().unwrap(), &host.join("libexample.so"));
    let mut cmd = std::process::Command::new(swaplab::harness::variants::SLEEPER);
    cmd.arg(std::process::id().to_string())
        .env_clear()
        .env("LD_LIBRARY_PATH", &host)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let inside = swaplab::harness::userns::Inside {
        binds: vec![(own.clone(), host.clone())],
        ..Default::default()
    };
    swaplab::harness::userns::in_own_namespaces(&mut cmd, &inside).unwrap();
    let mut p = spawn_guarded(cmd);
    let mut line = String::new();
    let mut out = std::io::BufReader::new(p.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("ready"), "the sleeper said {line:?}");
    flagged_none(p.pid(), "current in its own namespace");
    // Replaced in its namespace (lib-a is what it sees at lib/): flagged,
    // judged through its root.
    install(v2.to_str().unwrap(), &own.join("libexample.so"));
    let lib = std::fs::canonicalize(&host).unwrap().join("libexample.so");
    let (v, _) = flagged_only(p.pid(), &lib, "replaced");
    // Its root is the host's directory, with mounts of its own (as a
    // service's PrivateTmp): no container, and no root to show.
    assert_eq!(v["processes"][0]["root"], serde_json::Value::Null, "{v}");
}

#[test]
fn a_process_that_names_itself_with_a_newline_forges_no_line_of_the_plan_or_report() {
    // comm is the executable's name: a newline in it must not become a
    // command line of the plan, nor a line of the report.
    let dir = sandbox();
    let (p, exe) = sleeper(dir.path(), "swl\n   $ evil", None);
    install("/bin/true", &exe);
    for args in [&["--plan"][..], &[][..]] {
        let (code, text) = stale_of(&[p.pid()], args);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("swl\\012   $ evil"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("   $ evil")), "{text}");
    }
}

#[test]
fn stale_exclude_leaves_a_process_out_by_name_or_user_and_counts_it() {
    let dir = sandbox();
    let (p, exe) = sleeper(dir.path(), "excl-sleep", None);
    install("/bin/true", &exe);
    let pid = p.pid().to_string();
    let me = nix::unistd::geteuid().to_string();
    // The path it was started from, though its link now reads "PATH
    // (deleted)".
    let exe_path = format!("name=^{}$", regex::escape(&exe.display().to_string()));
    for rule in [
        "name=^excl-sleep$",
        exe_path.as_str(),
        &format!("user={me}"),
    ] {
        let out = swaplab()
            .args(["stale", "--json", "--pid", &pid, "--exclude", rule])
            .assert()
            .code(0);
        let v = json(&out.get_output().stdout);
        assert_eq!(v["excluded_processes"], 1, "{rule}: {v}");
        assert_eq!(v["required"], 0, "{rule}: {v}");
        assert_eq!(v["processes"], serde_json::json!([]), "{rule}: {v}");
        swaplab()
            .args(["stale", "--pid", &pid, "--exclude", rule])
            .assert()
            .code(0)
            .stdout(predicate::str::contains("1 process left out by --exclude"));
    }
    // A rule that names another process leaves this one judged.
    swaplab()
        .args(["stale", "--pid", &pid, "--exclude", "name=^other$"])
        .args(["--exclude", "unit=excl-sleep"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("1 process needs a restart"));
    swaplab()
        .args(["stale", "--exclude", "pid=1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a kind of exclusion"));
    // A kernel thread is counted as one, whatever the rules say.
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    if kthreadd {
        let out = swaplab()
            .args(["stale", "--json", "--exclude", "name=."])
            .output()
            .unwrap();
        let v = json(&out.stdout);
        assert!(v["kernel_threads"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["scanned"], 0, "{v}");
    }
}

#[test]
fn stale_as_a_monitoring_plugin_says_critical_ok_or_unknown_in_one_line() {
    let dir = sandbox();
    let (p, exe) = sleeper(dir.path(), "plug-sleep", None);
    install("/bin/true", &exe);
    let pid = p.pid().to_string();
    let plugin = |extra: &[&str], code: i32| {
        let out = swaplab()
            .args(["stale", "--monitoring-plugin", "--pid", &pid])
            .args(extra)
            .assert()
            .code(code);
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    };
    let critical = plugin(&[], 2);
    assert_eq!(critical.lines().count(), 1, "{critical}");
    assert!(
        critical.starts_with("STALE CRITICAL - 1 process (plug-sleep) to restart | required=1 "),
        "{critical}"
    );
    let ok = plugin(&["--exclude", "name=^plug-sleep$"], 0);
    assert!(ok.starts_with("STALE OK - "), "{ok}");
    assert!(ok.contains("excluded=1 scanned=0"), "{ok}");
    // Bad input is the plugin's UNKNOWN, still one line.
    let out = swaplab()
        .args(["stale", "--monitoring-plugin", "--pid", "2147483647"])
        .assert()
        .code(3);
    let unknown = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(unknown.starts_with("STALE UNKNOWN - "), "{unknown}");
    assert_eq!(unknown.lines().count(), 1, "{unknown}");
    // So is an argument clap refuses (not its status 2, CRITICAL to a
    // monitoring system), and a `|` of the user's opens no performance data.
    for bad in [
        &["--exclude", "bogus"][..],
        &["--json"],
        &["--match", "a|("],
    ] {
        let out = swaplab()
            .args(["stale", "--monitoring-plugin"])
            .args(bad)
            .assert()
            .code(3);
        let line = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(line.starts_with("STALE UNKNOWN - "), "{bad:?}: {line}");
        assert_eq!(line.lines().count(), 1, "{bad:?}: {line}");
        assert!(!line.contains('|'), "{bad:?}: {line}");
    }
}

#[test]
fn stale_json_names_the_host_the_time_and_its_format_version() {
    let dir = sandbox();
    let (p, _exe) = sleeper(dir.path(), "json-sleep", None);
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let out = swaplab()
        .args(["stale", "--json", "--pid", &p.pid().to_string()])
        .assert()
        .code(0);
    let after = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    let v = json(&out.get_output().stdout);
    assert_eq!(v["format_version"], swaplab::detector::cli::FORMAT_VERSION);
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(v["host"], host.to_string_lossy().as_ref(), "{v}");
    let time = v["time"].as_str().unwrap();
    assert!(time.ends_with('Z'), "{time}");
    let at = humantime::parse_rfc3339(time).unwrap();
    assert!(before <= at && at <= after, "{time}");
}

#[test]
fn output_replaces_the_file_whole_so_a_reader_never_sees_half_of_one() {
    let dir = sandbox();
    let file = dir.path().join("swaplab_stale.prom");
    let done = std::sync::atomic::AtomicBool::new(false);
    let pid = std::process::id().to_string();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    assert!(text.ends_with("# EOF\n"), "a reader saw {text:?}");
                    reads += 1;
                }
            }
            reads
        });
        for _ in 0..20 {
            swaplab()
                .args(["stale", "--openmetrics", "--pid", &pid, "--output"])
                .arg(&file)
                .assert()
                .code(predicate::in_iter([0, 1, 3]))
                .stdout("");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader never saw the file");
    });
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".swaplab-stale."))
        .collect();
    assert!(left.is_empty(), "new files left behind: {left:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node-exporter, another user, reads it");
}

#[test]
fn the_apt_hook_is_quiet_and_succeeds_when_nothing_needs_a_restart() {
    // Its own process runs what is on disk; a bad argument still exits 0.
    let pid = std::process::id().to_string();
    swaplab()
        .args(["stale", "--apt-hook", "--pid", &pid])
        .assert()
        .success()
        .stdout("");
    swaplab()
        .args(["stale", "--apt-hook", "--pid", "999999999"])
        .assert()
        .success()
        .stdout("")
        .stderr(predicate::str::contains("--pid"));
}

#[test]
fn stale_plan_reads_an_excluded_master_however_many_other_processes_are_stale() {
    // 300 stale processes forked from one other shell, started after the
    // master: the plan once gave up after 256 parents to look at, counting
    // each of their 300 (identical) parents, and took the excluded master
    // it never reached for a clean one.
    let dir = sandbox();
    let (master, sh, workers) = master_with_workers(dir.path(), 1);
    let (m, worker) = (master.pid(), workers[0]);
    let many_sh = dir.path().join("swl-many");
    std::fs::copy("/bin/sh", &many_sh).unwrap();
    let many = interpreter(
        dir.path(),
        &many_sh,
        &[
            "-c",
            "exec 3<&0; i=0; while [ $i -lt 300 ]; do (read a <&3) & i=$((i+1)); done; echo ready; wait",
        ],
    );
    wait_for("300 forked", || children(many.pid()).len() == 300);
    install("/bin/true", &sh);
    install("/bin/true", &many_sh);
    let out = swaplab()
        .args(["stale", "--json", "--exclude", "name=^swl-master$"])
        .output()
        .unwrap();
    let v = json(&out.stdout);
    let w = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == worker)
        .unwrap_or_else(|| panic!("no worker {worker} among {} processes", v["scanned"]));
    assert_eq!(w["restart"]["at"], m, "{w}");
    assert_eq!(w["restart"]["fork_is_enough"], false, "{w}");
}
