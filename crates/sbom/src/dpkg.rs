//! dpkg's status database (`/var/lib/dpkg/status` and distroless' `status.d/`), with
//! licences from each package's machine-readable `/usr/share/doc/<name>/copyright`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::os::Release;
use crate::tree::{display, Tree};
use crate::{purl_escape, Kind, Package, Packages, SbomError};

const STATUS: &str = "var/lib/dpkg/status";
const STATUS_D: &str = "var/lib/dpkg/status.d";
/// A copyright file is read up to this size for its `License:` lines.
const COPYRIGHT_CAP: u64 = 1 << 20;

/// Lists the installed packages of dpkg's status file and `status.d/` files.
pub(crate) fn scan(tree: &Tree, release: &Release, out: &mut Packages) -> Result<(), SbomError> {
    let mut files: Vec<PathBuf> = vec![PathBuf::from(STATUS)];
    files.extend(
        tree.list_files(Path::new(STATUS_D))
            .into_iter()
            // status.d holds `<name>.md5sums` lists beside the records.
            .filter(|p| p.extension().is_none_or(|e| e != "md5sums")),
    );
    for file in files {
        let Some(text) = tree.read_text(&file) else { continue };
        for mut p in parse_status(&text, release, &display(&file)) {
            p.license = copyright_licenses(tree, &p.name);
            out.push(p)?;
        }
    }
    Ok(())
}

/// Parses dpkg status paragraphs into the installed packages they list.
pub(crate) fn parse_status(text: &str, release: &Release, path: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in paragraphs(text) {
        let get = |k: &str| {
            para.iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let (Some(name), Some(version)) = (get("Package"), get("Version")) else {
            continue;
        };
        // A status.d record has no Status field; status lists removed packages too.
        if let Some(status) = get("Status") {
            if !status.split_whitespace().any(|w| w == "installed") || status.contains("not-installed") {
                continue;
            }
        }
        if name.is_empty() || version.is_empty() {
            continue;
        }
        out.push(Package {
            kind: Kind::Deb,
            name: name.to_string(),
            version: version.to_string(),
            license: None,
            purl: deb_purl(name, version, get("Architecture"), get("Source"), release),
            path: path.to_string(),
            source: "DPKG DB",
        });
    }
    out
}

/// The purl syft writes for a Debian package:
/// `pkg:deb/debian/libjq1@1.6-2.1?arch=amd64&upstream=jq&distro=debian-12`.
fn deb_purl(name: &str, version: &str, arch: Option<&str>, source: Option<&str>, release: &Release) -> String {
    let ns = if release.id.is_empty() {
        "debian"
    } else {
        release.id.as_str()
    };
    let mut q = Vec::new();
    if let Some(a) = arch.filter(|a| !a.is_empty()) {
        q.push(format!("arch={}", purl_escape(a)));
    }
    if let Some(src) = source {
        // `Source: glibc (2.36-9)` names the source package and, when it differs, its version.
        let (sname, sver) = match src.split_once('(') {
            Some((n, v)) => (n.trim(), Some(v.trim_end_matches(')').trim())),
            None => (src.trim(), None),
        };
        if !sname.is_empty() && sname != name {
            let up = match sver {
                Some(v) if !v.is_empty() && v != version => format!("{sname}@{v}"),
                _ => sname.to_string(),
            };
            q.push(format!("upstream={}", purl_escape(&up)));
        } else if let Some(v) = sver.filter(|v| !v.is_empty() && *v != version) {
            q.push(format!("upstream={}", purl_escape(&format!("{sname}@{v}"))));
        }
    }
    if let Some(d) = release.distro() {
        q.push(format!("distro={}", purl_escape(&d)));
    }
    let purl = format!(
        "pkg:deb/{}/{}@{}",
        purl_escape(ns),
        purl_escape(name),
        purl_escape(version)
    );
    if q.is_empty() {
        purl
    } else {
        format!("{purl}?{}", q.join("&"))
    }
}

/// Splits deb822 text into paragraphs of (field, value); continuation lines are dropped
/// (no field kiln reads spans lines).
fn paragraphs(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The licences a machine-readable copyright file names, one per line.
fn copyright_licenses(tree: &Tree, name: &str) -> Option<String> {
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    let rel = Path::new("usr/share/doc").join(name).join("copyright");
    let bytes = tree.read_capped(&rel, COPYRIGHT_CAP)?;
    parse_copyright(&String::from_utf8_lossy(&bytes))
}

pub(crate) fn parse_copyright(text: &str) -> Option<String> {
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let Some(v) = line.strip_prefix("License:") else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        ids.insert(v.to_string());
    }
    if ids.is_empty() {
        return None;
    }
    // One line per `License:` value: each becomes its own expression, joined by AND.
    Some(ids.into_iter().collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> Release {
        Release::parse("ID=debian\nVERSION_ID=\"12\"\n")
    }

    #[test]
    fn installed_packages_only_with_syft_purls() {
        let text = include_str!("../../../testdata/sbom/dpkg/status");
        let ps = parse_status(text, &debian(), "/var/lib/dpkg/status");
        let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["jq", "libjq1", "libc6", "tzdata", "bsdutils"]);
        assert_eq!(ps[0].version, "1.6-2.1");
        assert_eq!(ps[0].purl, "pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12");
        assert_eq!(
            ps[1].purl,
            "pkg:deb/debian/libjq1@1.6-2.1?arch=amd64&upstream=jq&distro=debian-12"
        );
        assert_eq!(
            ps[2].purl,
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&upstream=glibc&distro=debian-12"
        );
        assert_eq!(
            ps[3].purl,
            "pkg:deb/debian/tzdata@2024a-0+deb12u1?arch=all&distro=debian-12"
        );
        // An epoch and a binNMU: the source version differs, so upstream names it.
        assert_eq!(
            ps[4].purl,
            "pkg:deb/debian/bsdutils@1:2.38.1-5+b1?arch=amd64&upstream=util-linux%402.38.1-5&distro=debian-12"
        );
    }

    #[test]
    fn copyright_license_lines_are_collected() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: MIT\n\nFiles: debian/*\nLicense: GPL-2+ or Artistic\n Some text.\nLicense: MIT\n";
        assert_eq!(parse_copyright(text).as_deref(), Some("GPL-2+ or Artistic\nMIT"));
        assert_eq!(parse_copyright("no licence here"), None);
    }
}
