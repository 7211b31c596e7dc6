//! Opening a regular file below a root directory without ever leaving it.
//!
//! Build contexts, stage trees and base images are untrusted: a path walked or resolved
//! inside them may meet a symlink (or have one swapped in) that points at the host. The
//! file is therefore opened with `openat2(RESOLVE_IN_ROOT)`, so every symlink on the way
//! resolves inside the root, and `O_NOFOLLOW | O_NONBLOCK`, so a last-component symlink
//! or a FIFO is never followed or waited on.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::apply::resolve_in_root;

/// RootDir is an open directory that files are read from without leaving it.
#[derive(Debug)]
pub struct RootDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl RootDir {
    /// Opens the directory `root` (trusted: a symlink naming it is followed).
    pub fn open(root: &Path) -> io::Result<RootDir> {
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(RootDir {
            path: root.to_path_buf(),
            fd,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file at `rel` below the root for reading, resolving every
    /// component inside the root; anything but a regular file (a symlink at the end, a
    /// FIFO, a device, a socket, a directory) is an error and is never read.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match openat2(
            &self.fd,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            // A kernel before 5.6, or a seccomp profile that hides openat2: resolve the
            // parents inside the root ourselves; O_NOFOLLOW still refuses a symlink at
            // the end.
            Err(Errno::NOSYS | Errno::PERM) => {
                let path = resolve_in_root(&self.path, rel, false).map_err(io::Error::other)?;
                rustix::fs::open(&path, flags, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(File::from(fd))
    }
}

impl RootDir {
    /// Opens the regular file `rel` names below the root, following a symlink at its
    /// end too, inside the root (BuildKit reads a context's Dockerfile so).
    pub fn open_file_following(&self, rel: &Path) -> io::Result<File> {
        let real = resolve_in_root(&self.path, rel, true).map_err(io::Error::other)?;
        self.open_file(real.strip_prefix(&self.path).unwrap_or(Path::new("")))
    }
}

/// Opens the regular file at `rel` below `root` for reading, as [`RootDir::open_file`].
pub fn open_in_root(root: &Path, rel: &Path) -> io::Result<File> {
    RootDir::open(root)?.open_file(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(root: &Path, rel: &str) -> io::Result<String> {
        let mut s = String::new();
        open_in_root(root, Path::new(rel))?.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("d")).unwrap();
        std::fs::write(r.join("d/f"), "inside").unwrap();
        // An absolute link to a host directory means the same path below the root.
        symlink(host.path(), r.join("hostdir")).unwrap();
        symlink("/d", r.join("abs")).unwrap();
        symlink("../../../../d", r.join("up")).unwrap();
        assert_eq!(read(r, "abs/f").unwrap(), "inside");
        assert_eq!(read(r, "up/f").unwrap(), "inside");
        assert!(read(r, "hostdir/secret").is_err());
        // A symlink at the end is never followed.
        symlink(host.path().join("secret"), r.join("link")).unwrap();
        assert!(read(r, "link").is_err());
        symlink("/d/f", r.join("inlink")).unwrap();
        assert!(read(r, "inlink").is_err());
        let dir = RootDir::open(r).unwrap();
        let mut s = String::new();
        dir.open_file_following(Path::new("inlink"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "inside");
        assert!(dir.open_file_following(Path::new("link")).is_err());
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // Opening a FIFO for reading would wait for a writer forever.
        let err = open_in_root(r, Path::new("fifo")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        std::fs::create_dir(r.join("dir")).unwrap();
        assert!(open_in_root(r, Path::new("dir")).is_err());
    }
}
