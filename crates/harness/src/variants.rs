//! The `libexample.so` builds that `build.rs` compiled from `csrc/` (the
//! recipe: `crates/harness/src/recipe.rs`).

use std::path::{Path, PathBuf};

/// Where build.rs put the variants (known at compile time).
pub const VARIANTS_DIR: &str = env!("SWAPLAB_VARIANTS");

/// The C sleeper of `swaplab bench stale`, which build.rs compiled.
pub const SLEEPER: &str = env!("SWAPLAB_SLEEPER");

/// The greetings, as the recipe builds them in.
pub use crate::recipe::{NEW, OLD};

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
    /// v1 and v2 with the soname `libexample.so.1` (L15).
    So1V1,
    So1V2,
    /// v1 and v2 with a C `__thread` counter (L16).
    TlsV1,
    TlsV2,
    /// v1 and v2 of a C++ library with an STB_GNU_UNIQUE symbol (L16).
    UniqueV1,
    UniqueV2,
    /// v1 and v2 of a C++ library with a `thread_local` destructor (L16).
    ThreadLocalV1,
    ThreadLocalV2,
    /// v1 with the version node EXAMPLE_1; v2 adds EXAMPLE_2 (L18).
    VerV1,
    VerV2,
    /// A plugin built against `VerV2`, needing EXAMPLE_2 (L18).
    Plugin,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
            Variant::V2Layout => "v2-layout",
            Variant::Short => "short",
            Variant::V1NoDelete => "v1-nodelete",
            Variant::So1V1 => "so1-v1",
            Variant::So1V2 => "so1-v2",
            Variant::TlsV1 => "tls-v1",
            Variant::TlsV2 => "tls-v2",
            Variant::UniqueV1 => "unique-v1",
            Variant::UniqueV2 => "unique-v2",
            Variant::ThreadLocalV1 => "thread_local-v1",
            Variant::ThreadLocalV2 => "thread_local-v2",
            Variant::VerV1 => "ver-v1",
            Variant::VerV2 => "ver-v2",
            Variant::Plugin => "plugin",
        }
    }

    /// What `greeting()` returns in this build (the recipe's text).
    pub fn greeting(self) -> &'static str {
        crate::recipe::VARIANTS
            .iter()
            .find(|b| b.name == self.name())
            .map(|b| b.greeting)
            .unwrap_or("")
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

#[cfg(test)]
mod tests {
    use super::Variant;

    #[test]
    fn every_variant_is_in_the_recipe() {
        use Variant::*;
        for v in [
            V1,
            V2,
            V2Layout,
            Short,
            V1NoDelete,
            So1V1,
            So1V2,
            TlsV1,
            TlsV2,
            UniqueV1,
            UniqueV2,
            ThreadLocalV1,
            ThreadLocalV2,
            VerV1,
            VerV2,
            Plugin,
        ] {
            assert!(
                !v.greeting().is_empty(),
                "{} is not in the recipe",
                v.name()
            );
        }
    }
}
