//! What a shared object's dynamic symbol table says, read with the ELF
//! reader the detector uses (the `object` crate): the `UNIQUE` symbols of
//! L16 and the `dlmopen` musl's C library lacks (L17), as `readelf
//! --dyn-syms` shows them.

use std::path::Path;

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::{ElfFile64, Sym};
use object::{Endianness, Object, ObjectSymbol};

/// One dynamic symbol: its name and binding (`elf::STB_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynSymbol {
    pub name: String,
    pub bind: u8,
    /// Defined here (not an undefined reference to another object).
    pub defined: bool,
}

/// The dynamic symbols of the 64-bit ELF object at `path`.
pub fn dynamic_symbols(path: &Path) -> Result<Vec<DynSymbol>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF object", path.display()))?;
    let endian = file.endian();
    Ok(file
        .dynamic_symbols()
        .map(|s| DynSymbol {
            name: s.name().unwrap_or("").to_string(),
            bind: s.elf_symbol().st_bind(),
            defined: s.elf_symbol().st_shndx(endian) != elf::SHN_UNDEF,
        })
        .collect())
}

/// The names of the `STB_GNU_UNIQUE` symbols `path` defines.
pub fn unique_symbols(path: &Path) -> Result<Vec<String>> {
    Ok(dynamic_symbols(path)?
        .into_iter()
        .filter(|s| s.defined && s.bind == elf::STB_GNU_UNIQUE)
        .map(|s| s.name)
        .collect())
}

/// Whether `path` defines (exports) a symbol named `name`.
pub fn defines(path: &Path, name: &str) -> Result<bool> {
    Ok(dynamic_symbols(path)?
        .iter()
        .any(|s| s.defined && s.name == name))
}
