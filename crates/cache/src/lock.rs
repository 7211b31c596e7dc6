#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::fs::File;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::CacheError;

/// LockKind is shared (builds) or exclusive (GC, repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// RootLock holds an flock on a lock file until dropped.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

impl RootLock {
    /// Blocks until the lock on `path` is held.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<Self, CacheError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(CacheError::io("cannot open lock file", path))?;
        let op = match kind {
            LockKind::Shared => FlockOperation::LockShared,
            LockKind::Exclusive => FlockOperation::LockExclusive,
        };
        flock(&file, op).map_err(|e| CacheError::Io {
            op: "cannot lock",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(RootLock { _file: file })
    }

    /// Takes a shared lock for a build; when no other kiln holds the root, first sweeps
    /// `tmp` of what an interrupted build left behind (upper directories, partial blobs).
    pub fn shared_after_sweep(path: &Path, tmp: &Path) -> Result<Self, CacheError> {
        let lock = Self::acquire(path, LockKind::Shared)?;
        if flock(&lock._file, FlockOperation::NonBlockingLockExclusive).is_ok() {
            if let Ok(entries) = std::fs::read_dir(tmp) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
        // flock converts a lock by dropping it first, so a failed upgrade may have
        // released the shared lock: take it again either way.
        flock(&lock._file, FlockOperation::LockShared).map_err(|e| CacheError::Io {
            op: "cannot lock",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(lock)
    }
}
