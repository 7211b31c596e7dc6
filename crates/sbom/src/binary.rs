//! Go binaries' build info (`.go.buildinfo`, Go 1.18+'s inline format) and Rust binaries'
//! `cargo auditable` dependency list (`.dep-v0`, zlib-compressed JSON), read from ELF
//! executables without reading more of them than the sections.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::elf;
use crate::tree::{display, Entry, Tree};
use crate::{purl_escape, Kind, Package, Packages, SbomError};

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// A build-info section is read up to this size.
const GO_CAP: u64 = 4 << 20;
/// A compressed `.dep-v0` section is read up to this size, and inflated up to `RUST_JSON_CAP`.
const RUST_CAP: u64 = 4 << 20;
const RUST_JSON_CAP: u64 = 16 << 20;

/// A section's parser: its bytes and the binary's path to the packages it lists.
type Parser = fn(&[u8], &Path) -> Vec<Package>;

/// Lists the modules and crates built into the executables the walk found.
pub(crate) fn scan(tree: &Tree, walked: &[Entry], out: &mut Packages) -> Result<(), SbomError> {
    for e in walked {
        if !e.is_file || !e.executable || e.size < 64 || e.size > tree.limits.max_binary_bytes {
            continue;
        }
        let Ok(mut f) = tree.open_file(&e.rel) else { continue };
        let Some(found) = elf::sections(&mut f, &[".go.buildinfo", ".dep-v0"]) else {
            continue;
        };
        for (name, sec) in found {
            let (cap, parse): (u64, Parser) = match name.as_str() {
                ".go.buildinfo" => (GO_CAP, go_packages),
                _ => (RUST_CAP, rust_packages),
            };
            let Some(data) = elf::read_section(&mut f, sec, cap) else {
                continue;
            };
            for p in parse(&data, &e.rel) {
                out.push(p)?;
            }
        }
    }
    Ok(())
}

/// Reads a uvarint-length-prefixed string at `*at`.
fn varint_str<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        if shift > 63 {
            return None;
        }
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let n = usize::try_from(n).ok()?;
    let s = b.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(s)
}

/// Go's version and module info from a `.go.buildinfo` section (Go 1.18+ inline strings).
pub(crate) fn go_buildinfo(data: &[u8]) -> Option<(String, String)> {
    if data.len() < 32 || !data.starts_with(GO_MAGIC) {
        return None;
    }
    // flags bit 1: the strings follow the 32-byte header inline (Go 1.18 and later);
    // older binaries point at them through the data segment, which is not followed.
    if data[15] & 2 == 0 {
        return None;
    }
    let mut at = 32;
    let version = varint_str(data, &mut at)?;
    let mut modinfo = varint_str(data, &mut at)?;
    // The module info is framed by 16-byte sentinels.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Some((
        String::from_utf8_lossy(version).into_owned(),
        String::from_utf8_lossy(modinfo).into_owned(),
    ))
}

fn go_purl(path: &str, version: &str) -> String {
    let path: Vec<String> = path.split('/').map(purl_escape).collect();
    format!("pkg:golang/{}@{}", path.join("/"), purl_escape(version))
}

fn go_packages(data: &[u8], rel: &Path) -> Vec<Package> {
    let Some((go_version, modinfo)) = go_buildinfo(data) else {
        return Vec::new();
    };
    let mut mods: Vec<(String, String)> = Vec::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod" | "dep", path, version, ..] => mods.push((path.to_string(), version.to_string())),
            ["mod", path] => mods.push((path.to_string(), "(devel)".to_string())),
            // A replacement names the module actually built for the line before it.
            // A local directory replacement has no version: the module keeps its own
            // path, built from source.
            ["=>", path, version, ..] => {
                if let Some(last) = mods.last_mut() {
                    *last = if version.is_empty() {
                        (last.0.clone(), "(devel)".to_string())
                    } else {
                        (path.to_string(), version.to_string())
                    };
                }
            }
            ["=>", _] => {
                if let Some(last) = mods.last_mut() {
                    last.1 = "(devel)".to_string();
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<Package> = mods
        .into_iter()
        .filter(|(p, v)| !p.is_empty() && !v.is_empty())
        .map(|(path, version)| Package {
            kind: Kind::Go,
            purl: go_purl(&path, &version),
            name: path,
            version,
            license: None,
            path: display(rel),
            source: "go module information",
        })
        .collect();
    if let Some(v) = go_version.strip_prefix("go").filter(|v| !v.is_empty()) {
        // syft lists the toolchain's standard library as the module `stdlib`.
        let v = v.split([' ', '\t']).next().unwrap_or(v);
        out.push(Package {
            kind: Kind::Go,
            name: "stdlib".into(),
            version: go_version.clone(),
            license: Some("BSD-3-Clause".into()),
            purl: format!("pkg:golang/stdlib@{}", purl_escape(v)),
            path: display(rel),
            source: "go module information",
        });
    }
    out
}

/// The crates a `cargo auditable` `.dep-v0` section lists.
pub(crate) fn rust_packages(data: &[u8], rel: &Path) -> Vec<Package> {
    let mut json = Vec::new();
    if flate2::read::ZlibDecoder::new(data)
        .take(RUST_JSON_CAP)
        .read_to_end(&mut json)
        .is_err()
    {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&json) else {
        return Vec::new();
    };
    let Some(list) = v.get("packages").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let version = p.get("version")?.as_str()?;
            if name.is_empty() || version.is_empty() {
                return None;
            }
            Some(Package {
                kind: Kind::Rust,
                name: name.to_string(),
                version: version.to_string(),
                license: None,
                purl: format!("pkg:cargo/{}@{}", purl_escape(name), purl_escape(version)),
                path: display(rel),
                source: "rust cargo auditable data",
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A Go 1.18+ `.go.buildinfo` section with `version` and `modinfo`.
    pub(crate) fn go_section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = GO_MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(32, 0);
        let framed = [&[b'0'; 16][..], modinfo.as_bytes(), &[b'1'; 16][..]].concat();
        for s in [version.as_bytes(), &framed] {
            let mut n = s.len();
            while n >= 0x80 {
                b.push((n as u8) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b.extend_from_slice(s);
        }
        b
    }

    pub(crate) fn dep_v0(json: &str) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json.as_bytes()).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn go_build_info_lists_main_deps_replacements_and_stdlib() {
        let modinfo = "path\texample.com/hello\nmod\texample.com/hello\t(devel)\t\ndep\tgithub.com/google/uuid\tv1.6.0\th1:abc=\ndep\tgolang.org/x/sys\tv0.1.0\th1:def=\n=>\tgithub.com/fork/sys\tv0.2.0\th1:ghi=\ndep\tex.com/local\tv1.0.0\t\n=>\t../local\t\t\nbuild\t-compiler=gc\n";
        let sec = go_section("go1.21.5", modinfo);
        let ps = go_packages(&sec, Path::new("usr/local/bin/hello"));
        let purls: Vec<&str> = ps.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/example.com/hello@%28devel%29",
                "pkg:golang/github.com/google/uuid@v1.6.0",
                "pkg:golang/github.com/fork/sys@v0.2.0",
                "pkg:golang/ex.com/local@%28devel%29",
                "pkg:golang/stdlib@1.21.5"
            ]
        );
        assert_eq!(ps[1].path, "/usr/local/bin/hello");
        // Old-format, truncated and foreign sections give nothing, and never panic.
        let mut old = sec.clone();
        old[15] = 0;
        assert!(go_buildinfo(&old).is_none());
        for n in 0..sec.len() {
            let _ = go_packages(&sec[..n], Path::new("x"));
        }
        let mut long = GO_MAGIC.to_vec();
        long.extend_from_slice(&[8, 2]);
        long.resize(32, 0);
        long.extend_from_slice(&[0xff; 12]);
        assert!(go_buildinfo(&long).is_none());
    }

    #[test]
    fn cargo_auditable_section_lists_crates() {
        let json = r#"{"packages":[{"name":"hello","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"serde","version":"1.0.193","source":"crates.io"},{"name":"","version":"1"}]}"#;
        let ps = rust_packages(&dep_v0(json), Path::new("bin/hello"));
        let purls: Vec<&str> = ps.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:cargo/hello@0.1.0", "pkg:cargo/serde@1.0.193"]);
        assert!(rust_packages(b"not zlib", Path::new("x")).is_empty());
        assert!(rust_packages(&dep_v0("[1,2"), Path::new("x")).is_empty());
    }
}
