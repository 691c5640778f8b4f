//! How the harness talks with `swaplab-sentinel` (src/bin), and the limits
//! it waits by.
//!
//! The harness writes [`Order`]s on the sentinel's stdin, one a line, and
//! never closes it but to stop it. When stdin ends, the sentinel kills
//! every process of the sandbox. If [`Order::Done`] came first, the harness
//! lives and removes the sandbox itself; if not, the harness died (however
//! it died: its end of the pipe closed with it) and the sentinel removes the
//! sandbox too. It does as well when the harness died after `done`: its
//! lock on the sandbox's [`OWNER_LOCK`] file is then free.

use std::time::Duration;

/// One line of what the harness tells a sentinel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Kill process group N too (a server that daemonized out of the
    /// harness's tree, with its executable elsewhere): `N`.
    Watch(i32),
    /// Group N ended, and its number may be given to another: `-N`.
    Forget(i32),
    /// The harness stops the sentinel and removes the sandbox itself:
    /// `done`.
    Done,
}

impl Order {
    /// The line that says it (without its newline).
    pub fn line(self) -> String {
        match self {
            Order::Watch(g) => g.to_string(),
            Order::Forget(g) => format!("-{g}"),
            Order::Done => "done".into(),
        }
    }

    /// What a line says; `None` for anything else (groups 0 and 1 are
    /// never anyone's to kill).
    pub fn parse(line: &str) -> Option<Order> {
        match line.trim() {
            "done" => Some(Order::Done),
            l => match l.parse::<i32>().ok()? {
                n if n > 1 => Some(Order::Watch(n)),
                n if n < -1 => Some(Order::Forget(-n)),
                _ => None,
            },
        }
    }
}

/// The file in a sandbox whose `flock` its owner holds for as long as it
/// lives (the kernel lets go of it when the owner dies, however it dies).
pub const OWNER_LOCK: &str = ".owner";

/// How long a sentinel goes on killing the processes of its sandbox before
/// it gives up (one in D state may take a while to go).
pub const SWEEP: Duration = Duration::from_secs(10);

/// How long a sentinel, the harness's `sandbox::remove_all` and a sweep
/// wait for the mounts over a folder to go: the processes of a mount
/// namespace may take seconds to die (a sentinel in there sweeps for up to
/// [`SWEEP`]). On a fresh CI machine, a killed column's folder once
/// outlived 30 s.
pub const UNMOUNT_LIMIT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_reads_back_as_itself_and_nothing_else_is_one() {
        for o in [Order::Watch(42), Order::Forget(42), Order::Done] {
            assert_eq!(Order::parse(&o.line()), Some(o));
        }
        for l in ["", "0", "1", "-1", "x", "done now"] {
            assert_eq!(Order::parse(l), None, "{l:?}");
        }
    }
}
