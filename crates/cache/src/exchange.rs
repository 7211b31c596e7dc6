//! The build cache's exchange format, for `--cache-to`/`--cache-from`: a list of
//! records (key → layer chain, with each layer's first creation time) serialised as
//! one JSON blob of media type [`CACHE_MEDIA_TYPE`]. In a directory it is the only
//! manifest of an OCI layout whose blobs are the layers; in a registry it is the config
//! of an OCI image manifest whose layers are the blobs (that transport, which needs the
//! registry client, is the worker's).

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use kiln_image::Digest;
use serde::{Deserialize, Serialize};

use crate::{CacheError, ContentStore, KilnRoot, Layer, LayerRecords};

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

/// ExportedCache is the cache index blob: every exported record.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExportedCache {
    pub records: Vec<ExportedRecord>,
}

/// Which records `--cache-to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Only the steps whose results are in the final image.
    Min,
    /// Every step of the build, all stages.
    Max,
}

impl ExportedCache {
    /// The records of a cache index blob, by key; `what` names the blob in the error.
    pub fn parse(bytes: &[u8], what: &dyn std::fmt::Display) -> Result<HashMap<Digest, ExportedRecord>, String> {
        let cache: ExportedCache = serde_json::from_slice(bytes).map_err(|e| format!("{what}: {e}"))?;
        Ok(cache.records.into_iter().map(|r| (r.key.clone(), r)).collect())
    }

    /// The records of the cache exported into `dir` (an OCI layout holding kiln's
    /// cache index), checked against the index blob's digest.
    pub fn read_dir(dir: &Path) -> Result<HashMap<Digest, ExportedRecord>, String> {
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
        Self::parse(&bytes, &blob.display())
    }

    /// Where a layer of a cache exported into `dir` is.
    pub fn dir_blob(dir: &Path, digest: &Digest) -> std::path::PathBuf {
        dir.join("blobs/sha256").join(digest.hex())
    }

    /// Writes these records, with their layer blobs from `content`, into `dest` as an
    /// OCI layout (blobs hard-linked when they can be; `index.json` renamed into place
    /// last, so a reader sees the old cache or the new).
    pub fn write_dir(self, content: &ContentStore, dest: &Path) -> Result<(), CacheError> {
        let blobs = dest.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(CacheError::io("cannot create directory", &blobs))?;
        let put = |digest: &Digest, from: Option<&Path>, bytes: Option<&[u8]>| -> Result<(), CacheError> {
            let target = blobs.join(digest.hex());
            if target.is_file() {
                return Ok(());
            }
            let tmp = blobs.join(format!(".tmp-{}", digest.hex()));
            match (from, bytes) {
                (Some(src), _) => {
                    if std::fs::hard_link(src, &tmp).is_err() {
                        std::fs::copy(src, &tmp).map_err(CacheError::io("cannot copy", src))?;
                    }
                }
                (None, Some(b)) => std::fs::write(&tmp, b).map_err(CacheError::io("cannot write", &tmp))?,
                _ => return Ok(()),
            }
            std::fs::rename(&tmp, &target).map_err(CacheError::io("cannot rename into place", &target))
        };
        for r in &self.records {
            for l in &r.layers {
                put(&l.blob.digest, Some(&content.blob_path(&l.blob.digest)), None)?;
            }
        }
        let bytes = serde_json::to_vec_pretty(&self).expect("cache serialises");
        let digest = Digest::of(&bytes);
        put(&digest, None, Some(&bytes))?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": CACHE_MEDIA_TYPE, "digest": digest, "size": bytes.len()}]
        });
        let layout = dest.join("oci-layout");
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(CacheError::io("cannot write", &layout))?;
        let tmp = dest.join(".index.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&index).expect("index"))
            .map_err(CacheError::io("cannot write", &tmp))?;
        std::fs::rename(&tmp, dest.join("index.json")).map_err(CacheError::io("cannot rename into place", dest))
    }

    /// The records to export from the ones a build `used` (key → layers, in order of
    /// use): all of them, or only those in `final_layers`' chain; each key once.
    pub fn select(
        used: &[(Digest, Arc<Vec<Layer>>)],
        mode: CacheMode,
        finals: &[&[Layer]],
        layer_records: &LayerRecords,
    ) -> ExportedCache {
        let mut records = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, layers) in used {
            // In any platform's final image (a multi-platform build has one each).
            let in_final = finals.iter().any(|final_layers| {
                layers.len() <= final_layers.len()
                    && layers
                        .iter()
                        .zip(final_layers.iter())
                        .all(|(a, b)| a.blob.digest == b.blob.digest)
            });
            if (mode == CacheMode::Min && !in_final) || !seen.insert(key.clone()) {
                continue;
            }
            let created = layers
                .iter()
                .map(|l| layer_records.get(&l.diff_id).map(|r| r.created).unwrap_or_default())
                .collect();
            records.push(ExportedRecord {
                key: key.clone(),
                layers: layers.as_ref().clone(),
                created,
            });
        }
        ExportedCache { records }
    }
}

impl KilnRoot {
    /// Keeps an imported record locally (its blobs must already be in the content
    /// store, verified): its layer records (with the exported creation times) and its
    /// cache record. Best effort: a failure only costs a later import.
    pub fn adopt_record(&self, key: &Digest, rec: &ExportedRecord) {
        let layer_records = self.layers();
        for (l, t) in rec.layers.iter().zip(&rec.created) {
            let _ = layer_records.add(&l.diff_id, l.blob.clone(), t);
        }
        let _ = self.cache_records().put(key, &rec.layers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer whose blob (`bytes`) is in `root`'s content store.
    fn layer(root: &KilnRoot, bytes: &[u8]) -> Layer {
        let blob = root
            .content()
            .put_bytes("application/vnd.oci.image.layer.v1.tar", bytes)
            .unwrap();
        Layer {
            diff_id: blob.digest.clone(),
            blob,
        }
    }

    #[test]
    fn a_cache_written_to_a_directory_reads_back_and_min_keeps_the_final_chain() {
        let d = tempfile::tempdir().unwrap();
        let root = KilnRoot::open(d.path().join("root")).unwrap();
        let (a, b, side) = (layer(&root, b"a"), layer(&root, b"b"), layer(&root, b"side"));
        root.layers()
            .add(&a.diff_id, a.blob.clone(), "2020-01-01T00:00:00Z")
            .unwrap();
        let k = |s: &str| Digest::of(s.as_bytes());
        let used = vec![
            (k("1"), Arc::new(vec![a.clone()])),
            (k("2"), Arc::new(vec![a.clone(), b.clone()])),
            (k("3"), Arc::new(vec![side.clone()])),
            (k("1"), Arc::new(vec![a.clone()])),
        ];
        let final_layers = [a.clone(), b.clone()];
        let min = ExportedCache::select(&used, CacheMode::Min, &[&final_layers], &root.layers());
        let keys: Vec<_> = min.records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, [k("1"), k("2")]);
        assert_eq!(min.records[0].created, ["2020-01-01T00:00:00Z"]);
        let max = ExportedCache::select(&used, CacheMode::Max, &[&final_layers], &root.layers());
        assert_eq!(max.records.len(), 3, "each key once");

        let dest = d.path().join("exported");
        max.write_dir(&root.content(), &dest).unwrap();
        let back = ExportedCache::read_dir(&dest).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[&k("3")].layers, std::slice::from_ref(&side));
        assert!(ExportedCache::dir_blob(&dest, &side.blob.digest).is_file());

        // Adopted into a fresh root: its cache record and layer record.
        let fresh = KilnRoot::open(d.path().join("fresh")).unwrap();
        fresh.adopt_record(&k("1"), &back[&k("1")]);
        assert_eq!(fresh.cache_records().get(&k("1")), Some(vec![a.clone()]));
        assert_eq!(
            fresh.layers().get(&a.diff_id).map(|r| r.created),
            Some("2020-01-01T00:00:00Z".to_string())
        );

        // A tampered index blob is refused.
        let index: kiln_image::Index =
            serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
        std::fs::write(ExportedCache::dir_blob(&dest, &index.manifests[0].digest), b"{}").unwrap();
        assert!(ExportedCache::read_dir(&dest).unwrap_err().contains("is corrupt"));
    }
}
