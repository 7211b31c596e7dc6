//! Sharing the build cache between roots and machines: `--cache-to` writes this build's
//! cache records (key → layer chain) with their layer blobs to a directory (an OCI
//! layout) or to a registry (an OCI image manifest whose config is kiln's cache index
//! and whose layers are the blobs, which any registry v2 stores); `--cache-from` reads
//! them back, fetching a record's blobs only when the record is hit.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_image::{media_types, Descriptor, Digest, Manifest, Platform, Reference};
use kiln_registry::Client;
use kiln_snapshotter::Layer;
use serde::{Deserialize, Serialize};

use crate::images::{DiffIdCheck, VerifiedDiffIds};
use crate::{Worker, WorkerError};

/// Media type of kiln's exported cache index blob.
pub const CACHE_MEDIA_TYPE: &str = "application/vnd.kiln.cache.v1+json";

/// One exported cache record: the key, the layer chain, and each layer's first
/// creation time (so an importing root writes the same image history).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub key: Digest,
    pub layers: Vec<Layer>,
    pub created: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ExportedCache {
    records: Vec<ExportedRecord>,
}

/// Where an exported cache lives.
#[derive(Debug)]
enum Source {
    /// `type=local,src=DIR`: an OCI layout.
    Dir(PathBuf),
    /// `type=registry,ref=REF`: blobs fetched from that repository when needed.
    Registry { client: Arc<Client>, reference: Reference },
}

/// A cache given with `--cache-from`.
#[derive(Debug)]
pub struct ImportedCache {
    source: Source,
    records: HashMap<Digest, ExportedRecord>,
}

/// Which records `--cache-to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the steps whose results are in the final image.
    Min,
    /// Every step of the build, all stages.
    Max,
}

fn parse_cache(bytes: &[u8], what: &dyn std::fmt::Display) -> Result<HashMap<Digest, ExportedRecord>, String> {
    let cache: ExportedCache = serde_json::from_slice(bytes).map_err(|e| format!("{what}: {e}"))?;
    Ok(cache.records.into_iter().map(|r| (r.key.clone(), r)).collect())
}

impl ImportedCache {
    /// Reads the cache exported into `dir` (an OCI layout holding kiln's cache index).
    pub fn open(dir: &Path) -> Result<Self, String> {
        let index: kiln_image::Index = std::fs::read(dir.join("index.json"))
            .map_err(|e| format!("cannot read {}: {e}", dir.join("index.json").display()))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", dir.join("index.json").display()))
            })?;
        let desc = index
            .manifests
            .iter()
            .find(|d| d.media_type == CACHE_MEDIA_TYPE)
            .ok_or_else(|| format!("{} holds no kiln cache", dir.display()))?;
        let blob = dir.join("blobs/sha256").join(desc.digest.hex());
        let bytes = std::fs::read(&blob).map_err(|e| format!("cannot read {}: {e}", blob.display()))?;
        if Digest::of(&bytes) != desc.digest {
            return Err(format!("{} is corrupt", blob.display()));
        }
        Ok(ImportedCache {
            records: parse_cache(&bytes, &blob.display())?,
            source: Source::Dir(dir.to_path_buf()),
        })
    }

    /// Reads the cache pushed to `reference`: the manifest and its config (the cache
    /// index) now, layer blobs when a record is used.
    pub fn from_registry(client: Arc<Client>, reference: Reference) -> Result<Self, String> {
        let resolved = client
            .resolve(&reference, &Platform::host())
            .map_err(|e| e.to_string())?;
        if resolved.parsed.config.media_type != CACHE_MEDIA_TYPE {
            return Err(format!(
                "`{reference}` is not a kiln cache (its config is `{}`)",
                resolved.parsed.config.media_type
            ));
        }
        Ok(ImportedCache {
            records: parse_cache(&resolved.config_bytes, &reference)?,
            source: Source::Registry { client, reference },
        })
    }

    /// Makes `layer`'s blob present in `content`, from this cache, and checks that it
    /// is the layer's diff id (an imported cache is as untrusted as a base image): while
    /// it downloads, or by one read when it is not yet known. `false` is a cache miss.
    fn fetch(&self, layer: &Layer, content: &kiln_cache::ContentStore, verified: &VerifiedDiffIds) -> bool {
        let blob = &layer.blob;
        let ok = if content.has(&blob.digest) {
            verified.get(&blob.digest).as_ref() == Some(&layer.diff_id)
                || kiln_snapshotter::verify_layer(content, layer).is_ok()
        } else {
            match &self.source {
                Source::Dir(dir) => {
                    content
                        .import(&dir.join("blobs/sha256").join(blob.digest.hex()), &blob.digest)
                        .is_ok()
                        && kiln_snapshotter::verify_layer(content, layer).is_ok()
                }
                Source::Registry { client, reference } => match DiffIdCheck::new(layer) {
                    Ok(mut check) => client
                        .fetch_blob_checked(reference, blob, content, &mut |_| {}, &mut check)
                        .is_ok(),
                    Err(_) => false,
                },
            }
        };
        if ok {
            verified.put(&blob.digest, &layer.diff_id);
        }
        ok
    }
}

/// Where `--cache-to` writes.
#[derive(Debug, Clone)]
pub enum CacheTarget {
    Dir(PathBuf),
    Registry(Reference),
}

impl Worker {
    /// Lets cache misses look into exported caches.
    pub fn with_cache_from(mut self, imported: Vec<ImportedCache>) -> Self {
        self.imported = imported;
        self
    }

    /// A record from an imported cache: its blobs are copied or downloaded (and
    /// verified) into the content store and the record is kept locally.
    pub(crate) fn load_imported(&self, key: &Digest) -> Option<Vec<Layer>> {
        let content = self.root.content();
        for imp in &self.imported {
            let Some(rec) = imp.records.get(key) else { continue };
            let verified = VerifiedDiffIds::new(&self.root);
            if !rec.layers.iter().all(|l| imp.fetch(l, &content, &verified)) {
                continue;
            }
            let layer_records = self.root.layers();
            for (l, t) in rec.layers.iter().zip(&rec.created) {
                let _ = layer_records.add(&l.diff_id, l.blob.clone(), t);
            }
            let _ = self.root.cache_records().put(key, &rec.layers);
            return Some(rec.layers.clone());
        }
        None
    }

    /// This build's cache records: all of them, or only those in `final_layers`' chain.
    fn records_to_export(&self, mode: CacheMode, final_layers: &[Layer]) -> Vec<ExportedRecord> {
        let used = self.used.lock().expect("used lock").clone();
        let layer_records = self.root.layers();
        let mut records = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, layers) in used {
            let in_final = layers.len() <= final_layers.len()
                && layers
                    .iter()
                    .zip(final_layers)
                    .all(|(a, b)| a.blob.digest == b.blob.digest);
            if (mode == CacheMode::Min && !in_final) || !seen.insert(key.clone()) {
                continue;
            }
            let created = layers
                .iter()
                .map(|l| layer_records.get(&l.diff_id).map(|r| r.created).unwrap_or_default())
                .collect();
            records.push(ExportedRecord {
                key,
                layers: layers.as_ref().clone(),
                created,
            });
        }
        records
    }

    /// Writes this build's cache records with their blobs to `target`; returns how many
    /// records were written.
    pub fn export_cache(
        &self,
        target: &CacheTarget,
        client: Option<&Client>,
        mode: CacheMode,
        final_layers: &[Layer],
    ) -> Result<usize, WorkerError> {
        let records = self.records_to_export(mode, final_layers);
        let n = records.len();
        match target {
            CacheTarget::Dir(dest) => self.export_to_dir(dest, records)?,
            CacheTarget::Registry(reference) => {
                let client = client.ok_or_else(|| WorkerError::Malformed("no registry client".to_string()))?;
                self.export_to_registry(client, reference, records)?
            }
        }
        Ok(n)
    }

    fn export_to_registry(
        &self,
        client: &Client,
        reference: &Reference,
        records: Vec<ExportedRecord>,
    ) -> Result<(), WorkerError> {
        let content = self.root.content();
        let mut blobs: Vec<Descriptor> = Vec::new();
        for r in &records {
            for l in &r.layers {
                if !blobs.iter().any(|b| b.digest == l.blob.digest) {
                    blobs.push(l.blob.clone());
                }
            }
        }
        let bytes = serde_json::to_vec(&ExportedCache { records }).expect("cache serialises");
        let config = content.put_bytes(CACHE_MEDIA_TYPE, &bytes)?;
        let manifest = Manifest::oci(config.clone(), blobs.clone());
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
        let manifest = content.put_bytes(media_types::OCI_MANIFEST, &manifest_bytes)?;
        blobs.push(config);
        client.push(reference, &content, &manifest, &blobs, &|_| Vec::new(), &|_, _| {})?;
        Ok(())
    }

    fn export_to_dir(&self, dest: &Path, records: Vec<ExportedRecord>) -> Result<(), WorkerError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| WorkerError::Io { path: p, source }
        };
        let blobs = dest.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let content = self.root.content();
        let put = |digest: &Digest, from: Option<&Path>, bytes: Option<&[u8]>| -> Result<(), WorkerError> {
            let target = blobs.join(digest.hex());
            if target.is_file() {
                return Ok(());
            }
            let tmp = blobs.join(format!(".tmp-{}", digest.hex()));
            match (from, bytes) {
                (Some(src), _) => {
                    if std::fs::hard_link(src, &tmp).is_err() {
                        std::fs::copy(src, &tmp).map_err(io(src))?;
                    }
                }
                (None, Some(b)) => std::fs::write(&tmp, b).map_err(io(&tmp))?,
                _ => return Ok(()),
            }
            std::fs::rename(&tmp, &target).map_err(io(&target))
        };
        for r in &records {
            for l in &r.layers {
                put(&l.blob.digest, Some(&content.blob_path(&l.blob.digest)), None)?;
            }
        }
        let bytes = serde_json::to_vec_pretty(&ExportedCache { records }).expect("cache serialises");
        let digest = Digest::of(&bytes);
        put(&digest, None, Some(&bytes))?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": CACHE_MEDIA_TYPE, "digest": digest, "size": bytes.len()}]
        });
        let layout = dest.join("oci-layout");
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&layout))?;
        let tmp = dest.join(".index.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&index).expect("index")).map_err(io(&tmp))?;
        std::fs::rename(&tmp, dest.join("index.json")).map_err(io(dest))?;
        Ok(())
    }
}
