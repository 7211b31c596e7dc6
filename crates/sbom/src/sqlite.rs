//! Just enough of SQLite's file format to read every row of one table of an untrusted
//! database held in memory: table b-trees, overflow pages, records. Every page number,
//! offset and length is checked; a page is visited at most once.

use std::collections::HashSet;

/// Value is one column of a record (only what rpm's tables hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
    Blob(Vec<u8>),
}

/// Db is a database file's bytes.
pub(crate) struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
}

/// The most bytes one row's payload may have.
const MAX_PAYLOAD: usize = 64 << 20;

impl<'a> Db<'a> {
    /// Checks the header; `None` if `bytes` is not a SQLite 3 database kiln can read.
    pub(crate) fn open(bytes: &'a [u8]) -> Option<Db<'a>> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return None;
        }
        let raw = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        let page_size = if raw == 1 { 65536 } else { raw };
        if page_size < 512 || !page_size.is_power_of_two() {
            return None;
        }
        let usable = page_size.checked_sub(usize::from(bytes[20]))?;
        if usable < 480 {
            return None;
        }
        Some(Db {
            bytes,
            page_size,
            usable,
        })
    }

    fn page(&self, n: u32) -> Option<&'a [u8]> {
        let start = usize::try_from(n.checked_sub(1)?).ok()?.checked_mul(self.page_size)?;
        self.bytes.get(start..start.checked_add(self.page_size)?)
    }

    /// The root page of table `name`, from `sqlite_schema`.
    pub(crate) fn table_root(&self, name: &str) -> Option<u32> {
        let mut root = None;
        self.rows(1, &mut |row| {
            if let [Value::Text(b"table"), Value::Text(n), _, Value::Int(page), ..] = row.as_slice() {
                if *n == name.as_bytes() {
                    root = u32::try_from(*page).ok();
                }
            }
        });
        root
    }

    /// Calls `each` with the columns of every row of the table b-tree at `root`.
    pub(crate) fn rows(&self, root: u32, each: &mut dyn FnMut(Vec<Value<'_>>)) {
        let mut seen = HashSet::new();
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) || seen.len() > self.bytes.len() / self.page_size + 1 {
                continue;
            }
            let Some(page) = self.page(n) else { continue };
            let hdr = if n == 1 { 100 } else { 0 };
            let Some(&kind) = page.get(hdr) else { continue };
            let Some(count) = be16(page, hdr + 3) else { continue };
            let ptrs = hdr + if kind == 0x05 { 12 } else { 8 };
            for i in 0..count {
                let Some(off) = be16(page, ptrs + 2 * i) else { break };
                match kind {
                    0x05 => {
                        if let Some(child) = be32(page, off) {
                            stack.push(child);
                        }
                    }
                    0x0d => {
                        if let Some(payload) = self.leaf_payload(page, off, &mut seen) {
                            if let Some(row) = record(&payload) {
                                each(row);
                            }
                        }
                    }
                    _ => break,
                }
            }
            if kind == 0x05 {
                if let Some(right) = be32(page, hdr + 8) {
                    stack.push(right);
                }
            }
        }
    }

    /// The payload of the table-leaf cell at `off`, following overflow pages.
    fn leaf_payload(&self, page: &[u8], off: usize, seen: &mut HashSet<u32>) -> Option<Vec<u8>> {
        let mut at = off;
        let size = usize::try_from(varint(page, &mut at)?).ok()?;
        varint(page, &mut at)?; // rowid
        if size > MAX_PAYLOAD {
            return None;
        }
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
        let mut out = page.get(at..at.checked_add(local)?)?.to_vec();
        let mut next = if local < size { be32(page, at + local)? } else { 0 };
        while out.len() < size && next != 0 {
            if !seen.insert(next) {
                return None;
            }
            let p = self.page(next)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(p.get(4..4 + take)?);
            next = be32(p, 0)?;
        }
        (out.len() == size).then_some(out)
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?)))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// SQLite's big-endian varint (1–9 bytes).
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(*at)?;
        *at += 1;
        if i == 8 {
            return Some((v << 8) | u64::from(byte));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    Some(v)
}

/// Decodes a record (header of serial types, then the values).
fn record(p: &[u8]) -> Option<Vec<Value<'_>>> {
    let mut at = 0;
    let hdr_len = usize::try_from(varint(p, &mut at)?).ok()?;
    let mut types = Vec::new();
    while at < hdr_len.min(p.len()) {
        types.push(varint(p, &mut at)?);
    }
    let mut data = hdr_len;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let len = match t {
            0 | 8 | 9 => 0,
            1..=4 => t as usize,
            5 => 6,
            6 | 7 => 8,
            n if n >= 12 => usize::try_from((n - 12) / 2).ok()?,
            _ => return None,
        };
        let v = p.get(data..data.checked_add(len)?)?;
        data += len;
        out.push(match t {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                let mut x: i64 = if v[0] & 0x80 != 0 { -1 } else { 0 };
                for b in v {
                    x = (x << 8) | i64::from(*b);
                }
                Value::Int(x)
            }
            7 => Value::Null,
            n if n % 2 == 0 => Value::Blob(v.to_vec()),
            _ => Value::Text(v),
        });
    }
    Some(out)
}
