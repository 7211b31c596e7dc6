//! The distribution (`/etc/os-release`) and Alpine's apk installed database.

use std::path::Path;

use crate::tree::{display, Tree};
use crate::{purl_escape, Kind, Package, Packages, SbomError};

/// Release is what `/etc/os-release` says about the distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Release {
    /// `ID`, e.g. `debian`, `ubuntu`, `alpine`.
    pub(crate) id: String,
    /// `VERSION_ID`, e.g. `12`, `3.18.4`.
    pub(crate) version_id: String,
}

impl Release {
    /// Reads `/etc/os-release`, else `/usr/lib/os-release`; empty if neither exists.
    pub(crate) fn read(tree: &Tree) -> Release {
        let text = tree
            .read_capped(Path::new("etc/os-release"), 64 << 10)
            .or_else(|| tree.read_capped(Path::new("usr/lib/os-release"), 64 << 10))
            .unwrap_or_default();
        Release::parse(&String::from_utf8_lossy(&text))
    }

    pub(crate) fn parse(text: &str) -> Release {
        let mut r = Release::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
            match k.trim() {
                "ID" => r.id = v,
                "VERSION_ID" => r.version_id = v,
                _ => {}
            }
        }
        r
    }

    /// The purl `distro` qualifier (`debian-12`), if the release is known.
    pub(crate) fn distro(&self) -> Option<String> {
        if self.id.is_empty() {
            return None;
        }
        if self.version_id.is_empty() {
            return Some(self.id.clone());
        }
        Some(format!("{}-{}", self.id, self.version_id))
    }
}

const APK_DB: &str = "lib/apk/db/installed";

/// Lists the packages in apk's installed database.
pub(crate) fn scan_apk(tree: &Tree, release: &Release, out: &mut Packages) -> Result<(), SbomError> {
    let Some(text) = tree.read_text(Path::new(APK_DB)) else {
        return Ok(());
    };
    for p in parse_apk(&text, release) {
        out.push(p)?;
    }
    Ok(())
}

/// Parses apk's installed database (`P:name`, `V:version`, … records, blank-line separated).
pub(crate) fn parse_apk(text: &str, release: &Release) -> Vec<Package> {
    let mut out = Vec::new();
    let mut rec: Vec<(char, &str)> = Vec::new();
    let mut flush = |rec: &mut Vec<(char, &str)>| {
        let get = |k: char| rec.iter().find(|(c, _)| *c == k).map(|(_, v)| v.trim());
        if let (Some(name), Some(version)) = (get('P'), get('V')) {
            if !name.is_empty() && !version.is_empty() {
                let ns = if release.id.is_empty() {
                    "alpine"
                } else {
                    release.id.as_str()
                };
                let mut q = Vec::new();
                if let Some(a) = get('A').filter(|a| !a.is_empty()) {
                    q.push(format!("arch={}", purl_escape(a)));
                }
                if let Some(o) = get('o').filter(|o| !o.is_empty() && *o != name) {
                    q.push(format!("upstream={}", purl_escape(o)));
                }
                if let Some(d) = release.distro() {
                    q.push(format!("distro={}", purl_escape(&d)));
                }
                let mut purl = format!(
                    "pkg:apk/{}/{}@{}",
                    purl_escape(ns),
                    purl_escape(name),
                    purl_escape(version)
                );
                if !q.is_empty() {
                    purl = format!("{purl}?{}", q.join("&"));
                }
                out.push(Package {
                    kind: Kind::Apk,
                    name: name.to_string(),
                    version: version.to_string(),
                    license: get('L').filter(|l| !l.is_empty()).map(str::to_string),
                    purl,
                    path: display(Path::new(APK_DB)),
                    source: "APK DB",
                });
            }
        }
        rec.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut rec);
            continue;
        }
        let mut cs = line.chars();
        if let (Some(k), Some(':')) = (cs.next(), cs.next()) {
            rec.push((k, &line[2..]));
        }
    }
    flush(&mut rec);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_gives_the_distro_qualifier() {
        let r = Release::parse("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!(r.distro().as_deref(), Some("debian-12"));
        assert_eq!(Release::parse("").distro(), None);
    }

    #[test]
    fn apk_records_become_packages_with_alpine_purls() {
        let text = include_str!("../../../testdata/sbom/apk/installed");
        let r = Release::parse("ID=alpine\nVERSION_ID=3.18.4\n");
        let ps = parse_apk(text, &r);
        assert_eq!(ps.len(), 2, "{ps:?}");
        assert_eq!(ps[0].name, "musl");
        assert_eq!(ps[0].version, "1.2.4-r2");
        assert_eq!(ps[0].license.as_deref(), Some("MIT"));
        assert_eq!(
            ps[0].purl,
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.18.4"
        );
        assert_eq!(
            ps[1].purl,
            "pkg:apk/alpine/libcrypto3@3.1.4-r1?arch=x86_64&upstream=openssl&distro=alpine-3.18.4"
        );
        assert_eq!(ps[1].path, "/lib/apk/db/installed");
    }
}
