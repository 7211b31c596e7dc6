//! Walking kiln's own trees (snapshots, upper directories) by descriptor, not by path.
//!
//! A system call on a full path costs a lookup per component, so code that touches every
//! entry of a deep tree by its full path is quadratic in the depth (1,000 nested
//! `WORKDIR`s: each step slower than the last), and fails outright once a path is longer
//! than `PATH_MAX` (4096 bytes). A [`DirCursor`] keeps one directory open and moves to the
//! next directory asked for by the components that differ (`..` up, one `openat` per
//! component down), so a walk in tree order costs O(1) calls per entry at any depth, and
//! every call is relative to an open directory with a name of one component.
//!
//! Only for trees kiln made and nobody else changes while it walks them (`..` is trusted);
//! every step down is `O_NOFOLLOW`: a symlink on the way is never followed. Trees from
//! build contexts and images are opened with [`crate::RootDir`] instead.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Dir, Mode, OFlags, Stat, Timespec, Timestamps};

/// Flags of the directories a cursor holds: a handle for `*at` calls only.
const DIR_PATH: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// DirCursor is an open directory below a root, moved from one directory to the next.
#[derive(Debug)]
pub struct DirCursor {
    root: PathBuf,
    fd: OwnedFd,
    /// Where `fd` is below the root: a clean relative path (`a/b`, empty for the root).
    at: Vec<u8>,
    /// With [`Self::tracking_opaque`]: per directory of `at`, whether it is marked
    /// opaque (overlayfs: the lower layers' entries below it are hidden).
    opaque: Option<Vec<bool>>,
}

impl DirCursor {
    /// Opens the directory `root` (trusted: a symlink naming it is followed).
    pub fn open(root: &Path) -> io::Result<DirCursor> {
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(DirCursor {
            root: root.to_path_buf(),
            fd,
            at: Vec::new(),
            opaque: None,
        })
    }

    /// Makes the cursor note, as it moves, which directories on its path are marked
    /// opaque (one `getxattr` per directory entered), for [`Self::opaque_on_path`]: a
    /// layer directory of a stack, whose opaque directories hide what is below.
    pub fn tracking_opaque(mut self) -> Self {
        self.opaque = Some(Vec::new());
        if !self.at.is_empty() {
            // Start from the root, so that every directory on the path is noted.
            let _ = self.reset();
        }
        self
    }

    /// Whether a directory on the path the cursor is at (not the root) is marked opaque;
    /// false unless [`Self::tracking_opaque`].
    pub fn opaque_on_path(&self) -> bool {
        self.opaque.as_ref().is_some_and(|o| o.contains(&true))
    }

    /// The root directory's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the cursor is below the root (empty for the root): after a failed
    /// [`Self::dir`], the deepest directory of the path asked for that it reached.
    pub fn position(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.at))
    }

    /// The directory `rel` (normal components only) below the root, reached from where
    /// the cursor is by the components that differ; a symlink or anything but a
    /// directory on the way is an error (`ENOTDIR`/`ELOOP`), and the cursor stays valid
    /// after one. Its cost is O(components that differ) calls plus a byte comparison.
    pub fn dir(&mut self, rel: &Path) -> io::Result<BorrowedFd<'_>> {
        let want = clean_bytes(rel)?;
        let want: &[u8] = &want;
        // A directory removed since (and maybe made again by a path) is not where the
        // cursor thinks it is: start over from the root.
        if !self.at.is_empty() && rustix::fs::fstat(&self.fd).map_or(true, |st| st.st_nlink == 0) {
            self.reset()?;
        }
        if want == self.at.as_slice() {
            return Ok(self.fd.as_fd());
        }
        let boundary = common_dir_prefix(&self.at, want);
        let ups = segments(&self.at[boundary..]).count();
        for _ in 0..ups {
            match rustix::fs::openat(&self.fd, "..", DIR_PATH, Mode::empty()) {
                Ok(fd) => {
                    self.fd = fd;
                    let cut = self.at.iter().rposition(|b| *b == b'/').unwrap_or(0);
                    self.at.truncate(cut);
                    if let Some(o) = &mut self.opaque {
                        o.pop();
                    }
                }
                Err(_) => {
                    // Removed meanwhile: start over from the root.
                    self.reset()?;
                    break;
                }
            }
        }
        let from = if self.at.is_empty() { 0 } else { boundary };
        for name in segments(&want[from..]) {
            let fd = rustix::fs::openat(&self.fd, OsStr::from_bytes(name), DIR_PATH, Mode::empty())?;
            if let Some(o) = &mut self.opaque {
                let name = OsStr::from_bytes(name);
                o.push(crate::stack::is_opaque(&proc_path(&self.fd, name, || {
                    self.root.join(OsStr::from_bytes(&self.at)).join(name)
                })));
            }
            self.fd = fd;
            if !self.at.is_empty() {
                self.at.push(b'/');
            }
            self.at.extend_from_slice(name);
        }
        Ok(self.fd.as_fd())
    }

    /// The directory holding `rel` (which must have a last component) and that
    /// component's name, for an `*at` call on the entry.
    pub fn parent_of<'p>(&mut self, rel: &'p Path) -> io::Result<(BorrowedFd<'_>, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a path without a last component"))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent)?, name))
    }

    /// The entry at `rel` (not following a symlink at its end); `None` if it does not
    /// exist or cannot be reached without following a symlink.
    pub fn stat(&mut self, rel: &Path) -> Option<Stat> {
        if rel.as_os_str().is_empty() {
            return rustix::fs::stat(&self.root).ok();
        }
        let (fd, name) = self.parent_of(rel).ok()?;
        rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()
    }

    fn reset(&mut self) -> io::Result<()> {
        self.fd = rustix::fs::open(
            &self.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.at.clear();
        if let Some(o) = &mut self.opaque {
            o.clear();
        }
        Ok(())
    }
}

/// The `/`-separated names of a clean relative path.
fn segments(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|b| *b == b'/').filter(|s| !s.is_empty())
}

/// The length of the longest common prefix of two clean relative paths that ends at a
/// component boundary of both.
fn common_dir_prefix(a: &[u8], b: &[u8]) -> usize {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let at_boundary = |p: &[u8]| i == p.len() || p[i] == b'/';
    if at_boundary(a) && at_boundary(b) {
        return i;
    }
    a[..i].iter().rposition(|c| *c == b'/').unwrap_or(0)
}

/// `rel` as a clean relative path's bytes (`a/b`: no `.`, no empty or trailing
/// component); `..` or an absolute path is an error.
fn clean_bytes(rel: &Path) -> io::Result<std::borrow::Cow<'_, [u8]>> {
    let b = rel.as_os_str().as_bytes();
    let clean = b.first() != Some(&b'/')
        && b.split(|c| *c == b'/')
            .all(|s| !s.is_empty() && s != b"." && s != b"..");
    if clean || b.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    for c in rel.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(n.as_bytes());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not a plain relative path", rel.display()),
                ))
            }
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The names in the directory `name` of `dirfd` (`.` for `dirfd` itself), sorted by
/// their bytes, without `.` and `..`.
pub fn read_names<Fd: AsFd>(dirfd: Fd, name: &OsStr) -> io::Result<Vec<OsString>> {
    let fd = rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// A short path naming `name` in the open directory `dirfd` (through
/// `/proc/self/fd`), for the calls that have no `*at` form (extended attributes, and
/// `File::open`): the magic link resolves to the directory itself, however deep it is.
/// Without `/proc`, the full path `fallback` (which must name the same entry).
pub fn proc_path<Fd: AsFd>(dirfd: &Fd, name: &OsStr, fallback: impl FnOnce() -> PathBuf) -> PathBuf {
    use std::os::fd::AsRawFd;
    static HAS_PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*HAS_PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return fallback();
    }
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dirfd.as_fd().as_raw_fd()));
    p.push(name);
    p
}

/// Sets atime and mtime of `name` in `dirfd` to `mtime` seconds, not following a symlink.
pub fn set_mtime_at<Fd: AsFd>(dirfd: Fd, name: &OsStr, mtime: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    Ok(rustix::fs::utimensat(dirfd, name, &times, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Whether a stat is of a directory.
pub fn is_dir(st: &Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
}

/// Calls `f(dirfd, rel, stat)` for every entry below `root` (not the root itself), in
/// tree order with names sorted by their bytes, a directory before its contents;
/// `dirfd` is the directory holding the entry, `rel` the entry's path below the root.
/// Symlinks are never followed. Open descriptors: two, at any depth.
pub fn walk_sorted<F>(root: &Path, mut f: F) -> io::Result<()>
where
    F: FnMut(BorrowedFd<'_>, &Path, &Stat) -> io::Result<()>,
{
    let mut cur = DirCursor::open(root)?;
    let named = |rel: &Path| {
        let rel = rel.to_path_buf();
        move |e: io::Error| io::Error::new(e.kind(), format!("cannot walk `{}`: {e}", rel.display()))
    };
    // Per level: the directory, its sorted names, and the next one to visit.
    let mut stack: Vec<(PathBuf, Vec<OsString>, usize)> = vec![(
        PathBuf::new(),
        read_names(cur.dir(Path::new(""))?, OsStr::new(".")).map_err(named(Path::new("")))?,
        0,
    )];
    while let Some((dir, names, next)) = stack.last_mut() {
        let Some(name) = names.get(*next).cloned() else {
            stack.pop();
            continue;
        };
        *next += 1;
        let rel = dir.join(&name);
        let dirfd = cur.dir(dir).map_err(named(dir))?;
        let st = rustix::fs::statat(dirfd, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| named(&rel)(e.into()))?;
        f(dirfd, &rel, &st)?;
        if is_dir(&st) {
            let dirfd = cur.dir(dir).map_err(named(dir))?;
            let children = read_names(dirfd, &name).map_err(named(&rel))?;
            stack.push((rel, children, 0));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A chain of `depth` directories named `name` below `root`, made by descriptor
    /// (the full path is longer than PATH_MAX when `depth * (name + 1) > 4096`).
    pub(crate) fn deep_chain(root: &Path, name: &str, depth: usize) -> PathBuf {
        let mut fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let mut rel = PathBuf::new();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, name, DIR_PATH, Mode::empty()).unwrap();
            rel.push(name);
        }
        let f = rustix::fs::openat(&fd, "leaf", OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644)).unwrap();
        rustix::io::write(&f, b"deep").unwrap();
        rel
    }

    #[test]
    fn walks_a_tree_deeper_than_path_max() {
        let t = tempfile::tempdir().unwrap();
        let rel = deep_chain(t.path(), "dddd", 1000);
        assert!(t.path().join(&rel).as_os_str().len() > 4096);
        // Full-path code cannot even look at it.
        let err = std::fs::symlink_metadata(t.path().join(&rel)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::NAMETOOLONG.raw_os_error()));
        let mut seen = Vec::new();
        walk_sorted(t.path(), |_, rel, st| {
            seen.push((rel.to_path_buf(), is_dir(st)));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1001);
        assert_eq!(seen[999], (rel.clone(), true));
        assert_eq!(seen[1000], (rel.join("leaf"), false));
        let mut cur = DirCursor::open(t.path()).unwrap();
        assert!(cur.stat(&rel.join("leaf")).is_some());
        // Up and down again by the components that differ.
        assert!(cur.stat(Path::new("dddd/dddd")).is_some_and(|s| is_dir(&s)));
        assert!(cur.stat(&rel.join("missing")).is_none());
        assert!(cur.stat(&rel.join("leaf")).is_some());
    }

    #[test]
    fn walk_order_is_sorted_and_symlinks_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["b", "a", "a/z", "a/y"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        std::fs::write(r.join("a/y/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("c")).unwrap();
        let mut seen = Vec::new();
        walk_sorted(r, |_, rel, _| {
            seen.push(rel.to_string_lossy().into_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a", "a/y", "a/y/f", "a/z", "b", "c"]);
        let mut cur = DirCursor::open(r).unwrap();
        // A symlink on the way is never followed.
        assert!(cur.stat(Path::new("c/passwd")).is_none());
        assert!(cur.dir(Path::new("../x")).is_err());
        assert!(cur.stat(Path::new("a/y/f")).is_some());
        // Siblings, cousins, `./` and doubled slashes.
        assert!(cur.stat(Path::new("a/z")).is_some_and(|s| is_dir(&s)));
        assert!(cur.dir(Path::new("a/z")).is_ok());
        assert!(cur.stat(Path::new("./a//y/f")).is_some());
        assert!(cur.dir(Path::new("b")).is_ok());
        assert!(cur.stat(Path::new("a/y/f")).is_some());
        assert!(cur.dir(Path::new("/a")).is_err());
        assert!(cur.dir(Path::new("a/y/f")).is_err());
        assert!(cur.stat(Path::new("a/y")).is_some_and(|s| is_dir(&s)));
    }

    #[test]
    fn common_prefixes_end_at_component_boundaries() {
        assert_eq!(common_dir_prefix(b"", b"a/b"), 0);
        assert_eq!(common_dir_prefix(b"a/b", b"a/b/c"), 3);
        assert_eq!(common_dir_prefix(b"a/b/c", b"a/b"), 3);
        assert_eq!(common_dir_prefix(b"a/bc", b"a/bd"), 1);
        assert_eq!(common_dir_prefix(b"ab/c", b"a"), 0);
        assert_eq!(common_dir_prefix(b"a", b"ab"), 0);
        assert_eq!(common_dir_prefix(b"a/b", b"a/b"), 3);
    }
}
