//! The local store commands as a library: listing, tagging, removing, inspecting,
//! saving and pulling images (`kiln images`, `tag`, `rmi`, `inspect`, `save`, `pull`)
//! and the registry client every command that talks to a registry shares. The CLI
//! parses their flags and renders what these return.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error is wrapped with the path in its message (`ctx`, `BuildError::Message`)"
)]

use std::path::Path;
use std::sync::Arc;

use kiln_cache::{ImageStore, KilnRoot, StoredImage};
use kiln_exporter::ArchiveImage;
use kiln_image::{Digest, ImageConfig, Manifest, Platform, Reference};

use crate::error::{bail, Ctx};
use crate::{write_dest, BuildError, Dest};

type Result<T> = std::result::Result<T, BuildError>;

/// Opens the root at `root` and its image store.
pub fn open_store(root: &Path) -> Result<(KilnRoot, ImageStore)> {
    let r = KilnRoot::open(root).ctx(|| format!("cannot open kiln root `{}`", root.display()))?;
    let s = r.images();
    Ok((r, s))
}

/// The manifest and config of a stored image.
fn config(store: &ImageStore, img: &StoredImage) -> Result<(Manifest, ImageConfig)> {
    let m = store.manifest(img).map_err(BuildError::other)?;
    let bytes = store.blobs().read_all(&m.config.digest).map_err(BuildError::other)?;
    let c: ImageConfig =
        serde_json::from_slice(&bytes).ctx(|| format!("image config `{}` is corrupt", m.config.digest))?;
    Ok((m, c))
}

/// One image of the store as `kiln images` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// The familiar repository, or `<none>`.
    pub repository: String,
    /// The tag, or `<none>`.
    pub tag: String,
    /// The image id (its config's digest).
    pub id: Digest,
    /// The config's `created` time as written (RFC 3339), if any.
    pub created: Option<String>,
    /// The config's and the layers' compressed sizes summed.
    pub size: u64,
}

/// Every image (name) of the store, in the store's order.
pub fn list_images(root: &Path) -> Result<Vec<ImageRow>> {
    let (_r, store) = open_store(root)?;
    let mut rows = Vec::new();
    for img in store.list().map_err(BuildError::other)? {
        let (m, c) = config(&store, &img)?;
        let (repository, tag) = match &img.name {
            Some(n) => (n.familiar_repository(), n.tag().unwrap_or("<none>").to_string()),
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        let size: u64 = m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size;
        rows.push(ImageRow {
            repository,
            tag,
            id: m.config.digest.clone(),
            created: c.created.clone(),
            size,
        });
    }
    Ok(rows)
}

/// `kiln tag SOURCE TARGET`.
pub fn tag(root: &Path, source: &str, target: &str) -> Result<()> {
    let (_r, store) = open_store(root)?;
    let target = Reference::parse(target).ctx(|| format!("invalid target `{target}`"))?;
    store.tag(source, &target).map_err(BuildError::other)?;
    Ok(())
}

/// `kiln rmi NAME`: removes one image (name or id); the names it untagged, familiar.
pub fn remove_image(root: &Path, name: &str) -> Result<Vec<String>> {
    let (_r, store) = open_store(root)?;
    let removed = store.remove(name).map_err(BuildError::other)?;
    Ok(removed
        .into_iter()
        .map(|r| Reference::parse(&r).map(|x| x.familiar()).unwrap_or(r))
        .collect())
}

/// `kiln inspect`: the JSON array printed for `names` (`Id`, `RepoTags`,
/// `ManifestDigest`, `Manifest`, `Config` per image).
pub fn inspect(root: &Path, names: &[String]) -> Result<serde_json::Value> {
    let (_r, store) = open_store(root)?;
    let mut out = Vec::new();
    for name in names {
        let img = store.resolve(name).map_err(BuildError::other)?;
        let (m, c) = config(&store, &img)?;
        let tags: Vec<String> = store
            .list()
            .map_err(BuildError::other)?
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
        if let Some(index) = store.index(&img).map_err(BuildError::other)? {
            entry["Attestations"] = attestations(&store, &index)?;
            entry["Index"] = serde_json::to_value(&index).map_err(BuildError::other)?;
        }
        out.push(entry);
    }
    Ok(serde_json::Value::Array(out))
}

/// The attestations an image index holds: per attestation manifest, the image it is
/// about and each statement's predicate type, digest and size.
fn attestations(store: &kiln_cache::ImageStore, index: &kiln_image::Index) -> Result<serde_json::Value> {
    use crate::attest::layout;
    let mut out = Vec::new();
    for d in index.manifests.iter().filter(|d| layout::is_attestation(d)) {
        let bytes = store.blobs().read_all(&d.digest).map_err(BuildError::other)?;
        let m: kiln_image::Manifest = serde_json::from_slice(&bytes).map_err(BuildError::other)?;
        let statements: Vec<serde_json::Value> = m
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "PredicateType": l.annotations.get(layout::PREDICATE_TYPE_ANNOTATION),
                    "Digest": l.digest,
                    "Size": l.size,
                })
            })
            .collect();
        out.push(serde_json::json!({
            "Digest": d.digest,
            "ReferenceDigest": d.annotations.get(layout::REFERENCE_DIGEST_ANNOTATION),
            "Statements": statements,
        }));
    }
    Ok(serde_json::Value::Array(out))
}

/// The archive format of `kiln save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// docker-archive, as `docker save`.
    Docker,
    /// oci-archive.
    Oci,
}

/// `kiln save`: writes the images `names` to `dest` as one archive. Saving by name
/// carries that name; by id, every tag of the image.
pub fn save(root: &Path, names: &[String], format: SaveFormat, dest: &Dest) -> Result<()> {
    let (_r, store) = open_store(root)?;
    let mut images = Vec::new();
    for name in names {
        let img = store.resolve(name).map_err(BuildError::other)?;
        let m = store.manifest(&img).map_err(BuildError::other)?;
        let names: Vec<Reference> = match Reference::parse(name).ok().filter(|n| img.name.as_ref() == Some(n)) {
            Some(n) => vec![n],
            None => store
                .list()
                .map_err(BuildError::other)?
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
            extra: store.index_blobs(&img).map_err(BuildError::other)?,
            names,
        });
    }
    if matches!(dest, Dest::Stdout) && is_terminal_stdout() {
        bail!("refusing to write an archive to a terminal; use -o FILE or redirect stdout");
    }
    // The store's own blobs: they are there for as long as the image is.
    let content = store.blobs().clone();
    write_dest(dest, "the archive", |w| {
        match format {
            SaveFormat::Docker => kiln_exporter::write_docker_archive(w, &content, &images),
            SaveFormat::Oci => kiln_exporter::write_oci_archive(w, &content, &images),
        }
        .map_err(BuildError::other)?;
        Ok(())
    })
}

fn is_terminal_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

/// What `kiln pull` fetched.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference pinned to the manifest's digest, familiar.
    pub pinned: String,
    /// How many layers the image has.
    pub layers: usize,
    /// The image id (its config's digest).
    pub id: Digest,
}

/// `kiln pull IMAGE`: always asks the registry, as `docker pull` does; the client as
/// [`registry_client`] makes it from `insecure` and `tls_ca`.
pub fn pull(
    root: &Path,
    image: &str,
    platform: Option<&str>,
    insecure: Vec<String>,
    tls_ca: Option<&Path>,
) -> Result<Pulled> {
    let (r, _store) = open_store(root)?;
    let reference = Reference::parse(image).ctx(|| format!("invalid image `{image}`"))?;
    let platform = match platform {
        Some(p) => match Platform::parse(p) {
            Some(p) => p,
            None => bail!("invalid --platform `{p}`: expected os/arch[/variant]"),
        },
        None => Platform::host(),
    };
    let client = Arc::new(registry_client(insecure, tls_ca)?);
    let source = kiln_worker::ImageSource::new(r.clone(), Some(client), kiln_worker::PullPolicy::Always);
    let (img, layers) = source
        .pull(&reference.to_string(), &platform)
        .map_err(BuildError::other)?;
    Ok(Pulled {
        pinned: img.pinned.familiar(),
        layers: layers.len(),
        id: img.parsed.config.digest.clone(),
    })
}

/// A registry client with the `--insecure-registry` hosts and `--tls-ca` roots, and
/// the deadline `$KILN_REGISTRY_TIMEOUT` (seconds) when set.
pub fn registry_client(insecure: Vec<String>, tls_ca: Option<&Path>) -> Result<kiln_registry::Client> {
    let mut client = kiln_registry::Client::new(insecure);
    if let Some(v) = std::env::var_os("KILN_REGISTRY_TIMEOUT") {
        let text = v.to_string_lossy();
        let Some(secs) = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        else {
            bail!("invalid KILN_REGISTRY_TIMEOUT `{text}`: expected a number of seconds between 0 and 86400");
        };
        client = client.with_timeout(std::time::Duration::from_secs_f64(secs));
    }
    match tls_ca {
        None => Ok(client),
        Some(p) => {
            let pem = std::fs::read(p).ctx(|| format!("cannot read --tls-ca `{}`", p.display()))?;
            match client.with_tls_ca(&pem) {
                Ok(c) => Ok(c),
                Err(e) => bail!("invalid --tls-ca `{}`: {e}", p.display()),
            }
        }
    }
}
