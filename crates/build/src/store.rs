//! The local store commands as a library: listing, tagging, removing, inspecting,
//! saving and pulling images (`kiln images`, `tag`, `rmi`, `inspect`, `save`, `pull`),
//! `login`/`logout`, and the registry client every command that talks to a registry
//! shares; the lines `kiln images` prints (its table, ages and sizes). The CLI declares
//! their flags and prints what these return.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error is wrapped with the path in its message (`ctx`, `BuildError::Message`)"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_cache::{ImageStore, KilnRoot, StoredImage};
use kiln_exporter::ArchiveImage;
use kiln_image::{Digest, ImageConfig, Manifest, Platform, Reference};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

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

/// `kiln images`' lines: a header and a row per image (repository, tag, id, created,
/// size) in columns, as `docker images`; `quiet`: each image id once; `no_trunc`: full
/// ids. `now` is what `created` is shown relative to.
pub fn image_lines(images: Vec<ImageRow>, no_trunc: bool, quiet: bool, now: OffsetDateTime) -> Vec<String> {
    let mut rows = Vec::new();
    for img in images {
        let id = if no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        rows.push([
            img.repository,
            img.tag,
            id,
            ago(img.created.as_deref(), now),
            human_size(img.size),
        ]);
    }
    if quiet {
        let mut seen = std::collections::BTreeSet::new();
        return rows
            .into_iter()
            .filter_map(|[_, _, id, _, _]| seen.insert(id.clone()).then_some(id))
            .collect();
    }
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|r| {
            let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
            line.join("   ").trim_end().to_string()
        })
        .collect()
}

/// How long before `now` an RFC 3339 time was, as `docker images` says it (`N/A` for
/// none or one it cannot read).
pub fn ago(created: Option<&str>, now: OffsetDateTime) -> String {
    let Some(t) = created.and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok()) else {
        return "N/A".into();
    };
    let secs = (now - t).whole_seconds().max(0);
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

/// A size in decimal units with up to three decimals, as `docker images` (`5.59MB`).
pub fn human_size(n: u64) -> String {
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

/// `kiln login`: stores `username` and the password (given, else read from stdin
/// when `password_stdin`) as `docker login` does, an `auths` entry in the docker
/// config; they are checked on first use, not here. Returns the config file's path.
pub fn login(registry: &str, username: String, password: Option<String>, password_stdin: bool) -> Result<PathBuf> {
    let password = match (password, password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .ctx(|| "cannot read the password from stdin".to_string())?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give a password with --password-stdin (or -p)"),
    };
    if password.is_empty() {
        bail!("empty password for `{registry}`");
    }
    let creds = kiln_registry::creds::Credentials { username, password };
    kiln_registry::creds::store(registry, Some(&creds)).map_err(BuildError::Message)
}

/// `kiln logout`: removes the registry's entry from the docker config; returns its path.
pub fn logout(registry: &str) -> Result<PathBuf> {
    kiln_registry::creds::store(registry, None).map_err(BuildError::Message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_lines_are_dockers_columns_ages_and_sizes() {
        let now = OffsetDateTime::parse("2026-03-01T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(ago(Some("2026-03-01T11:59:30Z"), now), "Less than a minute ago");
        assert_eq!(ago(Some("2026-03-01T11:00:00Z"), now), "1 hour ago");
        assert_eq!(ago(Some("2026-02-01T12:00:00Z"), now), "4 weeks ago");
        assert_eq!(ago(Some("not a time"), now), "N/A");
        assert_eq!(ago(None, now), "N/A");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(5_590_000), "5.59MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        let id: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let row = |repository: &str| ImageRow {
            repository: repository.into(),
            tag: "latest".into(),
            id: id.clone(),
            created: None,
            size: 1234,
        };
        let rows = vec![row("alpine"), row("localhost:5000/alpine")];
        assert_eq!(
            image_lines(rows.clone(), false, false, now),
            [
                "REPOSITORY              TAG      IMAGE ID       CREATED   SIZE",
                "alpine                  latest   abababababab   N/A       1.234kB",
                "localhost:5000/alpine   latest   abababababab   N/A       1.234kB",
            ]
        );
        assert_eq!(image_lines(rows, false, true, now), ["abababababab"]);
    }
}
