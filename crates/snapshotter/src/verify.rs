//! Checking a layer blob against what the image says about it, as the blob streams past
//! (while it downloads, or while it is unpacked; never in a second read): its first
//! bytes must be the compression its media type names, and the sha256 of its
//! uncompressed tar must be the diff id the image config lists.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use kiln_cache::ContentStore;
use kiln_image::{Descriptor, Digest, LayerCodec, Sha256Writer};

use crate::apply::{apply_tar, ApplyOptions, ApplyReport};
use crate::compression::{decompressor, sniff_layer, DecodingWriter};
use crate::{Layer, SnapshotError};

type Hasher = Sha256Writer<io::Sink>;

/// DiffIdWriter takes a layer blob's bytes in order and computes its diff id: it checks
/// the magic bytes against the media type's compression, decompresses and hashes.
pub struct DiffIdWriter {
    blob: Descriptor,
    codec: LayerCodec,
    state: State,
}

enum State {
    /// Fewer than four bytes seen: the compression is not known yet.
    Head(Vec<u8>),
    Decoding(DecodingWriter<Hasher>),
}

impl DiffIdWriter {
    /// A writer for the layer blob `blob`; fails for a media type kiln cannot unpack.
    pub fn new(blob: &Descriptor) -> Result<Self, SnapshotError> {
        let codec = LayerCodec::of_media_type(&blob.media_type)
            .ok_or_else(|| SnapshotError::MediaType(blob.media_type.clone()))?;
        Ok(DiffIdWriter {
            blob: blob.clone(),
            codec,
            state: State::Head(Vec::with_capacity(4)),
        })
    }

    /// Decides the compression from the first bytes and starts the decoder.
    fn start(&mut self, head: &[u8]) -> io::Result<()> {
        check_codec(&self.blob, self.codec, head).map_err(invalid)?;
        let hasher = Sha256Writer::new(io::sink());
        self.state = State::Decoding(DecodingWriter::new(self.codec, hasher)?);
        self.write_all(head)
    }

    /// The diff id of everything written; an error when the blob is not valid in its
    /// compression or is shorter than four bytes and not what its media type says.
    pub fn finish(mut self) -> io::Result<Digest> {
        if let State::Head(head) = &self.state {
            let head = head.clone();
            self.start(&head)?;
        }
        let hasher = match self.state {
            State::Head(_) => unreachable!("started above"),
            State::Decoding(d) => d.finish()?,
        };
        Ok(hasher.finish().0)
    }

    /// [`Self::finish`], then compares with `diff_id`.
    pub fn check(self, diff_id: &Digest) -> Result<(), SnapshotError> {
        let blob = self.blob.clone();
        let codec = self.codec;
        let actual = self.finish().map_err(|e| SnapshotError::Corrupt {
            digest: blob.digest.clone(),
            codec,
            message: e.to_string(),
        })?;
        same_diff_id(&blob.digest, diff_id, actual)
    }
}

impl Write for DiffIdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.state {
            State::Head(head) => {
                let take = buf.len().min(4 - head.len());
                head.extend_from_slice(&buf[..take]);
                if head.len() == 4 {
                    let head = std::mem::take(head);
                    self.start(&head)?;
                }
                Ok(take)
            }
            State::Decoding(d) => d.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// CodecError carries a [`SnapshotError::Codec`] through the writer's IO errors.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct CodecError(SnapshotError);

fn invalid(e: SnapshotError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, CodecError(e))
}

fn corrupt(layer: &Layer, message: String) -> SnapshotError {
    SnapshotError::Corrupt {
        digest: layer.blob.digest.clone(),
        codec: LayerCodec::of_media_type(&layer.blob.media_type).unwrap_or(LayerCodec::Uncompressed),
        message,
    }
}

/// The blob's first bytes must be the compression its media type names.
fn check_codec(blob: &Descriptor, codec: LayerCodec, head: &[u8]) -> Result<(), SnapshotError> {
    let found = sniff_layer(head);
    if found == codec {
        return Ok(());
    }
    Err(SnapshotError::Codec {
        digest: blob.digest.clone(),
        media_type: blob.media_type.clone(),
        found,
        expected: codec,
    })
}

fn same_diff_id(digest: &Digest, expected: &Digest, actual: Digest) -> Result<(), SnapshotError> {
    if &actual == expected {
        return Ok(());
    }
    Err(SnapshotError::DiffId(Box::new(crate::DiffIdMismatch {
        digest: digest.clone(),
        expected: expected.clone(),
        actual,
    })))
}

/// Reads a stored layer blob once and checks its compression and diff id.
pub fn verify_layer(store: &ContentStore, layer: &Layer) -> Result<(), SnapshotError> {
    let path = store.blob_path(&layer.blob.digest);
    let mut f = store.open(&layer.blob.digest)?;
    let mut w = DiffIdWriter::new(&layer.blob)?;
    let copied = io::copy(&mut f, &mut w);
    if let Err(e) = copied {
        return Err(match e.kind() {
            io::ErrorKind::InvalidData => match e.into_inner() {
                // The magic bytes were wrong: the writer's own error.
                Some(inner) if inner.is::<CodecError>() => match inner.downcast::<CodecError>() {
                    Ok(c) => c.0,
                    Err(other) => corrupt(layer, other.to_string()),
                },
                Some(inner) => corrupt(layer, inner.to_string()),
                None => corrupt(layer, "invalid data".to_string()),
            },
            _ => SnapshotError::Io {
                op: "cannot read",
                path,
                source: e,
            },
        });
    }
    w.check(&layer.diff_id)
}

/// HashingReader hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Applies a stored layer blob onto `dest`, checking its compression and, in the same
/// pass, its diff id: the tar is hashed as the applier reads it, and what follows the
/// tar's end marker is hashed too. A mismatch is an error after the entries were
/// written: the caller must throw `dest` away (snapshots are built in a temp directory
/// and renamed into place only when complete).
pub fn apply_layer_verified(
    store: &ContentStore,
    layer: &Layer,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, SnapshotError> {
    let path = store.blob_path(&layer.blob.digest);
    let io_err = |source: io::Error| SnapshotError::Io {
        op: "cannot read layer",
        path: path.clone(),
        source,
    };
    let codec = LayerCodec::of_media_type(&layer.blob.media_type)
        .ok_or_else(|| SnapshotError::MediaType(layer.blob.media_type.clone()))?;
    let mut f = io::BufReader::with_capacity(1 << 20, store.open(&layer.blob.digest)?);
    let head = f.fill_buf().map_err(io_err)?;
    check_codec(&layer.blob, codec, &head[..head.len().min(4)])?;
    let tar = decompressor(codec.into(), f).map_err(io_err)?;
    let mut reader = HashingReader {
        inner: tar,
        hasher: Sha256Writer::new(io::sink()),
    };
    let report = apply_tar(dest, &mut reader, opts)?;
    io::copy(&mut reader, &mut io::sink()).map_err(io_err)?;
    same_diff_id(&layer.blob.digest, &layer.diff_id, reader.hasher.finish().0)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::media_types;

    fn tar_of(name: &str, text: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, text.as_bytes()).unwrap();
        tar.into_inner().unwrap()
    }

    fn gzip(raw: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(raw).unwrap();
        gz.finish().unwrap()
    }

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let store = ContentStore::new(dir.path().join("blobs"), dir.path().join("tmp"));
        (dir, store)
    }

    fn stored(store: &ContentStore, media_type: &str, blob: &[u8], diff_id: Digest) -> Layer {
        let digest = store.put_bytes(media_type, blob).unwrap().digest;
        Layer {
            diff_id,
            blob: Descriptor::new(media_type, digest, blob.len() as u64),
        }
    }

    #[test]
    fn the_writer_computes_diff_ids_in_any_chunking() {
        let raw = tar_of("a", "hello\n");
        for (mt, blob) in [
            (media_types::OCI_LAYER_GZIP, gzip(&raw)),
            (media_types::OCI_LAYER_ZSTD, zstd::encode_all(&raw[..], 3).unwrap()),
            (media_types::OCI_LAYER_TAR, raw.clone()),
        ] {
            let d = Descriptor::new(mt, Digest::of(&blob), blob.len() as u64);
            for chunk in [1, 3, 4096] {
                let mut w = DiffIdWriter::new(&d).unwrap();
                for c in blob.chunks(chunk) {
                    w.write_all(c).unwrap();
                }
                assert_eq!(w.finish().unwrap(), Digest::of(&raw), "{mt} in chunks of {chunk}");
            }
        }
    }

    #[test]
    fn the_writer_refuses_the_wrong_compression() {
        let raw = tar_of("a", "hello\n");
        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        let d = Descriptor::new(media_types::OCI_LAYER_GZIP, Digest::of(&zst), zst.len() as u64);
        let mut w = DiffIdWriter::new(&d).unwrap();
        let e = w.write_all(&zst).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("is zstd") && e.to_string().contains("says gzip"),
            "{e}"
        );
    }

    #[test]
    fn unpacking_checks_the_diff_id_in_the_same_pass() {
        let (_dir, store) = store();
        let raw = tar_of("a", "hello\n");
        let good = stored(&store, media_types::OCI_LAYER_GZIP, &gzip(&raw), Digest::of(&raw));
        let dest = tempfile::tempdir().unwrap();
        apply_layer_verified(&store, &good, dest.path(), &ApplyOptions::default()).unwrap();
        verify_layer(&store, &good).unwrap();

        let wrong = Digest::of(b"not the tar");
        let bad = Layer {
            diff_id: wrong.clone(),
            ..good.clone()
        };
        let dest = tempfile::tempdir().unwrap();
        let e = apply_layer_verified(&store, &bad, dest.path(), &ApplyOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&good.blob.digest.to_string())
                && msg.contains(&wrong.to_string())
                && msg.contains(&Digest::of(&raw).to_string()),
            "{msg}"
        );
        assert!(verify_layer(&store, &bad).is_err());

        // A plain tar stored under a gzip media type.
        let plain = stored(&store, media_types::OCI_LAYER_GZIP, &raw, Digest::of(&raw));
        let e = apply_layer_verified(&store, &plain, dest.path(), &ApplyOptions::default()).unwrap_err();
        assert!(e.to_string().contains("is uncompressed"), "{e}");
    }
}
