//! Pushing an image to a registry: `kiln build --push` (`-o type=image,push=true`,
//! `-o type=registry`) and the CLI's `kiln push IMAGE [DEST]` through the same function.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_cache::{ContentStore, ImageStore, LockKind, RootLock};
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
        for (_, m) in store.manifests(&img).unwrap_or_default() {
            for l in m.layers.iter().chain([&m.config]) {
                let list = out.entry(l.digest.clone()).or_default();
                if !list.iter().any(|r| r.path() == name.path()) {
                    list.push(name.clone());
                }
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
    let sources = mount_sources(store, dest);
    if kiln_cache::is_index(manifest) {
        // A multi-platform image: every platform's manifest (by digest) first, so the
        // registry never holds an index naming a manifest it lacks; the index last.
        let index: Index =
            serde_json::from_slice(&bytes).ctx(|| format!("image index `{}` is corrupt", manifest.digest))?;
        let mut total = PushReport::default();
        for child in &index.manifests {
            let by_digest = Reference::parse(&format!("{}@{}", dest.repository(), child.digest))
                .ctx(|| format!("cannot push `{dest}`"))?;
            let r = push_one(client, content, child, &by_digest, &sources, line)?;
            total.existed += r.existed;
            total.mounted += r.mounted;
            total.uploaded += r.uploaded;
            total.bytes += r.bytes;
        }
        let r = push_blobs_and_manifest(client, content, manifest, &[], dest, &sources, line)?;
        total.digest = r.digest;
        return Ok(total);
    }
    push_one(client, content, manifest, dest, &sources, line)
}

/// Pushes one image manifest with its config and layers.
fn push_one(
    client: &Client,
    content: &ContentStore,
    manifest: &Descriptor,
    dest: &Reference,
    sources: &BTreeMap<Digest, Vec<Reference>>,
    line: &(dyn Fn(String) + Sync),
) -> Result<PushReport, BuildError> {
    let bytes = content.read_all(&manifest.digest).map_err(BuildError::other)?;
    let m: Manifest = serde_json::from_slice(&bytes).ctx(|| format!("manifest `{}` is corrupt", manifest.digest))?;
    let mut blobs = m.layers.clone();
    blobs.push(m.config.clone());
    push_blobs_and_manifest(client, content, manifest, &blobs, dest, sources, line)
}

fn push_blobs_and_manifest(
    client: &Client,
    content: &ContentStore,
    manifest: &Descriptor,
    blobs: &[Descriptor],
    dest: &Reference,
    sources: &BTreeMap<Digest, Vec<Reference>>,
    line: &(dyn Fn(String) + Sync),
) -> Result<PushReport, BuildError> {
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
        .push(dest, content, manifest, blobs, &mount_from, &on_blob)
        .map_err(|e| match e {
            // Registry errors start with the reference already.
            kiln_registry::RegistryError::Store(_) => BuildError::Message(format!("cannot push `{dest}`: {e}")),
            e => BuildError::Message(format!("cannot push {e}")),
        })
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// What `kiln push` pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The digest of the manifest (or index) pushed.
    pub digest: Digest,
    /// The destination's tag (`latest` when it has none).
    pub tag: String,
    /// The size of the stored manifest.
    pub size: u64,
}

/// `kiln push IMAGE [DEST]`: the stored image `image` (a name or an id) to `dest`
/// (default: `image`), under the root's shared lock, with the client
/// [`crate::store::registry_client`] makes; `line` hears `The push refers to
/// repository [...]`, then a line per blob.
pub fn push_stored(
    root: &Path,
    image: &str,
    dest: Option<&str>,
    insecure: Vec<String>,
    tls_ca: Option<&Path>,
    line: &(dyn Fn(String) + Sync),
) -> Result<Pushed, BuildError> {
    let (r, store) = crate::store::open_store(root)?;
    let _lock = RootLock::acquire(&r.lock_path(), LockKind::Shared).map_err(BuildError::other)?;
    let img = store.resolve(image).map_err(BuildError::other)?;
    let dest_text = dest.unwrap_or(image);
    let dest = Reference::parse(dest_text).ctx(|| format!("invalid destination `{dest_text}`"))?;
    let client = crate::store::registry_client(insecure, tls_ca)?;
    line(format!("The push refers to repository [{}]", dest.repository()));
    let report = push_image(&client, &store, store.blobs(), &img.manifest, &dest, line)?;
    Ok(Pushed {
        digest: report.digest.clone().unwrap_or_else(|| img.manifest.digest.clone()),
        tag: dest.tag().unwrap_or("latest").to_string(),
        size: img.manifest.size,
    })
}
