//! Unpacked snapshots: for each layer chain, the merged root filesystem it describes,
//! kept under `$KILN_ROOT/snapshots-v1/<chain id>/` and shared by every build.
//!
//! This is the copy backend: a chain's tree is a hard-link clone of its longest unpacked
//! prefix with the remaining layers applied on top (the applier replaces files rather
//! than writing into them, so the shared inodes are never changed). Steps write into a
//! fresh upper directory; the upper becomes the step's layer.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_cache::{ContentStore, KilnRoot};
use kiln_image::{media_types, Digest};

use crate::apply::{apply_tar, set_mtime, ApplyOptions};
use crate::layer::{write_layer, Compression, Layer};
use crate::tarw::{OwnerOverrides, TarOptions};
use crate::SnapshotError;

/// The OCI chain id of a list of diff ids: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut it = diff_ids.iter();
    let mut id = it.next()?.clone();
    for d in it {
        id = Digest::of(format!("{id} {d}").as_bytes());
    }
    Some(id)
}

/// Snapshots manages the unpacked trees of layer chains.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    tmp: PathBuf,
    content: ContentStore,
}

impl Snapshots {
    /// The snapshots of a kiln root.
    pub fn new(root: &KilnRoot) -> Result<Self, SnapshotError> {
        let dir = root.subdir("snapshots-v1");
        std::fs::create_dir_all(&dir).map_err(|source| SnapshotError::Io {
            op: "cannot create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Snapshots {
            dir,
            tmp: root.tmp_dir(),
            content: root.content(),
        })
    }

    /// The merged tree of `layers`, unpacked on first use; `None` for no layers.
    pub fn merged(&self, layers: &[Layer]) -> Result<Option<PathBuf>, SnapshotError> {
        let ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let Some(chain) = chain_id(&ids) else { return Ok(None) };
        let target = self.dir.join(chain.hex());
        if target.is_dir() {
            return Ok(Some(target));
        }
        // Longest prefix already unpacked.
        let mut start = 0;
        let mut base = None;
        for n in (1..layers.len()).rev() {
            let p = self.dir.join(chain_id(&ids[..n]).expect("non-empty").hex());
            if p.is_dir() {
                start = n;
                base = Some(p);
                break;
            }
        }
        let work = self.temp_dir("snapshot-")?;
        let tree = work.path().join("fs");
        match &base {
            Some(b) => hardlink_tree(b, &tree).map_err(|source| SnapshotError::Io {
                op: "cannot clone snapshot",
                path: b.clone(),
                source,
            })?,
            None => std::fs::create_dir(&tree).map_err(|source| SnapshotError::Io {
                op: "cannot create",
                path: tree.clone(),
                source,
            })?,
        }
        let opts = ApplyOptions::default();
        for layer in &layers[start..] {
            self.apply_layer(layer, &tree, &opts)?;
        }
        match std::fs::rename(&tree, &target) {
            Ok(()) => Ok(Some(target)),
            // Another build unpacked the same chain first; theirs is identical.
            Err(_) if target.is_dir() => Ok(Some(target)),
            Err(source) => Err(SnapshotError::Io {
                op: "cannot rename snapshot into",
                path: target,
                source,
            }),
        }
    }

    /// Applies one layer blob from the content store onto `dest`.
    pub fn apply_layer(&self, layer: &Layer, dest: &Path, opts: &ApplyOptions) -> Result<Vec<String>, SnapshotError> {
        let f = io::BufReader::with_capacity(1 << 20, self.content.open(&layer.blob.digest)?);
        let report = match layer.blob.media_type.as_str() {
            media_types::OCI_LAYER_GZIP | media_types::DOCKER_LAYER_GZIP => {
                apply_tar(dest, flate2::read::MultiGzDecoder::new(f), opts)?
            }
            media_types::OCI_LAYER_TAR | media_types::DOCKER_LAYER_TAR => apply_tar(dest, f, opts)?,
            other => return Err(SnapshotError::MediaType(other.to_string())),
        };
        Ok(report.warnings)
    }

    /// A temp directory under the root's `tmp/` (same filesystem, so renames work).
    fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, SnapshotError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.tmp)
            .map_err(|source| SnapshotError::Io {
                op: "cannot create temp dir in",
                path: self.tmp.clone(),
                source,
            })
    }

    /// Starts a change on top of `parent`.
    pub fn prepare(&self, parent: &[Layer]) -> Result<ActiveSnapshot, SnapshotError> {
        let lower = self.merged(parent)?;
        let upper = self.temp_dir("upper-")?;
        Ok(ActiveSnapshot {
            upper,
            lower,
            parent: parent.to_vec(),
            owners: OwnerOverrides::new(),
            overlay_upper: false,
        })
    }
}

/// ActiveSnapshot is a change in progress: an empty upper directory over the parent's
/// tree. `commit` turns the upper into a layer; dropping it discards the change.
pub struct ActiveSnapshot {
    upper: tempfile::TempDir,
    lower: Option<PathBuf>,
    parent: Vec<Layer>,
    /// Owners the layer must record that could not be set on disk (rootless).
    pub owners: OwnerOverrides,
    /// The upper was written through an overlay mount (whiteouts are device nodes).
    pub overlay_upper: bool,
}

impl ActiveSnapshot {
    /// Where the change's files are written.
    pub fn upper(&self) -> &Path {
        self.upper.path()
    }

    /// The parent's merged tree, if the parent has layers.
    pub fn lower(&self) -> Option<&Path> {
        self.lower.as_deref()
    }

    /// The layers below this change.
    pub fn parent(&self) -> &[Layer] {
        &self.parent
    }

    /// Where `rel` is visible in the merged view (upper first), if it exists.
    pub fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        let up = self.upper.path().join(rel);
        if up.symlink_metadata().is_ok() {
            return Some(up);
        }
        let low = self.lower.as_ref()?.join(rel);
        low.symlink_metadata().is_ok().then_some(low)
    }

    /// Writes the upper directory as a layer blob and returns the new chain's layer.
    pub fn commit(
        mut self,
        content: &ContentStore,
        clamp_mtime: Option<i64>,
        compression: Compression,
    ) -> Result<Layer, SnapshotError> {
        let opts = TarOptions {
            clamp_mtime,
            owners: std::mem::take(&mut self.owners),
            overlay_upper: self.overlay_upper,
        };
        write_layer(self.upper.path(), content, &opts, compression)
    }
}

/// Clones the tree at `src` into `dst`: directories are recreated with their metadata,
/// everything else is hard-linked.
fn hardlink_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let md = std::fs::symlink_metadata(src)?;
    std::fs::create_dir(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            hardlink_tree(&from, &to)?;
        } else {
            std::fs::hard_link(&from, &to)?;
        }
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    if crate::ids::can_chown() {
        std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))?;
        if md.mode() & 0o7000 != 0 {
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    set_mtime(dst, md.mtime())
}
