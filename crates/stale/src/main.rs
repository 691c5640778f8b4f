//! `swaplab-stale`: `swaplab stale` as a program of its own, for machines
//! that need the detector and nothing of the lab.

use std::process::ExitCode;

/// Which running processes run code that is no longer on disk (an
/// executable or library replaced, removed, or modified in place), and how
/// to restart them.
#[derive(clap::Parser)]
#[command(name = "swaplab-stale", version)]
struct Cli {
    #[command(flatten)]
    args: swaplab_stale::cli::Args,
}

fn main() -> ExitCode {
    // A filter's death on a closed pipe (`swaplab-stale | head`), not a
    // panic: nothing here uses sockets, whose resets need SIGPIPE ignored.
    // SAFETY: setting a signal's disposition to its default, before any
    // thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match swaplab_stale::plugin::parse_args::<Cli>().args.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(why) = exit.message() {
                eprintln!("{why}");
            }
            ExitCode::from(exit.status())
        }
    }
}
