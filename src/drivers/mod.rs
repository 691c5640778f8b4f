//! Sequences that experiments and benches share: the load client, the
//! hand-over server through its switches and the strategies compared under
//! load, the master/worker fleet through an upgrade, real nginx, and the restart
//! detectors people use, judged against the truth.

pub mod comparison;
pub mod fleet;
pub mod handover;
pub mod load;
pub mod nginx;
pub mod presets;
pub mod reload;
pub mod restart_tools;
pub mod shell_server;
pub mod udp_load;
