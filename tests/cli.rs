//! The `swaplab` command as a user meets it: listing, narrating, JSON, and
//! clear errors with exit code 2 for bad input.

use assert_cmd::Command;
use predicates::prelude::*;

fn swaplab() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("swaplab"));
    cmd.timeout(std::time::Duration::from_secs(120));
    cmd
}

#[test]
fn list_shows_every_finding_with_its_status() {
    let out = swaplab().arg("list").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for f in swaplab::findings::FINDINGS {
        assert!(
            text.contains(f.id),
            "{} missing from `swaplab list`:\n{text}",
            f.id
        );
    }
    assert!(text.contains("planned (issue 3"), "{text}");
}

#[test]
fn list_json_is_machine_readable() {
    let out = swaplab().args(["list", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        swaplab::findings::FINDINGS.len()
    );
    assert_eq!(v[3]["id"], "L04");
    assert_eq!(v[3]["test"], "l04_forked_children_keep_the_old_library");
}

#[test]
fn run_l04_narrates_processes_greetings_and_maps_then_the_verdict() {
    swaplab()
        .args(["run", "L04"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "== L04: Children forked after the replacement",
        ))
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
        .args(["run", "-q", "l01", "l02"])
        .assert()
        .success()
        .stdout(predicate::str::contains("L01: Confirmed"))
        .stdout(predicate::str::contains("L02: Confirmed"))
        .stdout(predicate::str::contains("2 confirmed, 0 refuted"));
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

#[test]
fn a_planned_finding_is_skipped_with_the_reason() {
    swaplab()
        .args(["run", "U03"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "U03: Skipped: not implemented yet",
        ));
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
