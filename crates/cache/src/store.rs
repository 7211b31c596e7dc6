#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_image::{Descriptor, Digest, Sha256Writer};

use crate::writebehind::WriteBehind;
use crate::CacheError;

/// ContentStore keeps blobs named by the sha256 of their bytes under `blobs/sha256/`.
///
/// A blob is written to a temp file, hashed while written, fsynced and renamed into
/// place, so a reader never sees a partial blob and a crash leaves only temp files.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl ContentStore {
    /// A store rooted at `root` (holding `blobs/sha256`), with temp files in `tmp`.
    pub fn new(root: PathBuf, tmp: PathBuf) -> Self {
        ContentStore { root, tmp }
    }

    /// The directory holding `blobs/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where temp files are made before they are renamed into place.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm()).join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open(&self, digest: &Digest) -> Result<File, CacheError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CacheError::MissingBlob(digest.clone())
            } else {
                CacheError::Io {
                    op: "cannot open blob",
                    path: p,
                    source: e,
                }
            }
        })
    }

    /// Copies the file `src` in as the blob `digest` (an OCI layout's blob, say),
    /// verifying it; nothing is stored when the bytes do not match.
    pub fn import(&self, src: &Path, digest: &Digest) -> Result<(), CacheError> {
        if self.has(digest) {
            return Ok(());
        }
        let mut f = File::open(src).map_err(CacheError::io("cannot read", src))?;
        let mut w = self.writer()?;
        io::copy(&mut f, &mut w).map_err(CacheError::io("cannot read", src))?;
        w.commit(Some(digest))?;
        Ok(())
    }

    /// Reads a whole (small) blob, such as a manifest or config.
    pub fn read_all(&self, digest: &Digest) -> Result<Vec<u8>, CacheError> {
        let mut buf = Vec::new();
        let p = self.blob_path(digest);
        self.open(digest)?
            .read_to_end(&mut buf)
            .map_err(CacheError::io("cannot read blob", &p))?;
        if Digest::of(&buf) != *digest {
            return Err(CacheError::DigestMismatch {
                expected: digest.clone(),
                actual: Digest::of(&buf),
            });
        }
        Ok(buf)
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter, CacheError> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(CacheError::io("cannot create temp file in", &self.tmp))?;
        Ok(BlobWriter {
            inner: Sha256Writer::new(BlobFile::Temp(WriteBehind::new(file))),
            store: self.clone(),
        })
    }

    /// Where partial downloads live (`content-v1/ingest/<hex>`): beside the blobs, out of
    /// `tmp/`, so that a build's sweep of `tmp/` does not throw away what a killed pull
    /// already fetched.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Stores `bytes` and returns a descriptor with the given media type.
    pub fn put_bytes(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, CacheError> {
        let digest = Digest::of(bytes);
        if !self.has(&digest) {
            let mut w = self.writer()?;
            w.write_all(bytes)
                .map_err(CacheError::io("cannot write temp file in", &self.tmp))?;
            w.commit(Some(&digest))?;
        }
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    /// Re-hashes a blob and checks it matches its name.
    pub fn verify(&self, digest: &Digest) -> Result<(), CacheError> {
        let p = self.blob_path(digest);
        let mut f = self.open(digest)?;
        let mut w = Sha256Writer::new(io::sink());
        io::copy(&mut f, &mut w).map_err(CacheError::io("cannot read blob", &p))?;
        let (actual, _, _) = w.finish();
        if actual != *digest {
            return Err(CacheError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Every blob digest present, sorted.
    pub fn list(&self) -> Result<Vec<Digest>, CacheError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(CacheError::Io {
                    op: "cannot read directory",
                    path: dir,
                    source: e,
                })
            }
        };
        for entry in rd {
            let entry = entry.map_err(CacheError::io("cannot read directory", &dir))?;
            if let Some(d) = entry.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Makes `digest` present in `other` by hard link (copy across filesystems).
    pub fn link_into(&self, digest: &Digest, other: &ContentStore) -> Result<(), CacheError> {
        let dst = other.blob_path(digest);
        if dst.is_file() {
            return Ok(());
        }
        let src = self.blob_path(digest);
        if !src.is_file() {
            return Err(CacheError::MissingBlob(digest.clone()));
        }
        let parent = dst.parent().expect("blob paths have parents");
        fs_err::create_dir_all(parent).map_err(|e| CacheError::Io {
            op: "cannot create directory",
            path: parent.to_path_buf(),
            source: e,
        })?;
        // Link under a temp name then rename, so `dst` appears whole or not at all.
        let tmp = other.tmp.join(format!("link-{}-{}", digest.hex(), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(&src, &tmp).is_err() {
            std::fs::copy(&src, &tmp).map_err(CacheError::io("cannot copy blob to", &tmp))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(CacheError::io("cannot sync", &tmp))?;
        }
        std::fs::rename(&tmp, &dst).map_err(CacheError::io("cannot rename into", &dst))?;
        Ok(())
    }
}

/// BlobWriter streams a new blob into a temp file; `commit` names it by digest.
/// Dropped without commit, a temp file is removed and an ingest file (a download that
/// can be resumed, see [`ContentStore::resume_writer`]) is kept.
pub struct BlobWriter {
    pub(crate) inner: Sha256Writer<BlobFile>,
    pub(crate) store: ContentStore,
}

/// Where a new blob's bytes go.
pub(crate) enum BlobFile {
    /// A temp file in `tmp/`, removed when dropped.
    Temp(WriteBehind<tempfile::NamedTempFile>),
    /// `content-v1/ingest/<hex>`, kept when dropped, locked (flock) while open.
    Ingest {
        file: WriteBehind<File>,
        path: PathBuf,
        /// While set, writes only feed the hash: the bytes are already in the file.
        replay: bool,
    },
}

impl BlobFile {
    fn path(&self) -> &Path {
        match self {
            BlobFile::Temp(t) => t.get_ref().path(),
            BlobFile::Ingest { path, .. } => path,
        }
    }

    fn file(&self) -> &File {
        match self {
            BlobFile::Temp(t) => t.get_ref().as_file(),
            BlobFile::Ingest { file, .. } => file.get_ref(),
        }
    }
}

impl Write for BlobFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlobFile::Temp(t) => t.write(buf),
            BlobFile::Ingest { replay: true, .. } => Ok(buf.len()),
            BlobFile::Ingest { file, .. } => file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlobFile::Temp(t) => t.flush(),
            BlobFile::Ingest { file, .. } => file.flush(),
        }
    }
}

impl BlobWriter {
    /// Bytes written so far (for a resumed download: including those it resumed from).
    pub fn written(&self) -> u64 {
        self.inner.written()
    }

    /// Reads back the bytes written so far (a resumed download's partial included), for
    /// a caller that must see every byte of the blob from the first.
    pub fn read_written(&self) -> Result<impl io::Read, CacheError> {
        let path = self.inner.get_ref().path();
        let f = File::open(path).map_err(CacheError::io("cannot read", path))?;
        Ok(io::Read::take(f, self.written()))
    }

    /// Throws the bytes away, a resumable partial download included (a mismatch, or a
    /// registry that cannot resume: the next attempt starts from zero).
    pub fn discard(self) {
        let (_, _, file) = self.inner.finish();
        if let BlobFile::Ingest { path, .. } = &file {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Finishes the blob: fsync, verify against `expected` when given, rename into place.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), CacheError> {
        let (digest, size, file) = self.inner.finish();
        if let Some(exp) = expected {
            if *exp != digest {
                if let BlobFile::Ingest { path, .. } = &file {
                    // Wrong bytes cannot be resumed from.
                    let _ = std::fs::remove_file(path);
                }
                return Err(CacheError::DigestMismatch {
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        let dst = self.store.blob_path(&digest);
        if dst.is_file() {
            if let BlobFile::Ingest { path, .. } = &file {
                let _ = std::fs::remove_file(path);
            }
            return Ok((digest, size));
        }
        file.file()
            .sync_all()
            .map_err(CacheError::io("cannot sync", file.path()))?;
        let parent = dst.parent().expect("blob paths have parents").to_path_buf();
        fs_err::create_dir_all(&parent).map_err(|e| CacheError::Io {
            op: "cannot create directory",
            path: parent.clone(),
            source: e,
        })?;
        match file {
            BlobFile::Temp(t) => t.into_inner().persist(&dst).map(drop).map_err(|e| e.error),
            // Renamed while still locked, so no other writer resumes into the blob.
            BlobFile::Ingest { path, .. } => std::fs::rename(&path, &dst),
        }
        .map_err(|source| CacheError::Io {
            op: "cannot rename blob into",
            path: dst.clone(),
            source,
        })?;
        sync_dir(&parent);
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Best-effort fsync of a directory so a rename survives a crash.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes `bytes` to `path` atomically (temp file in `tmp`, fsync, rename).
pub(crate) fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let mut f = tempfile::Builder::new()
        .prefix("write-")
        .tempfile_in(tmp)
        .map_err(CacheError::io("cannot create temp file in", tmp))?;
    f.write_all(bytes)
        .map_err(CacheError::io("cannot write", f.path().to_path_buf()))?;
    f.as_file()
        .sync_all()
        .map_err(CacheError::io("cannot sync", f.path().to_path_buf()))?;
    f.persist(path).map_err(|e| CacheError::Io {
        op: "cannot rename into",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        let s = ContentStore::new(d.path().join("c"), d.path().join("tmp"));
        (d, s)
    }

    #[test]
    fn put_and_read_back() {
        let (_d, s) = store();
        let desc = s.put_bytes("x", b"hello").unwrap();
        assert_eq!(desc.digest, Digest::of(b"hello"));
        assert_eq!(s.read_all(&desc.digest).unwrap(), b"hello");
        s.verify(&desc.digest).unwrap();
        assert_eq!(s.list().unwrap(), vec![desc.digest]);
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let (d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(Some(&Digest::of(b"xyz"))).unwrap_err();
        assert!(matches!(err, CacheError::DigestMismatch { .. }));
        assert!(s.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn dropped_writer_leaves_no_temp() {
        let (d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"abc").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }
}
