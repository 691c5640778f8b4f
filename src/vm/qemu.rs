//! One guest: qemu-system-x86_64 boots a kernel with the initramfs, the
//! host's root shared read-only and a report folder shared writable (9p);
//! its serial console comes back line by line. Every boot and every run has
//! a deadline, and qemu never outlives swaplab: it dies with it
//! (PR_SET_PDEATHSIG, even when swaplab is killed by SIGKILL), and Ctrl-C
//! kills its process group.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::harness::process::{wait_or_kill, GroupGuard};

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

/// Boots `b`, passes each console line after UP to `line`, and waits for
/// the guest to power off. Fails if it does not come up or end in time,
/// or says it failed; the console's last lines are in the error.
pub fn boot(b: &Boot, line: &mut dyn FnMut(&str)) -> Result<Ran> {
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
        .args(["-append", "console=ttyS0 panic=-1 quiet mitigations=off"])
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none",
            b.out.display()
        ))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let _group = GroupGuard::new(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut log = std::fs::File::create(&b.console_log)
        .with_context(|| format!("cannot write {}", b.console_log.display()))?;
    let t0 = Instant::now();
    let mut up: Option<Instant> = None;
    let mut tail: Vec<String> = Vec::new();
    loop {
        let until = match up {
            None => t0 + b.accel.boot_deadline(),
            Some(_) => t0 + b.limit,
        };
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                use std::io::Write;
                let _ = writeln!(log, "{l}");
                let l = l.trim_end_matches('\r').to_string();
                if l.starts_with(FAILED)
                    || l.contains("KVM internal error")
                    || l.contains("Kernel panic")
                {
                    let _ = wait_or_kill(&mut child, Duration::ZERO);
                    bail!("the guest failed: {l}\n{}", last(&tail));
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
                let _ = wait_or_kill(&mut child, Duration::ZERO);
                let what = if up.is_none() {
                    format!(
                        "did not come up within {:?} ({})",
                        b.accel.boot_deadline(),
                        b.accel.name()
                    )
                } else {
                    format!("did not finish within {:?}", b.limit)
                };
                bail!(
                    "the guest {what}; its console ({}):\n{}",
                    b.console_log.display(),
                    last(&tail)
                );
            }
            // Both streams ended: qemu has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = wait_or_kill(&mut child, Duration::from_secs(10))?;
    let Some(up) = up else {
        bail!(
            "qemu ended ({status:?}) before the guest came up:\n{}",
            last(&tail)
        );
    };
    Ok(Ran {
        accel: b.accel,
        boot_ms: (up - t0).as_millis(),
        run_ms: up.elapsed().as_millis(),
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
