//! Unpacked snapshots: for each layer chain, the merged root filesystem it describes,
//! kept under `$KILN_ROOT/snapshots-v1/<chain id>/` and shared by every build.
//!
//! A snapshot is complete when its record `snapshots-v1/<chain id>.json` (its layers and
//! the entry count and bytes of the tree) is beside it. The record is written before the
//! finished tree is renamed into place, and a snapshot is deleted by renaming the tree
//! away before the record goes ([`Snapshots::remove`]), so a tree without a record can
//! only be one an older kiln made or half deleted: it is never used, but moved away and
//! made again.
//!
//! A chain's merged tree is a hard-link clone of its longest unpacked prefix with the
//! remaining layers applied on top (the applier replaces files rather than writing into
//! them, so the shared inodes are never changed); layers kept as their own directories
//! are hard-linked in from there instead. File steps (COPY, ADD, WORKDIR) write into a
//! fresh upper directory over the parent's stack of layer directories
//! ([`ActiveSnapshot`], [`crate::stack`]); the upper becomes the step's layer, then its
//! layer directory. RUN steps go through [`crate::Snapshotter`]: the overlay backend
//! mounts the same stacks.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_cache::{Bucket, ContentStore, KilnRoot};
use kiln_image::Digest;
use serde::{Deserialize, Serialize};

use crate::apply::ApplyOptions;
use crate::clone::{hardlink_tree, link_layer_dir, tree_stats};
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

/// The chain ids of every prefix of `diff_ids` (`[ChainID(L0), …, ChainID(Ln)]`), each
/// computed once from the one before: linear in the number of layers.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// SnapshotRecord is what `snapshots-v1/<chain id>.json` says about the complete tree
/// beside it: the layers it was made from, and how many entries and regular-file bytes
/// it holds (what a cheap `fsck` compares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub layers: Vec<Layer>,
    pub entries: u64,
    pub bytes: u64,
    /// A layer directory only: the SOURCE_DATE_EPOCH its layer was written with, so
    /// `fsck --deep` can write the same tar again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp_mtime: Option<i64>,
}

/// Snapshots manages the unpacked trees of layer chains.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    /// `layerdirs-v1/`: layer directories by chain id (see [`Snapshots::layer_dirs`]).
    pub(crate) layer_dirs: PathBuf,
    tmp: PathBuf,
    content: ContentStore,
    /// What unpacking skipped (device nodes rootless, unsettable xattrs, unmapped
    /// owners), for the caller to show: see [`Snapshots::take_warnings`].
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Snapshots {
    /// The snapshots of a kiln root.
    pub fn new(root: &KilnRoot) -> Result<Self, SnapshotError> {
        let dir = root.bucket(Bucket::Snapshots);
        let layer_dirs = root.bucket(Bucket::LayerDirs);
        for d in [&dir, &layer_dirs] {
            std::fs::create_dir_all(d).map_err(|source| SnapshotError::Io {
                op: "cannot create directory",
                path: d.clone(),
                source,
            })?;
        }
        Ok(Snapshots {
            dir,
            layer_dirs,
            tmp: root.tmp_dir(),
            content: root.content(),
            warnings: Arc::default(),
        })
    }

    /// The warnings of the layers unpacked since the last call, each naming its layer
    /// (`layer sha256:…: skipped device node `dev/null`: …`), without repeats.
    pub fn take_warnings(&self) -> Vec<String> {
        let taken = std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()));
        let mut seen = std::collections::HashSet::new();
        taken.into_iter().filter(|w| seen.insert(w.clone())).collect()
    }

    /// The merged tree of `layers`, unpacked on first use; `None` for no layers.
    pub fn merged(&self, layers: &[Layer]) -> Result<Option<PathBuf>, SnapshotError> {
        let ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&ids);
        let Some(chain) = chains.last() else { return Ok(None) };
        let target = self.dir.join(chain.hex());
        if self.is_complete(&target) {
            return Ok(Some(target));
        }
        // Longest prefix already unpacked.
        let mut start = 0;
        let mut base = None;
        for n in (1..layers.len()).rev() {
            let p = self.dir.join(chains[n - 1].hex());
            if self.is_complete(&p) {
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
        let dirs = self.layer_dirs();
        for (n, layer) in layers.iter().enumerate().skip(start) {
            // A layer kept as its own directory (a step's upper) is linked in from
            // there; otherwise (or if linking fails half way, e.g. EMLINK) its blob is
            // applied: a blob applied over part of its own layer gives the same tree.
            let dir = dirs.dir().join(chains[n].hex());
            if dirs.is_complete(&dir) && link_layer_dir(&dir, &tree).is_ok() {
                continue;
            }
            let warnings = self.apply_layer(layer, &tree, &opts)?;
            self.warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(
                warnings
                    .into_iter()
                    .map(|w| format!("layer {}: {w}", layer.blob.digest)),
            );
        }
        self.install(layers, &tree, &target)?;
        Ok(Some(target))
    }

    /// The record beside the snapshot directory `target`.
    fn record_path(target: &Path) -> PathBuf {
        target.with_extension("json")
    }

    /// Whether `target` is a snapshot a build may use: its tree and its record are there.
    pub fn is_complete(&self, target: &Path) -> bool {
        target.is_dir() && Self::record_path(target).is_file()
    }

    /// The record of the snapshot named `chain` (a chain id's hex), if it has one.
    pub fn record(&self, chain: &str) -> Option<SnapshotRecord> {
        let bytes = std::fs::read(self.dir.join(format!("{chain}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The content store the layers are read from.
    pub(crate) fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Points this handle at another directory of the same kind (the layer directories).
    pub(crate) fn set_dir(&mut self, dir: PathBuf) {
        self.dir = dir;
    }

    /// The root's `tmp/` (same file system as the snapshots).
    pub(crate) fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The directory holding the snapshots (`snapshots-v1/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the snapshot named `chain` (a chain id's hex) so that it is never seen
    /// half deleted: the tree is renamed away (then deleted) before its record goes.
    /// Returns whether a tree was removed.
    pub fn remove(&self, chain: &str) -> Result<bool, SnapshotError> {
        let target = self.dir.join(chain);
        let removed = kiln_cache::remove_via_tmp(&self.tmp, &target)?;
        let rec = Self::record_path(&target);
        match std::fs::remove_file(&rec) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SnapshotError::Io {
                op: "cannot remove",
                path: rec,
                source: e,
            }),
            _ => Ok(removed),
        }
    }

    /// Moves away the tree at `target` if it has no record (an older kiln's, maybe half
    /// deleted). Under a lock on the snapshots directory, so that two builds meeting the
    /// same old tree cannot both move it: the second could move the first one's new,
    /// complete tree (whose record is written before the tree appears, so it is
    /// recognised when checked under the lock).
    pub(crate) fn evict_unrecorded(&self, target: &Path) -> Result<(), SnapshotError> {
        let io_err = |op: &'static str| {
            let path = self.dir.clone();
            move |source: io::Error| SnapshotError::Io { op, path, source }
        };
        let dir = std::fs::File::open(&self.dir).map_err(io_err("cannot open"))?;
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("cannot lock")(e.into()))?;
        if target.symlink_metadata().is_ok() && !Self::record_path(target).is_file() {
            kiln_cache::remove_via_tmp(&self.tmp, target)?;
        }
        Ok(())
    }

    /// Makes the finished `tree` (equal to applying `layers`) the snapshot at `target`:
    /// the record first, then the tree renamed into place. A tree already at `target`
    /// without a record (an older kiln's, maybe half deleted) is moved away first.
    pub(crate) fn install(&self, layers: &[Layer], tree: &Path, target: &Path) -> Result<(), SnapshotError> {
        self.install_with(layers, tree, target, None)
    }

    /// [`Self::install`], recording the clamp a layer directory's layer was written with.
    pub(crate) fn install_with(
        &self,
        layers: &[Layer],
        tree: &Path,
        target: &Path,
        clamp_mtime: Option<i64>,
    ) -> Result<(), SnapshotError> {
        if self.is_complete(target) {
            return Ok(());
        }
        if target.symlink_metadata().is_ok() {
            self.evict_unrecorded(target)?;
        }
        let (entries, bytes) = tree_stats(tree).map_err(|source| SnapshotError::Io {
            op: "cannot read snapshot",
            path: tree.to_path_buf(),
            source,
        })?;
        let record = SnapshotRecord {
            layers: layers.to_vec(),
            entries,
            bytes,
            clamp_mtime,
        };
        let json = serde_json::to_vec(&record).expect("records serialize");
        let rec = Self::record_path(target);
        let mut f = tempfile::Builder::new()
            .prefix("record-")
            .tempfile_in(&self.tmp)
            .map_err(|source| SnapshotError::Io {
                op: "cannot create temp file in",
                path: self.tmp.clone(),
                source,
            })?;
        io::Write::write_all(&mut f, &json)
            .and_then(|()| f.as_file().sync_all())
            .map_err(|source| SnapshotError::Io {
                op: "cannot write",
                path: f.path().to_path_buf(),
                source,
            })?;
        f.persist(&rec).map_err(|e| SnapshotError::Io {
            op: "cannot rename into",
            path: rec.clone(),
            source: e.error,
        })?;
        match std::fs::rename(tree, target) {
            Ok(()) => Ok(()),
            // Another build made the same chain first; theirs is identical.
            Err(_) if self.is_complete(target) => Ok(()),
            Err(source) => Err(SnapshotError::Io {
                op: "cannot rename snapshot into",
                path: target.to_path_buf(),
                source,
            }),
        }
    }

    /// Applies one layer blob from the content store onto `dest`; an error names the
    /// layer's digest (and, from the applier, the entry).
    pub fn apply_layer(&self, layer: &Layer, dest: &Path, opts: &ApplyOptions) -> Result<Vec<String>, SnapshotError> {
        let named = |e: SnapshotError| SnapshotError::Apply {
            digest: layer.blob.digest.clone(),
            source: Box::new(e),
        };
        // The diff id is checked in the same pass: a layer that is not what the image
        // config says fails here, and the caller's temp tree is thrown away.
        Ok(crate::verify::apply_layer_verified(&self.content, layer, dest, opts)
            .map_err(named)?
            .warnings)
    }

    /// A temp directory under the root's `tmp/` (same filesystem, so renames work).
    pub(crate) fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, SnapshotError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.tmp)
            .map_err(|source| SnapshotError::Io {
                op: "cannot create temp dir in",
                path: self.tmp.clone(),
                source,
            })
    }

    /// Starts a change on top of `parent`: an empty upper directory over the parent's
    /// stack (the layer directories of its top layers over the nearest merged tree, as
    /// a RUN step's overlay has it; see [`Self::stack`]), so that preparing costs nothing
    /// per file of the parent.
    pub fn prepare(&self, parent: &[Layer]) -> Result<ActiveSnapshot, SnapshotError> {
        let lowers = self.stack_at_most(parent, FILE_STEP_STACK_BUDGET, FILE_STEP_MAX_DEPTH)?;
        let upper = self.temp_dir("upper-")?;
        Ok(ActiveSnapshot {
            upper,
            lowers,
            looked_up: Default::default(),
            parent: parent.to_vec(),
            owners: OwnerOverrides::new(),
            snaps: self.clone(),
        })
    }
}

/// The bytes of directory paths a file step's stack may have (as a `lowerdir=` list):
/// half a mount's page, so that looking an entry up through the stack stays cheap
/// (every directory of the stack is asked in turn) and a RUN step on top, which adds
/// its own upper and work directories to the page, stacks the same directories.
const FILE_STEP_STACK_BUDGET: usize = crate::stack::MOUNT_DATA_MAX / 2;

/// The most directories a file step's stack has. A lookup of a new name asks every one
/// (a destination `k` directories deep: up to `k` calls each, the first time), and a
/// flattening (every this many file steps on a stack) links the stack's layer
/// directories into a clone of the merged tree below: 8 keeps both small (1,000 nested
/// `WORKDIR`s: docs/benchmarks.md).
const FILE_STEP_MAX_DEPTH: usize = 8;

/// ActiveSnapshot is a file step's change in progress: an empty upper directory over the
/// parent's stack. `commit` turns the upper into a layer and keeps it as the layer's own
/// directory for the next steps to stack; dropping it discards the change.
pub struct ActiveSnapshot {
    upper: tempfile::TempDir,
    /// The parent's stack, topmost first; empty for no parent.
    lowers: Vec<PathBuf>,
    /// [`Self::lookup`]'s cursor over `lowers`, kept from one lookup to the next (an
    /// ADD extraction looks up every component of every entry).
    looked_up: std::cell::RefCell<Option<crate::stack::StackCursor>>,
    parent: Vec<Layer>,
    /// Owners the layer must record that could not be set on disk (rootless).
    pub owners: OwnerOverrides,
    snaps: Snapshots,
}

impl ActiveSnapshot {
    /// Where the change's files are written.
    pub fn upper(&self) -> &Path {
        self.upper.path()
    }

    /// The directories whose overlay is the parent's tree, topmost first (see
    /// [`crate::stack::StackCursor`]); empty if the parent has no layers.
    pub fn lowers(&self) -> &[PathBuf] {
        &self.lowers
    }

    /// A cursor over the parent's stack, for looking entries up in it.
    pub fn stack_cursor(&self) -> io::Result<crate::stack::StackCursor> {
        crate::stack::StackCursor::open(&self.lowers)
    }

    /// The parent's whole merged tree (made now if the parent is a stack), for what
    /// must read the parent's files as one tree (the image's `/etc/passwd`); `None`
    /// for no parent.
    pub fn merged_parent(&self) -> Result<Option<PathBuf>, SnapshotError> {
        match self.lowers.as_slice() {
            [] => Ok(None),
            [one] if one.starts_with(self.snaps.dir()) => Ok(Some(one.clone())),
            _ => self.snaps.merged(&self.parent),
        }
    }

    /// The layers below this change.
    pub fn parent(&self) -> &[Layer] {
        &self.parent
    }

    /// Where `rel` (symlinks on the way already resolved: none is followed) is visible
    /// in the merged view (upper first), if it exists.
    pub fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        let up = self.upper.path().join(rel);
        if up.symlink_metadata().is_ok() {
            return Some(up);
        }
        if self.lowers.is_empty() {
            return None;
        }
        let mut cursor = self.looked_up.borrow_mut();
        if cursor.is_none() {
            *cursor = Some(self.stack_cursor().ok()?);
        }
        let (i, _) = cursor.as_mut()?.stat(rel)?;
        Some(if rel.as_os_str().is_empty() {
            self.lowers[i].clone()
        } else {
            self.lowers[i].join(rel)
        })
    }

    /// Writes the upper directory as a layer blob and returns the new chain's layer.
    pub fn commit(
        mut self,
        content: &ContentStore,
        clamp_mtime: Option<i64>,
        compression: Compression,
    ) -> Result<Layer, SnapshotError> {
        let has_owner_overrides = !self.owners.is_empty();
        let opts = TarOptions {
            clamp_mtime,
            owners: std::mem::take(&mut self.owners),
            overlay_upper: false,
        };
        let layer = write_layer(self.upper.path(), content, &opts, compression)?;
        // The upper is the layer's own directory: keep it, by rename, for the next steps
        // to stack, when an overlay of it shows what the layer holds. Otherwise (owners
        // that exist only in the layer, rootless; `.wh.` names, which the layer's readers
        // take for whiteouts) the next step makes the chain's tree from the blob.
        if !has_owner_overrides && crate::stack::is_plain_upper(self.upper.path()).unwrap_or(false) {
            self.root_as_parents();
            let upper = self.upper.keep();
            self.snaps
                .adopt_layer_dir(&self.parent, &layer, &upper, clamp_mtime, true);
        }
        Ok(layer)
    }

    /// Gives the upper's root directory the parent's root's attributes (a layer holds
    /// no root entry: a step on top sees the parent's), as a RUN step's upper has them.
    /// Best effort, as keeping the layer directory is.
    fn root_as_parents(&self) {
        let Some(top) = self.lowers.first() else { return };
        let Ok(md) = std::fs::metadata(top) else { return };
        let up = self.upper.path();
        if crate::ids::can_chown() {
            let _ = std::os::unix::fs::chown(up, Some(md.uid()), Some(md.gid()));
        }
        let _ = std::fs::set_permissions(up, std::fs::Permissions::from_mode(md.mode() & 0o7777));
        let _ = crate::apply::set_mtime(up, md.mtime());
    }
}

impl Snapshots {
    pub(crate) fn chain_dir(&self, parent: &[Layer], layer: &Layer) -> PathBuf {
        let mut ids: Vec<Digest> = parent.iter().map(|l| l.diff_id.clone()).collect();
        ids.push(layer.diff_id.clone());
        self.dir.join(chain_id(&ids).expect("non-empty").hex())
    }

    pub(crate) fn chain_layers(parent: &[Layer], layer: &Layer) -> Vec<Layer> {
        let mut layers = parent.to_vec();
        layers.push(layer.clone());
        layers
    }

    /// Records `tree` (a complete root file system equal to `parent + layer`) as the
    /// chain's snapshot, by renaming it. Best effort: on failure the snapshot is made
    /// from blobs when first needed.
    pub fn adopt_tree(&self, parent: &[Layer], layer: &Layer, tree: &Path) {
        let target = self.chain_dir(parent, layer);
        let _ = self.install(&Self::chain_layers(parent, layer), tree, &target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_the_prefixes_chain_ids() {
        let ids: Vec<Digest> = (0..20).map(|i| Digest::of(format!("layer {i}").as_bytes())).collect();
        let chains = chain_ids(&ids);
        assert_eq!(chains.len(), ids.len());
        for n in 1..=ids.len() {
            assert_eq!(Some(chains[n - 1].clone()), chain_id(&ids[..n]));
        }
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn a_layer_whose_content_is_not_its_diff_id_is_never_a_snapshot() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let root = KilnRoot::open(dir.path()).unwrap();
        let snaps = Snapshots::new(&root).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let blob = root
            .content()
            .put_bytes(kiln_image::media_types::OCI_LAYER_GZIP, &gz.finish().unwrap())
            .unwrap();
        let claimed = Digest::of(b"some other tar");
        let bad = Layer {
            diff_id: claimed.clone(),
            blob: blob.clone(),
        };
        let err = snaps.merged(std::slice::from_ref(&bad)).unwrap_err().to_string();
        assert!(
            err.contains(&blob.digest.to_string())
                && err.contains(&claimed.to_string())
                && err.contains(&Digest::of(&raw).to_string()),
            "{err}"
        );
        assert!(
            !root.bucket(Bucket::Snapshots).join(claimed.hex()).exists(),
            "no snapshot is recorded for the bad chain"
        );
        assert_eq!(
            std::fs::read_dir(root.tmp_dir()).unwrap().count(),
            0,
            "the half-unpacked tree is gone"
        );
        let good = Layer {
            diff_id: Digest::of(&raw),
            blob,
        };
        let tree = snaps.merged(&[good]).unwrap().unwrap();
        assert_eq!(std::fs::read(tree.join("hello")).unwrap(), b"hi\n");
    }
}
