//! Reading rows out of an SQLite database file, read-only and by hand:
//! rpm's `rpmdb.sqlite` is the one the detector reads. Linking the SQLite
//! library would need a C compiler or a system library to build, and would
//! run a large C parser as root on a file a container can write (the
//! detector reads every container's database through `/proc/PID/root`).
//! This reads only what the file format (sqlite.org/fileformat.html) says
//! a table's B-tree holds: pages, cells, overflow chains and records.
//! Every page number is bounds-checked, all the reading one database
//! does is capped by a few times its page count, and only the columns
//! asked for are decoded, so a broken or hostile file gives an error, not
//! a hang or a flood of memory.
//!
//! What it does not do: SQL, indexes, or a write-ahead log. A database
//! whose `-wal` file holds frames is being written (rpm empties it when it
//! closes the database): [`Db::open`] refuses it, rather than read pages
//! the log has replaced.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use crate::regular;

/// A database file open for reading.
pub struct Db {
    file: File,
    page_size: usize,
    /// The page size less the bytes each page reserves at its end.
    usable: usize,
    pages: u32,
    /// Pages read so far, against [`Db::limit`]: in a sound file each page
    /// has one place, but cells, children and overflow chains can all
    /// point at the same pages over and over.
    reads: std::cell::Cell<u64>,
}

/// One column's value in a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// One row of a table: its rowid and its columns. A column declared
/// `INTEGER PRIMARY KEY` is stored as NULL: its value is the rowid.
#[derive(Debug)]
pub struct Row {
    pub rowid: i64,
    pub values: Vec<Value>,
}

/// The B-tree page kinds of a table (index pages are never followed).
const INTERIOR_TABLE: u8 = 0x05;
const LEAF_TABLE: u8 = 0x0d;

impl Db {
    /// Opens `path` (a regular file only) and reads its header.
    pub fn open(path: &Path) -> Result<Db> {
        let wal = path.with_file_name(format!(
            "{}-wal",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            bail!(
                "{} holds changes not yet written to the database (it is being written)",
                wal.display()
            );
        }
        let file =
            regular::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut header = [0u8; 100];
        file.read_exact_at(&mut header, 0)
            .with_context(|| format!("{}: shorter than an SQLite header", path.display()))?;
        ensure!(
            &header[..16] == b"SQLite format 3\0",
            "{}: not an SQLite 3 database",
            path.display()
        );
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65536,
            n => n as usize,
        };
        ensure!(
            page_size.is_power_of_two() && (512..=65536).contains(&page_size),
            "{}: page size {page_size} is not SQLite's",
            path.display()
        );
        let usable = page_size - header[20] as usize;
        ensure!(
            usable >= 480,
            "{}: too little usable space per page",
            path.display()
        );
        ensure!(
            u32::from_be_bytes(header[56..60].try_into().unwrap()) <= 1,
            "{}: text is not UTF-8",
            path.display()
        );
        let len = file.metadata()?.len();
        let pages = u32::try_from(len / page_size as u64).unwrap_or(u32::MAX);
        ensure!(pages >= 1, "{}: shorter than one page", path.display());
        Ok(Db {
            file,
            page_size,
            usable,
            pages,
            reads: std::cell::Cell::new(0),
        })
    }

    /// How many pages one database's reading may take: every page once for
    /// a walk of its tables, and again for each lookup's way down.
    fn limit(&self) -> u64 {
        8 * u64::from(self.pages) + 64
    }

    /// The page numbered `n` (from 1).
    fn page(&self, n: u32) -> Result<Vec<u8>> {
        ensure!(n >= 1 && n <= self.pages, "page {n} is outside the file");
        self.reads.set(self.reads.get() + 1);
        ensure!(
            self.reads.get() <= self.limit(),
            "read {} pages of a {}-page file: its pages point at each other over and over",
            self.reads.get(),
            self.pages
        );
        let mut buf = vec![0u8; self.page_size];
        self.file
            .read_exact_at(&mut buf, (n as u64 - 1) * self.page_size as u64)
            .with_context(|| format!("cannot read page {n}"))?;
        Ok(buf)
    }

    /// The root page of the table named `name`, from the schema table.
    pub fn table_root(&self, name: &str) -> Result<u32> {
        let mut root = None;
        self.each_row(1, 4, |row| {
            // sqlite_schema: type, name, tbl_name, rootpage, sql.
            if let [Value::Text(kind), Value::Text(n), _, Value::Int(page), ..] =
                row.values.as_slice()
            {
                if kind == b"table" && n == name.as_bytes() {
                    root = u32::try_from(*page).ok();
                }
            }
            true
        })?;
        root.with_context(|| format!("no table {name}"))
    }

    /// Calls `f` on every row of the table whose B-tree starts at `root`,
    /// in rowid order, with its first `columns` columns, until it returns
    /// false.
    pub fn each_row(
        &self,
        root: u32,
        columns: usize,
        mut f: impl FnMut(Row) -> bool,
    ) -> Result<()> {
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            let page = self.page(n)?;
            let node = Node::read(&page, n)?;
            match node.kind {
                LEAF_TABLE => {
                    for at in node.cells(&page)? {
                        if !f(self.leaf_cell(&page, at, columns)?) {
                            return Ok(());
                        }
                    }
                }
                INTERIOR_TABLE => {
                    // Right-most last: pushed first, popped last.
                    stack.push(node.right);
                    for at in node.cells(&page)?.into_iter().rev() {
                        stack.push(be32(&page, at)?);
                    }
                }
                k => bail!("page {n}: kind {k:#x} in a table's B-tree"),
            }
        }
        Ok(())
    }

    /// The row with `rowid` in the table whose B-tree starts at `root`,
    /// with its first `columns` columns.
    pub fn row(&self, root: u32, rowid: i64, columns: usize) -> Result<Option<Row>> {
        let mut n = root;
        loop {
            let page = self.page(n)?;
            let node = Node::read(&page, n)?;
            let cells = node.cells(&page)?;
            match node.kind {
                LEAF_TABLE => {
                    for at in cells {
                        let (_, len) = varint(&page, at)?;
                        let (id, _) = varint(&page, at + len)?;
                        if id == rowid {
                            return self.leaf_cell(&page, at, columns).map(Some);
                        }
                    }
                    return Ok(None);
                }
                INTERIOR_TABLE => {
                    // Each cell: a child, then the largest rowid under it.
                    let mut next = node.right;
                    for at in cells {
                        let (key, _) = varint(&page, at + 4)?;
                        if rowid <= key {
                            next = be32(&page, at)?;
                            break;
                        }
                    }
                    n = next;
                }
                k => bail!("page {n}: kind {k:#x} in a table's B-tree"),
            }
        }
    }

    /// A table leaf's cell at `at`: its rowid and the first `columns`
    /// columns of its record, gathered from overflow pages where it spills.
    fn leaf_cell(&self, page: &[u8], at: usize, columns: usize) -> Result<Row> {
        let (size, a) = varint(page, at)?;
        let (rowid, b) = varint(page, at + a)?;
        let start = at + a + b;
        let size = usize::try_from(size).context("a negative record size")?;
        ensure!(
            size as u64 <= self.pages as u64 * self.usable as u64,
            "a record larger than the file"
        );
        let u = self.usable;
        let max_local = u - 35;
        let local = if size <= max_local {
            size
        } else {
            let min_local = (u - 12) * 32 / 255 - 23;
            let k = min_local + (size - min_local) % (u - 4);
            if k <= max_local {
                k
            } else {
                min_local
            }
        };
        let mut payload = slice(page, start, local)?.to_vec();
        if local < size {
            let mut next = be32(page, start + local)?;
            while payload.len() < size {
                ensure!(next != 0, "an overflow chain ends early");
                let over = self.page(next)?;
                next = be32(&over, 0)?;
                let take = (size - payload.len()).min(u - 4);
                payload.extend_from_slice(slice(&over, 4, take)?);
            }
        }
        Ok(Row {
            rowid,
            values: record(&payload, columns)?,
        })
    }
}

/// A B-tree page's header.
struct Node {
    kind: u8,
    /// Where the header starts: 100 on page 1, after the file's header.
    at: usize,
    cells: usize,
    /// Interior pages: the right-most child.
    right: u32,
}

impl Node {
    fn read(page: &[u8], n: u32) -> Result<Node> {
        let at = if n == 1 { 100 } else { 0 };
        let kind = *page.get(at).context("an empty page")?;
        let cells = u16::from_be_bytes(slice(page, at + 3, 2)?.try_into().unwrap()) as usize;
        let right = if kind == INTERIOR_TABLE {
            be32(page, at + 8)?
        } else {
            0
        };
        Ok(Node {
            kind,
            at,
            cells,
            right,
        })
    }

    /// Where each cell starts, in key order.
    fn cells(&self, page: &[u8]) -> Result<Vec<usize>> {
        let array = self.at + if self.kind == INTERIOR_TABLE { 12 } else { 8 };
        (0..self.cells)
            .map(|i| {
                let p = slice(page, array + 2 * i, 2)?;
                Ok(u16::from_be_bytes([p[0], p[1]]) as usize)
            })
            .collect()
    }
}

/// A record's first `columns` columns: a header of serial types, then
/// their values.
fn record(payload: &[u8], columns: usize) -> Result<Vec<Value>> {
    let (header_len, mut h) = varint(payload, 0)?;
    let header_len = usize::try_from(header_len).context("a negative header size")?;
    ensure!(header_len <= payload.len(), "a record header past its end");
    let mut body = header_len;
    let mut values = Vec::new();
    while h < header_len && values.len() < columns {
        let (serial, len) = varint(payload, h)?;
        h += len;
        let (value, size) = value(payload, body, serial)?;
        values.push(value);
        body += size;
    }
    Ok(values)
}

/// The value of serial type `serial` at `at`, and its size.
fn value(b: &[u8], at: usize, serial: i64) -> Result<(Value, usize)> {
    let int = |n: usize| -> Result<(Value, usize)> {
        let bytes = slice(b, at, n)?;
        let mut v = if bytes[0] & 0x80 != 0 { -1i64 } else { 0 };
        for &x in bytes {
            v = (v << 8) | x as i64;
        }
        Ok((Value::Int(v), n))
    };
    match serial {
        0 => Ok((Value::Null, 0)),
        1..=4 => int(serial as usize),
        5 => int(6),
        6 => int(8),
        7 => {
            let bytes: [u8; 8] = slice(b, at, 8)?.try_into().unwrap();
            Ok((Value::Real(f64::from_be_bytes(bytes)), 8))
        }
        8 => Ok((Value::Int(0), 0)),
        9 => Ok((Value::Int(1), 0)),
        n if n >= 12 => {
            let len = usize::try_from((n - 12) / 2).context("a value too large")?;
            let bytes = slice(b, at, len)?.to_vec();
            let v = if n % 2 == 0 {
                Value::Blob(bytes)
            } else {
                Value::Text(bytes)
            };
            Ok((v, len))
        }
        n => bail!("serial type {n} is reserved"),
    }
}

/// SQLite's variable-length integer at `at`, and its length (1 to 9).
fn varint(b: &[u8], at: usize) -> Result<(i64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(at + i).context("a number past the page's end")?;
        if i == 8 {
            return Ok((((v << 8) | byte as u64) as i64, 9));
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Ok((v as i64, i + 1));
        }
    }
    unreachable!("the ninth byte returns")
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_be_bytes(slice(b, at, 4)?.try_into().unwrap()))
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8]> {
    b.get(at..at.checked_add(len).context("an offset overflows")?)
        .context("a cell past the page's end")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_one_two_and_nine_bytes() {
        assert_eq!(varint(&[0x05], 0).unwrap(), (5, 1));
        assert_eq!(varint(&[0x81, 0x00], 0).unwrap(), (128, 2));
        assert_eq!(varint(&[0xff; 9], 0).unwrap(), (-1, 9));
        assert!(varint(&[0x81], 0).is_err());
    }

    #[test]
    fn a_record_of_each_kind_of_value() {
        // Header: size 6, then NULL, int8, int16, text "hi", blob [7].
        let payload = [6, 0, 1, 2, 17, 14, 0xfe, 0x01, 0x00, b'h', b'i', 7];
        assert_eq!(
            record(&payload, 9).unwrap(),
            vec![
                Value::Null,
                Value::Int(-2),
                Value::Int(256),
                Value::Text(b"hi".to_vec()),
                Value::Blob(vec![7]),
            ]
        );
        assert_eq!(
            record(&payload, 2).unwrap(),
            vec![Value::Null, Value::Int(-2)]
        );
        assert!(record(&[6, 0, 1, 2, 17, 14], 9).is_err());
    }

    /// A database that SQLite itself wrote (through python3's sqlite3):
    /// 3,000 rows over many pages (so interior pages), every 100th with a
    /// 20 KB blob (so overflow chains).
    #[test]
    fn rows_that_sqlite_wrote_are_read_back_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.sqlite");
        let script = "import sqlite3,sys\n\
            c=sqlite3.connect(sys.argv[1])\n\
            c.execute('create table t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER, b BLOB)')\n\
            c.executemany('insert into t values (?,?,?,?)', [(i, 'row%d' % i, i * 1000003 - 5, bytes([i % 251]) * (20000 if i % 100 == 0 else 3)) for i in range(1, 3001)])\n\
            c.commit(); c.close()\n";
        let ok = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&file)
            .status()
            .expect("python3 (in the README's apt line) writes the database");
        assert!(ok.success());
        let db = Db::open(&file).unwrap();
        let root = db.table_root("t").unwrap();
        let mut n = 0;
        db.each_row(root, 4, |row| {
            n += 1;
            let i = row.rowid;
            let len = if i % 100 == 0 { 20000 } else { 3 };
            assert_eq!(
                row.values,
                vec![
                    Value::Null,
                    Value::Text(format!("row{i}").into_bytes()),
                    Value::Int(i * 1000003 - 5),
                    Value::Blob(vec![(i % 251) as u8; len]),
                ]
            );
            true
        })
        .unwrap();
        assert_eq!(n, 3000);
        let row = db.row(root, 2900, 2).unwrap().unwrap();
        assert_eq!(row.values[1], Value::Text(b"row2900".to_vec()));
        assert!(db.row(root, 3001, 2).unwrap().is_none());
        assert!(db.table_root("missing").is_err());
    }

    /// SQLite's varint, for values below 2^56.
    fn put_varint(v: u64) -> Vec<u8> {
        let mut groups = vec![(v & 0x7f) as u8];
        let mut v = v >> 7;
        while v > 0 {
            groups.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        groups.reverse();
        groups
    }

    /// A 512-byte table leaf page holding `cell` once, with `pointers`
    /// cell pointers all at it; its header at `at` (100 on page 1).
    fn leaf_page(at: usize, cell: &[u8], pointers: usize) -> Vec<u8> {
        let mut page = vec![0u8; 512];
        let off = 512 - cell.len();
        page[off..].copy_from_slice(cell);
        page[at] = LEAF_TABLE;
        page[at + 3..at + 5].copy_from_slice(&(pointers as u16).to_be_bytes());
        for i in 0..pointers {
            let p = at + 8 + 2 * i;
            page[p..p + 2].copy_from_slice(&(off as u16).to_be_bytes());
        }
        page
    }

    /// A file whose one table's leaf points 200 times at one cell, whose
    /// payload spills into an overflow page that names itself as next.
    fn hostile_file() -> Vec<u8> {
        let pages = 64u64;
        // The schema's row: table "t" at page 2 (text serial 13 + 2n).
        let schema = [
            6, 23, 15, 15, 1, 15, b't', b'a', b'b', b'l', b'e', b't', b't', 2, b'x',
        ];
        let mut cell1 = put_varint(schema.len() as u64);
        cell1.extend(put_varint(1));
        cell1.extend(schema);
        let mut file = leaf_page(100, &cell1, 1);
        file[..16].copy_from_slice(b"SQLite format 3\0");
        file[16..18].copy_from_slice(&512u16.to_be_bytes());
        file[56..60].copy_from_slice(&1u32.to_be_bytes());
        // A record as long as 60 pages, spilling from page 2 into page 3.
        let size = 60 * 508;
        let (min_local, u) = ((512 - 12) * 32 / 255 - 23, 512);
        let local = min_local + (size - min_local) % (u - 4);
        let local = if local <= u - 35 { local } else { min_local };
        let mut cell = put_varint(size as u64);
        cell.extend(put_varint(1));
        let mut payload = vec![2u8, 13];
        payload.resize(local, 0);
        cell.extend(payload);
        cell.extend(3u32.to_be_bytes());
        file.extend(leaf_page(0, &cell, 200));
        let mut overflow = vec![0u8; 512];
        overflow[..4].copy_from_slice(&3u32.to_be_bytes());
        file.extend(overflow);
        file.resize(pages as usize * 512, 0);
        file
    }

    #[test]
    fn pages_that_point_at_each_other_end_the_read_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.sqlite");
        std::fs::write(&file, hostile_file()).unwrap();
        let db = Db::open(&file).unwrap();
        let root = db.table_root("t").unwrap();
        let mut rows = 0;
        let read = db.each_row(root, 1, |_| {
            rows += 1;
            true
        });
        let why = read.expect_err("a walk past the budget is an error");
        assert!(
            format!("{why:#}").contains("point at each other"),
            "{why:#}"
        );
        assert!(rows < 200, "stopped early: {rows} rows");
    }

    #[test]
    fn what_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.sqlite");
        std::fs::write(&file, vec![0u8; 4096]).unwrap();
        assert!(Db::open(&file).is_err());
        std::fs::write(&file, b"SQLite format 3\0").unwrap();
        assert!(Db::open(&file).is_err());
    }
}
