//! The one integration test binary. Each module is a group of tests; all of
//! them run in parallel, so `cargo test l04` still runs exactly L04, and
//! `cargo test findings::` runs every finding.

/// What every finding test does: run, judge, compare with the lab sheet.
mod support;

/// One test per finding, named as the claim it proves.
mod findings;

/// The `swaplab` command as a user meets it.
mod cli;

/// The harness's own promises: nothing left behind, docs that cannot drift.
mod harness;

/// The guides' code blocks: compiled, run or checked.
mod docs;

/// The hand-over server's failure paths.
mod handover;

/// `swaplab stale` and `bench stale` as a user meets them.
mod stale;

/// The detector's Debian package: dpkg -i, apt's hook, the service.
mod package;

/// `swaplab stale` where a review found it blind (in-place rewrites, a
/// zombie main thread, btrfs and overlays).
mod stale_blind_spots;

/// `swaplab matrix --kernel`: other kernels in qemu guests.
mod kernels;

/// `swaplab matrix --fs`: fresh filesystems in mount namespaces of their own.
mod filesystems;
