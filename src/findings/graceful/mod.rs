//! Article 002: graceful restart by passing the listening socket (G01–G07).
//!
//! The target is the hand-over server (`swaplab::targets::handover`), which serves
//! downloads and hands its listening sockets to a new generation by one of
//! five strategies. G02, G03 and G06 drive it through its switches with
//! [`Service`](crate::drivers::handover::Service) (shared with `swaplab bench handover`), and every step waits
//! on evidence (a log line, an exit, a refused request), never on a sleep.
//! G04 and G05 fill listening queues on purpose; G05 and G07 run inside
//! network namespaces the experiment makes ([`NetNs`](crate::harness::netns::NetNs)).
//!
//! One file per finding, each with its definition and its experiment;
//! `common.rs` holds what several of them use.

mod common;
mod g01;
mod g02;
mod g03;
mod g04;
mod g05;
mod g06;
mod g07;

pub use g01::{G01, g01};
pub use g02::{G02, g02};
pub use g03::{G03_SWITCHES, G03, g03};
pub use g04::{G04, g04};
pub use g05::{G05, g05};
pub use g06::{g06_setup, G06, g06};
pub use g07::{G07, g07};
