//! The merged view (upper over lower) a file step resolves its destinations in, and the
//! metadata it gives what it writes in the upper directory, by descriptor
//! ([`DirCursor`]): a destination `n` directories deep costs O(n) calls, not O(n²), and
//! one deeper than `PATH_MAX` works. The cursors never follow a symlink on the way; the
//! view's symlinks are resolved by [`FileWriter::resolve_view`], inside the root.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use kiln_snapshotter::cursor::{is_dir, set_mtime_at, DirCursor};
use kiln_snapshotter::set_mtime;
use kiln_snapshotter::stack::StackCursor;
use rustix::fs::{AtFlags, Gid, Mode, Stat, Uid};

use super::{io_err, FileWriter, Owner};
use crate::WorkerError;

/// View holds the cursors of a step's upper directory and its parent's tree (a stack
/// of directories, see [`StackCursor`]).
#[derive(Default)]
pub(super) struct View {
    upper: Option<DirCursor>,
    lower: Option<StackCursor>,
}

/// Where a name was found in the view: the upper, or the stack's `n`th directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Upper,
    Lower(usize),
}

fn errno(path: &Path) -> impl FnOnce(rustix::io::Errno) -> WorkerError + '_ {
    move |e| io_err(path)(e.into())
}

impl FileWriter<'_> {
    fn upper_cursor(&self) -> Result<std::cell::RefMut<'_, DirCursor>, WorkerError> {
        let mut v = self.view.borrow_mut();
        if v.upper.is_none() {
            v.upper = Some(DirCursor::open(self.snap.upper()).map_err(io_err(self.snap.upper()))?);
        }
        Ok(std::cell::RefMut::map(v, |v| v.upper.as_mut().expect("opened above")))
    }

    /// `rel` in the view: upper first, then the parent's tree.
    fn view_stat(&self, rel: &Path) -> Option<(Side, Stat)> {
        if let Ok(mut up) = self.upper_cursor() {
            if let Some(st) = up.stat(rel) {
                return Some((Side::Upper, st));
            }
        }
        self.lower_stat(rel).map(|(i, st)| (Side::Lower(i), st))
    }

    /// `rel` in the parent's tree: which directory of its stack holds it, and its stat.
    fn lower_stat(&self, rel: &Path) -> Option<(usize, Stat)> {
        if self.snap.lowers().is_empty() {
            return None;
        }
        let mut v = self.view.borrow_mut();
        if v.lower.is_none() {
            v.lower = self.snap.stack_cursor().ok();
        }
        v.lower.as_mut()?.stat(rel)
    }

    /// `rel` in the parent's tree, if it is a directory there.
    pub(crate) fn lower_dir_stat(&self, rel: &Path) -> Option<Stat> {
        self.lower_stat(rel).map(|(_, st)| st).filter(is_dir)
    }

    fn view_readlink(&self, side: Side, rel: &Path) -> Option<PathBuf> {
        let mut v = self.view.borrow_mut();
        let (fd, name) = match side {
            Side::Upper => v.upper.as_mut()?.parent_of(rel).ok()?,
            Side::Lower(i) => v.lower.as_mut()?.parent_of(i, rel).ok()?,
        };
        let t = rustix::fs::readlinkat(fd, name, Vec::new()).ok()?;
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(t.to_bytes())))
    }

    pub(super) fn is_dir_in_view(&self, rel: &Path) -> bool {
        let resolved = self.resolve_view(rel, true);
        // Resolved already: a link left at the end (a loop) is not a directory, and is
        // never followed out of the view.
        self.view_stat(&resolved).is_some_and(|(_, st)| is_dir(&st))
    }

    /// Resolves `rel` through the merged view (upper over lower), following symlinks
    /// inside the root; with `follow_last` false the final component is kept as is.
    pub(super) fn resolve_view(&self, rel: &Path, follow_last: bool) -> PathBuf {
        self.resolve_view_links(rel, follow_last).0
    }

    /// [`Self::resolve_view`], and whether it stopped at a symlink it should have
    /// followed because it had followed too many (a loop).
    pub(super) fn resolve_view_links(&self, rel: &Path, follow_last: bool) -> (PathBuf, bool) {
        let mut looped = false;
        let mut out = PathBuf::new();
        let mut pending: Vec<OsString> = rel.iter().rev().map(|c| c.to_os_string()).collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                out.pop();
                continue;
            }
            let cand = out.join(&part);
            let last = pending.is_empty();
            match self.view_stat(&cand) {
                Some((side, st))
                    if (follow_last || !last)
                        && hops < 40
                        && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
                {
                    hops += 1;
                    if let Some(t) = self.view_readlink(side, &cand) {
                        if t.is_absolute() {
                            out = PathBuf::new();
                        }
                        for c in t.components().rev() {
                            match c {
                                Component::Normal(n) => pending.push(n.to_os_string()),
                                Component::ParentDir => pending.push("..".into()),
                                _ => {}
                            }
                        }
                    }
                }
                Some((_, st))
                    if (follow_last || !last)
                        && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
                {
                    looped = true;
                    out = cand;
                }
                _ => out = cand,
            }
        }
        (out, looped)
    }

    /// Resolves the destination's parent through the view and makes every ancestor
    /// exist in the upper directory (new ones with `dir_mode`); returns the resolved
    /// relative target.
    pub(super) fn prepare_target(
        &mut self,
        rel: &Path,
        owner: Option<Owner>,
        dir_mode: u32,
    ) -> Result<PathBuf, WorkerError> {
        let parent = rel.parent().map(|p| self.resolve_view(p, true)).unwrap_or_default();
        let mut cur = PathBuf::new();
        for comp in parent.iter() {
            cur.push(comp);
            let up = self.snap.upper().join(&cur);
            let existing = self.upper_cursor()?.stat(&cur);
            match existing {
                Some(st) if is_dir(&st) => continue,
                Some(_) => self.remove_in_upper(&cur)?,
                None => {}
            }
            self.mkdir_in_upper(&cur)?;
            match self.lower_dir_stat(&cur) {
                // Mirror the existing directory so the layer carries it unchanged.
                Some(st) => self.finish_entry(&up, st.st_mode & 0o7777, (st.st_uid, st.st_gid), st.st_mtime, true)?,
                None => self.finish_entry(&up, dir_mode, owner.unwrap_or((0, 0)), self.epoch, true)?,
            }
        }
        Ok(match rel.file_name() {
            Some(name) => parent.join(name),
            None => parent,
        })
    }

    /// Whether `rel` exists in the upper directory.
    pub(super) fn in_upper(&self, rel: &Path) -> bool {
        self.upper_cursor().is_ok_and(|mut c| c.stat(rel).is_some())
    }

    /// Makes the directory `rel` in the upper directory (mode 0700 until [`Self::finish`]).
    pub(super) fn mkdir_in_upper(&self, rel: &Path) -> Result<(), WorkerError> {
        let path = self.snap.upper().join(rel);
        let mut c = self.upper_cursor()?;
        let (fd, name) = c.parent_of(rel).map_err(io_err(&path))?;
        rustix::fs::mkdirat(fd, name, Mode::from_raw_mode(0o700)).map_err(errno(&path))
    }

    /// Removes what is at `rel` in the upper directory (a whole tree for a directory).
    fn remove_in_upper(&self, rel: &Path) -> Result<(), WorkerError> {
        let path = self.snap.upper().join(rel);
        let mut c = self.upper_cursor()?;
        let (fd, name) = c.parent_of(rel).map_err(io_err(&path))?;
        let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(&path))?;
        if is_dir(&st) {
            let p = kiln_snapshotter::cursor::proc_path(&fd, name, || path.clone());
            std::fs::remove_dir_all(&p).map_err(io_err(&path))
        } else {
            rustix::fs::unlinkat(fd, name, AtFlags::empty()).map_err(errno(&path))
        }
    }

    /// Applies mode, owner and time to a path just written in the upper directory.
    pub(crate) fn finish_entry(
        &mut self,
        path: &Path,
        mode: u32,
        owner: Owner,
        mtime: i64,
        is_dir: bool,
    ) -> Result<(), WorkerError> {
        let rel = path.strip_prefix(self.snap.upper()).unwrap_or(Path::new(""));
        if rel.as_os_str().is_empty() {
            return self.finish_entry_by_path(path, mode, owner, mtime, is_dir);
        }
        {
            let privileged = self.privileged;
            let mut c = self.upper_cursor()?;
            let (fd, name) = c.parent_of(rel).map_err(io_err(path))?;
            let st = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(path))?;
            let is_link = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink;
            // A directory gets its final mode in `finish`, once it is filled.
            let now = if is_dir { mode | 0o700 } else { mode };
            if !is_link {
                rustix::fs::chmodat(fd, name, Mode::from_raw_mode(now), AtFlags::empty()).map_err(errno(path))?;
            }
            if privileged {
                rustix::fs::chownat(
                    fd,
                    name,
                    Some(Uid::from_raw(owner.0)),
                    Some(Gid::from_raw(owner.1)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno(path))?;
                if !is_link && !is_dir && mode & 0o6000 != 0 {
                    rustix::fs::chmodat(fd, name, Mode::from_raw_mode(mode), AtFlags::empty()).map_err(errno(path))?;
                }
            }
            if !is_dir {
                set_mtime_at(fd, name, mtime).map_err(io_err(path))?;
            }
        }
        if !self.privileged {
            self.record_owner(path, owner);
        }
        if is_dir {
            self.dir_times.push((path.to_path_buf(), mtime, mode));
        }
        Ok(())
    }

    /// [`Self::finish_entry`] for the upper directory itself.
    fn finish_entry_by_path(
        &mut self,
        path: &Path,
        mode: u32,
        owner: Owner,
        mtime: i64,
        is_dir: bool,
    ) -> Result<(), WorkerError> {
        use std::os::unix::fs::PermissionsExt;
        let is_link = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
        let now = if is_dir { mode | 0o700 } else { mode };
        if !is_link {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(now)).map_err(io_err(path))?;
        }
        if self.privileged {
            std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(io_err(path))?;
            if !is_link && !is_dir && mode & 0o6000 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
            }
        } else {
            self.record_owner(path, owner);
        }
        if is_dir {
            self.dir_times.push((path.to_path_buf(), mtime, mode));
        } else {
            set_mtime(path, mtime).map_err(io_err(path))?;
        }
        Ok(())
    }

    /// Gives the directories written in the upper their final mode and time, deepest
    /// (last made) first.
    pub(super) fn apply_dir_times(&mut self) -> Result<(), WorkerError> {
        use std::os::unix::fs::PermissionsExt;
        for (dir, mtime, mode) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            let rel = dir.strip_prefix(self.snap.upper()).unwrap_or(Path::new(""));
            if rel.as_os_str().is_empty() {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(io_err(&dir))?;
                set_mtime(&dir, mtime).map_err(io_err(&dir))?;
                continue;
            }
            let mut c = self.upper_cursor()?;
            let (fd, name) = c.parent_of(rel).map_err(io_err(&dir))?;
            rustix::fs::chmodat(fd, name, Mode::from_raw_mode(mode), AtFlags::empty()).map_err(errno(&dir))?;
            set_mtime_at(fd, name, mtime).map_err(io_err(&dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cache::KilnRoot;
    use kiln_snapshotter::{Compression, Snapshots};

    /// A WORKDIR deeper than PATH_MAX (1,000 × `dddd`, over 5,000 bytes): made in the
    /// upper by descriptor, resolved through the view, committed as a layer and kept
    /// as the chain's snapshot, and a step on top sees it in its lower tree. Full-path
    /// code fails at the first `mkdir` (`File name too long`).
    #[test]
    fn workdirs_deeper_than_path_max() {
        let d = tempfile::tempdir().unwrap();
        let root = KilnRoot::open(d.path()).unwrap();
        let snaps = Snapshots::new(&root).unwrap();
        let privileged = kiln_snapshotter::ids::can_chown();
        let deep = "/dddd".repeat(1000);
        let rel = PathBuf::from(&deep[1..]);
        assert!(d.path().join(&rel).as_os_str().len() > 4096);

        let mut snap = snaps.prepare(&[]).unwrap();
        let mut w = FileWriter::new(&mut snap, privileged, 7);
        w.mkdir(&deep, 0o755, &None).unwrap();
        w.mkdir(&format!("{deep}/e"), 0o750, &None).unwrap();
        assert!(w.is_dir_in_view(&rel.join("e")));
        w.finish().unwrap();
        let mut c = DirCursor::open(snap.upper()).unwrap();
        let e = c.stat(&rel.join("e")).unwrap();
        assert!(is_dir(&e));
        assert_eq!((e.st_mode & 0o7777, e.st_mtime), (0o750, 7));
        let layer = snap.commit(&root.content(), None, Compression::Gzip(1)).unwrap();

        // The next step: its lower is the tree the commit kept (root), or the layer
        // unpacked (rootless: owners only the layer records).
        if !privileged {
            return;
        }
        let mut snap = snaps.prepare(std::slice::from_ref(&layer)).unwrap();
        assert!(snap
            .stack_cursor()
            .unwrap()
            .stat(&rel.join("e"))
            .is_some_and(|(_, s)| is_dir(&s)));
        let mut w = FileWriter::new(&mut snap, privileged, 9);
        // Exists below: nothing to do.
        w.mkdir(&format!("{deep}/e"), 0o755, &None).unwrap();
        w.mkdir(&format!("{deep}/e/f"), 0o755, &None).unwrap();
        w.finish().unwrap();
        let mut c = DirCursor::open(snap.upper()).unwrap();
        // The parents are mirrored from the lower tree, unchanged.
        let e = c.stat(&rel.join("e")).unwrap();
        assert_eq!((e.st_mode & 0o7777, e.st_mtime), (0o750, 7));
        assert!(c.stat(&rel.join("e/f")).is_some_and(|s| is_dir(&s)));
        snap.commit(&root.content(), None, Compression::Gzip(1)).unwrap();
    }
}
