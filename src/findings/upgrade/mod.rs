//! Article 001: upgrading the executable on the fly (U01–U08).
//!
//! U01/U02 use a small target (`swaplab-app`, builds 1 and 2). U03–U07 use
//! swaplab's nginx-style master/worker server (`swaplab::targets::server`), U08 real
//! nginx; both are driven by the same steps (USR2, WINCH, HUP, QUIT, from
//! [`crate::drivers::fleet`]) under the load client, and every step waits
//! on evidence (pid files, the process tree in /proc), never on a sleep.
//!
//! One file per finding, each with its definition and its experiment;
//! `common.rs` holds what several of them use.

mod common;
mod u01;
mod u02;
mod u03;
mod u04;
mod u05;
mod u06;
mod u07;
mod u08;

pub use u01::{U01, u01};
pub use u02::{U02, u02};
pub use u03::{U03, u03};
pub use u04::{signal_handled, U04, u04};
pub use u05::{U05, u05};
pub use u06::{U06, u06};
pub use u07::{U07, u07};
pub use u08::{U08, u08};
