//! Sequences that experiments and benches share: the load client, real
//! nginx.

pub mod load;
pub mod nginx;
