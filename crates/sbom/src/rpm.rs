//! The rpm database in its SQLite form (`rpmdb.sqlite`, rpm ≥ 4.16: Fedora 33+, RHEL 9,
//! openSUSE), read by kiln's own SQLite and rpm-header readers. The BerkeleyDB
//! (`Packages`) and ndb (`Packages.db`) forms are not read.

use std::path::Path;

use crate::os::Release;
use crate::sqlite::{Db, Value};
use crate::tree::{display, Tree};
use crate::{purl_escape, Kind, Package, Packages, SbomError};

const DBS: [&str; 2] = ["var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"];

const NAME: i32 = 1000;
const VERSION: i32 = 1001;
const RELEASE: i32 = 1002;
const EPOCH: i32 = 1003;
const LICENSE: i32 = 1014;
const ARCH: i32 = 1022;
const SOURCERPM: i32 = 1044;

/// Lists the packages of every rpm database found.
pub(crate) fn scan(tree: &Tree, release: &Release, out: &mut Packages) -> Result<(), SbomError> {
    for rel in DBS {
        let Some(bytes) = tree.read(Path::new(rel)) else {
            continue;
        };
        for p in parse_db(&bytes, release, &display(Path::new(rel))) {
            out.push(p)?;
        }
    }
    Ok(())
}

/// The packages in the `Packages` table of an rpmdb.sqlite file's bytes.
pub(crate) fn parse_db(bytes: &[u8], release: &Release, path: &str) -> Vec<Package> {
    let Some(db) = Db::open(bytes) else { return Vec::new() };
    let Some(root) = db.table_root("Packages") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    db.rows(root, &mut |row| {
        if let Some(Value::Blob(blob)) = row.get(1) {
            out.extend(header_package(blob, release, path));
        }
    });
    out
}

/// Header is an rpm header's index entries and data store.
struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(blob: &'a [u8]) -> Option<Header<'a>> {
        let il = usize::try_from(u32::from_be_bytes(blob.get(0..4)?.try_into().ok()?)).ok()?;
        let dl = usize::try_from(u32::from_be_bytes(blob.get(4..8)?.try_into().ok()?)).ok()?;
        let index_end = 8usize.checked_add(il.checked_mul(16)?)?;
        Some(Header {
            index: blob.get(8..index_end)?,
            data: blob.get(index_end..index_end.checked_add(dl)?)?,
        })
    }

    /// The entry for `tag`: (type, offset, count).
    fn entry(&self, tag: i32) -> Option<(u32, usize, u32)> {
        self.index.chunks_exact(16).find_map(|e| {
            let be = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            (be(0) as i32 == tag).then(|| (be(4), be(8) as usize, be(12)))
        })
    }

    /// A string (or the first of a string array / i18n string) tag.
    fn string(&self, tag: i32) -> Option<String> {
        let (ty, off, _) = self.entry(tag)?;
        if !matches!(ty, 6 | 8 | 9) {
            return None;
        }
        let rest = self.data.get(off..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    fn int32(&self, tag: i32) -> Option<u32> {
        let (ty, off, count) = self.entry(tag)?;
        if ty != 4 || count == 0 {
            return None;
        }
        Some(u32::from_be_bytes(
            self.data.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    }
}

/// The package one header describes, with syft's purl:
/// `pkg:rpm/fedora/bash@5.2.15-3.fc38?arch=x86_64&upstream=bash-5.2.15-3.fc38.src.rpm&distro=fedora-38`.
fn header_package(blob: &[u8], release: &Release, path: &str) -> Option<Package> {
    let h = Header::parse(blob)?;
    let name = h.string(NAME).filter(|n| !n.is_empty())?;
    let version = h.string(VERSION).filter(|v| !v.is_empty())?;
    let version = match h.string(RELEASE).filter(|r| !r.is_empty()) {
        Some(r) => format!("{version}-{r}"),
        None => version,
    };
    let mut q = Vec::new();
    if let Some(a) = h.string(ARCH).filter(|a| !a.is_empty()) {
        q.push(format!("arch={}", purl_escape(&a)));
    }
    if let Some(e) = h.int32(EPOCH) {
        q.push(format!("epoch={e}"));
    }
    if let Some(s) = h.string(SOURCERPM).filter(|s| !s.is_empty()) {
        q.push(format!("upstream={}", purl_escape(&s)));
    }
    if let Some(d) = release.distro() {
        q.push(format!("distro={}", purl_escape(&d)));
    }
    let ns = if release.id.is_empty() {
        "redhat"
    } else {
        release.id.as_str()
    };
    let mut purl = format!(
        "pkg:rpm/{}/{}@{}",
        purl_escape(ns),
        purl_escape(&name),
        purl_escape(&version)
    );
    if !q.is_empty() {
        purl = format!("{purl}?{}", q.join("&"));
    }
    Some(Package {
        kind: Kind::Rpm,
        name,
        version,
        license: h.string(LICENSE).filter(|l| !l.is_empty()),
        purl,
        path: path.to_string(),
        source: "RPM DB",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpmdb_sqlite_rows_become_packages() {
        // Made by testdata/sbom/rpm/make.py: 1 KiB pages, 300 headers (interior pages),
        // one header of 5,000 bytes (overflow pages).
        let bytes = include_bytes!("../../../testdata/sbom/rpm/rpmdb.sqlite");
        let r = Release::parse("ID=fedora\nVERSION_ID=38\n");
        let ps = parse_db(bytes, &r, "/var/lib/rpm/rpmdb.sqlite");
        assert_eq!(ps.len(), 301, "{:?}", ps.iter().map(|p| &p.name).collect::<Vec<_>>());
        let bash = ps.iter().find(|p| p.name == "bash").unwrap();
        assert_eq!(bash.version, "5.2.15-3.fc38");
        assert_eq!(bash.license.as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(
            bash.purl,
            "pkg:rpm/fedora/bash@5.2.15-3.fc38?arch=x86_64&epoch=1&upstream=bash-5.2.15-3.fc38.src.rpm&distro=fedora-38"
        );
        let big = ps.iter().find(|p| p.name == "big").unwrap();
        assert_eq!(big.license.as_deref().map(str::len), Some(4000));
        assert!(ps.iter().any(|p| p.name == "pkg299" && p.version == "1.299-1"));
        // Every truncation and a flipped byte anywhere: no panic.
        for n in (0..bytes.len()).step_by(97) {
            let _ = parse_db(&bytes[..n], &r, "x");
            let mut b = bytes.to_vec();
            b[n] ^= 0xff;
            let _ = parse_db(&b, &r, "x");
        }
    }
}
