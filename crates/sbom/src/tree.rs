//! The scanned tree: files opened inside the root, reads capped, one bounded walk.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_snapshotter::RootDir;

use crate::{Limits, SbomError};

/// Tree is the open root file system being scanned.
pub(crate) struct Tree {
    dir: RootDir,
    pub(crate) limits: Limits,
}

/// Entry is one walked file: its path relative to the root and what the walk saw.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) rel: PathBuf,
    pub(crate) is_dir: bool,
    pub(crate) is_file: bool,
    pub(crate) executable: bool,
    pub(crate) size: u64,
}

impl Tree {
    /// Opens `root` (trusted: the caller names it).
    pub(crate) fn open(root: &Path, limits: Limits) -> io::Result<Tree> {
        let dir = RootDir::open(root)?;
        // Fail early, with the root's own error, if it cannot be listed.
        fs_err::read_dir(root)?;
        Ok(Tree { dir, limits })
    }

    /// Opens the regular file at `rel` inside the root (symlinks resolve in the root; a
    /// symlink at the end, a FIFO or a device is refused).
    pub(crate) fn open_file(&self, rel: &Path) -> io::Result<std::fs::File> {
        self.dir.open_file(rel)
    }

    /// Reads at most `max_file_bytes` of the regular file at `rel`; `None` if it is
    /// missing or not a regular file.
    pub(crate) fn read(&self, rel: &Path) -> Option<Vec<u8>> {
        self.read_capped(rel, self.limits.max_file_bytes)
    }

    /// Reads at most `cap` bytes of the regular file at `rel`.
    pub(crate) fn read_capped(&self, rel: &Path, cap: u64) -> Option<Vec<u8>> {
        let f = self.open_file(rel).ok()?;
        let mut buf = Vec::new();
        f.take(cap).read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    /// Reads the file at `rel` as text (invalid UTF-8 replaced), capped.
    pub(crate) fn read_text(&self, rel: &Path) -> Option<String> {
        self.read(rel)
            .map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Lists the regular files in the directory `rel` (sorted), bounded by `max_entries`.
    pub(crate) fn list_files(&self, rel: &Path) -> Vec<PathBuf> {
        let walked = walkdir::WalkDir::new(self.dir.path().join(rel))
            .min_depth(1)
            .max_depth(1)
            .sort_by_file_name()
            .into_iter()
            .take(self.limits.max_entries);
        walked
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.path().strip_prefix(self.dir.path()).ok().map(Path::to_path_buf))
            .collect()
    }

    /// Walks the whole tree once without following a symlink, at most `max_entries`
    /// entries (the kernel's virtual file systems skipped), and returns the entries a
    /// scanner reads: metadata directories, package manifests and executables.
    pub(crate) fn walk(&self) -> Result<Vec<Entry>, SbomError> {
        let root = self.dir.path();
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                !(e.depth() == 1
                    && e.file_type().is_dir()
                    && matches!(e.file_name().to_str(), Some("proc" | "sys" | "dev")))
            });
        for (n, e) in walker.enumerate() {
            if n >= self.limits.max_entries {
                // A partial bill of materials would look complete: refuse instead.
                return Err(SbomError::TooManyEntries {
                    path: root.to_path_buf(),
                    limit: self.limits.max_entries,
                });
            }
            let Ok(e) = e else { continue };
            let ft = e.file_type();
            if !(ft.is_dir() || ft.is_file()) {
                continue;
            }
            let name = e.file_name().to_string_lossy();
            let metadata_dir = ft.is_dir() && (name.ends_with(".dist-info") || name.ends_with(".egg-info"));
            let manifest =
                ft.is_file() && (name == "package.json" || name == "package-lock.json" || name.ends_with(".egg-info"));
            let (executable, size) = match (ft.is_file(), e.metadata()) {
                (true, Ok(md)) => (md.permissions().mode() & 0o111 != 0, md.len()),
                _ => (false, 0),
            };
            // Only what a scanner looks at is kept: a huge tree costs time, not memory.
            if !(metadata_dir || manifest || executable) {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(root) else { continue };
            out.push(Entry {
                rel: rel.to_path_buf(),
                is_dir: ft.is_dir(),
                is_file: ft.is_file(),
                executable,
                size,
            });
        }
        Ok(out)
    }
}

/// The absolute path of `rel` inside the image, as SBOMs show it (`/var/lib/dpkg/status`).
pub(crate) fn display(rel: &Path) -> String {
    format!("/{}", rel.to_string_lossy())
}
