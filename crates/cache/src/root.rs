#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::path::{Path, PathBuf};

use crate::bucket::{ROOT_LOCK, STORE_LOCK};
use crate::{Bucket, CacheError, ContentStore, ImageStore, LayerRecords};

/// KilnRoot is an opened `$KILN_ROOT` directory with its stores.
#[derive(Debug, Clone)]
pub struct KilnRoot {
    path: PathBuf,
}

impl KilnRoot {
    /// Opens (creating when missing) the root at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let path = path.into();
        let made = [
            path.join(Bucket::Content.dir_name()).join("blobs/sha256"),
            path.join(Bucket::Layers.dir_name()),
            path.join(Bucket::Tmp.dir_name()),
        ];
        for p in made {
            fs_err::create_dir_all(&p).map_err(|e| CacheError::Io {
                op: "cannot create directory",
                path: p.clone(),
                source: e,
            })?;
        }
        let root = KilnRoot { path };
        root.images().init()?;
        Ok(root)
    }

    /// The default root: `$KILN_ROOT`, else `/var/lib/kiln` for root, else
    /// `$XDG_DATA_HOME/kiln` or `~/.local/share/kiln`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("KILN_ROOT").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(p).join("kiln");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        home.join(".local/share/kiln")
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where temp files live (same filesystem as the stores, so renames are atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.bucket(Bucket::Tmp)
    }

    /// The directory of `bucket` under the root (not created here).
    pub fn bucket(&self, bucket: Bucket) -> PathBuf {
        self.path.join(bucket.dir_name())
    }

    /// The root's lock file: builds hold it shared, prune and fsck exclusive.
    pub fn lock_path(&self) -> PathBuf {
        self.path.join(ROOT_LOCK)
    }

    /// Top-level entries of the root that are neither a [`Bucket`] nor one of the
    /// store's lock files, sorted (for fsck, and for tests that guard against a new
    /// directory added outside the enum).
    pub fn unknown_entries(&self) -> Result<Vec<PathBuf>, CacheError> {
        let rd = std::fs::read_dir(&self.path).map_err(CacheError::io("cannot read directory", &self.path))?;
        let mut out: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                Bucket::from_dir_name(&name).is_none() && name != ROOT_LOCK && name != STORE_LOCK
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
    }

    /// The content store.
    pub fn content(&self) -> ContentStore {
        ContentStore::new(self.bucket(Bucket::Content), self.tmp_dir())
    }

    /// The tagged image store (an OCI layout).
    pub fn images(&self) -> ImageStore {
        ImageStore::new(self.bucket(Bucket::Store), self.content(), self.tmp_dir())
    }

    /// Layer records (diff id → compressed blob, creation time).
    pub fn layers(&self) -> LayerRecords {
        LayerRecords::new(self.bucket(Bucket::Layers), self.tmp_dir())
    }

    /// The build cache index.
    pub fn cache_records(&self) -> crate::CacheRecords {
        crate::CacheRecords::new(self.bucket(Bucket::Cache), self.tmp_dir())
    }

    /// Removes `path` (a file or a whole tree) so that no one ever sees it half deleted:
    /// see [`remove_via_tmp`].
    pub fn remove_atomic(&self, path: &Path) -> Result<bool, CacheError> {
        remove_via_tmp(&self.tmp_dir(), path)
    }
}

/// Removes `path` (a file or a whole tree) in one visible step: it is first renamed
/// into a fresh `trash-*` directory under `tmp` (same filesystem, so the rename is
/// atomic), then deleted there. A kill during the deletion, which for a big tree takes
/// long, leaves the entry whole at `path` or gone from it, never half deleted; what is
/// left in `tmp` is swept by the next prune or by a build that finds the root unused.
/// Returns whether there was something to remove.
pub fn remove_via_tmp(tmp: &Path, path: &Path) -> Result<bool, CacheError> {
    if path.symlink_metadata().is_err() {
        return Ok(false);
    }
    let trash = tempfile::Builder::new()
        .prefix("trash-")
        .tempdir_in(tmp)
        .map_err(CacheError::io("cannot create temp dir in", tmp))?;
    match std::fs::rename(path, trash.path().join("x")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CacheError::io("cannot move to trash", path)(e)),
    }
    crate::store::sync_dir(path.parent().unwrap_or(path));
    // Dropping the temp dir deletes it and everything moved into it.
    trash.close().map_err(CacheError::io("cannot remove", path))?;
    Ok(true)
}
