//! `swaplab stale` and what it reads: mappings in /proc and ELF files. It
//! stands on its own: nothing here knows of findings or the harness.

pub mod cache_dir;
pub mod dpkg_index;
pub mod elf;
pub mod identity;
pub mod kernel;
pub mod maps;
pub mod mounts;
pub mod openmetrics;
pub mod packages;
pub mod plan;
pub mod regular;
pub mod report;
pub mod scripts;
pub mod stale;
pub mod text;
