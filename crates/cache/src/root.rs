use std::path::{Path, PathBuf};

use crate::{CacheError, ContentStore, ImageStore, LayerRecords};

/// KilnRoot is an opened `$KILN_ROOT` directory with its stores.
#[derive(Debug, Clone)]
pub struct KilnRoot {
    path: PathBuf,
}

impl KilnRoot {
    /// Opens (creating when missing) the root at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let path = path.into();
        for sub in ["content-v1/blobs/sha256", "layers-v1", "tmp"] {
            let p = path.join(sub);
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
        self.path.join("tmp")
    }

    /// The content store.
    pub fn content(&self) -> ContentStore {
        ContentStore::new(self.path.join("content-v1"), self.tmp_dir())
    }

    /// The tagged image store (an OCI layout).
    pub fn images(&self) -> ImageStore {
        ImageStore::new(self.path.join("store"), self.content(), self.tmp_dir())
    }

    /// Layer records (diff id → compressed blob, creation time).
    pub fn layers(&self) -> LayerRecords {
        LayerRecords::new(self.path.join("layers-v1"), self.tmp_dir())
    }

    /// The build cache index.
    pub fn cache_records(&self) -> crate::CacheRecords {
        crate::CacheRecords::new(self.path.join("cache-v1"), self.tmp_dir())
    }

    /// Removes `path` (a file or a whole tree) so that no one ever sees it half deleted:
    /// see [`remove_via_tmp`].
    pub fn remove_atomic(&self, path: &Path) -> Result<bool, CacheError> {
        remove_via_tmp(&self.tmp_dir(), path)
    }

    /// The directory for a versioned sub-store owned by another crate (e.g. snapshots).
    pub fn subdir(&self, name: &str) -> PathBuf {
        self.path.join(name)
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
