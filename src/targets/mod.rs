//! The programs under test (built as `src/bin/swaplab-*`) and their
//! protocol. They import nothing of the harness.

pub mod agent;
pub mod generation;
pub mod handover;
pub mod handover_udp;
pub mod keepalive;
pub use swaplab_protocol as protocol;
pub use swaplab_protocol::sentinel;
pub mod server;
