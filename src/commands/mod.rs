//! What the `swaplab` command does, and how it prints it.

pub mod compare;
pub mod matrix;
