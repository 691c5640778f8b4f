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

/// Runs `f` on the 64-bit ELF object at `path` (and its bytes).
fn with_elf<T>(
    path: &Path,
    f: impl FnOnce(&ElfFile64<Endianness>, &[u8]) -> Result<T>,
) -> Result<T> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{} is not a 64-bit ELF object", path.display()))?;
    f(&file, &data)
}

/// The dynamic symbols of the 64-bit ELF object at `path`.
pub fn dynamic_symbols(path: &Path) -> Result<Vec<DynSymbol>> {
    with_elf(path, |file, _| {
        let endian = file.endian();
        Ok(file
            .dynamic_symbols()
            .map(|s| DynSymbol {
                name: s.name().unwrap_or("").to_string(),
                bind: s.elf_symbol().st_bind(),
                defined: s.elf_symbol().st_shndx(endian) != elf::SHN_UNDEF,
            })
            .collect())
    })
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

/// The version nodes `path` defines (`readelf -V`: `.gnu.version_d`),
/// without the base entry (the file's own name).
pub fn version_nodes(path: &Path) -> Result<Vec<String>> {
    with_elf(path, |file, data| {
        let (endian, table) = (file.endian(), file.elf_section_table());
        let mut out = Vec::new();
        if let Some((mut defs, strings)) = table.gnu_verdef(endian, data)? {
            let strings = table.strings(endian, data, strings)?;
            while let Some((def, mut aux)) = defs.next()? {
                if def.vd_flags.get(endian) & elf::VER_FLG_BASE != 0 {
                    continue;
                }
                if let Some(a) = aux.next()? {
                    out.push(String::from_utf8_lossy(a.name(endian, strings)?).into_owned());
                }
            }
        }
        Ok(out)
    })
}

/// The version nodes `path` needs, each with the file that must define it
/// (`.gnu.version_r`): (file, node).
pub fn version_needs(path: &Path) -> Result<Vec<(String, String)>> {
    with_elf(path, |file, data| {
        let (endian, table) = (file.endian(), file.elf_section_table());
        let mut out = Vec::new();
        if let Some((mut needs, strings)) = table.gnu_verneed(endian, data)? {
            let strings = table.strings(endian, data, strings)?;
            while let Some((need, mut aux)) = needs.next()? {
                let of = String::from_utf8_lossy(need.file(endian, strings)?).into_owned();
                while let Some(a) = aux.next()? {
                    out.push((
                        of.clone(),
                        String::from_utf8_lossy(a.name(endian, strings)?).into_owned(),
                    ));
                }
            }
        }
        Ok(out)
    })
}
