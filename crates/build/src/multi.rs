//! Multi-platform builds (`--platform linux/amd64,linux/arm64`): the platforms' graphs
//! merged into one definition, the emulation check before anything runs, and the
//! outputs as BuildKit writes them — an OCI image index with one manifest per platform
//! for the store, archives and pushes; one `linux_arm64/` directory per platform for
//! `type=local` and `type=tar`; `--metadata-file` naming the index. Each platform's
//! attestations (provenance, SBOM) go into the index as an attestation manifest
//! about that platform's image, as BuildKit writes them.

use std::collections::{BTreeMap, BTreeSet};

use kiln_cache::KilnRoot;
use kiln_exporter::PlatformImage;
use kiln_graph::{Definition, Input, Op};
use kiln_image::{Descriptor, Reference};
use kiln_worker::Worker;

use crate::attest::Predicates;
use crate::error::{bail, Ctx};
use crate::export::{image_names, in_compression, write_dest};
use crate::outputs::{LayerOpts, Output};
use crate::{BuildError, BuildEvent, BuildProgress};

type Result<T> = std::result::Result<T, BuildError>;

/// One definition holding every plan's ops (each digest once; the first plan's
/// descriptions kept) and the plans' roots, in platform order.
pub(crate) fn merge(plans: &[kiln_frontend::BuildPlan]) -> Result<(Definition, Vec<Input>)> {
    let mut roots = Vec::with_capacity(plans.len());
    let mut def = Definition::new();
    for plan in plans {
        let Some(root) = plan.definition.root.clone() else {
            bail!("the build definition has no result")
        };
        roots.push(root);
        for (d, n) in &plan.definition.nodes {
            def.nodes.entry(d.clone()).or_insert_with(|| n.clone());
        }
    }
    def.root = roots.first().cloned();
    Ok((def, roots))
}

/// Fails, before any step runs, when a RUN step is for a platform whose binaries this
/// machine can neither run nor emulate (naming the platform and what to install); as
/// root it registers Debian's QEMU handler with the F flag when none is registered.
pub(crate) fn check_emulation(def: &Definition, roots: &[Input]) -> Result<()> {
    let mut foreign = BTreeSet::new();
    for d in def.topo_order_from(roots) {
        if let Some(Op::Exec(e)) = def.node(&d).map(|n| &n.op) {
            if !kiln_executor::binfmt::native(&e.platform) {
                foreign.insert(e.platform.normalized());
            }
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    let binfmt = kiln_executor::binfmt::Binfmt::from_env();
    for p in &foreign {
        binfmt.ensure(p).map_err(|e| BuildError::Message(e.to_string()))?;
    }
    Ok(())
}

/// Every platform's image in the output's compression, and the index listing them,
/// with an attestation manifest after the images for each platform whose `attest`
/// predicates are not empty (`attest` is in the order of `images`); also the blobs the
/// attestation manifests add.
fn indexed(
    root: &KilnRoot,
    worker: &Worker,
    images: &[PlatformImage],
    layers: &LayerOpts,
    attest: &[&Predicates],
    names: &[Reference],
    index_annotations: &BTreeMap<String, String>,
) -> Result<(Vec<PlatformImage>, Descriptor, Vec<Descriptor>)> {
    let content = root.content();
    let mut out = Vec::with_capacity(images.len());
    for i in images {
        out.push(PlatformImage {
            platform: i.platform.clone(),
            image: in_compression(root, worker, &i.image, layers)?,
        });
    }
    let mut descriptors: Vec<Descriptor> = out.iter().map(PlatformImage::descriptor).collect();
    let mut blobs = Vec::new();
    for (i, preds) in out.iter().zip(attest) {
        if preds.0.is_empty() {
            continue;
        }
        let (att, b) =
            crate::attest::layout::attestation_manifest(&content, &i.image.manifest, &i.platform, names, preds)?;
        descriptors.push(att);
        blobs.extend(b);
    }
    let index = kiln_exporter::write_index(&content, descriptors, index_annotations).map_err(BuildError::other)?;
    Ok((out, index, blobs))
}

/// Writes a multi-platform build's images to `out`; returns the progress lines and
/// the index written, if the output has one. `epoch` is SOURCE_DATE_EPOCH, the time of
/// attestation files; `index_annotations` go into the index (`--annotation index:`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn export(
    progress: &dyn BuildProgress,
    root: &KilnRoot,
    worker: &Worker,
    registry: &kiln_registry::Client,
    images: &[PlatformImage],
    out: &Output,
    attest: &[&Predicates],
    epoch: Option<i64>,
    index_annotations: &BTreeMap<String, String>,
) -> Result<(Vec<String>, Option<Descriptor>)> {
    let content = root.content();
    // `type=local` / `type=tar`: each platform's statements in its directory, about
    // that platform's root filesystem (BuildKit's platform split).
    let statements = |n: usize, i: &PlatformImage, dir: &std::path::Path| -> Result<()> {
        let Some(preds) = attest.get(n).filter(|p| !p.0.is_empty()) else {
            return Ok(());
        };
        let tree = worker.snapshots().merged(&i.image.layers).map_err(BuildError::other)?;
        let files = crate::attest::files::statement_files(preds, tree.as_deref())?;
        crate::attest::files::write_into_dir(dir, &files, epoch)
    };
    Ok(match out {
        Output::Image { names, push, layers } => {
            let (_, index, _) = indexed(root, worker, images, layers, attest, names, index_annotations)?;
            let store = root.images();
            store.add(&index, names).map_err(BuildError::other)?;
            let mut lines = vec![format!("exporting manifest list {} done", index.digest)];
            lines.extend(names.iter().map(|n| format!("naming to {n} done")));
            if *push {
                lines.extend(crate::export::push_names(
                    progress,
                    registry,
                    &store,
                    &content,
                    &index,
                    names,
                    "manifest list",
                )?);
            }
            (lines, Some(index))
        }
        Output::Oci {
            dest,
            names,
            tar,
            layers,
        }
        | Output::Docker {
            dest,
            names,
            tar,
            layers,
        } => {
            let (written, index, attestations) =
                indexed(root, worker, images, layers, attest, names, index_annotations)?;
            let docker = matches!(out, Output::Docker { .. });
            // index.json names the index; a docker archive's manifest.json (what
            // `docker load` without the containerd store reads) the host's image.
            let mut img = [kiln_exporter::archive_index(&index, &written, names)];
            img[0].extra.extend(attestations);
            crate::export::write_archive(&content, &img, dest, *tar, docker)?;
            (vec!["sending tarball done".to_string()], Some(index))
        }
        Output::Load { names, layers } => {
            // The same docker-archive as `-o type=docker`: index.json names the index
            // (a daemon with the containerd image store keeps every platform),
            // manifest.json the host's image (what the classic store loads).
            let (written, index, _) = indexed(root, worker, images, layers, &[], names, index_annotations)?;
            let img = [kiln_exporter::archive_index(&index, &written, names)];
            (crate::export::load_into_docker(&content, &img)?, Some(index))
        }
        Output::Local { dest } => {
            for (n, i) in images.iter().enumerate() {
                let dir = dest.join(i.platform.dir_name());
                let warnings = kiln_exporter::write_rootfs_dir(worker.snapshots(), &i.image.layers, &dir)
                    .map_err(BuildError::other)?;
                for w in warnings {
                    progress.event(BuildEvent::Warning(w));
                }
                statements(n, i, &dir)?;
            }
            (vec![format!("copying files to {} done", dest.display())], None)
        }
        Output::Tar { dest } => {
            // As buildx: one tarball, each platform's tree under `linux_arm64/`.
            let staging = tempfile::Builder::new()
                .prefix("tar-export-")
                .tempdir_in(root.tmp_dir())
                .ctx(|| "cannot create a directory for the tarball".to_string())?;
            for (n, i) in images.iter().enumerate() {
                let dir = staging.path().join(i.platform.dir_name());
                let warnings = kiln_exporter::write_rootfs_dir(worker.snapshots(), &i.image.layers, &dir)
                    .map_err(BuildError::other)?;
                for w in warnings {
                    progress.event(BuildEvent::Warning(w));
                }
                statements(n, i, &dir)?;
            }
            write_dest(dest, "the rootfs tarball", |w| {
                kiln_snapshotter::write_dir_tar(staging.path(), w, &Default::default())
                    .ctx(|| "cannot write the rootfs tarball".to_string())?;
                Ok(())
            })?;
            (vec!["sending tarball done".to_string()], None)
        }
    })
}

/// The `--metadata-file` JSON of a multi-platform build, as buildx writes it: the
/// index's descriptor and digest (no config digest: each platform has its own).
pub(crate) fn metadata(index: Option<&Descriptor>, outputs: &[Output]) -> serde_json::Value {
    let mut v = serde_json::json!({});
    if let Some(i) = index {
        v["containerimage.descriptor"] = serde_json::json!({
            "mediaType": i.media_type,
            "digest": i.digest,
            "size": i.size,
        });
        v["containerimage.digest"] = serde_json::Value::String(i.digest.to_string());
    }
    let names = image_names(outputs);
    if !names.is_empty() {
        v["image.name"] = serde_json::Value::String(names.join(","));
    }
    v
}
