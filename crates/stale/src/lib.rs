//! `swaplab stale` and what it reads: mappings in /proc and ELF files. It
//! stands on its own, a package of its own that builds with no C compiler:
//! nothing here knows of findings or the harness. `swaplab` re-exports it
//! as `swaplab::detector`; `cli` is the command both binaries run.

pub mod cache_dir;
pub mod cli;
pub mod command;
pub mod dpkg_index;
pub mod elf;
pub mod exclude;
pub mod identity;
pub mod in_root;
pub mod kernel;
pub mod maps;
pub mod mounts;
pub mod openmetrics;
pub mod packages;
pub mod plan;
pub mod plugin;
pub mod program;
pub mod regular;
pub mod report;
pub mod scripts;
pub mod sqlite;
pub mod stale;
pub mod text;
pub mod users;
