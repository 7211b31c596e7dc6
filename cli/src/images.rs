//! Local store commands' flags and rendering: images, tag, rmi, inspect, save, pull,
//! login, logout. What they do is `kiln_build::store`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use kiln_build::Dest;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Show only image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show full image ids.
    #[arg(long)]
    no_trunc: bool,
}

// The registry client's flags of `build`, `pull` and `push` (no doc comment: clap would
// take it for the command's about).
#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    /// Treat this registry as Docker treats an insecure one: HTTPS first with its
    /// certificate not verified, else plain HTTP (loopback hosts may always use plain
    /// HTTP); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Also trust the CA certificates in this PEM file for registry TLS (the system's
    /// store is always trusted).
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. `alpine:3.20` or `host:5000/app@sha256:…`.
    image: String,
    /// Platform to pull from a multi-platform image (default: the host's).
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Registry host, e.g. `registry.example:5000`.
    registry: String,
    /// User name.
    #[arg(short, long)]
    username: String,
    /// Password (prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry host.
    registry: String,
}

#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// Existing image (name or id).
    source: String,
    /// New name.
    target: String,
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Images to remove (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Images to inspect (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    Docker,
    Oci,
}

#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format: docker (docker-archive, the default, as `docker save`) or oci.
    #[arg(long, value_enum, default_value = "docker")]
    format: SaveFormat,
    /// Images to save (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn images(root: &Path, a: ImagesArgs) -> Result<()> {
    let rows = kiln_build::store::list_images(root)?;
    for line in kiln_build::store::image_lines(rows, a.no_trunc, a.quiet, time::OffsetDateTime::now_utc()) {
        outln!("{line}");
    }
    Ok(())
}

pub fn pull(root: &Path, a: PullArgs) -> Result<()> {
    let pulled = kiln_build::store::pull(
        root,
        &a.image,
        a.platform.as_deref(),
        a.registry.insecure_registries,
        a.registry.tls_ca.as_deref(),
    )?;
    if !a.quiet {
        eprintln!("{}: pulled {} layers", pulled.pinned, pulled.layers);
    }
    outln!("{}", pulled.id);
    Ok(())
}

/// Stores credentials as `docker login` does; they are checked on first use, not here.
pub fn login(a: LoginArgs) -> Result<()> {
    let path = kiln_build::store::login(&a.registry, a.username, a.password, a.password_stdin)?;
    eprintln!("Login credentials for {} saved in {}", a.registry, path.display());
    Ok(())
}

pub fn logout(a: LogoutArgs) -> Result<()> {
    let path = kiln_build::store::logout(&a.registry)?;
    eprintln!("Removed login credentials for {} from {}", a.registry, path.display());
    Ok(())
}

pub fn tag(root: &Path, a: TagArgs) -> Result<()> {
    Ok(kiln_build::store::tag(root, &a.source, &a.target)?)
}

pub fn rmi(root: &Path, a: RmiArgs) -> Result<()> {
    let mut failed = None;
    for name in &a.images {
        match kiln_build::store::remove_image(root, name) {
            Ok(removed) => {
                for shown in removed {
                    outln!("Untagged: {shown}");
                }
            }
            Err(e) => {
                eprintln!("ERROR: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

pub fn inspect(root: &Path, a: InspectArgs) -> Result<()> {
    let out = kiln_build::store::inspect(root, &a.images)?;
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn save(root: &Path, a: SaveArgs) -> Result<()> {
    let dest = match &a.output {
        Some(p) => Dest::Path(p.clone()),
        None => Dest::Stdout,
    };
    let format = match a.format {
        SaveFormat::Docker => kiln_build::store::SaveFormat::Docker,
        SaveFormat::Oci => kiln_build::store::SaveFormat::Oci,
    };
    Ok(kiln_build::store::save(root, &a.images, format, &dest)?)
}
