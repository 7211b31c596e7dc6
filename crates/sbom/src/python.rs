//! Python distributions: `*.dist-info/METADATA` and `*.egg-info/PKG-INFO` (or an
//! `*.egg-info` file) anywhere in the tree.

use std::path::{Path, PathBuf};

use crate::tree::{display, Entry, Tree};
use crate::{purl_escape, Kind, Package, Packages, SbomError};

/// Lists the Python distributions whose metadata the walk found.
pub(crate) fn scan(tree: &Tree, walked: &[Entry], out: &mut Packages) -> Result<(), SbomError> {
    for e in walked {
        let Some(name) = e.rel.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let meta: PathBuf = if e.is_dir && name.ends_with(".dist-info") {
            e.rel.join("METADATA")
        } else if e.is_dir && name.ends_with(".egg-info") {
            e.rel.join("PKG-INFO")
        } else if e.is_file && name.ends_with(".egg-info") {
            e.rel.clone()
        } else {
            continue;
        };
        let Some(text) = tree.read_text(&meta) else { continue };
        if let Some(p) = parse_metadata(&text, &meta) {
            out.push(p)?;
        }
    }
    Ok(())
}

/// Parses core metadata (RFC 822 headers up to the first blank line).
pub(crate) fn parse_metadata(text: &str, path: &Path) -> Option<Package> {
    let mut name = None;
    let mut version = None;
    let mut expression = None;
    let mut license = None;
    let mut classifier = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(v.to_string()),
            "version" => version = Some(v.to_string()),
            "license-expression" => expression = Some(v.to_string()),
            "license" if !v.is_empty() && v != "UNKNOWN" && v.len() <= 100 => license = Some(v.to_string()),
            "classifier" if classifier.is_none() => {
                classifier = v.strip_prefix("License :: ").and_then(classifier_license);
            }
            _ => {}
        }
    }
    let name = name.filter(|n| !n.is_empty())?;
    let version = version.filter(|v| !v.is_empty())?;
    // PEP 503 normalisation, as the purl spec asks for pypi names.
    let normal: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    Some(Package {
        kind: Kind::Python,
        purl: format!("pkg:pypi/{}@{}", purl_escape(&normal), purl_escape(&version)),
        name,
        version,
        license: expression.or(license).or(classifier),
        path: display(path),
        source: "python package metadata",
    })
}

/// The licence a trove classifier names (`OSI Approved :: MIT License`).
fn classifier_license(c: &str) -> Option<String> {
    let last = c.rsplit(" :: ").next()?.trim();
    let id = match last {
        "MIT License" => "MIT",
        "Apache Software License" => "Apache-2.0",
        "ISC License (ISCL)" => "ISC",
        "Mozilla Public License 2.0 (MPL 2.0)" => "MPL-2.0",
        "Python Software Foundation License" => "PSF-2.0",
        "OSI Approved" | "Other/Proprietary License" => return None,
        other => other,
    };
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_info_metadata_gives_name_version_license_and_purl() {
        let text = include_str!("../../../testdata/sbom/python/Typing_Extensions-4.9.0.dist-info/METADATA");
        let p = parse_metadata(text, Path::new("usr/lib/python3/dist-packages/x.dist-info/METADATA")).unwrap();
        assert_eq!(p.name, "Typing_Extensions");
        assert_eq!(p.version, "4.9.0");
        assert_eq!(p.license.as_deref(), Some("PSF-2.0"));
        assert_eq!(p.purl, "pkg:pypi/typing-extensions@4.9.0");
        assert_eq!(p.path, "/usr/lib/python3/dist-packages/x.dist-info/METADATA");
    }

    #[test]
    fn egg_info_license_field_and_missing_version() {
        let p = parse_metadata("Metadata-Version: 1.1\nName: six\nVersion: 1.16.0\nLicense: MIT\nClassifier: License :: OSI Approved :: BSD License\n\nLicense: body\n", Path::new("a.egg-info")).unwrap();
        assert_eq!(p.license.as_deref(), Some("MIT"));
        assert!(parse_metadata("Name: x\n", Path::new("b")).is_none());
        assert!(parse_metadata("", Path::new("b")).is_none());
    }
}
