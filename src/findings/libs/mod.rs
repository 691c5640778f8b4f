//! Article 000: replacing a shared library under running processes
//! (L01–L13). L06–L08 check each C library's own expectation; L10 is
//! musl's.
//!
//! One file per finding, each with its definition and its experiment.

mod l01;
mod l02;
mod l03;
mod l04;
mod l05;
mod l06;
mod l07;
mod l08;
mod l09;
mod l10;
mod l11;
mod l12;
mod l13;

pub use l01::{L01, l01};
pub use l02::{L02, l02};
pub use l03::{L03, l03};
pub use l04::{L04, l04};
pub use l05::{L05, l05};
pub use l06::{L06, l06};
pub use l07::{L07, l07};
pub use l08::{L08, l08};
pub use l09::{L09, l09};
pub use l10::{L10, l10};
pub use l11::{L11, l11};
pub use l12::{L12, l12};
pub use l13::{L13, l13};
