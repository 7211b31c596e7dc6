//! Local store commands: images, tag, rmi, inspect, save.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_cache::{ImageStore, KilnRoot, StoredImage};
use kiln_exporter::ArchiveImage;
use kiln_image::{ImageConfig, Reference};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use kiln_build::{write_dest, Dest};

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

fn open_store(root: &Path) -> Result<(KilnRoot, ImageStore)> {
    let r = KilnRoot::open(root).with_context(|| format!("cannot open kiln root `{}`", root.display()))?;
    let s = r.images();
    Ok((r, s))
}

fn config(store: &ImageStore, img: &StoredImage) -> Result<(kiln_image::Manifest, ImageConfig)> {
    let m = store.manifest(img)?;
    let bytes = store.blobs().read_all(&m.config.digest)?;
    let c: ImageConfig =
        serde_json::from_slice(&bytes).with_context(|| format!("image config `{}` is corrupt", m.config.digest))?;
    Ok((m, c))
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
    let (_r, store) = open_store(root)?;
    let mut rows = Vec::new();
    for img in store.list()? {
        let (m, c) = config(&store, &img)?;
        let id = if a.no_trunc {
            m.config.digest.to_string()
        } else {
            m.config.digest.short().to_string()
        };
        let (repo, tag) = match &img.name {
            Some(n) => (n.familiar_repository(), n.tag().unwrap_or("<none>").to_string()),
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        let size: u64 = m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size;
        rows.push([repo, tag, id, ago(c.created.as_deref()), human_size(size)]);
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

/// A registry client with the `--insecure-registry` hosts and `--tls-ca` roots, and
/// the deadline `$KILN_REGISTRY_TIMEOUT` (seconds) when set.
pub fn registry_client(insecure: Vec<String>, tls_ca: Option<&Path>) -> Result<kiln_registry::Client> {
    let mut client = kiln_registry::Client::new(insecure);
    if let Some(v) = std::env::var_os("KILN_REGISTRY_TIMEOUT") {
        let text = v.to_string_lossy();
        let secs = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .with_context(|| {
                format!("invalid KILN_REGISTRY_TIMEOUT `{text}`: expected a number of seconds between 0 and 86400")
            })?;
        client = client.with_timeout(std::time::Duration::from_secs_f64(secs));
    }
    match tls_ca {
        None => Ok(client),
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("cannot read --tls-ca `{}`", p.display()))?;
            client
                .with_tls_ca(&pem)
                .map_err(|e| anyhow::anyhow!("invalid --tls-ca `{}`: {e}", p.display()))
        }
    }
}

pub fn pull(root: &Path, a: PullArgs) -> Result<()> {
    let (r, _store) = open_store(root)?;
    let reference = Reference::parse(&a.image).with_context(|| format!("invalid image `{}`", a.image))?;
    let platform = match &a.platform {
        Some(p) => kiln_image::Platform::parse(p)
            .with_context(|| format!("invalid --platform `{p}`: expected os/arch[/variant]"))?,
        None => kiln_image::Platform::host(),
    };
    let client = std::sync::Arc::new(registry_client(a.insecure_registries, a.tls_ca.as_deref())?);
    // `kiln pull` always asks the registry, as `docker pull` does.
    let source = kiln_worker::ImageSource::new(r.clone(), Some(client), kiln_worker::PullPolicy::Always);
    let (img, layers) = source.pull(&reference.to_string(), &platform)?;
    if a.quiet {
        outln!("{}", img.parsed.config.digest);
    } else {
        eprintln!("{}: pulled {} layers", img.pinned.familiar(), layers.len());
        outln!("{}", img.parsed.config.digest);
    }
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
    let (_r, store) = open_store(root)?;
    let target = Reference::parse(&a.target).with_context(|| format!("invalid target `{}`", a.target))?;
    store.tag(&a.source, &target)?;
    Ok(())
}

pub fn rmi(root: &Path, a: RmiArgs) -> Result<()> {
    let (_r, store) = open_store(root)?;
    let mut failed = None;
    for name in &a.images {
        match store.remove(name) {
            Ok(removed) => {
                for r in removed {
                    let shown = Reference::parse(&r).map(|x| x.familiar()).unwrap_or(r);
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
    let (_r, store) = open_store(root)?;
    let mut out = Vec::new();
    for name in &a.images {
        let img = store.resolve(name)?;
        let (m, c) = config(&store, &img)?;
        let tags: Vec<String> = store
            .list()?
            .into_iter()
            .filter(|i| i.manifest.digest == img.manifest.digest)
            .filter_map(|i| i.name.map(|n| n.familiar()))
            .collect();
        let mut entry = serde_json::json!({
            "Id": m.config.digest,
            "RepoTags": tags,
            "ManifestDigest": img.manifest.digest,
            "Manifest": m,
            "Config": c,
        });
        if let Some(index) = store.index(&img)? {
            entry["Attestations"] = attestations(&store, &index)?;
            entry["Index"] = serde_json::to_value(&index)?;
        }
        out.push(entry);
    }
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The attestations an image index holds: per attestation manifest, the image it is
/// about and each statement's predicate type, digest and size.
fn attestations(store: &kiln_cache::ImageStore, index: &kiln_image::Index) -> Result<serde_json::Value> {
    let mut out = Vec::new();
    for d in index
        .manifests
        .iter()
        .filter(|d| kiln_build::attest::layout::is_attestation(d))
    {
        let m: kiln_image::Manifest = serde_json::from_slice(&store.blobs().read_all(&d.digest)?)?;
        let statements: Vec<serde_json::Value> = m
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "PredicateType": l.annotations.get(kiln_build::attest::layout::PREDICATE_TYPE_ANNOTATION),
                    "Digest": l.digest,
                    "Size": l.size,
                })
            })
            .collect();
        out.push(serde_json::json!({
            "Digest": d.digest,
            "ReferenceDigest": d.annotations.get(kiln_build::attest::layout::REFERENCE_DIGEST_ANNOTATION),
            "Statements": statements,
        }));
    }
    Ok(serde_json::Value::Array(out))
}

pub fn save(root: &Path, a: SaveArgs) -> Result<()> {
    let (r, store) = open_store(root)?;
    let mut images = Vec::new();
    for name in &a.images {
        let img = store.resolve(name)?;
        let m = store.manifest(&img)?;
        // Saving by name carries that name; by id carries every tag of the image.
        let names: Vec<Reference> = match Reference::parse(name).ok().filter(|n| img.name.as_ref() == Some(n)) {
            Some(n) => vec![n],
            None => store
                .list()?
                .into_iter()
                .filter(|i| i.manifest.digest == img.manifest.digest)
                .filter_map(|i| i.name)
                .collect(),
        };
        images.push(ArchiveImage {
            manifest: img.manifest.clone(),
            config: m.config.clone(),
            layers: m.layers.clone(),
            // An index entry carries every platform and attestation manifest it holds.
            extra: store.index_blobs(&img)?,
            names,
        });
    }
    let dest = match &a.output {
        Some(p) => Dest::Path(p.clone()),
        None => {
            if is_terminal_stdout() {
                bail!("refusing to write an archive to a terminal; use -o FILE or redirect stdout");
            }
            Dest::Stdout
        }
    };
    // The store's own blobs: they are there for as long as the image is.
    let content = store.blobs().clone();
    let _ = r;
    write_dest(&dest, "the archive", |w| {
        match a.format {
            SaveFormat::Docker => kiln_exporter::write_docker_archive(w, &content, &images)?,
            SaveFormat::Oci => kiln_exporter::write_oci_archive(w, &content, &images)?,
        };
        Ok(())
    })?;
    Ok(())
}

fn is_terminal_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}
