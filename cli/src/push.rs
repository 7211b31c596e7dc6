//! Pushing images to registries: `kiln push IMAGE [DEST]`, and `kiln build --push`
//! (`-o type=image,push=true`, `-o type=registry`) through the same function.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_cache::{ContentStore, ImageStore, KilnRoot, LockKind, RootLock};
use kiln_image::{Descriptor, Digest, Manifest, Reference};
use kiln_registry::{Client, PushEvent, PushReport};

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image in the local store (name or id).
    image: String,
    /// Where to push (default: the image's own name), e.g. `host:5000/app:1`.
    dest: Option<String>,
    /// Reach this registry host over plain HTTP (loopback hosts always are); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Trust the CA certificates in this PEM file for registry TLS.
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Write the pushed manifest's digest to this file (as `podman push --digestfile`).
    #[arg(long, value_name = "FILE")]
    digestfile: Option<PathBuf>,
    /// Print only the pushed manifest's digest.
    #[arg(short, long)]
    quiet: bool,
}

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
/// `line` hears one line per blob, as `docker push` prints them.
pub fn push_image(
    client: &Client,
    store: &ImageStore,
    content: &ContentStore,
    manifest: &Descriptor,
    dest: &Reference,
    line: &(dyn Fn(String) + Sync),
) -> Result<PushReport> {
    let bytes = content.read_all(&manifest.digest)?;
    let m: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("manifest `{}` is corrupt", manifest.digest))?;
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
        .map_err(|e| match e {
            // Registry errors start with the reference already.
            kiln_registry::RegistryError::Store(_) => anyhow::anyhow!("cannot push `{dest}`: {e}"),
            e => anyhow::anyhow!("cannot push {e}"),
        })
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

#[allow(clippy::print_stdout)]
pub fn push(root: &Path, a: PushArgs) -> Result<()> {
    let r = KilnRoot::open(root).with_context(|| format!("cannot open kiln root `{}`", root.display()))?;
    let _lock = RootLock::acquire(&r.lock_path(), LockKind::Shared)?;
    let store = r.images();
    let img = store.resolve(&a.image)?;
    let dest_text = a.dest.as_deref().unwrap_or(&a.image);
    let dest = Reference::parse(dest_text).with_context(|| format!("invalid destination `{dest_text}`"))?;
    let client = crate::images::registry_client(a.insecure_registries, a.tls_ca.as_deref())?;
    let quiet = a.quiet;
    if !quiet {
        eprintln!("The push refers to repository [{}]", dest.repository());
    }
    let report = push_image(&client, &store, store.blobs(), &img.manifest, &dest, &|l| {
        if !quiet {
            eprintln!("{l}");
        }
    })?;
    let digest = report.digest.clone().unwrap_or_else(|| img.manifest.digest.clone());
    if let Some(p) = &a.digestfile {
        std::fs::write(p, digest.to_string())
            .with_context(|| format!("cannot write --digestfile `{}`", p.display()))?;
    }
    if quiet {
        println!("{digest}");
    } else {
        eprintln!(
            "{}: digest: {digest} size: {}",
            dest.tag().unwrap_or("latest"),
            img.manifest.size
        );
    }
    Ok(())
}
