//! The SBOM predicate: an SPDX 2.3 document of the final image's root filesystem made
//! natively by kiln-sbom (no scanner image), listing the base images the root descends
//! from; with `BUILDKIT_SBOM_SCAN_CONTEXT` a second document of the build context.

use std::path::Path;

use kiln_graph::{Op, SourceOp};
use kiln_image::Reference;
use serde_json::Value;

use super::provenance::Facts;
use super::{SbomOpts, SPDX_PREDICATE};
use crate::BuildError;

/// The base images the result descends from: every registry image the root reaches.
fn base_images(f: &Facts<'_>) -> Vec<kiln_sbom::BaseImage> {
    let d = f.definition;
    let mut out: Vec<kiln_sbom::BaseImage> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<&kiln_image::Digest> = d.root.iter().map(|r| &r.op).collect();
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

/// The SBOM predicates: the image's, then the context's when asked.
pub fn predicates(s: &SbomOpts, f: &Facts<'_>, rootfs: Option<&Path>) -> Result<Vec<(String, Value)>, BuildError> {
    let mut out = Vec::new();
    let empty;
    let root = match rootfs {
        Some(r) => r,
        None => {
            // FROM scratch with nothing added: an SBOM listing no packages.
            empty = tempfile::tempdir().map_err(|e| BuildError::Message(format!("cannot make the SBOM: {e}")))?;
            empty.path()
        }
    };
    out.push((SPDX_PREDICATE.to_string(), scan(root, "image", f, base_images(f))?));
    if s.scan_context {
        if let Some(ctx) = f.context {
            out.push((SPDX_PREDICATE.to_string(), scan(ctx, "context", f, Vec::new())?));
        }
    }
    Ok(out)
}
