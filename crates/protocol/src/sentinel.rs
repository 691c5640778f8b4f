//! The limits of `swaplab-sentinel` (src/bin), which the harness waits by.

use std::time::Duration;

/// How long a sentinel goes on killing the processes of its sandbox before
/// it gives up (one in D state may take a while to go).
pub const SWEEP: Duration = Duration::from_secs(10);

/// How long a sentinel, the harness's `sandbox::remove_all` and a sweep
/// wait for the mounts over a folder to go: the processes of a mount
/// namespace may take seconds to die (a sentinel in there sweeps for up to
/// [`SWEEP`]). On a fresh CI machine, a killed column's folder once
/// outlived 30 s.
pub const UNMOUNT_LIMIT: Duration = Duration::from_secs(60);
