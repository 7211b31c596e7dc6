//! The copy backend's tree operations, by descriptor ([`crate::cursor`]): cloning a
//! snapshot with hard links, linking a layer directory into a clone, and counting
//! a tree. Each costs O(1) system calls per entry at any depth.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, Stat, Uid};

use crate::cursor::{is_dir, proc_path, read_names, set_mtime_at, walk_sorted, DirCursor};

/// The number of entries under `tree` (not counting `tree`) and the sum of its regular
/// files' sizes; symlinks are not followed.
pub fn tree_stats(tree: &Path) -> io::Result<(u64, u64)> {
    let (mut entries, mut bytes) = (0, 0);
    walk_sorted(tree, |_, _, st| {
        entries += 1;
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
            bytes += st.st_size as u64;
        }
        Ok(())
    })?;
    Ok((entries, bytes))
}

/// Gives the entry `name` of `dirfd` the mode, owner (when this process may chown) and
/// mtime of the directory `st`.
fn copy_dir_meta<Fd: std::os::fd::AsFd>(dirfd: Fd, name: &OsStr, st: &Stat) -> io::Result<()> {
    let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
    rustix::fs::chmodat(&dirfd, name, mode, AtFlags::empty())?;
    if crate::ids::can_chown() {
        rustix::fs::chownat(
            &dirfd,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        // chown clears set-id bits.
        if st.st_mode & 0o7000 != 0 {
            rustix::fs::chmodat(&dirfd, name, mode, AtFlags::empty())?;
        }
    }
    set_mtime_at(dirfd, name, st.st_mtime)
}

/// Clones the tree at `src` into `dst` (which must not exist): directories are
/// recreated with their metadata, everything else is hard-linked.
pub(crate) fn hardlink_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let root_md = rustix::fs::stat(src)?;
    std::fs::create_dir(dst)?;
    let mut out = DirCursor::open(dst)?;
    let mut dirs: Vec<(PathBuf, Stat)> = Vec::new();
    walk_sorted(src, |from, rel, st| {
        let (to, name) = out.parent_of(rel)?;
        if is_dir(st) {
            rustix::fs::mkdirat(to, name, Mode::from_raw_mode(0o700))?;
            dirs.push((rel.to_path_buf(), *st));
        } else {
            rustix::fs::linkat(from, name, to, name, AtFlags::empty())?;
        }
        Ok(())
    })?;
    // Deepest first: a directory's time is set after everything in it was made.
    for (rel, st) in dirs.iter().rev() {
        let (to, name) = out.parent_of(rel)?;
        copy_dir_meta(to, name, st)?;
    }
    let (parent, name) = split(dst)?;
    let parent = rustix::fs::open(
        parent,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
        Mode::empty(),
    )?;
    copy_dir_meta(&parent, name, &root_md)
}

fn split(p: &Path) -> io::Result<(&Path, &OsStr)> {
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((if d.as_os_str().is_empty() { Path::new(".") } else { d }, n)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path without a last component",
        )),
    }
}

/// Applies the layer directory `dir` (overlay format, see [`crate::stack`]) onto `tree`
/// as applying its layer would: files replace files, whiteouts (0/0 character devices)
/// delete, opaque directories replace the directory's contents, directories take the
/// layer's metadata. `dir` is left as it is: its files are hard-linked into the tree
/// (whose files are replaced, never written into), its directories made anew. O(1)
/// calls per entry of `dir` at any depth, where applying its layer's blob costs a path
/// lookup per entry and decompressing the blob.
pub(crate) fn link_layer_dir(dir: &Path, tree: &Path) -> io::Result<()> {
    let mut up = DirCursor::open(dir)?;
    let mut tr = DirCursor::open(tree)?;
    // Per level: the directory, its sorted names, the next one, and the layer's
    // metadata to give the tree's directory once its contents are merged.
    let mut stack: Vec<(PathBuf, Vec<OsString>, usize, Option<Stat>)> = vec![(
        PathBuf::new(),
        read_names(up.dir(Path::new(""))?, OsStr::new("."))?,
        0,
        None,
    )];
    while let Some((parent, names, next, meta)) = stack.last_mut() {
        let Some(name) = names.get(*next).cloned() else {
            let (parent, meta) = (std::mem::take(parent), meta.take());
            stack.pop();
            if let Some(st) = meta {
                let (fd, name) = tr.parent_of(&parent)?;
                copy_dir_meta(fd, name, &st)?;
            }
            continue;
        };
        *next += 1;
        let rel = parent.join(&name);
        let parent = parent.clone();
        let from = up.dir(&parent)?;
        let to = tr.dir(&parent)?;
        let st = rustix::fs::statat(from, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let existing = rustix::fs::statat(to, &name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let remove_existing = |to| -> io::Result<()> {
            match &existing {
                Some(e) if is_dir(e) => std::fs::remove_dir_all(proc_path(&to, &name, || tree.join(&rel))),
                Some(_) => Ok(rustix::fs::unlinkat(to, &name, AtFlags::empty())?),
                None => Ok(()),
            }
        };
        if crate::stack::is_whiteout(&st) {
            remove_existing(to)?;
            continue;
        }
        if kind == FileType::Directory {
            let opaque = crate::tarw::is_opaque(&proc_path(&from, &name, || dir.join(&rel)));
            if !existing.as_ref().is_some_and(is_dir) || opaque {
                remove_existing(to)?;
                rustix::fs::mkdirat(to, &name, Mode::from_raw_mode(0o700))?;
            }
            let children = read_names(from, &name)?;
            stack.push((rel, children, 0, Some(st)));
            continue;
        }
        remove_existing(to)?;
        rustix::fs::linkat(from, &name, to, &name, AtFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn chain(root: &Path, name: &str, depth: usize) -> PathBuf {
        let mut fd = rustix::fs::open(root, rustix::fs::OFlags::PATH, Mode::empty()).unwrap();
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o751)).unwrap();
            fd = rustix::fs::openat(&fd, name, rustix::fs::OFlags::PATH, Mode::empty()).unwrap();
            rel.push(name);
        }
        rel
    }

    /// The entries of `root` (relative path, mode, mtime), by descriptor.
    fn listing(root: &Path) -> Vec<(PathBuf, u32, i64)> {
        let mut out = Vec::new();
        walk_sorted(root, |_, rel, st| {
            out.push((rel.to_path_buf(), st.st_mode, st.st_mtime));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn clone_merge_and_count_trees_deeper_than_path_max() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("top"), "x").unwrap();
        let rel = chain(&src, "dddd", 1000);
        assert!(src.join(&rel).as_os_str().len() > 4096);
        // Full-path code fails here.
        assert!(std::fs::symlink_metadata(src.join(&rel)).is_err());
        assert_eq!(tree_stats(&src).unwrap(), (1001, 1));

        let dst = t.path().join("dst");
        hardlink_tree(&src, &dst).unwrap();
        assert_eq!(listing(&src), listing(&dst));
        assert_eq!(std::fs::metadata(dst.join("top")).unwrap().nlink(), 2);

        // A layer directory holding the chain one deeper (as a WORKDIR step's), plus a file.
        let upper = t.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        let deeper = chain(&upper, "dddd", 1001);
        std::fs::write(upper.join("top"), "new").unwrap();
        link_layer_dir(&upper, &dst).unwrap();
        assert_eq!(tree_stats(&dst).unwrap(), (1002, 3));
        let mut cur = DirCursor::open(&dst).unwrap();
        let st = cur.stat(&deeper).unwrap();
        assert!(is_dir(&st));
        assert_eq!(st.st_mode & 0o7777, 0o751);
        // The clone's own files were replaced, not written into: the source is unchanged.
        assert_eq!(std::fs::read(src.join("top")).unwrap(), b"x");
        assert_eq!(std::fs::read(dst.join("top")).unwrap(), b"new");
    }

    #[test]
    fn linking_a_layer_directory_merges_it_and_leaves_it_unchanged() {
        let t = tempfile::tempdir().unwrap();
        let (tree, dir) = (t.path().join("tree"), t.path().join("dir"));
        for d in [
            "tree/keep",
            "tree/opq/old",
            "tree/gone",
            "dir/keep/new",
            "dir/opq/fresh",
        ] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        std::fs::write(tree.join("keep/a"), "a").unwrap();
        std::fs::write(tree.join("f"), "old").unwrap();
        std::fs::write(dir.join("f"), "new").unwrap();
        std::fs::write(dir.join("keep/new/b"), "b").unwrap();
        std::os::unix::fs::symlink("f", dir.join("l")).unwrap();
        let opaque = rustix::fs::lsetxattr(
            dir.join("opq"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        );
        let whiteout = rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("gone"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0),
            0,
        );
        std::fs::set_permissions(dir.join("keep/new"), std::fs::Permissions::from_mode(0o750)).unwrap();
        let before = listing(&dir);
        link_layer_dir(&dir, &tree).unwrap();
        assert_eq!(listing(&dir), before, "the layer directory is unchanged");
        assert_eq!(std::fs::read(tree.join("f")).unwrap(), b"new");
        assert_eq!(std::fs::read(tree.join("keep/a")).unwrap(), b"a");
        assert_eq!(std::fs::read(tree.join("keep/new/b")).unwrap(), b"b");
        assert_eq!(std::fs::metadata(tree.join("keep/new/b")).unwrap().nlink(), 2);
        assert_eq!(std::fs::metadata(tree.join("keep/new")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read_link(tree.join("l")).unwrap(), Path::new("f"));
        assert!(tree.join("opq/fresh").is_dir());
        if opaque.is_ok() {
            assert!(
                !tree.join("opq/old").exists(),
                "an opaque directory replaces the tree's"
            );
        }
        if whiteout.is_ok() {
            assert!(tree.join("gone").symlink_metadata().is_err(), "a whiteout deletes");
        }
    }
}
