//! Local store commands' flags and rendering: images, tag, rmi, inspect, save, pull,
//! login, logout. What they do is `kiln_build::store`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

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

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. `alpine:3.20` or `host:5000/app@sha256:…`.
    image: String,
    /// Platform to pull from a multi-platform image (default: the host's).
    #[arg(long)]
    platform: Option<String>,
    /// Treat this registry as Docker treats an insecure one: HTTPS first with its
    /// certificate not verified, else plain HTTP (loopback hosts may always use plain
    /// HTTP); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Also trust the CA certificates in this PEM file for registry TLS (the system's
    /// store is always trusted).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
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

fn ago(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok()) else {
        return "N/A".into();
    };
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86400 => (s / 3600, "hour"),
        s if s < 86400 * 14 => (s / 86400, "day"),
        s if s < 86400 * 60 => (s / 86400 / 7, "week"),
        s if s < 86400 * 365 * 2 => (s / 86400 / 30, "month"),
        s => (s / 86400 / 365, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

pub fn images(root: &Path, a: ImagesArgs) -> Result<()> {
    let mut rows = Vec::new();
    for img in kiln_build::store::list_images(root)? {
        let id = if a.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        rows.push([
            img.repository,
            img.tag,
            id,
            ago(img.created.as_deref()),
            human_size(img.size),
        ]);
    }
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in rows {
            if seen.insert(r[2].clone()) {
                outln!("{}", r[2]);
            }
        }
        return Ok(());
    }
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

pub fn pull(root: &Path, a: PullArgs) -> Result<()> {
    let pulled = kiln_build::store::pull(
        root,
        &a.image,
        a.platform.as_deref(),
        a.insecure_registries,
        a.tls_ca.as_deref(),
    )?;
    if !a.quiet {
        eprintln!("{}: pulled {} layers", pulled.pinned, pulled.layers);
    }
    outln!("{}", pulled.id);
    Ok(())
}

/// Stores credentials as `docker login` does (an `auths` entry in the docker config);
/// they are checked on first use, not here.
pub fn login(a: LoginArgs) -> Result<()> {
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read the password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give a password with --password-stdin (or -p)"),
    };
    if password.is_empty() {
        bail!("empty password for `{}`", a.registry);
    }
    let creds = kiln_registry::creds::Credentials {
        username: a.username,
        password,
    };
    let path = kiln_registry::creds::store(&a.registry, Some(&creds)).map_err(anyhow::Error::msg)?;
    eprintln!("Login credentials for {} saved in {}", a.registry, path.display());
    Ok(())
}

pub fn logout(a: LogoutArgs) -> Result<()> {
    let path = kiln_registry::creds::store(&a.registry, None).map_err(anyhow::Error::msg)?;
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
