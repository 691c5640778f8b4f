//! swaplab: shows, on a real Linux machine, what happens to running
//! processes when the code under them is replaced.
//!
//! The modules are layers; each uses only the ones below it:
//!
//! - [`commands`]: what the `swaplab` command does, and how it prints it;
//! - [`bench`](mod@bench): the benches' runs and tables;
//! - [`findings`]: swaplab's findings, each with its experiment;
//! - [`drivers`]: sequences shared by experiments and benches (the load
//!   client, the upgrade fleet, hand-over strategies, real nginx);
//! - [`vm`]: other kernels in qemu guests (`matrix --kernel`): fetching
//!   Debian's kernels, the guest's initramfs, booting with deadlines;
//! - [`harness`]: the `Lab` notebook, findings' type and needs, the run loop,
//!   proving a finding in a test, sandboxes, processes, runtimes, /proc views:
//!   the `swaplab-harness` package (crates/harness), with the C it builds;
//! - [`targets`]: the programs under test, and their protocol (the
//!   `swaplab-protocol` package, crates/protocol, which the harness uses too);
//! - [`detector`]: `swaplab stale` and ELF reading: the `swaplab-stale`
//!   package (crates/stale).
//!
//! Cargo forbids a cycle between packages: none of the three can use
//! swaplab, and neither the detector nor the protocol can use the harness.
//! The layer test keeps the rest: the detector and the protocol use no
//! other package of swaplab's, and swaplab's own modules keep their order.

pub mod bench;
pub mod commands;
pub use swaplab_stale as detector;
pub mod drivers;
pub mod findings;
pub use swaplab_harness as harness;
pub mod targets;
pub mod vm;

// The guides' Rust blocks are doctests: `cargo test --doc` compiles them, so
// they cannot drift from the code (tests/docs.rs checks their other blocks,
// and that every guide is listed here).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub mod guide_readme {}
#[cfg(doctest)]
#[doc = include_str!("../ARCHITECTURE.md")]
pub mod guide_architecture {}
#[cfg(doctest)]
#[doc = include_str!("../docs/benches.md")]
pub mod guide_benches {}
#[cfg(doctest)]
#[doc = include_str!("../docs/matrix.md")]
pub mod guide_matrix {}
#[cfg(doctest)]
#[doc = include_str!("../docs/running.md")]
pub mod guide_running {}
#[cfg(doctest)]
#[doc = include_str!("../docs/stale.md")]
pub mod guide_stale {}
#[cfg(doctest)]
#[doc = include_str!("../docs/writing-a-finding.md")]
pub mod guide_writing_a_finding {}
