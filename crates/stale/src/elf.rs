//! The two facts `swaplab stale` needs from an ELF object: its loadable
//! segments (to tell whether a process's mappings still match the file) and
//! its GNU build-id (to tell an identical reinstall from a new build).
//! Parsing is the `object` crate's; this module only fetches the bytes.
//!
//! Bytes are read with pread(2), never mmap(2): the file may be truncated
//! under the reader (the `cp` case of L11), and a read then comes back
//! short instead of killing the reader with SIGBUS. The same code reads a
//! process's memory (`/proc/PID/mem`), where an object's header sits at the
//! start of its first mapping and its notes at load base + `p_vaddr`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use object::elf;
use object::read::elf::{FileHeader, NoteIterator, ProgramHeader};
use object::Endianness;

/// At most this many bytes are read for program headers or notes.
const LIMIT: usize = 64 * 1024;

/// One `PT_LOAD` program header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// `PF_R`, `PF_W`, `PF_X`.
    pub flags: u32,
}

impl Segment {
    pub fn readable(&self) -> bool {
        self.flags & elf::PF_R != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Elf {
    pub loads: Vec<Segment>,
    pub build_id: Option<Vec<u8>>,
    /// The program interpreter (`PT_INTERP`: the dynamic loader an
    /// executable names), read from files only.
    pub interp: Option<String>,
}

/// How the bytes of the object are addressed in the source.
#[derive(Clone, Copy, Debug)]
pub enum Where {
    /// A file: offsets are file offsets.
    File,
    /// A process's memory: the ELF header is at `header_at` (the start of the
    /// object's mapping of file offset 0); notes are found by address.
    Memory { header_at: u64 },
}

/// Reads `len` bytes at `pos`, fewer at the end of the source.
fn read_at(src: &File, pos: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match src.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    buf.truncate(got);
    Some(buf)
}

/// The segments and build-id of the ELF object in `src`, or `None` when it
/// is not ELF or cannot be read.
pub fn read(src: &File, at: Where) -> Option<Elf> {
    let base = match at {
        Where::File => 0,
        Where::Memory { header_at } => header_at,
    };
    let head = read_at(src, base, 4096)?;
    if head.len() < 5 || &head[..4] != b"\x7fELF" {
        return None;
    }
    match head[4] {
        elf::ELFCLASS64 => parse::<elf::FileHeader64<Endianness>>(src, at, head),
        elf::ELFCLASS32 => parse::<elf::FileHeader32<Endianness>>(src, at, head),
        _ => None,
    }
}

fn parse<H: FileHeader<Endian = Endianness>>(src: &File, at: Where, head: Vec<u8>) -> Option<Elf> {
    let base = match at {
        Where::File => 0,
        Where::Memory { header_at } => header_at,
    };
    let header = H::parse(head.as_slice()).ok()?;
    let endian = header.endian().ok()?;
    let phoff: u64 = header.e_phoff(endian).into();
    let need =
        phoff as usize + header.e_phnum(endian) as usize * header.e_phentsize(endian) as usize;
    // Program headers beyond the first page: read as much as they need.
    let data = if need > head.len() && need <= LIMIT {
        read_at(src, base, need)?
    } else {
        head
    };
    let header = H::parse(data.as_slice()).ok()?;
    let phdrs = header.program_headers(endian, data.as_slice()).ok()?;
    let loads: Vec<Segment> = phdrs
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .map(|p| Segment {
            vaddr: p.p_vaddr(endian).into(),
            memsz: p.p_memsz(endian).into(),
            offset: p.p_offset(endian).into(),
            filesz: p.p_filesz(endian).into(),
            flags: p.p_flags(endian),
        })
        .collect();
    // Where the object was loaded: its first segment maps file offset 0.
    let load_base = match at {
        Where::File => 0,
        Where::Memory { header_at } => {
            let first = loads.iter().find(|s| s.offset == 0)?;
            header_at.wrapping_sub(first.vaddr & !0xfff)
        }
    };
    let mut build_id = None;
    for p in phdrs.iter().filter(|p| p.p_type(endian) == elf::PT_NOTE) {
        let size = Into::<u64>::into(p.p_filesz(endian)) as usize;
        if size == 0 || size > LIMIT {
            continue;
        }
        let pos = match at {
            Where::File => p.p_offset(endian).into(),
            Where::Memory { .. } => load_base.wrapping_add(p.p_vaddr(endian).into()),
        };
        let Some(notes) = read_at(src, pos, size) else {
            continue;
        };
        let Ok(mut it) = NoteIterator::<H>::new(endian, p.p_align(endian), &notes) else {
            continue;
        };
        while let Ok(Some(note)) = it.next() {
            if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                build_id = Some(note.desc().to_vec());
            }
        }
        if build_id.is_some() {
            break;
        }
    }
    let interp = match at {
        Where::Memory { .. } => None,
        Where::File => phdrs
            .iter()
            .find(|p| p.p_type(endian) == elf::PT_INTERP)
            .and_then(|p| {
                let size = Into::<u64>::into(p.p_filesz(endian)) as usize;
                let bytes = read_at(src, p.p_offset(endian).into(), size.min(4096))?;
                let text = bytes.split(|b| *b == 0).next()?;
                Some(String::from_utf8_lossy(text).into_owned())
            }),
    };
    Some(Elf {
        loads,
        build_id,
        interp,
    })
}

/// The dynamic loader the executable at `path` names (`PT_INTERP`).
pub fn interpreter(path: &std::path::Path) -> Option<String> {
    read(&File::open(path).ok()?, Where::File)?.interp
}

/// A build-id as hex, as `readelf -n` and `file` print it.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The variants' segments and build-ids are read in swaplab's tests
    // (tests/stale.rs), where build.rs has built them.

    #[test]
    fn reads_its_own_build_id_from_memory() {
        // This test binary's first mapping of its own executable.
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let maps = crate::maps::file_mappings(std::process::id() as i32).unwrap();
        let first = maps
            .iter()
            .find(|m| m.path == exe && m.offset == 0)
            .unwrap();
        let mem = File::open("/proc/self/mem").unwrap();
        let from_mem = read(
            &mem,
            Where::Memory {
                header_at: first.start,
            },
        )
        .unwrap();
        let from_file = read(&File::open(&exe).unwrap(), Where::File).unwrap();
        assert_eq!(from_mem.loads, from_file.loads);
        assert_eq!(from_mem.build_id, from_file.build_id);
    }
}
