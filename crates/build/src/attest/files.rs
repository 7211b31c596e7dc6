//! Attestations beside a root filesystem, as BuildKit's local and tar exporters write
//! them (`-o type=local`, `-o type=tar`; exporter/local/fs.go `CreateFS`): each
//! predicate as a whole in-toto statement (indented JSON) in a file at the top of the
//! output (of each `linux_arm64/` directory with several platforms), named as BuildKit
//! names it (`provenance.json`, `sbom.spdx.json`, `sbom-context.spdx.json`,
//! `sbom-<stage>.spdx.json`), mode 0600, modified at `SOURCE_DATE_EPOCH` when set; its
//! subjects are every regular file of the root filesystem by path and sha256.

#![allow(
    clippy::disallowed_methods,
    reason = "every io error here is wrapped with the path in its message (`err`)"
)]

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::{Predicates, STATEMENT_TYPE};
use crate::BuildError;

/// StatementFile is one attestation file: its name at the top of the output and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The permission bits BuildKit gives attestation files.
pub const FILE_MODE: u32 = 0o600;

fn err(what: String, e: impl std::fmt::Display) -> BuildError {
    BuildError::Message(format!("{what}: {e}"))
}

/// Every regular file under `root` (symlinks not followed), by path relative to it
/// without a leading `/`, in sorted order, with its sha256.
fn file_subjects(root: &Path) -> Result<Vec<Value>, BuildError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| err("cannot list the files the attestations name".into(), e))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = rel.to_string_lossy().into_owned();
        let what = || format!("cannot read `{name}` of the root filesystem for the attestations");
        // The snapshot is kiln's own: no build step runs while it is read.
        let mut f = std::fs::File::open(entry.path()).map_err(|e| err(what(), e))?;
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf).map_err(|e| err(what(), e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        out.push(json!({ "name": name, "digest": { "sha256": hex(&h.finalize()) } }));
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file name at the top of the output: one normal path component. Stage names are
/// validated by the parser (`[a-z][a-z0-9-_.]*`), so this is a second line of defence.
fn safe_name(name: &str) -> Result<&str, BuildError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.starts_with(".kiln-");
    match ok {
        true => Ok(name),
        false => Err(BuildError::Message(format!(
            "refusing the attestation file name `{}`: it must be one plain file name",
            name.escape_debug()
        ))),
    }
}

/// The statement files of `preds` about the root filesystem at `rootfs` (None: empty).
pub fn statement_files(preds: &Predicates, rootfs: Option<&Path>) -> Result<Vec<StatementFile>, BuildError> {
    if preds.0.is_empty() {
        return Ok(Vec::new());
    }
    let subjects = match rootfs {
        Some(r) => file_subjects(r)?,
        None => Vec::new(),
    };
    let mut out: Vec<StatementFile> = Vec::new();
    for p in &preds.0 {
        let name = safe_name(&p.path)?;
        if out.iter().any(|f| f.name == name) {
            // As BuildKit's local exporter: two attestations may not share a file.
            return Err(BuildError::Message(format!("duplicate attestation path name `{name}`")));
        }
        let statement = json!({
            "_type": STATEMENT_TYPE,
            "predicateType": p.kind,
            "subject": subjects,
            "predicate": p.value,
        });
        let bytes = serde_json::to_vec_pretty(&statement).expect("serialises");
        out.push(StatementFile {
            name: name.to_string(),
            bytes,
        });
    }
    Ok(out)
}

/// Writes `files` into the directory `dest`, each into a temp file renamed over its
/// name (a symlink of that name in the root filesystem is replaced, never followed),
/// mode 0600, modified at `epoch` when given.
pub fn write_into_dir(dest: &Path, files: &[StatementFile], epoch: Option<i64>) -> Result<(), BuildError> {
    use std::io::Write;
    for f in files {
        let target = dest.join(safe_name(&f.name)?);
        let what = || format!("cannot write the attestation `{}`", target.display());
        let mut tmp = tempfile::Builder::new()
            .prefix(".kiln-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE))
            .tempfile_in(dest)
            .map_err(|e| err(what(), e))?;
        tmp.write_all(&f.bytes).map_err(|e| err(what(), e))?;
        if let Some(e) = epoch {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.max(0) as u64);
            tmp.as_file().set_modified(t).map_err(|e| err(what(), e))?;
        }
        tmp.persist(&target).map_err(|e| err(what(), e.error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Predicate;

    fn preds(paths: &[&str]) -> Predicates {
        Predicates(
            paths
                .iter()
                .map(|p| Predicate {
                    kind: "https://spdx.dev/Document".into(),
                    path: p.to_string(),
                    value: json!({}),
                })
                .collect(),
        )
    }

    #[test]
    fn names_must_be_plain_and_unique() {
        for bad in ["../x.json", "a/b.json", "..", ".", "", "/etc/passwd"] {
            let e = statement_files(&preds(&[bad]), None).unwrap_err().to_string();
            assert!(e.contains("refusing the attestation file name"), "{bad}: {e}");
        }
        let e = statement_files(&preds(&["sbom.spdx.json", "sbom.spdx.json"]), None).unwrap_err();
        assert!(e.to_string().contains("duplicate attestation path name"), "{e}");
    }

    #[test]
    fn subjects_are_the_regular_files_and_a_symlink_is_replaced_not_followed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(root.path().join("d/f"), b"hi\n").unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.path().join("l")).unwrap();
        let files = statement_files(&preds(&["sbom.spdx.json"]), Some(root.path())).unwrap();
        let s: Value = serde_json::from_slice(&files[0].bytes).unwrap();
        assert_eq!(s["_type"], STATEMENT_TYPE);
        assert_eq!(
            s["subject"],
            json!([{ "name": "d/f", "digest": { "sha256": "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4" } }])
        );
        // A symlink of the same name in the written tree points outside it: replaced.
        let out = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, out.path().join("sbom.spdx.json")).unwrap();
        write_into_dir(out.path(), &files, Some(86400)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let md = std::fs::symlink_metadata(out.path().join("sbom.spdx.json")).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
            FILE_MODE
        );
        assert_eq!(
            md.modified().unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(86400)
        );
    }
}
