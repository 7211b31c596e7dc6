#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::path::PathBuf;

use kiln_image::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::store::write_atomic;
use crate::CacheError;

/// LayerRecord says what a layer (by diff id) was compressed to and when it was first made.
///
/// The creation time is what image history shows for the step, so a rebuild that makes
/// the same layer again gets the same history time and the same image digest (as
/// BuildKit takes history times from its cache records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: Digest,
    /// RFC 3339, UTC.
    pub created: String,
    /// Compressed forms of this layer, each a blob in the content store.
    pub blobs: Vec<Descriptor>,
}

/// LayerRecords stores one JSON record per diff id.
#[derive(Debug, Clone)]
pub struct LayerRecords {
    dir: PathBuf,
    tmp: PathBuf,
}

impl LayerRecords {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        LayerRecords { dir, tmp }
    }

    fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", diff_id.hex()))
    }

    /// The record for `diff_id`, if any; a corrupt record reads as absent.
    pub fn get(&self, diff_id: &Digest) -> Option<LayerRecord> {
        let bytes = std::fs::read(self.path(diff_id)).ok()?;
        serde_json::from_slice::<LayerRecord>(&bytes)
            .ok()
            .filter(|r| r.diff_id == *diff_id)
    }

    /// Every file in the records directory with its record; `None` when it does not
    /// parse (for prune and fsck, which drop such files).
    pub fn list(&self) -> Vec<(PathBuf, Option<LayerRecord>)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| {
                let rec = std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok());
                (e.path(), rec)
            })
            .collect()
    }

    /// Removes the record file at `path` (one [`LayerRecords::list`] returned);
    /// returns whether it was removed.
    pub fn remove(&self, path: &std::path::Path) -> bool {
        path.parent() == Some(self.dir.as_path()) && std::fs::remove_file(path).is_ok()
    }

    /// Records a compressed blob for a layer; keeps the first creation time seen.
    pub fn add(&self, diff_id: &Digest, blob: Descriptor, created: &str) -> Result<LayerRecord, CacheError> {
        let mut rec = self.get(diff_id).unwrap_or_else(|| LayerRecord {
            diff_id: diff_id.clone(),
            created: created.to_string(),
            blobs: Vec::new(),
        });
        if !rec.blobs.iter().any(|b| b.digest == blob.digest) {
            rec.blobs.push(blob);
            let bytes = serde_json::to_vec_pretty(&rec).expect("records serialise");
            write_atomic(&self.tmp, &self.path(diff_id), &bytes)?;
        }
        Ok(rec)
    }
}
