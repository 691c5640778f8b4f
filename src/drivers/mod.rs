//! Sequences that experiments and benches share: the load client, the
//! master/worker fleet through an upgrade, real nginx.

pub mod fleet;
pub mod load;
pub mod nginx;
