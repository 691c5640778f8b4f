//! The benches: figures for a whole sequence under load, measured rather
//! than asserted. Each command's runs and tables are in its own module.

pub mod handover;
pub mod reload;
pub mod stale;
pub mod timeline;
pub mod upgrade;
