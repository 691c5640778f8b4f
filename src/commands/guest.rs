//! `swaplab guest`: the first process of `swaplab matrix --kernel`'s guest
//! (the init script execs it after switch_root). A first process must reap
//! every orphan, and the experiments leave orphans on purpose (daemons,
//! forked children whose parent was killed): so it forks, the child runs
//! the findings and writes the report, and the first process reaps until
//! the child is gone, then powers the guest off. Anywhere else it refuses.

use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::commands::matrix::kernel::REPORT;
use crate::commands::{run::select, Done, Exit};
use crate::harness::report::{self, RunReport};
use crate::harness::runtime::Runtime;

/// The first process of `swaplab matrix --kernel`'s guest: runs the
/// findings, writes the report, powers the guest off.
#[derive(clap::Args)]
#[command(hide = true)]
pub struct Args {
    /// The folder the report goes to.
    #[arg(long)]
    pub out: PathBuf,
    /// The column's name.
    #[arg(long)]
    pub column: String,
    /// Finding IDs.
    pub ids: Vec<String>,
}

impl Args {
    /// Main runs it before any thread starts, not even the Ctrl-C handler's:
    /// it forks.
    pub fn run(self) -> Done {
        let Args { out, column, ids } = &self;
        if std::process::id() != 1 {
            return Err(Exit::BadInput(
            "swaplab guest: runs only as the first process of swaplab matrix --kernel's virtual machine"
                .into(),
        ));
        }
        let selected = select(ids, ids.is_empty()).map_err(Exit::BadInput)?;
        // SAFETY: main runs this before it starts any thread (not even the
        // Ctrl-C handler's).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let code = match run_findings(out, column, &selected) {
                    Ok(()) => 0,
                    Err(e) => {
                        println!("SWAPLAB-GUEST-FAILED: {e:#}");
                        1
                    }
                };
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                reap_until(child);
                power_off()
            }
            Err(e) => {
                println!("SWAPLAB-GUEST-FAILED: cannot fork: {e}");
                power_off()
            }
        }
    }
}

/// Runs the findings on the host's C library under this kernel, as column
/// `column`, and writes the report into `out`.
fn run_findings(
    out: &Path,
    column: &str,
    selected: &[&crate::harness::finding::Finding],
) -> anyhow::Result<()> {
    let mut rt = Runtime::host();
    rt.name = column.to_string();
    let columns = [Ok(rt)];
    let outcomes = report::run_all(
        selected,
        &columns,
        |_, _| None,
        |o| println!("  {} [{}]: {}", o.id, o.runtime, o.word()),
    );
    let r = RunReport::new(&columns, outcomes);
    let partial = out.join(format!("{REPORT}.partial"));
    std::fs::write(&partial, serde_json::to_string_pretty(&r)?)?;
    std::fs::rename(&partial, out.join(REPORT))?;
    Ok(())
}

/// Reaps every process that ends, orphans included, until `child` has.
fn reap_until(child: Pid) {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) if pid == child => {
                return
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Flushes the report folder and powers the guest off.
fn power_off() -> ! {
    nix::unistd::sync();
    // SAFETY: reboot(2) with RB_POWER_OFF; as the guest's PID 1 it ends it.
    unsafe {
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(1)
}
