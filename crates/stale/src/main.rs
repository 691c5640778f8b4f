//! `swaplab-stale`: `swaplab stale` as a program of its own, for machines
//! that need the detector and nothing of the lab.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A filter's death on a closed pipe (`swaplab-stale | head`), not a
    // panic: nothing here uses sockets, whose resets need SIGPIPE ignored.
    // SAFETY: setting a signal's disposition to its default, before any
    // thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match swaplab_stale::plugin::parse_args::<swaplab_stale::program::Program>()
        .args
        .run()
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(why) = exit.message() {
                eprintln!("{why}");
            }
            ExitCode::from(exit.status())
        }
    }
}
