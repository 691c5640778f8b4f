//! The experiments, one function per finding, grouped by source article (and `detect`, for
//! swaplab's own detector).

pub mod detect;
pub mod graceful;
pub mod libs;
pub mod nginx;
pub mod upgrade;
