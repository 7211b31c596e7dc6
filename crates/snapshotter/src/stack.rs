//! Stacked snapshots: a step's upper directory (a RUN's, or a file step's that an
//! overlay shows as its layer has it), once its layer is written, is kept
//! as that layer's own directory under `$KILN_ROOT/layerdirs-v1/<chain id>/` (overlayfs
//! format: whiteouts are 0/0 character devices, opaque directories carry the
//! `trusted.overlay.opaque` or, rootless, `user.overlay.opaque` xattr), with a record
//! beside it as a merged snapshot has one. A later step on that chain mounts the layer
//! directories of the chain's top layers as overlay lower directories over the nearest
//! merged tree (`snapshots-v1/`), as containerd's overlay snapshotter does: preparing a
//! step costs nothing per file, and no file is hard-linked (link counts a step sees stay
//! those of the image).
//!
//! The stack is bounded: the kernel reads the mount options from one page, so when the
//! `lowerdir=` list would not fit in [`MOUNT_DATA_MAX`] bytes (or would pass
//! [`MAX_DEPTH`] directories) the parent chain is flattened into a merged tree once,
//! and the next steps stack on that.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Stat};

use kiln_image::{Digest, Sha256Writer};

use crate::cursor::DirCursor;
use crate::layer::Layer;
use crate::snapshots::{chain_id, chain_ids, SnapshotRecord, Snapshots};
use crate::tarw::{write_dir_tar, TarOptions};
use crate::SnapshotError;

/// The most bytes of mount options the kernel takes (one page, with its NUL).
pub const MOUNT_DATA_MAX: usize = 4096;

/// The most lower directories a stack gets. The page bound stops a stack first for
/// any root path longer than ~10 bytes; this bounds the per-lookup cost of a stack
/// (mount-point checks walk it) and stays far below overlayfs' own limit of 500.
pub const MAX_DEPTH: usize = 100;

impl Snapshots {
    /// The layer directories, as a [`Snapshots`] over `layerdirs-v1/`: the same record,
    /// listing and removal rules as merged trees (a directory without its record is never
    /// used).
    pub fn layer_dirs(&self) -> Snapshots {
        let mut s = self.clone();
        s.set_dir(self.layer_dirs.clone());
        s
    }

    /// The chain id (hex) of `parent + layer`, which names its layer directory.
    pub fn chain_name(parent: &[Layer], layer: &Layer) -> String {
        let mut ids: Vec<Digest> = parent.iter().map(|l| l.diff_id.clone()).collect();
        ids.push(layer.diff_id.clone());
        chain_id(&ids).expect("non-empty").hex().to_string()
    }

    /// The layer directory of the chain named `chain` (a chain id's hex), if it is
    /// complete (its record is there). Its files are never written: they may be shared
    /// by hard links into a new step's upper (incremental COPY).
    pub fn layer_dir(&self, chain: &str) -> Option<PathBuf> {
        if chain.len() != 64 || !chain.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let dirs = self.layer_dirs();
        let dir = dirs.dir().join(chain);
        dirs.is_complete(&dir).then_some(dir)
    }

    /// The lower directories, topmost first, a step on `parent` mounts: the layer
    /// directories of the chain's top layers over the nearest merged tree, the whole
    /// `lowerdir=` list at most `budget` bytes. Empty for no parent. When the chain's
    /// top layer has no directory, or the stack would not fit, the parent's merged tree
    /// alone (made now if needed).
    pub fn stack(&self, parent: &[Layer], budget: usize) -> Result<Vec<PathBuf>, SnapshotError> {
        self.stack_at_most(parent, budget, MAX_DEPTH)
    }

    /// [`Self::stack`] with at most `max_depth` directories.
    pub fn stack_at_most(
        &self,
        parent: &[Layer],
        budget: usize,
        max_depth: usize,
    ) -> Result<Vec<PathBuf>, SnapshotError> {
        let ids: Vec<Digest> = parent.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&ids);
        let dirs = self.layer_dirs();
        let mut out: Vec<PathBuf> = Vec::new();
        let mut used = 0;
        for (n, chain) in chains.iter().enumerate().rev() {
            let merged = self.dir().join(chain.hex());
            let len = merged.as_os_str().len() + 1;
            if self.is_complete(&merged) && used + len <= budget {
                out.push(merged);
                return Ok(out);
            }
            let dir = dirs.dir().join(chain.hex());
            if !dirs.is_complete(&dir) && dir.symlink_metadata().is_ok() {
                // An older kiln's, or one killed while deleting it: never used, and
                // moved away now, as making the chain's tree again would (best effort).
                let _ = dirs.evict_unrecorded(&dir);
            }
            // Room for this directory and, below it, a merged tree's path (same length).
            if out.len() + 1 >= max_depth.min(MAX_DEPTH) || used + 2 * len > budget || !dirs.is_complete(&dir) {
                break;
            }
            used += len;
            out.push(dir);
            if n == 0 {
                // Down to the first layer's own directory: nothing is below it.
                return Ok(out);
            }
        }
        // Flatten: the whole parent as one tree; the next steps stack on it.
        Ok(self.merged(parent)?.into_iter().collect())
    }

    /// Keeps the step's `upper` (in overlayfs format, `layer` written from it with
    /// `clamp_mtime`) as the layer directory of `parent + layer`, by renaming it. On
    /// failure (or when another build kept the same chain first) the upper is removed.
    /// `no_opaque`: the upper has no opaque directory (a file step's), which its root
    /// is marked with ([`NO_OPAQUE_XATTR`]).
    pub fn adopt_layer_dir(
        &self,
        parent: &[Layer],
        layer: &Layer,
        upper: &Path,
        clamp_mtime: Option<i64>,
        no_opaque: bool,
    ) {
        let dirs = self.layer_dirs();
        let target = dirs.chain_dir(parent, layer);
        if no_opaque {
            let _ = rustix::fs::lsetxattr(upper, NO_OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty());
        } else {
            // A RUN step can set it on its root (`setfattr /`): never believed.
            let _ = rustix::fs::lremovexattr(upper, NO_OPAQUE_XATTR);
        }
        let _ = dirs.install_with(&Self::chain_layers(parent, layer), upper, &target, clamp_mtime);
        if upper.symlink_metadata().is_ok() {
            let _ = kiln_cache::remove_via_tmp(self.tmp(), upper);
        }
    }
}

/// The mark on the root of a layer directory that has no opaque directory, so that a
/// lookup through a stack holding it need not ask its directories for the opaque mark
/// (a root's extended attributes are no part of a layer, nor of an overlay's view: the
/// overlay's root is its upper's).
pub const NO_OPAQUE_XATTR: &str = "user.kiln.no-opaque";

/// Whether `st` is an overlayfs whiteout (a 0/0 character device).
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether the directory `p` is marked opaque (its lower directories' entries hidden).
pub(crate) fn is_opaque(p: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(p, *name, &mut buf), Ok(n) if buf[..n] == *b"y")
    })
}

/// Where `rel` (relative, no `..`) is in the overlay of `lowers` (topmost first), if it
/// exists there: the path in the topmost directory holding it. Whiteouts and opaque
/// directories hide what is below them, as in the mounted overlay; a symlink is never
/// followed (a path through one is not found), so nothing outside the stack is read.
/// One lookup through a fresh [`StackCursor`]; a sequence of lookups keeps one.
pub fn find_in_stack(lowers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    let (i, _) = StackCursor::open(lowers).ok()?.stat(rel)?;
    Some(if rel.as_os_str().is_empty() {
        lowers[i].clone()
    } else {
        lowers[i].join(rel)
    })
}

/// StackCursor is [`find_in_stack`] by descriptor: one [`DirCursor`] per directory of
/// a stack (topmost first), each moved by the components that differ, so that looking
/// up the entries of a destination one after the other costs O(1) calls per directory
/// of the stack at any depth, as a step's view of its parent needs.
pub struct StackCursor {
    lowers: Vec<DirCursor>,
    /// Per directory of the stack, the last directory path found missing there and
    /// whether a directory above it was opaque: a stack never changes while a step
    /// looks at it, so the entries below a missing directory are missing too, and many
    /// files copied into a new directory cost no call per directory of the stack.
    missing: Vec<Option<(PathBuf, bool)>>,
}

impl StackCursor {
    /// Opens the directories of `lowers` (topmost first). Every one but the lowest (with
    /// nothing below it to hide), and but those marked with [`NO_OPAQUE_XATTR`], notes
    /// opaque directories.
    pub fn open(lowers: &[PathBuf]) -> io::Result<StackCursor> {
        let n = lowers.len();
        let lowers = lowers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let c = DirCursor::open(l)?;
                let mut mark = [0u8; 1];
                let plain = matches!(rustix::fs::lgetxattr(l, NO_OPAQUE_XATTR, &mut mark), Ok(1) if mark == *b"y");
                let track = i + 1 < n && !plain;
                Ok(if track { c.tracking_opaque() } else { c })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(StackCursor {
            missing: vec![None; lowers.len()],
            lowers,
        })
    }

    /// The entry `rel` (a clean relative path; empty for the root) of the overlay of
    /// the stack, not following a symlink at its end: which directory of the stack holds
    /// it (0 for the topmost), and its stat. `None` if the overlay has no such entry,
    /// or it cannot be reached without following a symlink. Whiteouts, opaque
    /// directories and non-directories hide what is below them, as in the mounted overlay.
    pub fn stat(&mut self, rel: &Path) -> Option<(usize, Stat)> {
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return None;
        }
        let first = self.lowers.first_mut()?;
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return first.stat(Path::new("")).map(|st| (0, st));
        };
        for (i, c) in self.lowers.iter_mut().enumerate() {
            if let Some((gone, opaque)) = &self.missing[i] {
                if parent.starts_with(gone) {
                    if *opaque {
                        return None;
                    }
                    continue;
                }
            }
            match c.dir(parent) {
                Ok(fd) => {
                    if let Ok(st) = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                        return (!is_whiteout(&st)).then_some((i, st));
                    }
                }
                // Not in this directory: the cursor stopped at the deepest directory of
                // the path it has, whose opaque marks say whether to look further down.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let depth = c.position().components().count();
                    let gone: PathBuf = parent.components().take(depth + 1).collect();
                    self.missing[i] = Some((gone, c.opaque_on_path()));
                }
                // A file, symlink or whiteout on the way hides the directories below.
                Err(_) => return None,
            }
            if c.opaque_on_path() {
                return None;
            }
        }
        None
    }

    /// The directory of the stack's `i`th directory holding `rel`, and `rel`'s name,
    /// for an `*at` call (a `readlinkat` of what [`Self::stat`] found there).
    pub fn parent_of<'p>(&mut self, i: usize, rel: &'p Path) -> io::Result<(BorrowedFd<'_>, &'p OsStr)> {
        self.lowers
            .get_mut(i)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
            .parent_of(rel)
    }
}

/// Whether the upper directory of a file step can be kept as a layer directory: an
/// overlay mount must show exactly what the layer written from it (plain, not as an
/// overlay upper) holds, so nothing in it may mean something else to overlayfs or to
/// the tar format: no 0/0 character device (a whiteout to overlayfs), no name starting
/// with `.wh.` (a whiteout in a layer), no overlay extended attribute.
pub fn is_plain_upper(upper: &Path) -> io::Result<bool> {
    let mut plain = true;
    crate::cursor::walk_sorted(upper, |dirfd, rel, st| {
        let name = rel.file_name().unwrap_or_default();
        let kind = FileType::from_raw_mode(st.st_mode);
        if name.as_bytes().starts_with(b".wh.") || is_whiteout(st) {
            plain = false;
        } else if kind != FileType::Symlink {
            let mut names = [0u8; 1024];
            let path = crate::cursor::proc_path(&dirfd, name, || upper.join(rel));
            match rustix::fs::llistxattr(&path, &mut names) {
                Ok(n) => {
                    plain &= !names[..n]
                        .split(|b| *b == 0)
                        .any(|k| k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay."))
                }
                // More names than fit, or none readable: not known to be plain.
                Err(rustix::io::Errno::RANGE) => plain = false,
                Err(_) => {}
            }
        }
        if plain {
            Ok(())
        } else {
            Err(io::Error::other("not plain"))
        }
    })
    .or_else(|e| if plain { Err(e) } else { Ok(()) })?;
    Ok(plain)
}

/// fsck `--deep` of a layer directory: its tar, written again as the step wrote it,
/// must have the diff id of the chain's top layer. `None` when it does; otherwise the
/// entries that differ from the layer blob's (when the blob is there to compare).
pub fn deep_check_layer_dir(
    snaps: &Snapshots,
    dir: &Path,
    record: &SnapshotRecord,
) -> Result<Option<String>, SnapshotError> {
    let Some(top) = record.layers.last() else {
        return Ok(Some("its record names no layer".into()));
    };
    let opts = TarOptions {
        clamp_mtime: record.clamp_mtime,
        overlay_upper: true,
        ..TarOptions::default()
    };
    let io_err = |source| SnapshotError::Io {
        op: "cannot read layer directory",
        path: dir.to_path_buf(),
        source,
    };
    let (got, _, _) = write_dir_tar(dir, Sha256Writer::new(io::sink()), &opts)
        .map_err(io_err)?
        .finish();
    if got == top.diff_id {
        return Ok(None);
    }
    let mut why = format!("has diff id {got}, its layer {}", top.diff_id);
    if snaps.content().has(&top.blob.digest) {
        let work = snaps.temp_dir("fsck-")?;
        let ours = work.path().join("dir.tar");
        let f = std::fs::File::create(&ours).map_err(io_err)?;
        write_dir_tar(dir, io::BufWriter::new(f), &opts).map_err(io_err)?;
        let mine = tar_entries(std::fs::File::open(&ours).map_err(io_err)?).map_err(io_err)?;
        let theirs = tar_entries(crate::layer::open_layer_tar(snaps.content(), &top.blob)?).map_err(io_err)?;
        let names: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
        let differ: Vec<&str> = names
            .into_iter()
            .filter(|n| mine.get(*n) != theirs.get(*n))
            .take(5)
            .map(String::as_str)
            .collect();
        if !differ.is_empty() {
            why.push_str(&format!("; entries that differ: {}", differ.join(", ")));
        }
    }
    Ok(Some(why))
}

/// Each entry of a tar by name: its type, mode, owner, size, link and content digest.
fn tar_entries<R: io::Read>(r: R) -> io::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    for e in ar.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let h = e.header();
        let meta = format!(
            "{:?} {:o} {}/{} {} {:?}",
            h.entry_type(),
            h.mode()?,
            h.uid()?,
            h.gid()?,
            h.size()?,
            e.link_name()?
        );
        let mut hash = Sha256Writer::new(io::sink());
        io::copy(&mut e, &mut hash)?;
        out.insert(name, format!("{meta} {}", hash.finish().0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_in_stack_sees_what_the_overlay_shows() {
        let d = tempfile::tempdir().unwrap();
        let (top, mid, low) = (d.path().join("top"), d.path().join("mid"), d.path().join("low"));
        for l in [&top, &mid, &low] {
            std::fs::create_dir(l).unwrap();
        }
        // low: a/x, a/y, b/z, s -> /etc, keep
        std::fs::create_dir_all(low.join("a")).unwrap();
        std::fs::create_dir_all(low.join("b")).unwrap();
        for f in ["a/x", "a/y", "b/z", "keep"] {
            std::fs::write(low.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/etc", low.join("s")).unwrap();
        // mid: `a` opaque with a/new; `b` replaced by a file.
        std::fs::create_dir(mid.join("a")).unwrap();
        std::fs::write(mid.join("a/new"), "new").unwrap();
        let opaque = rustix::fs::lsetxattr(
            mid.join("a"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        );
        std::fs::write(mid.join("b"), "file").unwrap();
        // top: `keep` overwritten.
        std::fs::write(top.join("keep"), "top").unwrap();
        let stack = vec![top.clone(), mid.clone(), low.clone()];
        let find = |p: &str| find_in_stack(&stack, Path::new(p));
        assert_eq!(find("keep"), Some(top.join("keep")));
        assert_eq!(find("a/new"), Some(mid.join("a/new")));
        assert_eq!(find("a"), Some(mid.join("a")));
        if opaque.is_ok() {
            assert_eq!(find("a/x"), None, "hidden by the opaque directory");
        }
        assert_eq!(find("b"), Some(mid.join("b")));
        assert_eq!(find("b/z"), None, "hidden by the file over the directory");
        assert_eq!(find("s"), Some(low.join("s")));
        assert_eq!(find("s/passwd"), None, "symlinks are not followed");
        assert_eq!(find("../etc/passwd"), None);
        assert_eq!(find("/etc/passwd"), None);
        assert_eq!(find("nothing"), None);
        // A whiteout (needs mknod) hides the lower entry.
        if rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("keep2"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .is_ok()
        {
            std::fs::write(low.join("keep2"), "low").unwrap();
            assert_eq!(find("keep2"), None);
        }
        // The cursor sees the same, whatever order the lookups come in.
        std::fs::create_dir_all(low.join("a/deep/er")).unwrap();
        std::fs::create_dir_all(low.join("c/d")).unwrap();
        std::fs::create_dir_all(mid.join("c")).unwrap();
        std::fs::write(low.join("c/d/f"), "f").unwrap();
        let paths = [
            "",
            "keep",
            "a/new",
            "a",
            "a/x",
            "a/deep/er",
            "a/deep",
            "b",
            "b/z",
            "s",
            "s/passwd",
            "nothing",
            "keep2",
            "c/d/f",
            "c/d",
            "c",
            "a/x",
            "c/d/f",
            "a/deep/er/x",
            "keep",
        ];
        let mut cur = StackCursor::open(&stack).unwrap();
        for _ in 0..2 {
            for p in paths {
                let want = if p.is_empty() { Some(top.clone()) } else { find(p) };
                let got = cur.stat(Path::new(p)).map(|(i, _)| stack[i].join(p));
                let got = got.map(|g| if p.is_empty() { top.clone() } else { g });
                if p.starts_with("a/") && opaque.is_err() {
                    continue;
                }
                assert_eq!(got, want, "{p}");
            }
        }
    }

    #[test]
    fn only_uppers_without_overlay_marks_are_plain() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path();
        std::fs::create_dir_all(up.join("a/b")).unwrap();
        std::fs::write(up.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/nowhere", up.join("a/l")).unwrap();
        assert!(is_plain_upper(up).unwrap());
        std::fs::write(up.join("a/.wh.f"), "").unwrap();
        assert!(!is_plain_upper(up).unwrap());
        std::fs::remove_file(up.join("a/.wh.f")).unwrap();
        if rustix::fs::lsetxattr(
            up.join("a/b"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok()
        {
            assert!(!is_plain_upper(up).unwrap());
        }
    }
}
