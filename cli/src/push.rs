//! `kiln push IMAGE [DEST]`: an image of the local store to a registry, through the
//! build library's [`kiln_build::push_image`] (the one `kiln build --push` uses).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_build::push_image;
use kiln_cache::{KilnRoot, LockKind, RootLock};
use kiln_image::Reference;

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image in the local store (name or id).
    image: String,
    /// Where to push (default: the image's own name), e.g. `host:5000/app:1`.
    dest: Option<String>,
    /// Treat this registry as Docker treats an insecure one: HTTPS first with its
    /// certificate not verified, else plain HTTP (loopback hosts may always use plain
    /// HTTP); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Also trust the CA certificates in this PEM file for registry TLS (the system's
    /// store is always trusted).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Write the pushed manifest's digest to this file (as `podman push --digestfile`).
    #[arg(long, value_name = "FILE")]
    digestfile: Option<PathBuf>,
    /// Print only the pushed manifest's digest.
    #[arg(short, long)]
    quiet: bool,
}

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
        outln!("{digest}");
    } else {
        eprintln!(
            "{}: digest: {digest} size: {}",
            dest.tag().unwrap_or("latest"),
            img.manifest.size
        );
    }
    Ok(())
}
