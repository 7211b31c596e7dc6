//! The snapshotter a RUN step writes on, as containerd's `Snapshotter`: `prepare` gives
//! a writable root on top of a parent chain, [`Prepared::mount`] says how to mount it,
//! and [`Prepared::commit`] diffs the step's changes into a layer and keeps the new
//! chain's snapshot for the next step.
//!
//! Two backends:
//! - [`OverlaySnapshotter`]: the parent is a stack of layer directories over a merged
//!   tree (see [`crate::stack`]), the step writes into a fresh upper directory; the
//!   upper is the layer (overlayfs whiteouts become `.wh.` entries) and then the new
//!   layer directory, by rename.
//! - [`CopySnapshotter`]: the parent's merged tree is cloned (copying file data: a step
//!   must never write through a hard link into a shared inode) and bind-mounted; the
//!   layer is the clone compared with the parent, and the clone becomes the new chain's
//!   merged tree. For hosts without overlayfs and for `chroot` isolation.
//!
//! Overlayfs can be unusable where the step is mounted (an old kernel, a user namespace
//! without it): the executor says so with a typed error and the caller's `auto` mode
//! goes on with [`CopySnapshotter`].

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_cache::ContentStore;

use crate::diff::CopyRun;
use crate::layer::{write_layer, write_layer_from, Compression, Layer};
use crate::stack::{find_in_stack, MOUNT_DATA_MAX};
use crate::tarw::TarOptions;
use crate::{SnapshotError, Snapshots};

/// RootMount is how a prepared step's root file system is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootMount {
    /// An overlay: `lower` topmost first (never empty), changes into `upper`.
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// A whole writable tree of the step's own, bind-mounted (or chrooted into).
    Tree(PathBuf),
}

/// The options a committed layer is written with.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitOptions {
    /// SOURCE_DATE_EPOCH: no file time in the layer is later than this.
    pub clamp_mtime: Option<i64>,
    pub compression: Compression,
}

/// Snapshotter makes writable roots for steps and turns what a step changed into a layer.
pub trait Snapshotter: Send + Sync {
    /// The backend's name, as `--snapshotter` spells it.
    fn name(&self) -> &'static str;

    /// A writable root on top of `parent`, with its scratch files in `scratch` (an empty
    /// directory on the root's file system that outlives the step). `stacked: false`
    /// asks for a single lower tree (a runtime that resolves the user in it).
    fn prepare(&self, parent: &[Layer], scratch: &Path, stacked: bool) -> Result<Box<dyn Prepared>, SnapshotError>;
}

/// Prepared is a step's writable root, before and while the step runs. Dropping it
/// discards the change.
pub trait Prepared {
    /// How to mount the root.
    fn mount(&self) -> RootMount;

    /// Where the entry `rel` of the parent's tree is (a path to stat and read), if the
    /// parent has it; symlinks on the way are not followed.
    fn parent_entry(&self, rel: &Path) -> Option<PathBuf>;

    /// Writes what the step changed as a layer into `content` and keeps the new chain's
    /// snapshot.
    fn commit(self: Box<Self>, content: &ContentStore, opts: CommitOptions) -> Result<Layer, SnapshotError>;
}

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Overlayfs over stacked layer directories.
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    snaps: Snapshots,
}

impl OverlaySnapshotter {
    pub fn new(snaps: Snapshots) -> Self {
        OverlaySnapshotter { snaps }
    }
}

/// The bytes of mount options an overlay with these upper and work directories needs
/// besides its `lowerdir=` list (the longest option set the executor adds, rootless).
fn fixed_options_len(upper: &Path, work: &Path) -> usize {
    "lowerdir=,upperdir=,workdir=,userxattr,redirect_dir=nofollow,metacopy=off,volatile".len()
        + upper.as_os_str().len()
        + work.as_os_str().len()
        + 1
}

impl Snapshotter for OverlaySnapshotter {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn prepare(&self, parent: &[Layer], scratch: &Path, stacked: bool) -> Result<Box<dyn Prepared>, SnapshotError> {
        let upper = scratch.join("upper");
        let work = scratch.join("work");
        for d in [&upper, &work] {
            std::fs::create_dir(d).map_err(io_at("cannot create", d))?;
        }
        let mut lower = if stacked {
            let budget = MOUNT_DATA_MAX.saturating_sub(fixed_options_len(&upper, &work));
            self.snaps.stack(parent, budget)?
        } else {
            self.snaps.merged(parent)?.into_iter().collect()
        };
        if lower.is_empty() {
            // No parent: an empty lower (overlayfs needs one).
            let empty = scratch.join("empty");
            std::fs::create_dir(&empty).map_err(io_at("cannot create", &empty))?;
            lower.push(empty);
        }
        // The overlay's root directory takes the upper's attributes: make them the
        // parent's (the topmost lower's root has them: every layer directory's root was
        // its step's upper).
        let root_md = std::fs::metadata(&lower[0]).map_err(io_at("cannot stat", &lower[0]))?;
        if crate::ids::can_chown() {
            std::os::unix::fs::chown(&upper, Some(root_md.uid()), Some(root_md.gid()))
                .map_err(io_at("cannot chown", &upper))?;
        }
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(root_md.mode() & 0o7777))
            .map_err(io_at("cannot chmod", &upper))?;
        Ok(Box::new(OverlayStep {
            snaps: self.snaps.clone(),
            parent: parent.to_vec(),
            lower,
            upper,
            work,
        }))
    }
}

struct OverlayStep {
    snaps: Snapshots,
    parent: Vec<Layer>,
    lower: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
}

impl Prepared for OverlayStep {
    fn mount(&self) -> RootMount {
        RootMount::Overlay {
            lower: self.lower.clone(),
            upper: self.upper.clone(),
            work: self.work.clone(),
        }
    }

    fn parent_entry(&self, rel: &Path) -> Option<PathBuf> {
        find_in_stack(&self.lower, rel)
    }

    fn commit(self: Box<Self>, content: &ContentStore, opts: CommitOptions) -> Result<Layer, SnapshotError> {
        let tar = TarOptions {
            clamp_mtime: opts.clamp_mtime,
            overlay_upper: true,
            ..TarOptions::default()
        };
        // The step's overlay was volatile (nothing it wrote is known to be on disk):
        // sync what it wrote, while the layer is written, before the upper is kept.
        let upper = &self.upper;
        let (layer, synced) = std::thread::scope(|s| {
            let sync = s.spawn(|| sync_upper(upper));
            let layer = write_layer(upper, content, &tar, opts.compression);
            (layer, sync.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let layer = layer?;
        // The upper is the layer's own directory: keep it, by rename, for the next steps
        // to stack (best effort: without it, or unsynced, they flatten the chain from blobs).
        if synced.is_ok() {
            self.snaps
                .adopt_layer_dir(&self.parent, &layer, &self.upper, opts.clamp_mtime, false);
        }
        Ok(layer)
    }
}

/// Makes what a step wrote into `upper` durable: an upper of at most
/// [`SYNC_EACH_MAX`] entries by an fsync of each of its files and directories (a
/// `syncfs` would also wait for everything else written to the file system: a big COPY
/// layer just before, the blobs of other steps), a bigger one by `syncfs`.
fn sync_upper(upper: &Path) -> std::io::Result<Synced> {
    use rustix::fs::{Mode, OFlags};
    let mut todo = Vec::new();
    let mut dirs = vec![upper.to_path_buf()];
    let mut i = 0;
    while let Some(dir) = dirs.get(i).cloned() {
        i += 1;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                todo.push(e.path());
            }
            if dirs.len() + todo.len() > SYNC_EACH_MAX {
                let d = std::fs::File::open(upper)?;
                rustix::fs::syncfs(&d)?;
                return Ok(Synced::FileSystem);
            }
        }
    }
    // Files first, then their directories, deepest first. Never a symlink's target;
    // never waiting on a FIFO that took a file's name (only regular files and
    // directories are opened anyway).
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    for p in todo.iter().chain(dirs.iter().rev()) {
        rustix::fs::fsync(rustix::fs::open(p, flags, Mode::empty())?)?;
    }
    Ok(Synced::Each(todo.len() + dirs.len()))
}

/// How [`sync_upper`] synced an upper.
#[derive(Debug, PartialEq, Eq)]
enum Synced {
    /// By an fsync of each of these many files and directories.
    Each(usize),
    /// By `syncfs`.
    FileSystem,
}

/// See [`sync_upper`].
const SYNC_EACH_MAX: usize = 256;

/// A clone of the parent's merged tree per step.
#[derive(Debug, Clone)]
pub struct CopySnapshotter {
    snaps: Snapshots,
}

impl CopySnapshotter {
    pub fn new(snaps: Snapshots) -> Self {
        CopySnapshotter { snaps }
    }
}

impl Snapshotter for CopySnapshotter {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn prepare(&self, parent: &[Layer], scratch: &Path, _stacked: bool) -> Result<Box<dyn Prepared>, SnapshotError> {
        let lower = self.snaps.merged(parent)?;
        let tree = scratch.join("tree");
        let run = CopyRun::clone_tree(lower.as_deref(), &tree, &scratch.join("cloned"))
            .map_err(io_at("cannot clone snapshot into", &tree))?;
        Ok(Box::new(CopyStep {
            snaps: self.snaps.clone(),
            parent: parent.to_vec(),
            lower,
            tree,
            run,
        }))
    }
}

struct CopyStep {
    snaps: Snapshots,
    parent: Vec<Layer>,
    lower: Option<PathBuf>,
    tree: PathBuf,
    run: CopyRun,
}

impl Prepared for CopyStep {
    fn mount(&self) -> RootMount {
        RootMount::Tree(self.tree.clone())
    }

    fn parent_entry(&self, rel: &Path) -> Option<PathBuf> {
        find_in_stack(std::slice::from_ref(self.lower.as_ref()?), rel)
    }

    fn commit(self: Box<Self>, content: &ContentStore, opts: CommitOptions) -> Result<Layer, SnapshotError> {
        let tar = TarOptions {
            clamp_mtime: opts.clamp_mtime,
            ..TarOptions::default()
        };
        let layer = write_layer_from(&self.tree, content, opts.compression, |w| {
            self.run.write_diff(self.lower.as_deref(), w, &tar).map(drop)
        })?;
        // The clone is the new chain's whole tree: keep it as its snapshot.
        self.snaps.adopt_tree(&self.parent, &layer, &self.tree);
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_methods,
        reason = "test code: a failing call fails the test at its line"
    )]

    use super::{sync_upper, Synced, SYNC_EACH_MAX};

    /// A small upper is synced file by file (never opening what is not a regular file
    /// or a directory: a FIFO would block, a symlink could lead anywhere); a big one by
    /// `syncfs`.
    #[test]
    fn a_small_upper_is_synced_file_by_file_and_a_big_one_as_a_file_system() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("upper");
        std::fs::create_dir_all(up.join("etc/apt")).unwrap();
        std::fs::write(up.join("etc/apt/sources.list"), "deb x y\n").unwrap();
        std::fs::write(up.join("a"), "a").unwrap();
        std::os::unix::fs::symlink("/dev/zero", up.join("zero")).unwrap();
        std::os::unix::fs::symlink("fifo", up.join("to-fifo")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            up.join("fifo").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // upper, etc, etc/apt; sources.list, a.
        assert_eq!(sync_upper(&up).unwrap(), Synced::Each(5));

        let many = up.join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..SYNC_EACH_MAX {
            std::fs::write(many.join(i.to_string()), "x").unwrap();
        }
        assert_eq!(sync_upper(&up).unwrap(), Synced::FileSystem);
        assert!(sync_upper(&t.path().join("missing")).is_err());
    }
}
