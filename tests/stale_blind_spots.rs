//! `swaplab stale` where a review found it blind: a library rewritten in
//! place with its old mtime set back (`cp -p`), one cut short, a process
//! whose main thread has exited, a hard link named like the kernel's
//! ` (deleted)` mark, a file written just after its birth, and files on
//! btrfs and overlayfs, whose devices `stat` and maps name differently.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use swaplab::detector::stale::wait_until_measurably_started;
use swaplab::harness::variants::Variant;

use crate::stale::{
    c_sleeper, flagged_none, flagged_only, install, sandbox, spawn_guarded, stale_json, wait_for,
    Guarded,
};

/// Lets `pid` age enough that a write now is measurably after its start.
fn aged(pid: i32) {
    wait_until_measurably_started(pid, Duration::from_secs(20)).unwrap();
}

/// `cp -p SRC DST`, the real tool: DST keeps its inode and gets SRC's
/// bytes, mode and times.
fn cp_p(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-p")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `touch -r REF FILE`: FILE gets REF's times.
fn same_times(reference: &Path, file: &Path) {
    let st = Command::new("touch")
        .arg("-r")
        .arg(reference)
        .arg(file)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn stale_a_library_rewritten_in_place_with_cp_p_is_flagged_by_its_ctime() {
    // v2 has v1's layout byte for byte: only the greeting differs, so the
    // segments still match, and cp -p sets the old mtime back. Only the
    // ctime, which nobody can set back, moved.
    let dir = sandbox();
    let p = c_sleeper(dir.path(), &[]);
    aged(p.pid());
    let lib = dir.path().join("libexample.so");
    let v2 = dir.path().join("v2-with-old-times.so");
    std::fs::copy(Variant::V2.built_path(), &v2).unwrap();
    same_times(&lib, &v2);
    let inode = std::fs::metadata(&lib).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    cp_p(&v2, &lib);
    let after = std::fs::metadata(&lib).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    assert_eq!(inode.unwrap(), after.unwrap(), "cp -p kept the inode");
    if !birth_times_kept(dir.path()) {
        // Without a birth time, a change after the start cannot be told
        // from an install after it: not judged, and said so.
        only_unchecked(p.pid(), &lib, "no-birth-time");
        return;
    }
    let (v, f) = flagged_only(p.pid(), &lib, "modified-in-place");
    assert_eq!(f["evidence"], "ctime", "{v}");
    assert_eq!(f["need"], "required", "{v}");
    assert_eq!(f["deleted"], false, "{v}");
}

/// Whether the filesystem of `dir` keeps birth times (statx).
fn birth_times_kept(dir: &Path) -> bool {
    std::fs::metadata(dir).and_then(|m| m.created()).is_ok()
}

/// `swaplab stale --json --pid PID` must exit 3, flag nothing, and list
/// `path` as the one file of PID it could not judge, for `reason`.
fn only_unchecked(pid: i32, path: &Path, reason: &str) {
    let (code, v) = stale_json(pid);
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(v["processes"].as_array().unwrap().len(), 0, "{v}");
    let files = v["unchecked"][0]["files"].as_array().unwrap();
    assert_eq!(v["unchecked"][0]["pid"], pid, "{v}");
    assert_eq!(files.len(), 1, "{v}");
    assert_eq!(files[0]["path"], path.to_str().unwrap(), "{v}");
    assert_eq!(files[0]["reason"], reason, "{v}");
    assert_eq!(v["unchecked_files"], 1, "{v}");
}

#[test]
fn stale_a_library_cut_short_with_its_old_mtime_is_flagged_by_its_segments() {
    // A killed cp or a full disk leaves a few bytes: no ELF headers to
    // parse, and the file is shorter than what the process maps.
    let dir = sandbox();
    let p = c_sleeper(dir.path(), &[]);
    aged(p.pid());
    let lib = dir.path().join("libexample.so");
    let before = dir.path().join("times");
    std::fs::write(&before, b"").unwrap();
    same_times(&lib, &before);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lib)
        .unwrap()
        .set_len(100)
        .unwrap();
    same_times(&before, &lib);
    let (v, f) = flagged_only(p.pid(), &lib, "modified-in-place");
    assert_eq!(f["evidence"], "segments", "{v}");
    assert!(
        f["detail"].as_str().unwrap().contains("now 100 bytes"),
        "{v}"
    );
}

#[test]
fn stale_a_process_whose_main_thread_exited_is_judged_through_a_live_thread() {
    // pthread_exit in main: /proc/PID/maps is empty and the main thread a
    // zombie, while another thread runs the old library.
    let dir = sandbox();
    let p = c_sleeper(dir.path(), &["--exit-main"]);
    let pid = p.pid();
    wait_for("the main thread has exited", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    });
    let lib = dir.path().join("libexample.so");
    install(Variant::V2.built_path().to_str().unwrap(), &lib);
    let (v, f) = flagged_only(pid, &lib, "replaced");
    assert_eq!(v["vanished"], 0, "{v}");
    assert_eq!(f["deleted"], true, "{v}");
}

#[test]
fn stale_a_hard_link_named_like_the_deleted_mark_hides_no_replacement() {
    // maps prints the replaced library as `libexample.so (deleted)`; a hard
    // link of that very name to the old file holds the mapped inode, but
    // the name without the mark holds the new file.
    let dir = sandbox();
    let p = c_sleeper(dir.path(), &[]);
    let lib = dir.path().join("libexample.so");
    std::fs::hard_link(&lib, dir.path().join("libexample.so (deleted)")).unwrap();
    install(Variant::V2.built_path().to_str().unwrap(), &lib);
    let (v, f) = flagged_only(p.pid(), &lib, "replaced");
    assert_eq!(f["deleted"], true, "{v}");
}

#[test]
fn stale_a_file_written_just_after_its_birth_is_unchecked_and_exits_3() {
    // A shell starts, then its program is installed and exec'd: born after
    // the process started, written within an installer's time of its birth.
    // Whether that write came after the mapping cannot be told.
    let dir = sandbox();
    let exe = dir.path().join("swl-late");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("read go; exec \"$0\" 600")
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut sh = spawn_guarded(cmd);
    let pid = sh.pid();
    aged(pid);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    std::io::Write::write_all(sh.0.stdin.as_mut().unwrap(), b"go\n").unwrap();
    wait_for("the shell exec'd the late program", || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
    });
    let born = birth_times_kept(dir.path());
    let reason = if born {
        "written-just-after-birth"
    } else {
        "no-birth-time"
    };
    only_unchecked(pid, &exe, reason);
    let out = crate::cli::swaplab()
        .args(["stale", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{pid} swl-late: could not tell: 1 file not judged"
        )),
        "{text}"
    );
    let word = if born {
        "written just after its birth"
    } else {
        "no birth time"
    };
    assert!(text.contains(word), "{text}");
}

/// Whether this test may make filesystems (root, and the tools); on CI it
/// must.
fn may_make_filesystems(tools: &[(&str, &str)]) -> bool {
    let ci = swaplab::harness::ci::on_ci();
    if !nix::unistd::geteuid().is_root() {
        assert!(!ci, "on CI this test must run as root");
        eprintln!("skipped: needs root to mount a filesystem (sudo -E cargo test stale_on)");
        return false;
    }
    for (tool, package) in tools {
        if swaplab::harness::programs::find(tool).is_none() {
            assert!(!ci, "on CI {tool} must be installed ({package})");
            eprintln!("skipped: {tool} is not installed (apt-get install -y {package})");
            return false;
        }
    }
    true
}

/// Runs `script` with `sh` in a mount namespace of its own (private
/// mounts: they end with it), on a tmpfs mounted over `dir`, with the C
/// sleeper and libexample v1 in `$S` and `$V1`. The script starts
/// sleepers (`… "$S" $$ &`) and ends in `wait`; their pids, from their
/// `ready` lines, come back with the guard of the whole.
fn in_own_mount_namespace(dir: &Path, script: &str, sleepers: usize) -> (Namespace, Vec<i32>) {
    let setup = format!("set -e; mount -t tmpfs swaplab-test \"$D\"; cd \"$D\"; {script}\nwait",);
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &setup])
        .env("D", dir)
        .env("S", swaplab::harness::variants::SLEEPER)
        .env("V1", Variant::V1.built_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The sleepers end when the shell does (they watch it): dropping the
    // guard ends them all, and the namespace with its mounts.
    let mut ns = Namespace {
        shell: Some(spawn_guarded(cmd)),
        sleepers: Vec::new(),
    };
    let shell = &mut ns.shell.as_mut().unwrap().0;
    let (out, mut err) = (shell.stdout.take().unwrap(), shell.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let pid = line
                .strip_prefix("ready ")
                .and_then(|l| l.split(' ').next()?.parse().ok());
            if tx.send(pid).is_err() {
                break;
            }
        }
    });
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while ns.sleepers.len() < sleepers {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(pid)) => ns.sleepers.push(pid),
            Ok(None) => {}
            Err(e) => {
                drop(rx);
                let mut text = String::new();
                if e == std::sync::mpsc::RecvTimeoutError::Disconnected {
                    let _ = std::io::Read::read_to_string(&mut err, &mut text);
                }
                panic!(
                    "{} of {sleepers} sleepers said ready before the namespace's script {}:\n{text}",
                    ns.sleepers.len(),
                    if text.is_empty() { "timed out" } else { "ended" }
                );
            }
        }
    }
    let pids = ns.sleepers.clone();
    (ns, pids)
}

/// The shell of a mount namespace and the sleepers it started. Dropped,
/// it ends them all and waits until none is left in the namespace: a
/// folder removed while another namespace still mounts over it is
/// detached lazily, and a loop device under it then stays attached.
struct Namespace {
    shell: Option<Guarded>,
    sleepers: Vec<i32>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The sleepers watch the shell, and exit with it. A zombie has
        // left its namespaces already.
        drop(self.shell.take());
        let until = std::time::Instant::now() + Duration::from_secs(20);
        let inside = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok();
        while self.sleepers.iter().any(|&p| inside(p)) {
            if std::time::Instant::now() >= until {
                // A drop may run while a test panics: say it, do not panic.
                eprintln!(
                    "warning: sleepers {:?} still in their mount namespace after 20 s",
                    self.sleepers
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `path` inside the namespace of process `pid`, as the host reaches it.
fn inside(pid: i32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

#[test]
fn stale_an_untouched_program_on_btrfs_and_its_subvolume_is_current() {
    // stat gives the volume and each subvolume an anonymous device of its
    // own; maps names the superblock's. Root asks /proc/PID/map_files and
    // knows; a user asks the mount (its superblock device, then the
    // inode), which tells only on the subvolume the mount shows: inode
    // numbers repeat across subvolumes, so on a nested one it cannot tell.
    if !may_make_filesystems(&[("mkfs.btrfs", "btrfs-progs"), ("btrfs", "btrfs-progs")]) {
        return;
    }
    let Some(user) = crate::stale::other_user() else {
        assert!(
            !swaplab::harness::ci::on_ci(),
            "on CI the user `swaplab` must exist"
        );
        eprintln!("skipped: no user `swaplab` or `nobody` (useradd --system swaplab)");
        return;
    };
    let dir = sandbox();
    // The user's own swaplab, where the host sees the folder (the
    // namespace's tmpfs covers it only there).
    let me = dir.path().join("swaplab");
    std::fs::copy(assert_cmd::cargo::cargo_bin!("swaplab"), &me).unwrap();
    let ids = (user.uid.as_raw(), user.gid.as_raw());
    let script = format!(
        "truncate -s 256M img; mkfs.btrfs -q img >/dev/null; mkdir v; \
         mount -o loop img v; btrfs subvolume create v/sub >/dev/null; \
         for d in v v/sub; do cp \"$S\" \"$V1\" $d/; \
         (cd $d; LD_LIBRARY_PATH=$PWD exec setpriv --reuid={} --regid={} --clear-groups ./swaplab-sleeper $$) & done",
        ids.0, ids.1
    );
    let (guard, pids) = in_own_mount_namespace(dir.path(), &script, 2);
    let lib_of = |d: &str| format!("{}/{d}/libexample.so", dir.path().display());
    let on = |lib: &str| {
        pids.iter()
            .copied()
            .find(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/maps")).is_ok_and(|m| m.contains(lib))
            })
            .expect("a sleeper on it")
    };
    let (top, sub) = (
        on(&format!("{}/v/libexample.so", dir.path().display())),
        on(&lib_of("v/sub")),
    );
    let as_user = |pid: i32| {
        let mut cmd = Command::new(&me);
        cmd.args(["stale", "--json", "--pid", &pid.to_string()])
            .uid(ids.0)
            .gid(ids.1);
        let out = crate::stale::output_of(cmd);
        (out.status.code(), crate::stale::json(&out.stdout))
    };
    for pid in [top, sub] {
        let v = flagged_none(pid, "untouched on btrfs, as root");
        assert_eq!(v["unchecked"].as_array().unwrap().len(), 0, "{v}");
    }
    let (code, v) = as_user(top);
    assert_eq!(code, Some(0), "untouched on the volume, as the user: {v}");
    let (code, v) = as_user(sub);
    assert_eq!(
        code,
        Some(3),
        "untouched on a nested subvolume, as the user: {v}"
    );
    assert_eq!(
        v["unchecked"][0]["files"][0]["reason"], "no-identity",
        "{v}"
    );
    // Replaced: root by map_files, the user by the mount.
    let top_lib = format!("{}/v/libexample.so", dir.path().display());
    install(
        Variant::V2.built_path().to_str().unwrap(),
        &inside(top, &top_lib),
    );
    let (code, v) = stale_json(top);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["processes"][0]["files"][0]["reason"], "replaced", "{v}");
    assert_eq!(
        v["processes"][0]["files"][0]["identity"], "map-files",
        "{v}"
    );
    let (code, v) = as_user(top);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["processes"][0]["files"][0]["reason"], "replaced", "{v}");
    assert_eq!(
        v["processes"][0]["files"][0]["identity"], "mountinfo",
        "{v}"
    );
    drop(guard);
}

#[test]
fn stale_a_process_in_its_own_mount_namespace_on_an_overlay_is_judged_there() {
    // A program that exists only inside the overlay is current; its
    // library replaced inside it must be restarted.
    if !may_make_filesystems(&[]) {
        return;
    }
    let dir = sandbox();
    let script = "mkdir lower upper work merged; cp \"$S\" \"$V1\" lower/; \
                  mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged; \
                  (cd merged; LD_LIBRARY_PATH=$PWD exec ./swaplab-sleeper $$) &";
    let (guard, pids) = in_own_mount_namespace(dir.path(), script, 1);
    let pid = pids[0];
    let v = flagged_none(pid, "untouched on the overlay");
    assert_eq!(v["unchecked"].as_array().unwrap().len(), 0, "{v}");
    let lib = format!("{}/merged/libexample.so", dir.path().display());
    install(
        Variant::V2.built_path().to_str().unwrap(),
        &inside(pid, &lib),
    );
    let (code, v) = stale_json(pid);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["processes"][0]["files"][0]["reason"], "replaced", "{v}");
    drop(guard);
}
