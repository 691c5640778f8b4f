//! The `libexample.so` builds that `build.rs` compiled from `csrc/libexample.c`.

use std::path::{Path, PathBuf};

/// Where build.rs put the variants (known at compile time).
pub const VARIANTS_DIR: &str = env!("SWAPLAB_VARIANTS");

/// The greetings, as the recipe builds them in.
pub use crate::harness::recipe::{NEW, OLD};

/// One build of libexample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The article's first version: prints `Hell World`.
    V1,
    /// The fixed version: `Hello World`, same layout as v1.
    V2,
    /// `Hello World` with every offset moved (extra functions, larger).
    V2Layout,
    /// `Hello World` in a file shorter than v1's mappings.
    Short,
    /// v1 linked with `-z nodelete`.
    V1NoDelete,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
            Variant::V2Layout => "v2-layout",
            Variant::Short => "short",
            Variant::V1NoDelete => "v1-nodelete",
        }
    }

    /// What `greeting()` returns in this build.
    pub fn greeting(self) -> &'static str {
        match self {
            Variant::V1 | Variant::V1NoDelete => OLD,
            Variant::V2 | Variant::V2Layout | Variant::Short => NEW,
        }
    }

    /// The built file.
    pub fn built_path(self) -> PathBuf {
        Path::new(VARIANTS_DIR)
            .join(self.name())
            .join("libexample.so")
    }

    /// The file name used for this variant in a sandbox's `build/` folder.
    pub fn file_name(self) -> String {
        format!("libexample-{}.so", self.name())
    }
}
