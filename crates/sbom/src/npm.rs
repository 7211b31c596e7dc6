//! npm packages: installed `node_modules/**/package.json` and `package-lock.json` files.

use std::path::{Component, Path};

use serde_json::Value;

use crate::tree::{display, Entry, Tree};
use crate::{purl_escape, Kind, Package, Packages, SbomError};

/// How deep a lockfile v1 `dependencies` tree is followed.
const MAX_LOCK_DEPTH: usize = 64;

/// Lists installed npm packages, then what lockfiles add beyond them.
pub(crate) fn scan(tree: &Tree, walked: &[Entry], out: &mut Packages) -> Result<(), SbomError> {
    for e in walked.iter().filter(|e| e.is_file && installed_manifest(&e.rel)) {
        let Some(v) = read_json(tree, &e.rel) else { continue };
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        let version = v.get("version").and_then(Value::as_str).unwrap_or_default();
        if let Some(p) = package(name, version, license(&v), &e.rel) {
            out.push(p)?;
        }
    }
    for e in walked.iter().filter(|e| e.is_file && is_lockfile(&e.rel)) {
        let Some(v) = read_json(tree, &e.rel) else { continue };
        for p in parse_lock(&v, &e.rel) {
            if !out.has_purl(&p.purl) {
                out.push(p)?;
            }
        }
    }
    Ok(())
}

/// Whether `rel` is `…/node_modules/<name>/package.json` or `…/node_modules/@s/<name>/package.json`.
fn installed_manifest(rel: &Path) -> bool {
    if rel.file_name().is_none_or(|n| n != "package.json") {
        return false;
    }
    let comps: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let n = comps.len();
    (n >= 3 && comps[n - 3] == "node_modules" && !comps[n - 2].starts_with('@'))
        || (n >= 4 && comps[n - 4] == "node_modules" && comps[n - 3].starts_with('@'))
}

fn is_lockfile(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n == "package-lock.json")
        && !rel.components().any(|c| c.as_os_str() == "node_modules")
}

fn read_json(tree: &Tree, rel: &Path) -> Option<Value> {
    serde_json::from_slice(&tree.read(rel)?).ok()
}

/// The declared licence: `"license": "MIT"`, `{"type": "MIT"}` or old `"licenses": [{type}]`.
fn license(v: &Value) -> Option<String> {
    let one = |l: &Value| match l {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("type").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    if let Some(l) = v.get("license").and_then(one) {
        return Some(l).filter(|l| !l.is_empty());
    }
    let list: Vec<String> = v.get("licenses")?.as_array()?.iter().filter_map(one).collect();
    if list.is_empty() {
        None
    } else {
        Some(list.join(" OR "))
    }
}

/// An npm package; `None` without a name or version.
fn package(name: &str, version: &str, license: Option<String>, path: &Path) -> Option<Package> {
    if name.is_empty() || version.is_empty() || name.len() > 214 {
        return None;
    }
    let purl = match name.strip_prefix('@').and_then(|s| s.split_once('/')) {
        Some((scope, n)) => format!(
            "pkg:npm/%40{}/{}@{}",
            purl_escape(scope),
            purl_escape(n),
            purl_escape(version)
        ),
        None => format!("pkg:npm/{}@{}", purl_escape(name), purl_escape(version)),
    };
    Some(Package {
        kind: Kind::Npm,
        name: name.to_string(),
        version: version.to_string(),
        license,
        purl,
        path: display(path),
        source: "javascript npm package",
    })
}

/// The packages a lockfile (v1 `dependencies`, v2/v3 `packages`) pins.
pub(crate) fn parse_lock(v: &Value, path: &Path) -> Vec<Package> {
    let mut out = Vec::new();
    if let Some(pkgs) = v.get("packages").and_then(Value::as_object) {
        for (key, p) in pkgs {
            // "" is the project itself; links point at workspace folders.
            let Some(idx) = key.rfind("node_modules/") else {
                continue;
            };
            if p.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&key[idx + "node_modules/".len()..]);
            let version = p.get("version").and_then(Value::as_str).unwrap_or_default();
            out.extend(package(name, version, license(p), path));
        }
        return out;
    }
    if let Some(deps) = v.get("dependencies").and_then(Value::as_object) {
        lock_v1(deps, path, 0, &mut out);
    }
    out
}

fn lock_v1(deps: &serde_json::Map<String, Value>, path: &Path, depth: usize, out: &mut Vec<Package>) {
    if depth > MAX_LOCK_DEPTH {
        return;
    }
    for (name, d) in deps {
        let version = d.get("version").and_then(Value::as_str).unwrap_or_default();
        out.extend(package(name, version, None, path));
        if let Some(sub) = d.get("dependencies").and_then(Value::as_object) {
            lock_v1(sub, path, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_manifests_are_recognised() {
        assert!(installed_manifest(Path::new("app/node_modules/left-pad/package.json")));
        assert!(installed_manifest(Path::new("node_modules/@types/node/package.json")));
        assert!(!installed_manifest(Path::new("app/package.json")));
        assert!(!installed_manifest(Path::new("node_modules/x/lib/package.json")));
    }

    #[test]
    fn lockfile_v3_and_v1_give_purls() {
        let v: Value = serde_json::from_str(include_str!("../../../testdata/sbom/npm/package-lock.json")).unwrap();
        let ps = parse_lock(&v, Path::new("app/package-lock.json"));
        let purls: Vec<&str> = ps.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            ["pkg:npm/%40types/node@20.10.0", "pkg:npm/ms@2.1.3", "pkg:npm/ms@2.0.0"]
        );
        assert_eq!(ps[1].license.as_deref(), Some("MIT"));
        assert_eq!(ps[0].path, "/app/package-lock.json");
        let v1: Value = serde_json::from_str(r#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}"#).unwrap();
        let purls: Vec<String> = parse_lock(&v1, Path::new("p")).into_iter().map(|p| p.purl).collect();
        assert_eq!(purls, ["pkg:npm/a@1.0.0", "pkg:npm/b@2.0.0"]);
    }

    #[test]
    fn license_shapes() {
        let v: Value = serde_json::from_str(r#"{"license":{"type":"ISC"}}"#).unwrap();
        assert_eq!(license(&v).as_deref(), Some("ISC"));
        let v: Value = serde_json::from_str(r#"{"licenses":[{"type":"MIT"},{"type":"Apache-2.0"}]}"#).unwrap();
        assert_eq!(license(&v).as_deref(), Some("MIT OR Apache-2.0"));
        let v: Value = serde_json::from_str(r#"{"license":7}"#).unwrap();
        assert_eq!(license(&v), None);
    }
}
