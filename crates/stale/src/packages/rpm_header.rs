//! An rpm header as the database stores it (a `Packages` row's blob): a
//! count of index entries, the data's size, the entries (tag, type,
//! offset, count; big-endian), then the data. The header's magic, which a
//! package file has, is not stored. Only the tags the detector needs are
//! read; every offset and count is checked against the blob.

use anyhow::{ensure, Context, Result};

/// The tags read (rpm's `rpmtag.h`).
pub const NAME: u32 = 1000;
pub const VERSION: u32 = 1001;
pub const RELEASE: u32 = 1002;
pub const EPOCH: u32 = 1003;
pub const INSTALLTIME: u32 = 1008;
pub const ARCH: u32 = 1022;
pub const DIRINDEXES: u32 = 1116;
pub const BASENAMES: u32 = 1117;
pub const DIRNAMES: u32 = 1118;

/// The data types read.
const INT32: u32 = 4;
const STRING: u32 = 6;
const STRING_ARRAY: u32 = 8;
const I18NSTRING: u32 = 9;

/// rpm's own limits on a header (`hdrblobVerifyInfo`).
const MAX_ENTRIES: usize = 0xffff;
const MAX_DATA: usize = 256 << 20;
/// The most strings one tag may hold here: a package of a million files
/// is none rpm builds, and each string costs a slice.
const MAX_STRINGS: usize = 1 << 20;

/// A header's index and data, borrowed from its blob.
pub struct Header<'a> {
    entries: Vec<Entry>,
    data: &'a [u8],
}

struct Entry {
    tag: u32,
    kind: u32,
    offset: usize,
    count: usize,
}

impl<'a> Header<'a> {
    pub fn parse(blob: &'a [u8]) -> Result<Header<'a>> {
        let word = |at: usize| -> Result<u32> {
            let b = blob.get(at..at + 4).context("a header cut short")?;
            Ok(u32::from_be_bytes(b.try_into().unwrap()))
        };
        let il = word(0)? as usize;
        let dl = word(4)? as usize;
        ensure!(
            il <= MAX_ENTRIES && dl <= MAX_DATA,
            "a header larger than rpm allows"
        );
        let start = 8 + 16 * il;
        ensure!(start + dl <= blob.len(), "a header's data past its blob");
        let entries = (0..il)
            .map(|i| {
                let at = 8 + 16 * i;
                Ok(Entry {
                    tag: word(at)?,
                    kind: word(at + 4)?,
                    offset: word(at + 8)? as usize,
                    count: word(at + 12)? as usize,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Header {
            entries,
            data: &blob[start..start + dl],
        })
    }

    fn entry(&self, tag: u32, kinds: &[u32]) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.tag == tag && kinds.contains(&e.kind))
    }

    /// The strings of a string or string-array tag; none when absent.
    pub fn strings(&self, tag: u32) -> Result<Vec<&'a [u8]>> {
        let Some(e) = self.entry(tag, &[STRING, STRING_ARRAY, I18NSTRING]) else {
            return Ok(Vec::new());
        };
        let count = if e.kind == STRING { 1 } else { e.count };
        ensure!(count <= MAX_STRINGS, "tag {tag}: {count} strings");
        let mut at = e.offset;
        let mut out = Vec::new();
        for _ in 0..count {
            let rest = self.data.get(at..).context("a string past the data")?;
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .context("a string without its end")?;
            out.push(&rest[..len]);
            at += len + 1;
        }
        Ok(out)
    }

    /// The one string of a tag, as text.
    pub fn string(&self, tag: u32) -> Result<Option<String>> {
        Ok(self
            .strings(tag)?
            .first()
            .map(|s| String::from_utf8_lossy(s).into_owned()))
    }

    /// The numbers of an int32 tag; none when absent.
    pub fn int32s(&self, tag: u32) -> Result<Vec<u32>> {
        let Some(e) = self.entry(tag, &[INT32]) else {
            return Ok(Vec::new());
        };
        let end = e
            .count
            .checked_mul(4)
            .and_then(|n| n.checked_add(e.offset))
            .context("a count overflows")?;
        let bytes = self
            .data
            .get(e.offset..end)
            .context("numbers past the data")?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with NAME "x", DIRNAMES ["/a/", "/b/"] and DIRINDEXES [1, 0].
    fn blob() -> Vec<u8> {
        let data: &[u8] = b"x\0/a/\0/b/\0\0\0\0\0\0\x01\0\0\0\0";
        let mut b = Vec::new();
        for w in [3u32, data.len() as u32] {
            b.extend(w.to_be_bytes());
        }
        for (tag, kind, offset, count) in [
            (NAME, STRING, 0u32, 1u32),
            (DIRNAMES, STRING_ARRAY, 2, 2),
            (DIRINDEXES, INT32, 12, 2),
        ] {
            for w in [tag, kind, offset, count] {
                b.extend(w.to_be_bytes());
            }
        }
        b.extend(data);
        b
    }

    #[test]
    fn strings_arrays_and_numbers_are_read_where_the_index_says() {
        let b = blob();
        let h = Header::parse(&b).unwrap();
        assert_eq!(h.string(NAME).unwrap().as_deref(), Some("x"));
        assert_eq!(h.strings(DIRNAMES).unwrap(), vec![&b"/a/"[..], b"/b/"]);
        assert_eq!(h.int32s(DIRINDEXES).unwrap(), vec![1, 0]);
        assert!(h.strings(BASENAMES).unwrap().is_empty());
    }

    #[test]
    fn a_cut_or_lying_header_is_an_error() {
        let b = blob();
        assert!(Header::parse(&b[..b.len() - 1]).is_err());
        let mut lying = b.clone();
        // DIRNAMES claims 200 strings.
        lying[8 + 16 + 12..8 + 16 + 16].copy_from_slice(&200u32.to_be_bytes());
        assert!(Header::parse(&lying).unwrap().strings(DIRNAMES).is_err());
    }
}
