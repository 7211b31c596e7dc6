//! Just enough ELF to find a named section in an untrusted file without reading the file.

use std::io::{Read, Seek, SeekFrom};

/// The most section headers looked at.
const MAX_SECTIONS: u64 = 4096;
/// The section-name table is read up to this size.
const MAX_SHSTRTAB: u64 = 1 << 20;

/// Section is where a section's bytes lie in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

struct Ident {
    is64: bool,
    le: bool,
}

impl Ident {
    fn u16(&self, b: &[u8], at: usize) -> Option<u64> {
        let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        }))
    }
    fn u32(&self, b: &[u8], at: usize) -> Option<u64> {
        let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }))
    }
    fn word(&self, b: &[u8], at: usize) -> Option<u64> {
        if !self.is64 {
            return self.u32(b, at);
        }
        let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
        Some(if self.le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }
}

/// Finds the sections named in `names` in the ELF file `f`; `None` if it is not ELF.
pub(crate) fn sections<R: Read + Seek>(f: &mut R, names: &[&str]) -> Option<Vec<(String, Section)>> {
    let mut hdr = [0u8; 64];
    f.seek(SeekFrom::Start(0)).ok()?;
    let n = read_full(f, &mut hdr)?;
    if n < 52 || &hdr[..4] != b"\x7fELF" {
        return None;
    }
    let id = Ident {
        is64: match hdr[4] {
            1 => false,
            2 => true,
            _ => return None,
        },
        le: match hdr[5] {
            1 => true,
            2 => false,
            _ => return None,
        },
    };
    let (shoff, shentsize, shnum, shstrndx) = if id.is64 {
        (
            id.word(&hdr, 0x28)?,
            id.u16(&hdr, 0x3a)?,
            id.u16(&hdr, 0x3c)?,
            id.u16(&hdr, 0x3e)?,
        )
    } else {
        (
            id.u32(&hdr, 0x20)?,
            id.u16(&hdr, 0x2e)?,
            id.u16(&hdr, 0x30)?,
            id.u16(&hdr, 0x32)?,
        )
    };
    let min_ent = if id.is64 { 0x40 } else { 0x28 };
    if shentsize < min_ent || shnum == 0 || shnum > MAX_SECTIONS || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; usize::try_from(shentsize * shnum).ok()?];
    f.seek(SeekFrom::Start(shoff)).ok()?;
    if read_full(f, &mut table)? != table.len() {
        return None;
    }
    let entry = |i: u64| -> Option<(u64, Section)> {
        let b = table.get(usize::try_from(i * shentsize).ok()?..)?;
        let name = id.u32(b, 0)?;
        let (offset, size) = if id.is64 {
            (id.word(b, 0x18)?, id.word(b, 0x20)?)
        } else {
            (id.u32(b, 0x10)?, id.u32(b, 0x14)?)
        };
        Some((name, Section { offset, size }))
    };
    let (_, strtab) = entry(shstrndx)?;
    let mut names_buf = vec![0u8; usize::try_from(strtab.size.min(MAX_SHSTRTAB)).ok()?];
    f.seek(SeekFrom::Start(strtab.offset)).ok()?;
    let got = read_full(f, &mut names_buf)?;
    names_buf.truncate(got);
    let mut out = Vec::new();
    for i in 0..shnum {
        let Some((name_off, sec)) = entry(i) else { continue };
        let Some(rest) = names_buf.get(usize::try_from(name_off).ok()?..) else {
            continue;
        };
        let name = rest.split(|b| *b == 0).next().unwrap_or_default();
        if let Some(n) = names.iter().find(|n| n.as_bytes() == name) {
            out.push(((*n).to_string(), sec));
        }
    }
    Some(out)
}

/// Reads at most `cap` bytes of `sec`.
pub(crate) fn read_section<R: Read + Seek>(f: &mut R, sec: Section, cap: u64) -> Option<Vec<u8>> {
    f.seek(SeekFrom::Start(sec.offset)).ok()?;
    let mut buf = Vec::new();
    f.take(sec.size.min(cap)).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn read_full<R: Read>(f: &mut R, buf: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal little-endian ELF64 file holding the given sections.
    pub(crate) fn elf64(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut shstr = vec![0u8];
        let mut name_offs = Vec::new();
        for (n, _) in sections {
            name_offs.push(shstr.len() as u32);
            shstr.extend_from_slice(n.as_bytes());
            shstr.push(0);
        }
        let shstr_name = shstr.len() as u32;
        shstr.extend_from_slice(b".shstrtab\0");
        let mut body = vec![0u8; 64];
        let mut offs = Vec::new();
        for (_, data) in sections {
            offs.push(body.len() as u64);
            body.extend_from_slice(data);
        }
        let shstr_off = body.len() as u64;
        body.extend_from_slice(&shstr);
        let shoff = body.len() as u64;
        let mut sh = |name: u32, off: u64, size: u64| {
            let mut e = vec![0u8; 64];
            e[0..4].copy_from_slice(&name.to_le_bytes());
            e[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            e[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            body.extend_from_slice(&e);
        };
        sh(0, 0, 0);
        for (i, (_, data)) in sections.iter().enumerate() {
            sh(name_offs[i], offs[i], data.len() as u64);
        }
        sh(shstr_name, shstr_off, shstr.len() as u64);
        let shnum = sections.len() as u16 + 2;
        body[..4].copy_from_slice(b"\x7fELF");
        body[4] = 2;
        body[5] = 1;
        body[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        body[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        body[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        body[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
        body
    }

    #[test]
    fn finds_named_sections_and_survives_garbage() {
        let bin = elf64(&[(".text", b"code"), (".dep-v0", b"hello")]);
        let mut c = Cursor::new(bin.clone());
        let found = sections(&mut c, &[".dep-v0", ".go.buildinfo"]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(read_section(&mut c, found[0].1, 1 << 20).unwrap(), b"hello");
        assert!(sections(&mut Cursor::new(b"#!/bin/sh\n".to_vec()), &[".x"]).is_none());
        // Every truncation of a valid file is handled without a panic.
        for n in 0..bin.len() {
            let _ = sections(&mut Cursor::new(bin[..n].to_vec()), &[".dep-v0"]);
        }
        let mut huge = bin.clone();
        huge[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(sections(&mut Cursor::new(huge), &[".dep-v0"]).is_none());
    }
}
