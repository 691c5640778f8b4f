//! `swaplab matrix --kernel`: the findings on other kernels, booted in qemu.
//! Booting is minutes under emulation, so the guest run is opt-in:
//! `SWAPLAB_KERNELS=bullseye cargo test kernel_columns` (CI sets it).

use predicates::prelude::*;
use serde_json::Value;

use crate::cli::swaplab;

#[test]
fn matrix_kernel_rejects_bad_input_with_exit_code_2() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    swaplab()
        .args(["matrix", "--kernel", "Bad!", "--out"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--kernel Bad!: not a Debian codename",
        ));
    swaplab()
        .args(["matrix", "--kernel", "bullseye", "--accel", "warp"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'warp'"));
    // The guest's first process refuses to be anything else.
    swaplab()
        .args([
            "guest",
            "--out",
            "/nonexistent",
            "--column",
            "kernel-x",
            "L01",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("runs only as the first process"));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "bad input wrote a report"
    );
}

/// The releases to boot, from `SWAPLAB_KERNELS`.
fn releases() -> Option<String> {
    std::env::var("SWAPLAB_KERNELS")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

#[test]
fn kernel_columns_run_the_findings_on_other_kernels_booted_in_qemu() {
    let Some(releases) = releases() else {
        eprintln!(
            "skipped: boots kernels in qemu for minutes; enable with SWAPLAB_KERNELS=bullseye cargo test kernel_columns (needs qemu-system-x86 and busybox-static)"
        );
        return;
    };
    let dir = swaplab::harness::sandbox::scratch("kernels").unwrap();
    let out = dir.path().join("reports");
    let run = swaplab()
        .args(["matrix", "--kernel", &releases, "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .timeout(std::time::Duration::from_secs(45 * 60))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    // Exit 0: every cell as its finding expects on that kernel.
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let host_kernel = swaplab::harness::platform::kernel_release();
    for release in releases.split(',') {
        let path = out.join(format!("report-kernel-{release}.json"));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let kernel = report["platform"]["kernel"].as_str().unwrap_or_default();
        let package = report["vm"]["package"].as_str().unwrap_or_default();
        // The kernel that answered is the package's, not the host's.
        assert_eq!(format!("linux-image-{kernel}"), package, "{path:?}");
        assert_ne!(kernel, host_kernel, "{path:?}");
        assert_eq!(report["columns"][0]["kernel"], kernel, "{path:?}");
        assert!(["kvm", "tcg"].contains(&report["vm"]["accel"].as_str().unwrap_or_default()));
        // The guest runs as root with this machine's tools: every finding
        // that is not n/a for the host's C library runs and holds.
        for f in report["findings"].as_array().unwrap() {
            let verdict = f["verdict"].as_str().unwrap_or_default();
            assert!(
                verdict == "Confirmed" || verdict == "NotApplicable",
                "{} on {kernel}: {verdict}: {}",
                f["id"],
                serde_json::to_string(f).unwrap()
            );
        }
    }
    // No guest outlives the matrix.
    let qemus = procfs::process::all_processes()
        .unwrap()
        .filter_map(|p| p.ok()?.cmdline().ok())
        .filter(|c| {
            c.iter()
                .any(|a| a.contains(&dir.path().display().to_string()))
        })
        .count();
    assert_eq!(qemus, 0, "a qemu of this test is still running");
}
