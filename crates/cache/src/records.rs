//! The build cache index: one record per cache key (`cache-v1/<hex>.json`), written
//! atomically, holding what the step produced (the worker decides the format). A hit
//! touches the record's mtime, which is what least-recently-used pruning reads.

use std::path::PathBuf;

use kiln_image::Digest;

use crate::store::write_atomic;
use crate::CacheError;

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

    /// The record stored under `key`, if any (and marks it used).
    pub fn get(&self, key: &Digest) -> Option<Vec<u8>> {
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
        Some(bytes)
    }

    /// Stores `bytes` under `key`, replacing any previous record.
    pub fn put(&self, key: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(CacheError::io("cannot create directory", &self.dir))?;
        write_atomic(&self.tmp, &self.path(key), bytes)
    }

    /// Removes the record under `key` (a record whose blobs are gone).
    pub fn remove(&self, key: &Digest) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Every record: key, last use, bytes (unreadable or misnamed files are skipped).
    pub fn list(&self) -> Vec<(Digest, std::time::SystemTime, Vec<u8>)> {
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
            out.push((key, md.modified().unwrap_or(std::time::UNIX_EPOCH), bytes));
        }
        out
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
