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
}
