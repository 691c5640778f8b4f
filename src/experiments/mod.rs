//! The experiments, one function per finding, grouped by source article.

pub mod graceful;
pub mod libs;
pub mod nginx;
pub mod upgrade;
