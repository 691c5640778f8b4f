//! `swaplab matrix --fs`: the findings on fresh filesystems, each made in a
//! mount namespace of its own, and nothing left behind however it ends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::cli::swaplab;

#[test]
fn matrix_fs_rejects_bad_input_and_non_root_with_exit_code_2() {
    let dir = swaplab::harness::sandbox::scratch("cli").unwrap();
    let out = dir.path().join("out");
    swaplab()
        .args(["matrix", "--fs", "ext4,zfs", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'zfs'"))
        .stderr(predicate::str::contains("ext4, xfs, btrfs, tmpfs, overlay"));
    // The hidden column refuses to run anywhere but in its matrix.
    swaplab()
        .args(["fs-column", "--fs", "tmpfs", "--dir", "/nonexistent"])
        .args(["--out", "/nonexistent", "L01"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "not a folder of swaplab matrix --fs",
        ));
    // As an unprivileged user: exit 2, and what to run instead.
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let Some(user) = swaplab::harness::finding::second_user() else {
            eprintln!("skipped the non-root case: no user `swaplab` or `nobody` to run as");
            return;
        };
        crate::cli::swaplab_as(&user, dir.path())
    } else {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("swaplab"));
        cmd.current_dir("/");
        cmd
    };
    let run = cmd
        .args(["matrix", "--fs", "ext4,btrfs", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(err.contains("sudo swaplab matrix --fs ext4,btrfs"), "{err}");
    assert!(!out.exists(), "nothing written before the check");
}

/// Whether this test may run (root); on CI it must.
fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !swaplab::harness::ci::on_ci(),
        "on CI {what} must run as root"
    );
    eprintln!(
        "skipped: {what} mounts filesystems, which needs root (sudo -E cargo test filesystems)"
    );
    false
}

/// Whether the `mkfs` of each filesystem is installed; if not, says so and
/// what to install (on CI it must be).
fn mkfs_or_skip(fs: &[&str]) -> bool {
    let missing: Vec<String> = fs
        .iter()
        .map(|f| format!("mkfs.{f}"))
        .filter(|m| swaplab::harness::programs::find(m).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !swaplab::harness::ci::on_ci(),
        "on CI {missing:?} must be installed"
    );
    eprintln!(
        "skipped: {} not installed (apt-get install -y btrfs-progs xfsprogs e2fsprogs)",
        missing.join(", ")
    );
    false
}

#[test]
fn matrix_fs_runs_the_file_findings_on_fresh_tmpfs_and_btrfs() {
    if !root_or_skip("matrix --fs") || !mkfs_or_skip(&["btrfs"]) {
        return;
    }
    let dir = swaplab::harness::sandbox::scratch("fs").unwrap();
    let out = dir.path().join("out");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = swaplab()
        .args([
            "matrix",
            "--fs",
            "tmpfs,btrfs",
            "--only",
            "L01,G01",
            "--out",
        ])
        .arg(&out)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let mut folders = Vec::new();
    for fs in ["tmpfs", "btrfs"] {
        let path = out.join(format!("report-fs-{fs}.json"));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(report["columns"][0]["name"], format!("fs-{fs}"), "{report}");
        let under = &report["platform"]["filesystem"];
        assert_eq!(under["type"], fs, "{under}");
        // Under the matrix's own folder, not the test's temp folder itself.
        let mount = under["mount_point"].as_str().unwrap();
        assert!(
            Path::new(mount).starts_with(&tmp) && mount.contains(&format!("swaplab-fs-{fs}-")),
            "{under}"
        );
        // The matrix's folder, whose name its image bears.
        let folder = Path::new(mount).parent().unwrap().file_name().unwrap();
        folders.push(folder.to_string_lossy().into_owned());
        let verdict = |id: &str| {
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["id"] == id)
                .map(|f| f["verdict"].as_str().unwrap().to_string())
        };
        assert_eq!(verdict("L01").as_deref(), Some("Confirmed"), "{report}");
        assert_eq!(verdict("G01").as_deref(), Some("NotApplicable"), "{report}");
    }
    assert!(stdout.contains("· tmpfs"), "{stdout}");
    assert!(stdout.contains("· btrfs"), "{stdout}");
    let said = Said::new(std::sync::Mutex::new(vec![stderr.to_string()]));
    assert_nothing_left_of(&tmp, &folders, &said);
}

/// Loop devices whose image lies in a folder named `swaplab-fs-…` that the
/// matrix made in `tmp` (`names`).
fn loops_of(names: &[String]) -> Vec<String> {
    let out = Command::new("losetup")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .map(str::to_string)
        .collect()
}

/// The `swaplab-fs-*` folders in `tmp`.
fn fs_folders(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("swaplab-fs-"))
        .collect()
}

/// Live processes whose command line or executable names `tmp`.
fn processes_naming(tmp: &Path) -> Vec<i32> {
    let tmp = tmp.display().to_string();
    procfs::process::all_processes()
        .unwrap()
        .filter_map(|p| p.ok())
        .filter(|p| p.stat().is_ok_and(|s| s.state != 'Z'))
        .filter(|p| {
            let cmdline = p.cmdline().unwrap_or_default().join(" ");
            let exe = p.exe().map(|e| e.display().to_string()).unwrap_or_default();
            cmdline.contains(&tmp) || exe.contains(&tmp)
        })
        .map(|p| p.pid)
        .collect()
}

/// No mount of the matrix in this namespace, no folder in `tmp`, no
/// process naming it, and no loop device of the images `names`, given as
/// long as a sentinel may take, and a handshake deadline more: a killed
/// column's namespace ends when its last process has died, and the
/// sentinel removes the folder only after its mounts.
/// `said` is what the matrix and its sentinels wrote, shown on failure.
fn assert_nothing_left_of(tmp: &Path, names: &[String], said: &Said) {
    let left = || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains("swaplab-fs-"))
            .collect();
        let all = (
            mounts.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            loops_of(names),
            fs_folders(tmp),
            processes_naming(tmp),
        );
        if all.0.is_empty() && all.1.is_empty() && all.2.is_empty() && all.3.is_empty() {
            Ok(())
        } else {
            Err(all)
        }
    };
    let found = swaplab::harness::process::poll_until(
        swaplab::targets::sentinel::SWEEP
            + swaplab::targets::sentinel::UNMOUNT_LIMIT
            + swaplab::harness::process::deadline(),
        Duration::from_millis(20),
        left,
    );
    if let Err((mounts, loops, folders, pids)) = found {
        let holders: Vec<String> = names
            .iter()
            .flat_map(|n| swaplab::detector::mounts::mounted_under(&tmp.join(n)))
            .map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                format!("{pid} {}", comm.unwrap_or_default().trim())
            })
            .collect();
        let said = said.lock().unwrap().join("\n");
        panic!(
            "left behind: mounts {mounts:?}, loop devices {loops:?}, folders {folders:?}, \
             processes {pids:?}, namespaces still mounting there (a process of each) \
             {holders:?}; the matrix's last lines:\n{said}"
        );
    }
}

/// Starts `swaplab matrix --fs FS --only L11` with its temp folder in
/// `tmp`, and waits (60 s at most) until its column has mounted the
/// filesystem and runs: the line that says where the sandboxes are. Returns
/// the matrix, the name of its folder, and what it goes on saying.
fn start_column(fs: &str, tmp: &Path, out: &Path) -> (Killed, String, Said) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("swaplab"));
    cmd.args(["matrix", "--fs", fs, "--only", "L11", "--out"])
        .arg(out)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // It dies with this test, its column with it.
    swaplab::harness::process::die_with_parent(&mut cmd);
    let mut child = Killed(cmd.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let want = format!("fs-{fs}: sandboxes in ");
    let said = Said::default();
    let kept = said.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with(&want) {
                let _ = tx.send(line.clone());
            }
            let mut kept = kept.lock().unwrap();
            kept.push(line);
            if kept.len() > 20 {
                kept.remove(0);
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the {fs} column did not say where its sandboxes are within 60 s")
        }
        // Its stderr ended: the matrix ended first.
        Err(_) => panic!(
            "the matrix ended before its {fs} column said where its sandboxes are:\n{}",
            said.lock().unwrap().join("\n")
        ),
    };
    let folder = fs_folders(tmp)
        .into_iter()
        .find(|n| line.contains(n.as_str()))
        .unwrap_or_else(|| panic!("no folder of {line:?} in {}", tmp.display()));
    // The column's mounts are its own: none reaches this namespace.
    let here = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!here.contains(&folder), "{folder} is mounted here:\n{here}");
    (child, folder, said)
}

/// The last lines a matrix (and the sentinels it started) wrote.
type Said = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A matrix killed and reaped when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_matrix_killed_or_interrupted_while_a_column_runs_leaves_nothing_behind() {
    if !root_or_skip("matrix --fs") || !mkfs_or_skip(&["ext4", "btrfs"]) {
        return;
    }
    use nix::sys::signal::Signal;
    use std::os::unix::process::ExitStatusExt;
    for (signal, fs) in [(Signal::SIGKILL, "ext4"), (Signal::SIGINT, "btrfs")] {
        let dir = swaplab::harness::sandbox::scratch("fs").unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let (mut child, folder, said) = start_column(fs, &tmp, &dir.path().join("out"));
        // The loop device of its image is there while it runs.
        let until = Instant::now() + Duration::from_secs(20);
        while loops_of(std::slice::from_ref(&folder)).is_empty() {
            assert!(
                Instant::now() < until,
                "{fs}: no loop device of {folder} while the column runs"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = child.0.wait().unwrap();
        match signal {
            Signal::SIGINT => assert_eq!(status.code(), Some(130), "{status:?}"),
            _ => assert_eq!(status.signal(), Some(signal as i32), "{status:?}"),
        }
        assert_nothing_left_of(&tmp, &[folder], &said);
    }
}

/// A mount namespace that mounts over a sandbox lives as long as any
/// process in it, whatever its executable: a sentinel whose harness died
/// kills them all before it removes the folder, rather than waiting for
/// them.
#[test]
fn a_sentinel_whose_harness_died_kills_what_holds_a_namespace_over_its_sandbox() {
    if !root_or_skip("a mount namespace over a sandbox") {
        return;
    }
    use swaplab::harness::process::{deadline, die_with_parent, poll_until, targets_dir};
    use swaplab::targets::sentinel::SWEEP;
    let dir = swaplab::harness::sandbox::scratch("fs").unwrap();
    let folder = dir.path().join("swaplab-fs-held");
    std::fs::create_dir(&folder).unwrap();
    // A namespace whose one process (sleep, from /usr/bin) mounts over it.
    let mut holder = Command::new("unshare");
    holder
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs swaplab-held \"$0\" && exec sleep 600")
        .arg(&folder)
        .stdin(Stdio::null());
    die_with_parent(&mut holder);
    let mut holder = Killed(holder.spawn().unwrap());
    let mounted = poll_until(deadline(), Duration::from_millis(10), || {
        match swaplab::detector::mounts::mounted_under(&folder).is_empty() {
            true => Err(()),
            false => Ok(()),
        }
    });
    assert!(
        mounted.is_ok(),
        "the namespace did not mount over {folder:?}"
    );
    // Its harness "dies": the pipe ends with no `done` said.
    let mut sentinel = Command::new(targets_dir().unwrap().join("swaplab-sentinel"));
    sentinel.arg(&folder).stdin(Stdio::piped());
    let mut sentinel = Killed(sentinel.spawn().unwrap());
    drop(sentinel.0.stdin.take());
    let gone = poll_until(
        SWEEP + deadline(),
        Duration::from_millis(20),
        || match folder.exists() {
            true => Err(()),
            false => Ok(()),
        },
    );
    assert!(
        gone.is_ok(),
        "{folder:?} is still there, mounted by {:?}",
        swaplab::detector::mounts::mounted_under(&folder)
    );
    use std::os::unix::process::ExitStatusExt;
    let status = holder.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(sentinel.0.wait().unwrap().success());
}
