//! Article 000's question after a real package upgrade: dpkg's (D02) and
//! rpm's (D03), each in the sandbox's own root, under running processes.
//! `common.rs` holds what both do: run the tools, start processes on the
//! package's library, and judge the restart plan.

mod common;
mod d02;
mod d03;

pub use d02::{d02, D02};
pub use d03::{d03, D03};
