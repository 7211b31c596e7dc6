//! The build cache index: one record per cache key (`cache-v1/<hex>.json`), written
//! atomically, holding the layers the step produced (a JSON array of [`Layer`]). A hit
//! touches the record's mtime, which is what least-recently-used pruning reads.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::path::PathBuf;
use std::time::SystemTime;

use kiln_image::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::store::write_atomic;
use crate::CacheError;

/// Layer is one filesystem change set: its uncompressed digest and its stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

/// CacheRecord is one entry of the build cache as listed for prune, `du` and fsck.
#[derive(Debug, Clone)]
pub struct CacheRecord {
    pub key: Digest,
    /// When a build last used (or made) it.
    pub used: SystemTime,
    /// The step's layers, bottom first; `None` when the file does not parse.
    pub layers: Option<Vec<Layer>>,
}

/// CacheRecords maps cache keys to step results.
#[derive(Debug, Clone)]
pub struct CacheRecords {
    dir: PathBuf,
    tmp: PathBuf,
}

impl CacheRecords {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        CacheRecords { dir, tmp }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The layers stored under `key`, if any and readable (and marks the record used).
    pub fn get(&self, key: &Digest) -> Option<Vec<Layer>> {
        let p = self.path(key);
        let bytes = std::fs::read(&p).ok()?;
        let now = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        let _ = rustix::fs::utimensat(rustix::fs::CWD, &p, &now, rustix::fs::AtFlags::empty());
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores `layers` under `key`, replacing any previous record.
    pub fn put(&self, key: &Digest, layers: &[Layer]) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(CacheError::io("cannot create directory", &self.dir))?;
        let bytes = serde_json::to_vec(layers).expect("layers serialise");
        write_atomic(&self.tmp, &self.path(key), &bytes)
    }

    /// Removes the record under `key` (a record whose blobs are gone).
    pub fn remove(&self, key: &Digest) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Every record, parsed (unreadable or misnamed files are skipped; see
    /// [`CacheRecords::strays`]).
    pub fn list(&self) -> Vec<CacheRecord> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(key) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            let (Ok(md), Ok(bytes)) = (e.metadata(), std::fs::read(e.path())) else {
                continue;
            };
            out.push(CacheRecord {
                key,
                used: md.modified().unwrap_or(std::time::UNIX_EPOCH),
                layers: serde_json::from_slice(&bytes).ok(),
            });
        }
        out
    }

    /// Removes a file [`CacheRecords::strays`] returned; returns whether it was removed.
    pub fn remove_stray(&self, path: &std::path::Path) -> bool {
        path.parent() == Some(self.dir.as_path()) && std::fs::remove_file(path).is_ok()
    }

    /// Files in the index directory that are not records (for fsck).
    pub fn strays(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.strip_suffix(".json")
                    .is_none_or(|h| format!("sha256:{h}").parse::<Digest>().is_err())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::{KilnRoot, Layer};

    #[test]
    fn records_list_typed_and_strays_are_removed_only_from_the_index() {
        let d = tempfile::tempdir().unwrap();
        let root = KilnRoot::open(d.path()).unwrap();
        let blob = root.content().put_bytes("application/octet-stream", b"x").unwrap();
        let layers = vec![Layer {
            diff_id: blob.digest.clone(),
            blob,
        }];
        let cache = root.cache_records();
        let key = kiln_image::Digest::of(b"key");
        cache.put(&key, &layers).unwrap();
        let bad = kiln_image::Digest::of(b"bad");
        let dir = root.bucket(crate::Bucket::Cache);
        std::fs::write(dir.join(format!("{}.json", bad.hex())), b"not json").unwrap();
        std::fs::write(dir.join("junk"), b"").unwrap();

        let mut listed = cache.list();
        listed.sort_by_key(|r| r.layers.is_none());
        assert_eq!(listed.len(), 2);
        assert_eq!((&listed[0].key, listed[0].layers.as_ref()), (&key, Some(&layers)));
        assert_eq!((&listed[1].key, listed[1].layers.as_ref()), (&bad, None));
        assert_eq!(cache.get(&key), Some(layers));
        assert_eq!(cache.get(&bad), None, "a record that does not parse is a miss");

        assert_eq!(cache.strays(), [dir.join("junk")]);
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"").unwrap();
        assert!(!cache.remove_stray(&outside), "only files of the index");
        assert!(outside.exists());
        assert!(cache.remove_stray(&dir.join("junk")));
        assert!(cache.strays().is_empty());
    }
}
