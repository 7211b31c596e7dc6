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
}
