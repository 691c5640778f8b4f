//! The `swaplab` command as a user meets it: listing, narrating, JSON, and
//! clear errors with exit code 2 for bad input.

use assert_cmd::Command;
use predicates::prelude::*;

/// The `swaplab` command, as the tests here and in `stale` run it.
pub fn swaplab() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("swaplab"));
    cmd.timeout(std::time::Duration::from_secs(120));
    cmd
}

/// `swaplab` as `user` runs it, from `/`: its own copy in `dir`, a folder
/// opened to it here. The build folder may not be open to it (a checkout
/// under Debian's /root, mode 700).
pub fn swaplab_as(user: &nix::unistd::User, dir: &std::path::Path) -> std::process::Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("swaplab");
    // Copied by cp, not by this process: a child that another test's
    // thread forks would hold this process's write descriptor until it
    // execs, and exec'ing the copy meanwhile fails with ETXTBSY.
    let cp = std::process::Command::new("cp")
        .arg(assert_cmd::cargo::cargo_bin!("swaplab"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success(), "cp swaplab {copy:?}: {cp:?}");
    let mut cmd = std::process::Command::new(copy);
    cmd.uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .current_dir("/");
    cmd
}

#[test]
fn list_shows_every_finding_with_its_status() {
    let out = swaplab().arg("list").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for f in swaplab::findings::all() {
        assert!(
            text.contains(f.id),
            "{} missing from `swaplab list`:\n{text}",
            f.id
        );
    }
}

#[test]
fn list_json_is_machine_readable() {
    let out = swaplab().args(["list", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        swaplab::findings::all().count()
    );
    assert_eq!(v[3]["id"], "L04");
    assert_eq!(v[3]["test"], "l04_forked_children_keep_the_old_library");
}

#[test]
fn run_narrates_the_forked_children_finding_then_its_verdict() {
    swaplab()
        .args(["run", "L04"])
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(
                "== L04 on (glibc|musl) [0-9.]+: Children forked after the replacement",
            )
            .unwrap(),
        )
        .stdout(predicate::str::contains(
            "$ bin/swaplab-fork &   # process P",
        ))
        .stdout(predicate::str::contains(": Hell World"))
        .stdout(predicate::str::contains("libexample.so (deleted)"))
        .stdout(predicate::str::contains("grep libexample /proc/"))
        .stdout(predicate::str::contains("verdict: Confirmed"));
}

#[test]
fn run_accepts_lowercase_ids_and_several_at_once() {
    swaplab()
        .args(["run", "-q", "l01", "l02", "--libc", "host"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^L01 +Confirmed [0-9.]+ s ").unwrap())
        .stdout(predicate::str::is_match(r"(?m)^L02 +Confirmed [0-9.]+ s ").unwrap())
        .stdout(predicate::str::contains("2 confirmed, 0 refuted"))
        .stdout(predicate::str::contains("musl").not())
        // One table: no verdict line of its own beside the table's row.
        .stdout(predicate::str::contains("[host]").not());
    // One finding too.
    swaplab()
        .args(["run", "-q", "l01", "--libc", "host"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^ID +host \(").unwrap())
        .stdout(predicate::str::contains("1 confirmed, 0 refuted"));
}

#[test]
fn run_json_reports_verdict_observations_and_platform() {
    let out = swaplab().args(["run", "L07", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let p = &v["platform"];
    for key in ["kernel", "libc", "libc_version", "loader", "os", "arch"] {
        assert!(
            p[key].as_str().is_some_and(|s| !s.is_empty()),
            "platform.{key} missing: {p}"
        );
    }
    let f = &v["findings"][0];
    assert_eq!(f["id"], "L07");
    assert_eq!(f["verdict"], "Confirmed");
    assert!(f["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
    assert_eq!(
        f["observations"]["handle_first"],
        f["observations"]["handle_second"]
    );
    assert!(f["transcript"].as_array().unwrap().len() > 5);
}

/// Whether build.rs made the musl column (musl-gcc was installed).
fn musl_here() -> bool {
    swaplab::harness::runtime::Runtime::musl().is_ok()
}

#[test]
fn run_shows_a_column_per_c_library_and_a_musl_only_finding_runs_only_there() {
    let out = swaplab()
        .args(["run", "L10", "L07", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let cols: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["host", "musl"], "{v:#}");
    let cell = |id: &str, col: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == id && o["runtime"] == col)
            .unwrap_or_else(|| panic!("no {id} in column {col}: {v:#}"))
            .clone()
    };
    assert_eq!(cell("L10", "host")["verdict"], "NotApplicable");
    assert_eq!(cell("L07", "host")["libc"], "glibc");
    let musl = cell("L10", "musl");
    if musl_here() {
        assert_eq!(musl["verdict"], "Confirmed", "{musl:#}");
        assert_eq!(v["columns"][1]["libc"], "musl");
        assert!(!v["columns"][1]["libc_version"].as_str().unwrap().is_empty());
        // The musl column checks musl's own expectation of L07.
        assert_eq!(
            cell("L07", "musl")["claim"],
            swaplab::findings::find("L07").unwrap().musl
        );
    } else {
        assert_eq!(musl["verdict"], "Skipped", "{musl:#}");
        assert!(musl["enable"].as_str().unwrap().contains("musl-tools"));
    }
}

#[test]
fn compare_prints_the_platform_by_finding_table() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let report = dir.path().join("report-host.json");
    let out = swaplab()
        .args(["run", "L06", "L10", "U02", "--json"])
        .assert()
        .success();
    std::fs::write(&report, &out.get_output().stdout).unwrap();
    let out = swaplab().arg("compare").arg(&report).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.starts_with("| finding |"), "{text}");
    assert!(text.contains("| L06 | Confirmed (glibc) |"), "{text}");
    assert!(
        text.contains("0 cells differ from the expectation."),
        "{text}"
    );
    if musl_here() {
        assert!(text.contains("· musl "), "{text}");
        assert!(
            text.contains("- L06 (1: as on glibc; 2: as on musl)"),
            "{text}"
        );
        assert!(text.contains("- L10 "), "{text}");
        assert!(!text.contains("- U02 "), "{text}");
    }
}

#[test]
fn compare_marks_a_refuted_cell_and_exits_1() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let report = dir.path().join("report-other.json");
    // A report as another machine would write it, where L07 was refuted.
    let text = serde_json::json!({
        "swaplab": "0.1.0",
        "platform": {"os": "Other Linux", "kernel": "6.1.0", "arch": "x86_64",
                     "libc": "glibc", "libc_version": "2.99", "loader": "/lib/ld.so"},
        "columns": [{"name": "host", "libc": "glibc", "libc_version": "2.99",
                     "loader": "/lib/ld.so", "os": "Other Linux"}],
        "findings": [
            {"id": "L07", "runtime": "host", "libc": "glibc", "verdict": "Refuted",
             "saw": ["the second dlopen returns the same handle: saw another"]},
            {"id": "L01", "runtime": "host", "libc": "glibc", "verdict": "Confirmed"}
        ]
    });
    std::fs::write(&report, text.to_string()).unwrap();
    swaplab()
        .arg("compare")
        .arg(&report)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("| L07 | **✗ Refuted** [1] |"))
        .stdout(predicate::str::contains("saw another"))
        .stdout(predicate::str::contains(
            "1 cell differs from the expectation.",
        ));
}

#[test]
fn the_environment_does_not_make_this_machine_emulated() {
    // Only an emulated guest's kernel command line says so: here L15
    // judges its start loops' counts whatever the shell has set.
    let out = swaplab()
        .args(["run", "L15", "--json"])
        .env("SWAPLAB_EMULATED", "1")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for o in report["findings"].as_array().unwrap() {
        if o["verdict"] == "Skipped" && !swaplab::harness::ci::on_ci() {
            eprintln!("L15 skipped here: {}", o["reason"]);
            continue;
        }
        assert_eq!(o["verdict"], "Confirmed", "{o}");
        let checks: Vec<&str> = o["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["what"].as_str())
            .collect();
        assert!(
            checks
                .iter()
                .any(|c| c.starts_with("with rm -f + ln -s, starts fail")),
            "the count checks were not judged: {checks:?}"
        );
    }
    assert_eq!(report["platform"]["emulated"], false, "{report}");
}

/// A report of one machine where L01 held, as `swaplab run --json` writes
/// it, with `extra` findings after it.
fn one_report(extra: &[serde_json::Value]) -> String {
    let mut findings = vec![serde_json::json!(
        {"id": "L01", "runtime": "host", "libc": "glibc", "verdict": "Confirmed"}
    )];
    findings.extend(extra.iter().cloned());
    serde_json::json!({
        "swaplab": "0.1.0",
        "platform": {"os": "Other Linux", "kernel": "6.1.0", "arch": "x86_64",
                     "libc": "glibc", "libc_version": "2.99", "loader": "/lib/ld.so"},
        "columns": [{"name": "host", "libc": "glibc", "libc_version": "2.99",
                     "loader": "/lib/ld.so", "os": "Other Linux"}],
        "findings": findings
    })
    .to_string()
}

#[test]
fn compare_marks_a_finding_it_does_not_know_and_exits_1() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let report = dir.path().join("report-newer.json");
    let x99 = serde_json::json!(
        {"id": "X99", "runtime": "host", "libc": "glibc", "verdict": "Confirmed"}
    );
    std::fs::write(&report, one_report(&[x99])).unwrap();
    swaplab()
        .arg("compare")
        .arg(&report)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("| X99 | **? Confirmed** [1] |"))
        .stdout(predicate::str::contains(
            "[1] X99 is not a finding this swaplab knows",
        ))
        .stdout(predicate::str::contains(
            "1 cell differs from the expectation.",
        ))
        .stderr(predicate::str::contains("does not know").and(predicate::str::contains("X99")));
}

#[test]
fn compare_tells_a_claim_judged_in_part_and_an_na_its_experiment_declared() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let guest = dir.path().join("report-kernel-bullseye.json");
    let l15 = serde_json::json!({"id": "L15", "runtime": "host", "libc": "glibc",
        "verdict": "Confirmed", "shown": [
            {"part": "with rm -f + ln -s, starts fail", "saw": "3 of 2238", "reason": "an emulated guest"},
            {"part": "with GNU ln -sf, no start fails", "saw": "0 of 2152", "reason": "an emulated guest"}]});
    let g10 = serde_json::json!({"id": "G10", "runtime": "host", "libc": "glibc",
        "verdict": "NotApplicable", "declared": true, "reason": "an emulated guest (no KVM)"});
    std::fs::write(&guest, one_report(&[l15, g10])).unwrap();
    let out = swaplab().arg("compare").arg(&guest).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("| L15 | Confirmed (part) [1] |"), "{text}");
    assert!(
        text.contains(
            "[1] L15 in column 1: shown, not judged: with rm -f + ln -s, starts fail; with GNU ln \
             -sf, no start fails (an emulated guest)"
        ),
        "{text}"
    );
    assert!(text.contains("| G10 | n/a [2] |"), "{text}");
    assert!(
        text.contains("[2] G10 in column 1: an emulated guest (no KVM)"),
        "{text}"
    );
}

#[test]
fn compare_refuses_a_report_given_twice_with_exit_code_2() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let report = dir.path().join("report-host.json");
    std::fs::write(&report, one_report(&[])).unwrap();
    let copy = dir.path().join("report-copy.json");
    std::fs::copy(&report, &copy).unwrap();
    let twice = |second: &std::path::Path, why: &str| {
        swaplab()
            .arg("compare")
            .arg(&report)
            .arg(second)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(why.to_string()));
    };
    twice(&report, "is given twice");
    twice(&copy, "hold the same report");
    // Inside one report: a column, or a finding in a column, listed twice.
    let l01 = serde_json::json!(
        {"id": "L01", "runtime": "host", "libc": "glibc", "verdict": "Refuted", "saw": []}
    );
    std::fs::write(&copy, one_report(&[l01])).unwrap();
    swaplab()
        .arg("compare")
        .arg(&copy)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "L01 is listed twice in its column \"host\"",
        ));
    let mut two_hosts: serde_json::Value = serde_json::from_str(&one_report(&[])).unwrap();
    let host = two_hosts["columns"][0].clone();
    two_hosts["columns"].as_array_mut().unwrap().push(host);
    std::fs::write(&copy, two_hosts.to_string()).unwrap();
    swaplab()
        .arg("compare")
        .arg(&copy)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "its column \"host\" is listed twice",
        ));
}

#[test]
fn compare_and_matrix_reject_bad_input_with_exit_code_2() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    swaplab()
        .args(["compare", "/nonexistent/report.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cannot read /nonexistent/report.json",
        ));
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"not\": \"a report\"}").unwrap();
    swaplab()
        .arg("compare")
        .arg(&junk)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a swaplab run report"));
    // A report that says nothing, or something unknown, cannot be judged.
    for (name, body, why) in [
        (
            "empty.json",
            r#"{"findings": []}"#,
            "`findings` list is empty",
        ),
        (
            "odd.json",
            r#"{"findings": [{"id": "L01", "verdict": "Maybe"}]}"#,
            "L01 has the verdict \"Maybe\"",
        ),
        (
            "anon.json",
            r#"{"findings": [{"verdict": "Confirmed"}]}"#,
            "finding #1 has no `id`",
        ),
    ] {
        let report = dir.path().join(name);
        std::fs::write(&report, body).unwrap();
        swaplab()
            .arg("compare")
            .arg(&report)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(why));
    }
    swaplab().arg("compare").assert().code(2);
    swaplab()
        .args(["run", "L06", "--libc", "bionic"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--libc bionic: no such column"));
    swaplab().arg("matrix").assert().code(2);
    // matrix needs root: as root, the codename is checked next.
    let mut m = swaplab();
    m.args(["matrix", "--debian", "Bad!", "--out"])
        .arg(dir.path());
    let msg = if nix::unistd::geteuid().is_root() {
        "not a Debian codename"
    } else {
        "needs root"
    };
    m.assert().code(2).stderr(predicate::str::contains(msg));
}

#[test]
fn matrix_says_it_needs_root_and_stops_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        // Already unprivileged: the plain call shows it.
        swaplab()
            .args(["matrix", "--debian", "bullseye"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("needs root"));
        return;
    }
    let Some(user) = ["swaplab", "nobody"]
        .iter()
        .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
    else {
        eprintln!("skipped: no user `swaplab` or `nobody` to run as");
        return;
    };
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let out = swaplab_as(&user, dir.path())
        .args(["matrix", "--debian", "bullseye", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing written before the check"
    );
}

#[test]
fn an_unknown_id_is_a_clear_error_with_exit_code_2() {
    swaplab()
        .args(["run", "L99"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown finding ID `L99`"))
        .stderr(predicate::str::contains("swaplab list"));
}

#[test]
fn bad_flags_and_missing_arguments_exit_with_code_2() {
    swaplab()
        .args(["run", "--bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unexpected argument '--bogus'"));
    swaplab()
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("required"));
    swaplab()
        .args(["run", "--all", "L01"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    swaplab().arg("frobnicate").assert().code(2);
}

#[test]
fn run_narrates_the_nginx_style_upgrade_with_the_process_tables() {
    let out = swaplab().args(["run", "U03"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for want in [
        "kill -USR2 $(cat run/swaplab.pid)",
        "kill -WINCH $(cat run/swaplab.pid.oldbin)",
        "kill -QUIT $(cat run/swaplab.pid.oldbin)",
        "run/swaplab.pid.oldbin:",
        "PID    PPID  COMM",
        "swaplab master   bin/swaplab-server (deleted)",
        "swaplab worker   bin/swaplab-server",
        "0 failed",
        "verdict: Confirmed",
    ] {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}

#[test]
fn bench_upgrade_reports_every_phase_as_json() {
    let out = swaplab()
        .args([
            "bench",
            "upgrade",
            "--server",
            "swaplab",
            "--requests",
            "200",
            "--settle",
            "20",
            // An open loop at 500 connections/s shows every phase; flat
            // out, the clients would only load the machine the other tests
            // share (16,000 connections in 4 s).
            "--connections",
            "4",
            "--rate",
            "500",
            "--json",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    for r in runs {
        assert!(r["error"].is_null(), "{r}");
        let phases: Vec<&str> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(phases, ["before", "during", "after"]);
        for p in r["phases"].as_array().unwrap() {
            assert_eq!(p["failed"], 0, "{p}");
            assert!(p["requests"].as_u64().unwrap() > 0, "{p}");
            assert!(p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
        }
    }
}

#[test]
fn bench_rejects_bad_flags_with_exit_code_2() {
    for args in [
        &["bench", "upgrade", "--connections", "0"][..],
        &["bench", "upgrade", "--server", "apache"][..],
        &["bench", "upgrade", "--requests", "many"][..],
        &["bench", "nothing"][..],
    ] {
        swaplab().args(args).assert().code(2);
    }
}

fn server() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("swaplab-server"));
    // The server links libexample (DT_NEEDED): name its folder, as the
    // sandbox does, rather than count on the library path cargo sets.
    let v1 = swaplab::harness::variants::Variant::V1.built_path();
    cmd.env("LD_LIBRARY_PATH", v1.parent().unwrap());
    cmd.timeout(std::time::Duration::from_secs(30));
    cmd
}

#[test]
fn the_server_refuses_a_port_in_use_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    server()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--pid-file"])
        .arg(dir.path().join("s.pid"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the port is in use"));
    assert!(!dir.path().join("s.pid").exists());
}

#[test]
fn the_server_listens_on_loopback_only_and_rejects_bad_arguments() {
    for args in [
        &["--listen", "0.0.0.0:8080", "--pid-file", "x.pid"][..],
        &["--listen", "nonsense", "--pid-file", "x.pid"][..],
        &["--workers", "0", "--pid-file", "x.pid"][..],
        &["--listen", "127.0.0.1:0"][..],
        &["--bogus"][..],
    ] {
        server()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("swaplab-server:"));
    }
}

#[test]
fn bench_handover_prints_the_table_and_writes_json_and_svg_timelines() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let out = swaplab()
        .args([
            "bench",
            "handover",
            "--switches",
            "2",
            "--settle",
            "10",
            "--between",
            "5",
            "--rate",
            "100",
            "--body",
            "65536",
            "--download-ms",
            "10",
            "--startup-ms",
            "20",
            "--out",
        ])
        .arg(dir.path())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for s in [
        "stop-start",
        "reuseport",
        "scm-rights",
        "exec",
        "activation",
    ] {
        assert!(text.contains(&format!("| {s} | 2 |")), "{text}");
        let svg = std::fs::read_to_string(dir.path().join(format!("handover-{s}.svg"))).unwrap();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("switch to gen 3"),
            "{s}: no second switch drawn"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("handover.json")).unwrap())
            .unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "{v}");
    for r in runs {
        assert!(r["error"].is_null(), "{r}");
        let c = &r["result"];
        assert_eq!(c["switches"].as_array().unwrap().len(), 2, "{c}");
        for phase in ["before", "during", "after"] {
            assert!(c[phase]["requests"].as_u64().unwrap() > 0, "{phase}: {c}");
        }
        if r["strategy"] == "stop-start" {
            assert!(c["refused"].as_u64().unwrap() > 0, "{c}");
        }
        if ["scm-rights", "exec", "activation"].contains(&r["strategy"].as_str().unwrap()) {
            assert_eq!(c["attempted"], c["completed"], "{c}");
        }
    }
}

#[test]
fn bench_handover_rejects_bad_flags_with_exit_code_2() {
    for args in [
        &["bench", "handover", "--strategy", "teleport"][..],
        &["bench", "handover", "--rate", "0"][..],
        &["bench", "handover", "--rate", "fast"][..],
        &["bench", "handover", "--switches", "0"][..],
        &["bench", "handover", "--body", "1"][..],
    ] {
        swaplab().args(args).assert().code(2);
    }
    swaplab()
        .args([
            "bench",
            "handover",
            "--out",
            "/proc/swaplab-cannot-write-here",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot make the output folder"));
}

fn handover() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("swaplab-handover"));
    cmd.timeout(std::time::Duration::from_secs(30));
    cmd
}

#[test]
fn the_handover_server_refuses_bad_input_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    handover()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Address already in use"));
    handover()
        .args(["--listen", "192.0.2.1:80"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("loopback only"));
    handover().args(["--fault", "explode"]).assert().code(2);
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    handover()
        .arg("--takeover")
        .arg(dir.path().join("nobody.sock"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot reach the old process"));
}

#[test]
fn a_reader_that_leaves_early_ends_swaplab_quietly() {
    // `swaplab list | head -1`, with the reader gone before the first line.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("swaplab"))
        .arg("list")
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn bench_reload_refuses_bad_input_with_exit_code_2() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let out = dir.path().join("out");
    // A port nobody listens on: bound, then let go.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (args, says) in [
        (
            &["--reload", "true", "--url", "http://192.0.2.1:80/"][..],
            "loopback only",
        ),
        (
            &["--reload", "true", "--url", "http://example.com:80/"][..],
            "not an IP address",
        ),
        (
            &["--reload", "true", "--url", "https://127.0.0.1:443/"][..],
            "only http://",
        ),
        (&["--reload", "true"][..], "give --preset"),
        (
            &[
                "--reload",
                "true",
                "--url",
                "http://127.0.0.1:8/",
                "--ready",
                "soon",
            ][..],
            "--ready soon",
        ),
        (
            &[
                "--reload",
                "true",
                "--url",
                "http://127.0.0.1:8/",
                "--ready",
                "pid-file",
            ][..],
            "--ready pid-file needs --pid-file",
        ),
        (
            &[
                "--reload",
                "true",
                "--url",
                &format!("http://127.0.0.1:{free}/"),
            ][..],
            "nothing answers at",
        ),
        (
            &["--preset", "lighttpd"][..],
            "invalid value 'lighttpd' for '--preset",
        ),
        (
            &["--preset", "nginx-hup", "--start", "nginx"][..],
            "cannot be used with",
        ),
        (
            &["--preset", "nginx-hup", "--reloads", "0"][..],
            "0 is not in 1..=1000",
        ),
    ] {
        swaplab()
            .args(["bench", "reload", "--out"])
            .arg(&out)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    assert!(!out.exists(), "bad input wrote {}", out.display());
}

/// `swaplab bench reload` on a server the suite did not write, started by
/// a user's own command line: the system's nginx, from a folder of the
/// user's, with a configuration of the user's.
#[test]
fn bench_reload_reloads_a_users_own_nginx_started_by_their_command_line() {
    let Some(nginx) = swaplab::drivers::nginx::find_nginx() else {
        assert!(
            !swaplab::harness::ci::on_ci(),
            "nginx is missing on CI (apt-get install -y nginx)"
        );
        eprintln!("skipped: nginx is not installed (apt-get install -y nginx)");
        return;
    };
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon on; pid nginx.pid; error_log error.log notice;
events {{}}
http {{
    access_log off;
    client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"pid=$pid\\n\"; }} }}
}}
"
        ),
    )
    .unwrap();
    let start = format!(
        "{} -p {}/ -c nginx.conf -e error.log",
        nginx.display(),
        dir.path().display()
    );
    let out = swaplab()
        .current_dir(dir.path())
        .args(["bench", "reload", "--start", &start])
        .args(["--reload", "kill -HUP {pid}", "--stop", "kill -QUIT {pid}"])
        .args(["--pid-file", "nginx.pid", "--reloads", "5", "--rate", "100"])
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}/"),
            "--out",
            "out",
        ])
        .timeout(std::time::Duration::from_secs(300))
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    // Five reloads, no request refused, reset, truncated or timed out.
    assert!(
        text.contains("| server | 5 |") && text.contains("| 0 | 0 | 0 | 0 | 0 | 0 | 0 |"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/reload.json")).unwrap())
            .unwrap();
    let run = &json["runs"][0];
    assert!(run["error"].is_null(), "{run}");
    let switches = run["result"]["switches"].as_array().unwrap();
    assert_eq!(switches.len(), 5, "{run}");
    // A HUP keeps the master (the pid file's) and starts new workers: each
    // reload was ready when another worker answered, never one of before.
    let master = &switches[0]["from"];
    let answered: Vec<&serde_json::Value> = switches.iter().map(|s| &s["to"]).collect();
    assert!(
        switches.iter().all(|s| &s["from"] == master),
        "the master changed: {run}"
    );
    let distinct: std::collections::HashSet<String> =
        answered.iter().map(|v| v.to_string()).collect();
    assert!(
        distinct.len() == answered.len() && !distinct.contains(&master.to_string()),
        "a reload was ready on a process that served before it: {answered:?}: {run}"
    );
    assert!(dir.path().join("out/reload-server.svg").is_file());
    // --stop ran: nothing of the user's nginx is left (its master leads
    // the process group of its workers).
    let master = switches[0]["from"].as_i64().unwrap() as i32;
    let left: Vec<i32> = swaplab::harness::procs::group(master)
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(left, Vec::<i32>::new(), "{text}");
}

#[test]
fn completions_come_from_the_command_line_itself_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = swaplab().args(["completions", shell]).assert().success();
        let script = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        // Every visible command and a preset's name; no hidden command.
        for word in ["stale", "reload", "swaplab-scm-rights"] {
            assert!(script.contains(word), "{shell}: no {word}:\n{script}");
        }
        assert!(!script.contains("fs-column"), "{shell}:\n{script}");
    }
    swaplab()
        .args(["completions", "ksh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'ksh'"));
}

#[test]
fn the_man_page_comes_from_the_command_line_itself() {
    let out = swaplab().arg("man").assert().success();
    let page = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        page.starts_with(".ie") && page.contains(".TH swaplab 1"),
        "{page}"
    );
    assert!(page.contains("swaplab\\-stale(1)"), "{page}");
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    swaplab()
        .args(["man", "--out"])
        .arg(dir.path().join("man1"))
        .assert()
        .success();
    let stale = std::fs::read_to_string(dir.path().join("man1/swaplab-stale.1")).unwrap();
    assert!(stale.contains(".TH swaplab-stale 1"), "{stale}");
    assert!(stale.contains("Exit status"), "{stale}");
    assert!(dir.path().join("man1/swaplab-bench-reload.1").is_file());
    swaplab()
        .args(["man", "--out", "/proc/swaplab-cannot-write-here"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot write into"));
}
