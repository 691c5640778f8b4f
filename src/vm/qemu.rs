//! One guest: qemu-system-x86_64 boots a kernel with the initramfs, the
//! host's root shared read-only and a report folder shared writable (9p);
//! its serial console comes back line by line. Every boot and every run has
//! a deadline, and qemu never outlives swaplab: it dies with it
//! (PR_SET_PDEATHSIG, even when swaplab is killed by SIGKILL), and Ctrl-C
//! kills its process group.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::harness::platform::EMULATED;
use crate::harness::process::{die_with_parent, wait_or_kill, GroupGuard};

/// How the guest's CPU runs: the host's virtualization (KVM) or qemu's
/// emulation (TCG, about 10 to 50 times slower, but it runs anywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The time from power-on to the guest's UP line beyond which the boot
    /// is taken as failed: TCG booted Debian's kernels in 4 to 7 s here.
    fn boot_deadline(self) -> Duration {
        match self {
            Accel::Kvm => Duration::from_secs(30),
            Accel::Tcg => Duration::from_secs(180),
        }
    }

    /// The guest kernel's command line; an emulated guest's says so
    /// ([`EMULATED`]), for the findings that judge less there.
    fn kernel_command_line(self) -> String {
        let line = "console=ttyS0 panic=-1 quiet mitigations=off";
        match self {
            Accel::Kvm => line.to_string(),
            Accel::Tcg => format!("{line} {EMULATED}"),
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            // -cpu host: the guest sees the CPU it runs on.
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// The line the guest's init prints once the host's files are mounted.
pub const UP: &str = "SWAPLAB-GUEST-UP";
/// The line it prints when it cannot go on.
pub const FAILED: &str = "SWAPLAB-GUEST-FAILED";

/// One boot.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Shared writable as tag `out`.
    pub out: &'a Path,
    pub accel: Accel,
    /// The whole run, boot included.
    pub limit: Duration,
    /// Where the console goes, all of it.
    pub console_log: PathBuf,
}

/// What a boot took.
#[derive(Clone, Debug, Serialize)]
pub struct Ran {
    pub accel: Accel,
    /// Power-on to the UP line.
    pub boot_ms: u128,
    /// The UP line to power-off.
    pub run_ms: u128,
}

/// Why a guest run failed, and whether the guest had come up by then: if
/// it had not, another acceleration may do better.
#[derive(Debug)]
pub struct Failure {
    pub came_up: bool,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    fn before_up(error: anyhow::Error) -> Failure {
        Failure {
            came_up: false,
            error,
        }
    }
}

/// `path` as the value of a qemu option: a comma separates options there,
/// and a doubled comma stands for one.
fn option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Boots `b`, passes each console line after UP to `line`, and waits for
/// the guest to power off. Fails if it does not come up or end in time,
/// or says it failed; the console's last lines are in the error.
pub fn boot(b: &Boot, line: &mut dyn FnMut(&str)) -> std::result::Result<Ran, Failure> {
    let mut child = spawn(b).map_err(Failure::before_up)?;
    // Its own group, out of the terminal's reach: Ctrl-C kills it through
    // kill_all, dropping this kills it otherwise.
    let _group = GroupGuard::new(child.id() as i32);
    let rx = console(&mut child);
    let ran = watch(b, &rx, line);
    let status = wait_or_kill(&mut child, Duration::from_secs(10));
    let ran = ran?;
    if ran.run_ms == 0 {
        return Err(Failure::before_up(anyhow::anyhow!(
            "qemu ended ({status:?}) before the guest came up"
        )));
    }
    Ok(ran)
}

/// Starts qemu for `b`, dying with swaplab.
fn spawn(b: &Boot) -> Result<Child> {
    let qemu = crate::harness::programs::find("qemu-system-x86_64").ok_or_else(|| {
        anyhow::anyhow!("qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)")
    })?;
    let mut cmd = Command::new(qemu);
    cmd.args(b.accel.args())
        .args(["-m", "2048", "-smp", "2", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        // mitigations=off: the guest runs nothing untrusted, and under TCG
        // page-table isolation makes every system call cost a TLB flush.
        // Under TCG the guest learns it is emulated from this line.
        .arg("-append")
        .arg(b.accel.kernel_command_line())
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none",
            option_value(b.out)
        ))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    die_with_parent(&mut cmd);
    cmd.spawn().context("cannot start qemu-system-x86_64")
}

/// The lines qemu prints (the serial console on stdout, its own messages
/// on stderr) as they come, whatever their bytes.
fn console(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut bytes = Vec::new();
            while matches!(reader.read_until(b'\n', &mut bytes), Ok(n) if n > 0) {
                let l = String::from_utf8_lossy(&bytes).trim_end().to_string();
                bytes.clear();
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Follows the console until qemu's streams end (the guest powered off),
/// within the boot's and the run's deadlines; `run_ms` 0 if it never came
/// up. The caller kills qemu whatever this returns.
fn watch(
    b: &Boot,
    rx: &mpsc::Receiver<String>,
    line: &mut dyn FnMut(&str),
) -> std::result::Result<Ran, Failure> {
    let fail = |up: bool, error: anyhow::Error| Failure { came_up: up, error };
    let mut log = std::fs::File::create(&b.console_log)
        .with_context(|| format!("cannot write {}", b.console_log.display()))
        .map_err(Failure::before_up)?;
    let t0 = Instant::now();
    let mut up: Option<Instant> = None;
    let mut tail: Vec<String> = Vec::new();
    loop {
        let until = match up {
            None => t0 + b.accel.boot_deadline(),
            Some(_) => t0 + b.limit,
        };
        // Checked on every line too: a console that never pauses must not
        // outrun the deadline.
        let left = until.saturating_duration_since(Instant::now());
        let next = if left.is_zero() {
            Err(mpsc::RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(left)
        };
        match next {
            Ok(l) => {
                let _ = writeln!(log, "{l}");
                if l.starts_with(FAILED)
                    || l.contains("KVM internal error")
                    || l.contains("Kernel panic")
                {
                    let e = anyhow::anyhow!("the guest failed: {l}\n{}", last(&tail));
                    return Err(fail(up.is_some(), e));
                }
                if up.is_none() && l.starts_with(UP) {
                    up = Some(Instant::now());
                } else if up.is_some() {
                    line(&l);
                }
                tail.push(l);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let what = match up {
                    None => format!(
                        "did not come up within {:?} ({})",
                        b.accel.boot_deadline(),
                        b.accel.name()
                    ),
                    Some(_) => format!("did not finish within {:?}", b.limit),
                };
                let e = anyhow::anyhow!(
                    "the guest {what}; its console ({}):\n{}",
                    b.console_log.display(),
                    last(&tail)
                );
                return Err(fail(up.is_some(), e));
            }
            // Both streams ended: qemu has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(Ran {
        accel: b.accel,
        boot_ms: up.map_or(0, |u| (u - t0).as_millis()),
        run_ms: up.map_or(0, |u| u.elapsed().as_millis()),
    })
}

fn last(tail: &[String]) -> String {
    tail.iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether this user may use KVM (`/dev/kvm` opens for reading and writing).
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}
