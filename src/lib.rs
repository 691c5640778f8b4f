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
//!   proving a finding in a test, sandboxes, processes, runtimes, /proc views;
//! - [`targets`]: the programs under test and their protocol;
//! - [`detector`]: `swaplab stale` and ELF reading, standing on their own.

pub mod bench;
pub mod commands;
pub mod detector;
pub mod drivers;
pub mod findings;
pub mod harness;
pub mod targets;
pub mod vm;
