//! Pushing an image to a registry: `kiln build --push` (`-o type=image,push=true`,
//! `-o type=registry`) and the CLI's `kiln push IMAGE [DEST]` through the same function.

use std::collections::BTreeMap;

use kiln_cache::{ContentStore, ImageStore};
use kiln_image::{Descriptor, Digest, Index, Manifest, Reference};
use kiln_registry::{Client, PushEvent, PushReport};

use crate::error::Ctx;
use crate::BuildError;

/// Which repositories of the same registry may hold each blob: the local store's
/// names there whose manifests list it (a base image pulled from that registry).
fn mount_sources(store: &ImageStore, dest: &Reference) -> BTreeMap<Digest, Vec<Reference>> {
    let mut out: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
    for img in store.list().unwrap_or_default() {
        let Some(name) = &img.name else { continue };
        if name.domain() != dest.domain() || name.path() == dest.path() {
            continue;
        }
        let Ok(m) = store.manifest(&img) else { continue };
        for l in m.layers.iter().chain([&m.config]) {
            let list = out.entry(l.digest.clone()).or_default();
            if !list.iter().any(|r| r.path() == name.path()) {
                list.push(name.clone());
            }
        }
    }
    out
}

/// Pushes the image whose manifest is `manifest` (blobs in `content`) to `dest`;
/// `line` hears one line per blob, as `docker push` prints them. An image index (an
/// image with its attestations) goes as the registry expects: each manifest it lists
/// with its blobs, by digest, then the index under the tag.
pub fn push_image(
    client: &Client,
    store: &ImageStore,
    content: &ContentStore,
    manifest: &Descriptor,
    dest: &Reference,
    line: &(dyn Fn(String) + Sync),
) -> Result<PushReport, BuildError> {
    let bytes = content.read_all(&manifest.digest).map_err(BuildError::other)?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).ctx(|| format!("manifest `{}` is corrupt", manifest.digest))?;
    if v.get("manifests").is_none() {
        let m: Manifest = serde_json::from_value(v).ctx(|| format!("manifest `{}` is corrupt", manifest.digest))?;
        return push_one(client, store, content, manifest, &m, dest, line);
    }
    let index: Index = serde_json::from_value(v).ctx(|| format!("index `{}` is corrupt", manifest.digest))?;
    let mut total = PushReport::default();
    for child in &index.manifests {
        let bytes = content.read_all(&child.digest).map_err(BuildError::other)?;
        let m: Manifest = serde_json::from_slice(&bytes).ctx(|| format!("manifest `{}` is corrupt", child.digest))?;
        let child_dest = Reference::parse(&format!("{}@{}", dest.repository(), child.digest))
            .ctx(|| format!("cannot push to `{dest}`"))?;
        let child_desc = Descriptor::new(child.media_type.clone(), child.digest.clone(), child.size);
        let r = push_one(client, store, content, &child_desc, &m, &child_dest, line)?;
        total.existed += r.existed;
        total.mounted += r.mounted;
        total.uploaded += r.uploaded;
        total.bytes += r.bytes;
    }
    let none = |_: &Digest| Vec::new();
    let r = client
        .push(dest, content, manifest, &[], &none, &|_, _| {})
        .map_err(|e| push_error(dest, e))?;
    total.digest = r.digest;
    Ok(total)
}

fn push_error(dest: &Reference, e: kiln_registry::RegistryError) -> BuildError {
    match e {
        // Registry errors start with the reference already.
        kiln_registry::RegistryError::Store(_) => BuildError::Message(format!("cannot push `{dest}`: {e}")),
        e => BuildError::Message(format!("cannot push {e}")),
    }
}

/// Pushes one image manifest `m` (descriptor `manifest`) and its blobs to `dest`.
fn push_one(
    client: &Client,
    store: &ImageStore,
    content: &ContentStore,
    manifest: &Descriptor,
    m: &Manifest,
    dest: &Reference,
    line: &(dyn Fn(String) + Sync),
) -> Result<PushReport, BuildError> {
    let mut blobs = m.layers.clone();
    blobs.push(m.config.clone());
    let sources = mount_sources(store, dest);
    let mount_from = |d: &Digest| sources.get(d).cloned().unwrap_or_default();
    let on_blob = |d: &Descriptor, e: PushEvent| {
        let what = match e {
            PushEvent::Exists => "Layer already exists",
            PushEvent::Mounted => "Mounted from another repository",
            PushEvent::Uploaded => "Pushed",
        };
        line(format!("{}: {what}", short(&d.digest)));
    };
    client
        .push(dest, content, manifest, &blobs, &mount_from, &on_blob)
        .map_err(|e| push_error(dest, e))
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}
