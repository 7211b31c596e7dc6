//! Sharing the build cache between roots and machines: `--cache-to` writes this build's
//! cache records (key → layer chain) with their layer blobs to a directory (an OCI
//! layout) or to a registry (an OCI image manifest whose config is kiln's cache index
//! and whose layers are the blobs, which any registry v2 stores); `--cache-from` reads
//! them back, fetching a record's blobs only when the record is hit.
//!
//! The format, the directory transport and the choice of records are the store's
//! (`kiln_cache::ExportedCache`); what is here needs the registry client or the layer
//! verifier, which sit above the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use kiln_cache::{CacheMode, CACHE_MEDIA_TYPE};
use kiln_cache::{ExportedCache, ExportedRecord};
use kiln_image::{media_types, Descriptor, Digest, Manifest, Platform, Reference};
use kiln_registry::Client;
use kiln_snapshotter::Layer;

use crate::images::{DiffIdCheck, VerifiedDiffIds};
use crate::{Worker, WorkerError};

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

impl ImportedCache {
    /// Reads the cache exported into `dir` (an OCI layout holding kiln's cache index).
    pub fn open(dir: &Path) -> Result<Self, String> {
        Ok(ImportedCache {
            records: ExportedCache::read_dir(dir)?,
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
            records: ExportedCache::parse(&resolved.config_bytes, &reference)?,
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
                        .import(&ExportedCache::dir_blob(dir, &blob.digest), &blob.digest)
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
            self.root.adopt_record(key, rec);
            return Some(rec.layers.clone());
        }
        None
    }

    /// Writes this build's cache records with their blobs to `target` (`mode=min`: those
    /// in any of the `finals`, one per platform); returns how many records were written.
    pub fn export_cache(
        &self,
        target: &CacheTarget,
        client: Option<&Client>,
        mode: CacheMode,
        finals: &[&[Layer]],
    ) -> Result<usize, WorkerError> {
        let used = self.used.lock().expect("used lock").clone();
        let records = ExportedCache::select(&used, mode, finals, &self.root.layers()).records;
        let n = records.len();
        match target {
            CacheTarget::Dir(dest) => ExportedCache { records }.write_dir(&self.root.content(), dest)?,
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
}
