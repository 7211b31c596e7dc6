//! `kiln push IMAGE [DEST]`: an image of the local store to a registry, through the
//! build library's [`kiln_build::push_stored`] (over [`kiln_build::push_image`], the
//! one `kiln build --push` uses); its flags and lines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
    let quiet = a.quiet;
    let dest = a.dest.as_deref();
    let pushed = kiln_build::push_stored(root, &a.image, dest, a.insecure_registries, a.tls_ca.as_deref(), &|l| {
        if !quiet {
            eprintln!("{l}");
        }
    })?;
    if let Some(p) = &a.digestfile {
        std::fs::write(p, pushed.digest.to_string())
            .with_context(|| format!("cannot write --digestfile `{}`", p.display()))?;
    }
    if quiet {
        outln!("{}", pushed.digest);
    } else {
        eprintln!("{}: digest: {} size: {}", pushed.tag, pushed.digest, pushed.size);
    }
    Ok(())
}
