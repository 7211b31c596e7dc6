//! ADD's archive extraction: a source file that is a tar archive (plain, gzip, bzip2,
//! xz or zstd, told by its content) is extracted into the destination directory.
//!
//! Entries are read by the snapshotter's one tar reader ([`TarEntry`]) under
//! [`ExtractPolicy::AddArchive`], which names where `ADD` and layer application differ
//! (whiteouts, special files, xattrs, time bounds). Semantics follow BuildKit
//! (`solver/llbsolver/file/unpack.go`: `chrootarchive.Untar`, `util/archiveutil`):
//! - a source is an archive when it is a regular file whose (decompressed) content
//!   starts with a valid tar header; anything else, whatever its name, is copied;
//! - the destination is always a directory, created (mode 0755, `--chown` or 0:0) when
//!   missing; `--chmod` does not apply to extracted entries;
//! - entries keep the archive's modes, mtimes (to the nanosecond for everything but
//!   directories; before 1970 or past 2262 is the epoch) and owners; `--chown` replaces every
//!   entry's owner; directories an entry needs and the archive lacks get 0755 and 0:0;
//! - no entry lands outside the destination: a path climbing out with `..` is an error,
//!   a symlink met on the way is followed with the destination as its root (absolute
//!   targets start there, relative ones may not leave it), hard links must point inside
//!   it; symlink entries themselves are written as they are;
//! - regular files, directories, symlinks and hard links are extracted; devices and
//!   fifos are refused (an error names the entry), as BuildKit's root-confined unpacker
//!   does; `.wh.` names are plain files. Extended attributes are not restored.
//!
//! Everything is written into the step's upper directory; paths are resolved through
//! the merged view (upper over lower), so an archive extends what the image has.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use kiln_snapshotter::compression::sniffing_decompressor;
use kiln_snapshotter::extract::{clean_path, is_metadata, EntryFault, ExtractPolicy, TarEntry};
use kiln_snapshotter::{open_in_root, set_mtime_ns};
use tar::EntryType;

use crate::copy::FileWriter;
use crate::WorkerError;

type Owner = (u32, u32);

const MAX_SYMLINKS: usize = 255;

/// The decompressed content of an `ADD` source, in whichever compression BuildKit's
/// `DecompressStream` tells by its magic bytes.
fn open_decompressed(file: File) -> io::Result<Box<dyn Read>> {
    sniffing_decompressor(BufReader::with_capacity(256 << 10, file))
}

/// Whether `path` is a regular file holding a tar archive (Go's `tar.Reader.Next`
/// succeeds on its decompressed content: the first block is a header whose checksum
/// is right).
pub(crate) fn is_archive(root: &Path, rel: &Path) -> bool {
    // Opened inside the root: never a FIFO, never through a link out of it.
    let Ok(mut r) = open_in_root(root, rel).and_then(open_decompressed) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    header_checksum_ok(&block)
}

/// A tar header block is valid when its checksum field matches the sum of its bytes
/// (with the field itself counted as spaces), unsigned or signed as Go accepts.
fn header_checksum_ok(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !c.is_whitespace() && *c != '\0')
        .collect();
    let Ok(want) = i64::from_str_radix(&text, 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WorkerError {
    let path = path.to_path_buf();
    move |source| WorkerError::Io { path, source }
}

impl FileWriter<'_> {
    /// ADD's unpack step for one matched source: when `rel` (below `src_root`) is an
    /// archive, extracts it into the directory `dest` and returns true; otherwise
    /// returns false and the source is copied as usual.
    pub(crate) fn try_unpack(
        &mut self,
        src_root: &Path,
        rel: &Path,
        dest: &Path,
        owner: Option<Owner>,
    ) -> Result<bool, WorkerError> {
        let from = src_root.join(rel);
        if !is_archive(src_root, rel) {
            return Ok(false);
        }
        let archive_err = |reason: String| WorkerError::Archive {
            path: rel.display().to_string(),
            reason,
        };
        // The destination directory, through the view's symlinks, as `MkdirAll` does.
        let dest = self.resolve_view_in(Path::new(""), dest, true).map_err(&archive_err)?;
        self.ensure_dirs(&dest, owner.unwrap_or((0, 0)))?;
        let reader = open_in_root(src_root, rel)
            .and_then(open_decompressed)
            .map_err(io_err(&from))?;
        let mut ar = tar::Archive::new(reader);
        let entries = ar.entries().map_err(|e| archive_err(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
            self.extract_entry(&mut entry, &dest, owner).map_err(|e| match e {
                Extract::Bad(reason) => archive_err(reason),
                Extract::Worker(w) => w,
            })?;
        }
        Ok(true)
    }

    fn extract_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dest: &Path,
        owner: Option<Owner>,
    ) -> Result<(), Extract> {
        let policy = ExtractPolicy::AddArchive;
        if is_metadata(entry.header().entry_type()) {
            return Ok(());
        }
        let e = TarEntry::read(entry).map_err(|(name, fault)| match fault {
            EntryFault::Outside => Extract::Bad(policy.outside_reason(&name)),
            EntryFault::Header(reason) => Extract::Bad(format!("`{name}`: invalid header: {reason}")),
        })?;
        let (shown, name, kind, mode) = (e.name.as_str(), &e.path, e.kind, e.mode);
        if name.as_os_str().is_empty() {
            return Ok(()); // the root itself
        }
        let own = owner.unwrap_or((e.uid as u32, e.gid as u32));
        let mtime = e.mtime.0;
        let is_dir = kind == EntryType::Directory;
        let resolved = self
            .resolve_view_in(dest, name, is_dir)
            .map_err(|r| Extract::Bad(format!("`{shown}`: {r}")))?;
        let target = dest.join(&resolved);
        if let Some(parent) = target.parent() {
            self.ensure_dirs(parent, (0, 0))?;
        }
        let up = self.snap.upper().join(&target);
        let existing = self.snap.lookup(&target);
        let existing_is_dir = existing
            .as_ref()
            .is_some_and(|p| p.symlink_metadata().is_ok_and(|m| m.is_dir()));
        if existing.is_some() && !(existing_is_dir && is_dir) {
            remove_upper(&up)?;
        }
        match kind {
            EntryType::Directory => {
                if !up.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    std::fs::create_dir(&up).map_err(io_err(&up))?;
                }
                self.finish_entry(&up, mode, own, mtime, true)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&up)
                    .map_err(io_err(&up))?;
                io::copy(entry, &mut f).map_err(|e| Extract::Bad(format!("`{shown}`: {e}")))?;
                drop(f);
                self.finish_entry(&up, mode, own, mtime, false)?;
                keep_nanos(&up, e.mtime)?;
            }
            EntryType::Symlink => {
                let link = e
                    .link
                    .as_deref()
                    .ok_or_else(|| Extract::Bad(format!("symlink `{shown}` has no target")))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(link), &up).map_err(io_err(&up))?;
                self.finish_entry(&up, 0o777, own, mtime, false)?;
                keep_nanos(&up, e.mtime)?;
            }
            EntryType::Link => {
                let link = e
                    .link
                    .as_deref()
                    .ok_or_else(|| Extract::Bad(format!("hard link `{shown}` has no target")))?;
                let link_name = clean_path(link).filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
                    Extract::Bad(format!(
                        "hard link `{shown}` points outside the extraction root (`{}`)",
                        String::from_utf8_lossy(link)
                    ))
                })?;
                let resolved = self
                    .resolve_view_in(dest, &link_name, false)
                    .map_err(|r| Extract::Bad(format!("hard link `{shown}`: {r}")))?;
                let source = self.snap.lookup(&dest.join(&resolved)).ok_or_else(|| {
                    Extract::Bad(format!(
                        "hard link `{shown}`: target `{}` does not exist",
                        link_name.display()
                    ))
                })?;
                let md = source.symlink_metadata().map_err(io_err(&source))?;
                if md.is_dir() {
                    return Err(Extract::Bad(format!("hard link `{shown}` points to a directory")));
                }
                if source.starts_with(self.snap.upper()) {
                    std::fs::hard_link(&source, &up).map_err(io_err(&up))?;
                } else if md.file_type().is_symlink() {
                    // The target is in a lower layer: a copy stands in for the link.
                    let t = std::fs::read_link(&source).map_err(io_err(&source))?;
                    std::os::unix::fs::symlink(t, &up).map_err(io_err(&up))?;
                } else {
                    std::fs::copy(&source, &up).map_err(io_err(&up))?;
                }
                if !md.file_type().is_symlink() {
                    self.finish_entry(&up, mode, own, mtime, false)?;
                    keep_nanos(&up, e.mtime)?;
                }
            }
            other => {
                debug_assert!(!policy.special_files() && !policy.skips_unknown_types());
                return Err(Extract::Bad(format!(
                    "unsupported tar entry `{shown}` (type {other:?})"
                )));
            }
        }
        Ok(())
    }

    /// Resolves `name` below `base` through the merged view, following symlinks (the
    /// last component only with `follow_leaf`) with `base` as their root. With an empty
    /// `base` (the image's root) `..` stops at the root; below any other base, a path
    /// or relative link leaving it is an error (BuildKit's `resolveRootPath`).
    fn resolve_view_in(&self, base: &Path, name: &Path, follow_leaf: bool) -> Result<PathBuf, String> {
        let confined = !base.as_os_str().is_empty();
        let mut pending: Vec<OsString> = components_rev(name);
        let mut out = PathBuf::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                if !out.pop() && confined {
                    return Err("path leaves the extraction root".to_string());
                }
                continue;
            }
            let cand = out.join(&part);
            let last = pending.is_empty();
            let Some(found) = self.snap.lookup(&base.join(&cand)) else {
                out = cand;
                continue;
            };
            let md = found.symlink_metadata().map_err(|e| e.to_string())?;
            if md.file_type().is_symlink() && (follow_leaf || !last) {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err("too many levels of symbolic links".to_string());
                }
                let target = std::fs::read_link(&found).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    out = PathBuf::new();
                }
                if confined && !target.is_absolute() {
                    // A relative link may not leave the root, even half way.
                    let mut depth = out.components().count() as i64;
                    for c in target.components() {
                        match c {
                            Component::ParentDir => depth -= 1,
                            Component::Normal(_) => depth += 1,
                            _ => {}
                        }
                        if depth < 0 {
                            return Err(format!(
                                "symlink `{}` points outside the extraction root",
                                cand.display()
                            ));
                        }
                    }
                }
                pending.extend(components_rev(&target));
                continue;
            }
            if !md.is_dir() && !last {
                return Err(format!("`{}` is not a directory", cand.display()));
            }
            out = cand;
        }
        Ok(out)
    }

    /// Makes `rel` and its parents directories in the upper directory: directories of
    /// the lower layers are mirrored with their metadata, missing ones get 0755,
    /// `owner` and the build's fixed time.
    fn ensure_dirs(&mut self, rel: &Path, owner: Owner) -> Result<(), WorkerError> {
        let mut cur = PathBuf::new();
        for comp in rel.iter() {
            cur.push(comp);
            let up = self.snap.upper().join(&cur);
            match up.symlink_metadata() {
                Ok(md) if md.is_dir() => continue,
                Ok(_) => remove_upper(&up)?,
                Err(_) => {}
            }
            std::fs::create_dir(&up).map_err(io_err(&up))?;
            match self.lower_dir_stat(&cur) {
                Some(st) => self.finish_entry(&up, st.st_mode & 0o7777, (st.st_uid, st.st_gid), st.st_mtime, true)?,
                None => self.finish_entry(&up, 0o755, owner, self.epoch, true)?,
            }
        }
        Ok(())
    }
}

fn components_rev(p: &Path) -> Vec<OsString> {
    p.components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Why an entry could not be extracted.
enum Extract {
    /// The archive is at fault (named with the source by the caller).
    Bad(String),
    Worker(WorkerError),
}

impl From<WorkerError> for Extract {
    fn from(e: WorkerError) -> Self {
        Extract::Worker(e)
    }
}

/// Puts back the sub-second part of an entry's time, which [`FileWriter::finish_entry`]
/// (whole seconds, as for copied files) leaves out.
fn keep_nanos(path: &Path, mtime: (i64, u32)) -> Result<(), WorkerError> {
    if mtime.1 == 0 {
        return Ok(());
    }
    set_mtime_ns(path, mtime).map_err(io_err(path))
}

fn remove_upper(p: &Path) -> Result<(), WorkerError> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(io_err(p)),
        Ok(_) => std::fs::remove_file(p).map_err(io_err(p)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_bytes(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o640);
        h.set_cksum();
        b.append_data(&mut h, name, body).unwrap();
        b.into_inner().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        std::fs::write(dir.join(name), bytes).unwrap();
        PathBuf::from(name)
    }

    #[test]
    fn archives_are_told_by_content() {
        let d = tempfile::tempdir().unwrap();
        let tar = tar_bytes("a.txt", b"hello");
        assert!(is_archive(d.path(), &write(d.path(), "plain", &tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        assert!(is_archive(d.path(), &write(d.path(), "x.gz", &gz.finish().unwrap())));
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        assert!(is_archive(d.path(), &write(d.path(), "x.bz2", &bz.finish().unwrap())));
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&tar).unwrap();
        assert!(is_archive(d.path(), &write(d.path(), "x.xz", &xz.finish().unwrap())));
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert!(is_archive(d.path(), &write(d.path(), "x.zst", &zst)));
        // Not archives: text named like one, gzip of text, an empty file, zeros.
        assert!(!is_archive(
            d.path(),
            &write(d.path(), "fake.tar.gz", b"not really an archive")
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'x'; 2000]).unwrap();
        assert!(!is_archive(
            d.path(),
            &write(d.path(), "text.gz", &gz.finish().unwrap())
        ));
        assert!(!is_archive(d.path(), &write(d.path(), "empty", b"")));
        assert!(!is_archive(d.path(), &write(d.path(), "zeros", &[0; 1024])));
        assert!(!is_archive(d.path(), Path::new("")));
    }

    #[test]
    fn pax_times_extract_as_docker_untar_sets_them() {
        use std::os::unix::fs::MetadataExt;
        // BuildKit's ADD (`chrootarchive.Untar`): Go's `parsePAXTime`, then
        // `system.Chtimes`: before 1970 or past 2262 is the epoch, nanoseconds are
        // kept (bk_parity's `add_archive_pax_times_are_what_docker_build_sets`).
        let mut b = tar::Builder::new(Vec::new());
        for (name, mtime) in [
            ("frac", "1700000000.123456789"),
            ("trunc", "1.1234567899"),
            ("neg", "-1.5"),
            ("plus", "+7"),
            ("far", "9300000000"),
        ] {
            b.append_pax_extensions([("mtime", mtime.as_bytes())]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        }
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        write(&src, "times.tar", &b.into_inner().unwrap());
        let root = kiln_cache::KilnRoot::open(d.path().join("root")).unwrap();
        let snaps = kiln_snapshotter::Snapshots::new(&root).unwrap();
        let mut snap = snaps.prepare(&[]).unwrap();
        let mut w = FileWriter::new(&mut snap, false, 0);
        assert!(w
            .try_unpack(&src, Path::new("times.tar"), Path::new("out"), None)
            .unwrap());
        w.finish().unwrap();
        let got = |n: &str| {
            let md = std::fs::symlink_metadata(snap.upper().join("out").join(n)).unwrap();
            (md.mtime(), md.mtime_nsec())
        };
        assert_eq!(got("frac"), (1700000000, 123456789));
        assert_eq!(got("trunc"), (1, 123456789));
        assert_eq!(got("neg"), (0, 0));
        assert_eq!(got("plus"), (7, 0));
        assert_eq!(got("far"), (0, 0));
    }
}
