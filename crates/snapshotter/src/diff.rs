//! The copy backend for RUN: the step runs on a full clone of its parent's tree, and the
//! layer is the difference between the two trees, written exactly as the overlay backend
//! writes an upper directory (same entries, same order, whiteouts at the deleted name,
//! `.wh..wh..opq` after a directory that replaced something).
//!
//! Change detection: a non-directory changed when its type, mode, owner, size, mtime,
//! link target, device or xattrs differ; a regular file whose metadata is the same but
//! whose ctime is at or past the moment the clone finished (something touched it) is
//! compared by contents. A directory was replaced when its inode differs
//! from the clone's; it is written when its own metadata changed or anything below it is.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use crate::tarw::{append_path, read_xattrs, whiteout_meta, TarOptions, TarWriter};

/// CopyRun is a clone of a parent tree made for one step.
#[derive(Debug)]
pub struct CopyRun {
    /// The clone the step runs on.
    pub tree: PathBuf,
    /// Directory inodes right after cloning, by relative path.
    dirs: HashMap<PathBuf, u64>,
    /// Paths that could not be cloned (devices, rootless); never reported as deleted.
    skipped: HashSet<PathBuf>,
    /// ctime of a file made right after the clone finished.
    marker: (i64, i64),
    /// The file system refused the clone mark: inode numbers alone tell replaced dirs.
    unmarked: bool,
}

/// The extended attribute on every directory of a clone (`tarw` never writes `user.kiln.*`).
const CLONE_MARK: &std::ffi::CStr = c"user.kiln.cloned";

fn has_mark(p: &Path) -> bool {
    let mut v = [0u8; 4];
    rustix::fs::lgetxattr(p, CLONE_MARK, &mut v).is_ok()
}

fn ctx(op: &str, p: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let msg = format!("{op} `{}`", p.display());
    move |e| io::Error::new(e.kind(), format!("{msg}: {e}"))
}

fn set_times(p: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    let t = Timespec {
        tv_sec: md.mtime(),
        tv_nsec: md.mtime_nsec(),
    };
    rustix::fs::utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

impl CopyRun {
    /// Clones `lower` (nothing for an empty parent) into the new directory `tree`.
    pub fn clone_tree(lower: Option<&Path>, tree: &Path, marker_file: &Path) -> io::Result<CopyRun> {
        let mut run = CopyRun {
            tree: tree.to_path_buf(),
            dirs: HashMap::new(),
            skipped: HashSet::new(),
            marker: (0, 0),
            unmarked: false,
        };
        match lower {
            Some(l) => {
                let mut links = HashMap::new();
                run.clone_entry(l, tree, Path::new(""), &mut links)?;
            }
            None => {
                std::fs::create_dir(tree).map_err(ctx("cannot create", tree))?;
                run.dirs.insert(PathBuf::new(), std::fs::metadata(tree)?.ino());
            }
        }
        std::fs::write(marker_file, b"").map_err(ctx("cannot create", marker_file))?;
        let m = std::fs::metadata(marker_file)?;
        run.marker = (m.ctime(), m.ctime_nsec());
        Ok(run)
    }

    fn clone_entry(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &Path,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> io::Result<()> {
        let md = std::fs::symlink_metadata(src).map_err(ctx("cannot stat", src))?;
        let ft = md.file_type();
        let chown = crate::ids::can_chown();
        if ft.is_dir() {
            std::fs::create_dir(dst).map_err(ctx("cannot create", dst))?;
            let mut names: Vec<OsString> = std::fs::read_dir(src)
                .map_err(ctx("cannot read", src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for n in names {
                self.clone_entry(&src.join(&n), &dst.join(&n), &rel.join(&n), links)?;
            }
            self.dirs.insert(rel.to_path_buf(), std::fs::metadata(dst)?.ino());
            // Inode numbers are reused at once on some file systems (ext4): a directory
            // removed and made again by the step can get the same one. The mark (left
            // out of layers) tells a clone's directory from a new one.
            if rustix::fs::lsetxattr(dst, CLONE_MARK, b"1", rustix::fs::XattrFlags::empty()).is_err() {
                self.unmarked = true;
            }
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(src)?, dst).map_err(ctx("cannot create", dst))?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    return std::fs::hard_link(first, dst).map_err(ctx("cannot link", dst));
                }
                links.insert((md.dev(), md.ino()), dst.to_path_buf());
            }
            std::fs::copy(src, dst).map_err(ctx("cannot copy", src))?;
        } else {
            let kind = if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else {
                self.skipped.insert(rel.to_path_buf());
                return Ok(()); // sockets
            };
            if kind != rustix::fs::FileType::Fifo && !crate::ids::can_mknod() {
                self.skipped.insert(rel.to_path_buf());
                return Ok(());
            }
            rustix::fs::mknodat(
                CWD,
                dst,
                kind,
                rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(|e| ctx("cannot create", dst)(e.into()))?;
        }
        if chown {
            std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid())).map_err(ctx("cannot chown", dst))?;
        }
        if !ft.is_symlink() {
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(ctx("cannot chmod", dst))?;
            for (k, v) in read_xattrs(src) {
                if let Ok(key) = std::ffi::CString::new(k) {
                    let _ = rustix::fs::lsetxattr(dst, key.as_c_str(), &v, rustix::fs::XattrFlags::empty());
                }
            }
        }
        set_times(dst, &md).map_err(ctx("cannot set times on", dst))
    }

    /// Writes the step's changes against `lower` as a layer tar.
    pub fn write_diff<W: Write>(&self, lower: Option<&Path>, out: W, opts: &TarOptions) -> io::Result<W> {
        let mut emits = Vec::new();
        self.diff_dir(lower, Path::new(""), &mut emits)?;
        let mut tw = TarWriter::new(out);
        let mut links = HashMap::new();
        for e in emits {
            match e {
                Emit::Entry(rel) => {
                    let p = self.tree.join(&rel);
                    let md = std::fs::symlink_metadata(&p).map_err(ctx("cannot stat", &p))?;
                    append_path(&mut tw, &p, &rel, &md, opts, &mut links)?;
                }
                Emit::Whiteout(rel) => {
                    let parent = rel.parent().unwrap_or(Path::new(""));
                    let mtime = clamp(std::fs::symlink_metadata(self.tree.join(parent))?.mtime(), opts);
                    let mut name = if parent.as_os_str().is_empty() {
                        Vec::new()
                    } else {
                        let mut n = parent.as_os_str().as_bytes().to_vec();
                        n.push(b'/');
                        n
                    };
                    name.extend_from_slice(b".wh.");
                    name.extend_from_slice(rel.file_name().map(|n| n.as_bytes()).unwrap_or_default());
                    tw.append(&name, &whiteout_meta(mtime), None)?;
                }
                Emit::Opaque(rel) => {
                    let mtime = clamp(std::fs::symlink_metadata(self.tree.join(&rel))?.mtime(), opts);
                    let mut name = rel.as_os_str().as_bytes().to_vec();
                    name.extend_from_slice(b"/.wh..wh..opq");
                    tw.append(&name, &whiteout_meta(mtime), None)?;
                }
            }
        }
        tw.finish()
    }

    /// Changes under directory `rel` (present in the tree and, if `lower` is some, in
    /// the lower tree as a directory that was not replaced).
    fn diff_dir(&self, lower: Option<&Path>, rel: &Path, out: &mut Vec<Emit>) -> io::Result<()> {
        let names = |root: &Path| -> io::Result<Vec<OsString>> {
            let d = root.join(rel);
            match std::fs::read_dir(&d) {
                Ok(rd) => rd.map(|e| e.map(|e| e.file_name())).collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(ctx("cannot read", &d)(e)),
            }
        };
        let mut all: Vec<OsString> = names(&self.tree)?;
        if let Some(l) = lower {
            all.extend(names(l)?);
        }
        all.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        all.dedup();
        for name in all {
            let r = rel.join(&name);
            let new = std::fs::symlink_metadata(self.tree.join(&r)).ok();
            let old = lower.and_then(|l| std::fs::symlink_metadata(l.join(&r)).ok());
            match (old, new) {
                (None, None) => {}
                (Some(_), None) => {
                    if !self.skipped.contains(&r) {
                        out.push(Emit::Whiteout(r));
                    }
                }
                (None, Some(n)) => self.all_new(&r, &n, out)?,
                (Some(o), Some(n)) => {
                    if n.is_dir() {
                        let replaced = !o.is_dir()
                            || self.dirs.get(&r) != Some(&n.ino())
                            || (!self.unmarked && !has_mark(&self.tree.join(&r)));
                        if replaced {
                            out.push(Emit::Entry(r.clone()));
                            out.push(Emit::Opaque(r.clone()));
                            self.all_new_children(&r, out)?;
                        } else {
                            let mut below = Vec::new();
                            self.diff_dir(lower, &r, &mut below)?;
                            if !below.is_empty() || self.meta_changed(lower, &r, &o, &n)? {
                                out.push(Emit::Entry(r));
                                out.append(&mut below);
                            }
                        }
                    } else if o.file_type() != n.file_type() || self.meta_changed(lower, &r, &o, &n)? {
                        out.push(Emit::Entry(r));
                    }
                }
            }
        }
        Ok(())
    }

    fn all_new(&self, rel: &Path, md: &std::fs::Metadata, out: &mut Vec<Emit>) -> io::Result<()> {
        out.push(Emit::Entry(rel.to_path_buf()));
        if md.is_dir() {
            self.all_new_children(rel, out)?;
        }
        Ok(())
    }

    fn all_new_children(&self, rel: &Path, out: &mut Vec<Emit>) -> io::Result<()> {
        let d = self.tree.join(rel);
        let mut names: Vec<OsString> = std::fs::read_dir(&d)
            .map_err(ctx("cannot read", &d))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let r = rel.join(&n);
            let md = std::fs::symlink_metadata(self.tree.join(&r))?;
            self.all_new(&r, &md, out)?;
        }
        Ok(())
    }

    fn meta_changed(
        &self,
        lower: Option<&Path>,
        rel: &Path,
        o: &std::fs::Metadata,
        n: &std::fs::Metadata,
    ) -> io::Result<bool> {
        let (lp, tp) = (lower.map(|l| l.join(rel)).unwrap_or_default(), self.tree.join(rel));
        if o.mode() != n.mode()
            || o.uid() != n.uid()
            || o.gid() != n.gid()
            || (!n.is_dir() && o.len() != n.len())
            || o.mtime() != n.mtime()
            || o.mtime_nsec() != n.mtime_nsec()
            || (n.file_type().is_char_device() || n.file_type().is_block_device()) && o.rdev() != n.rdev()
        {
            return Ok(true);
        }
        if n.is_symlink() && std::fs::read_link(&lp)? != std::fs::read_link(&tp)? {
            return Ok(true);
        }
        if read_xattrs(&lp) != read_xattrs(&tp) {
            return Ok(true);
        }
        if n.is_dir() || n.is_symlink() {
            return Ok(false);
        }
        // Same metadata, but touched since the clone (ctime moves on any write, chmod,
        // chown or link-count change, and coarse clocks may not move it past the
        // marker): only the contents can tell.
        if (n.ctime(), n.ctime_nsec()) >= self.marker && n.is_file() {
            return Ok(!same_contents(&lp, &tp)?);
        }
        Ok(false)
    }
}

fn clamp(mtime: i64, opts: &TarOptions) -> i64 {
    opts.clamp_mtime.map_or(mtime, |c| mtime.min(c))
}

fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

enum Emit {
    Entry(PathBuf),
    Whiteout(PathBuf),
    Opaque(PathBuf),
}

use std::os::unix::fs::PermissionsExt;
