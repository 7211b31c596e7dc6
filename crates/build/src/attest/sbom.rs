//! The SBOM predicates: SPDX 2.3 documents made natively by kiln-sbom (no scanner
//! image). The final image's root filesystem always, listing the base images it
//! descends from; with `BUILDKIT_SBOM_SCAN_CONTEXT` one of the build context, and with
//! `BUILDKIT_SBOM_SCAN_STAGE` one of each marked stage's final filesystem. Each is named
//! as BuildKit's scanner protocol names its files (frontend/attestations/sbom/sbom.go:
//! the core `sbom`, extras `sbom-<name>`, `<name>.spdx.json`), in the order BuildKit's
//! exporter sorts them (the core first, then the extras by file name).

use std::path::Path;

use kiln_graph::{Op, SourceOp};
use kiln_image::Reference;
use serde_json::Value;

use super::provenance::Facts;
use super::{Predicate, SPDX_PREDICATE};
use crate::BuildError;

/// StageRoot is a build stage to scan: its name and final root filesystem (None: empty).
#[derive(Debug, Clone)]
pub struct StageRoot<'a> {
    pub name: String,
    /// Its final op, whose base images the document lists.
    pub op: &'a kiln_image::Digest,
    pub rootfs: Option<&'a Path>,
}

/// The base images a result descends from: every registry image `from` reaches.
fn base_images(f: &Facts<'_>, from: Option<&kiln_image::Digest>) -> Vec<kiln_sbom::BaseImage> {
    let d = f.definition;
    let mut out: Vec<kiln_sbom::BaseImage> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<&kiln_image::Digest> = from.into_iter().collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = d.nodes.get(id) else { continue };
        stack.extend(node.inputs.iter().map(|i| &i.op));
        if let Op::Source(SourceOp::Image { reference, platform }) = &node.op {
            let Ok(r) = Reference::parse(reference) else { continue };
            let Some(digest) = r.digest().cloned() else { continue };
            let name = match r.tag() {
                Some(t) => format!("{}:{t}", r.repository()),
                None => r.repository(),
            };
            let b = kiln_sbom::BaseImage {
                name,
                digest,
                platform: Some(platform.clone()),
            };
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn scan(root: &Path, name: &str, f: &Facts<'_>, bases: Vec<kiln_sbom::BaseImage>) -> Result<Value, BuildError> {
    let opts = kiln_sbom::ScanOptions {
        name: name.to_string(),
        created: Some(f.epoch.unwrap_or(f.finished)),
        base_images: bases,
        limits: kiln_sbom::Limits::default(),
    };
    let doc = kiln_sbom::scan(root, &opts).map_err(|e| BuildError::Message(format!("cannot make the SBOM: {e}")))?;
    Ok(doc.to_value())
}

fn spdx(path: String, value: Value) -> Predicate {
    Predicate {
        kind: SPDX_PREDICATE.to_string(),
        path,
        value,
    }
}

/// An extra scan: the context or a stage.
enum Extra<'a> {
    Context(&'a Path),
    Stage(&'a StageRoot<'a>),
}

/// The SBOM predicates: the image's, then the extras (the context's when asked, each
/// stage's) by file name. As BuildKit's map of extras, a stage named `context` takes
/// the context's place.
pub fn predicates(
    scan_context: bool,
    stages: &[StageRoot<'_>],
    f: &Facts<'_>,
    rootfs: Option<&Path>,
) -> Result<Vec<Predicate>, BuildError> {
    let mut out = Vec::new();
    let empty = tempfile::tempdir().map_err(|e| BuildError::Message(format!("cannot make the SBOM: {e}")))?;
    // FROM scratch with nothing added: an SBOM listing no packages.
    let root = rootfs.unwrap_or(empty.path());
    let image_root = f.definition.root.as_ref().map(|r| &r.op);
    out.push(spdx(
        "sbom.spdx.json".into(),
        scan(root, "image", f, base_images(f, image_root))?,
    ));
    let mut extras: std::collections::BTreeMap<String, Extra<'_>> = Default::default();
    if scan_context {
        if let Some(ctx) = f.context {
            extras.insert("sbom-context.spdx.json".into(), Extra::Context(ctx));
        }
    }
    for s in stages {
        extras.insert(format!("sbom-{}.spdx.json", s.name), Extra::Stage(s));
    }
    for (path, e) in extras {
        let doc = match e {
            Extra::Context(ctx) => scan(ctx, "context", f, Vec::new())?,
            Extra::Stage(s) => scan(
                s.rootfs.unwrap_or(empty.path()),
                &format!("stage {}", s.name),
                f,
                base_images(f, Some(s.op)),
            )?,
        };
        out.push(spdx(path, doc));
    }
    Ok(out)
}
