//! `kiln push IMAGE [DEST]`: an image of the local store to a registry, through the
//! build library's [`kiln_build::push_stored`] (over [`kiln_build::push_image`], the
//! one `kiln build --push` uses); its flags and lines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::images::RegistryArgs;

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image in the local store (name or id).
    image: String,
    /// Where to push (default: the image's own name), e.g. `host:5000/app:1`.
    dest: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
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
    let pushed = kiln_build::push_stored(
        root,
        &a.image,
        dest,
        a.registry.insecure_registries,
        a.registry.tls_ca.as_deref(),
        &|l| {
            if !quiet {
                eprintln!("{l}");
            }
        },
    )?;
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
