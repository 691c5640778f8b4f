//! What every experiment stands on, and what proves a finding:
//!
//! - a finding and what it needs ([`finding`]); the run loop and the report
//!   ([`report`], [`platform`]); proving a finding in a test ([`prove`],
//!   [`sheets`], [`ci`]);
//! - the `Lab` notebook ([`lab`]) and its judgments on mappings
//!   ([`map_checks`]), with redaction ([`redact`]);
//! - sandboxes, target processes, C library columns and the recipe that
//!   builds them ([`sandbox`], [`process`], [`runtime`], [`recipe`],
//!   [`variants`]);
//! - what the kernel shows: processes, fds and sockets in /proc
//!   ([`procs`]), listening sockets over sock_diag ([`listeners`]);
//! - the tools experiments use: replacements ([`replace`]), installed
//!   programs ([`programs`]), network namespaces ([`netns`]), user and
//!   mount namespaces of a process's own ([`userns`]).

pub mod ci;
pub mod debian_roots;
pub mod finding;
pub mod lab;
pub mod listeners;
pub mod map_checks;
pub mod netns;
pub mod platform;
pub mod process;
pub mod procs;
pub mod programs;
pub mod prove;
pub mod recipe;
pub mod redact;
pub mod relink;
pub mod replace;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod sheets;
pub mod symbols;
pub mod userns;
pub mod variants;
pub mod watch;
