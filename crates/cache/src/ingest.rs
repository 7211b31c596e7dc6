//! Resumable downloads: a blob being pulled is written to `content-v1/ingest/<hex>`
//! (named by the digest it must have), so that a pull killed half-way leaves bytes the
//! next pull of the same blob continues from instead of starting again.
//!
//! The file is flock'ed while a writer has it: a second kiln pulling the same blob at
//! the same time downloads into an ordinary temp file instead. On resume the bytes
//! already there are hashed again (sha256 state cannot be saved), which costs one read
//! of the partial file; the final digest check covers the whole blob, so a damaged
//! partial is detected and thrown away, never stored.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `CacheError::Io { op, path }` or name the path in their message"
)]

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use kiln_image::{Digest, Sha256Writer};
use rustix::fs::{flock, FlockOperation};

use crate::store::{BlobFile, BlobWriter};
use crate::writebehind::WriteBehind;
use crate::{CacheError, ContentStore};

/// A partial download in the ingest directory.
#[derive(Debug, Clone)]
pub struct Partial {
    pub path: PathBuf,
    pub bytes: u64,
}

impl ContentStore {
    /// A writer for the blob `digest` of `size` bytes that continues a partial download
    /// left by an earlier pull ([`BlobWriter::written`] says from where; 0 when there is
    /// none). Falls back to a plain temp file when another process is downloading the
    /// same blob.
    pub fn resume_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, CacheError> {
        let dir = self.ingest_dir();
        fs_err::create_dir_all(&dir).map_err(|e| CacheError::Io {
            op: "cannot create directory",
            path: dir.clone(),
            source: e,
        })?;
        let path = dir.join(digest.hex());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(CacheError::io("cannot open", &path))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return self.writer();
        }
        // The file we locked must still be the one at `path`: a writer that just finished
        // renamed its (then locked) file into the blob store, and must not be appended to.
        let same = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            return self.writer();
        }
        let have = file.metadata().map_err(CacheError::io("cannot stat", &path))?.len();
        if have > size {
            // More than the blob can hold: not a prefix of it.
            file.set_len(0).map_err(CacheError::io("cannot truncate", &path))?;
        }
        let mut reader = file.try_clone().map_err(CacheError::io("cannot read", &path))?;
        let mut inner = Sha256Writer::new(BlobFile::Ingest {
            file: WriteBehind::new(file),
            path: path.clone(),
            replay: true,
        });
        // Reading to the end also leaves the shared file offset there, for the appends.
        io::copy(&mut reader, &mut inner).map_err(CacheError::io("cannot read", &path))?;
        let resumed = inner.written();
        if let BlobFile::Ingest { replay, file, .. } = inner.get_mut() {
            *replay = false;
            // The appends go on from the end of what was replayed.
            file.resume_at(resumed);
        }
        Ok(BlobWriter {
            inner,
            store: self.clone(),
        })
    }

    /// Partial downloads present (for `kiln du`).
    pub fn partials(&self) -> Vec<Partial> {
        let Ok(rd) = std::fs::read_dir(self.ingest_dir()) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                md.is_file().then(|| Partial {
                    path: e.path(),
                    bytes: md.len(),
                })
            })
            .collect()
    }

    /// Removes every partial download no process is writing; returns what it removed.
    pub fn remove_partials(&self) -> Vec<Partial> {
        self.partials()
            .into_iter()
            .filter(|p| {
                let unused =
                    File::open(&p.path).is_ok_and(|f| flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok());
                unused && std::fs::remove_file(&p.path).is_ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        let s = ContentStore::new(d.path().join("c"), d.path().join("tmp"));
        (d, s)
    }

    #[test]
    fn a_dropped_download_is_resumed_and_verified_whole() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let digest = Digest::of(&data);
        let mut w = s.resume_writer(&digest, data.len() as u64).unwrap();
        assert_eq!(w.written(), 0);
        w.write_all(&data[..150_000]).unwrap();
        drop(w); // a killed pull
        assert_eq!(s.partials().len(), 1);
        assert_eq!(s.partials()[0].bytes, 150_000);
        let mut w = s.resume_writer(&digest, data.len() as u64).unwrap();
        assert_eq!(w.written(), 150_000);
        w.write_all(&data[150_000..]).unwrap();
        w.commit(Some(&digest)).unwrap();
        assert!(s.partials().is_empty());
        s.verify(&digest).unwrap();
    }

    #[test]
    fn a_damaged_partial_is_never_stored() {
        let (_d, s) = store();
        let data = vec![7u8; 10_000];
        let digest = Digest::of(&data);
        std::fs::create_dir_all(s.ingest_dir()).unwrap();
        std::fs::write(s.ingest_dir().join(digest.hex()), vec![8u8; 4_000]).unwrap();
        let mut w = s.resume_writer(&digest, data.len() as u64).unwrap();
        assert_eq!(w.written(), 4_000);
        w.write_all(&data[4_000..]).unwrap();
        assert!(matches!(
            w.commit(Some(&digest)),
            Err(CacheError::DigestMismatch { .. })
        ));
        assert!(!s.has(&digest));
        assert!(s.partials().is_empty(), "the bad partial is gone");
    }

    #[test]
    fn a_second_writer_of_the_same_blob_does_not_share_the_partial() {
        let (_d, s) = store();
        let digest = Digest::of(b"abc");
        let mut a = s.resume_writer(&digest, 3).unwrap();
        a.write_all(b"a").unwrap();
        let mut b = s.resume_writer(&digest, 3).unwrap();
        assert_eq!(b.written(), 0);
        b.write_all(b"abc").unwrap();
        b.commit(Some(&digest)).unwrap();
        assert!(s.remove_partials().is_empty(), "a's partial is in use");
        a.write_all(b"bc").unwrap();
        a.commit(Some(&digest)).unwrap();
        assert!(s.partials().is_empty());
    }
}
