//! Making a layer blob from a directory in one streaming pass:
//! tar → sha256 (diff id) → gzip/zstd → sha256 (digest) → content store; and
//! converting a stored layer to another compression.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use kiln_cache::ContentStore;
use kiln_image::{Descriptor, LayerCodec, Sha256Writer};

pub use crate::compression::Compression;
use crate::compression::{compressor_with_memo, decompressor, ChunkMemo};
use crate::tarw::{write_dir_tar, TarOptions};
use crate::SnapshotError;

/// Layer (diff id and stored blob) is the store's: cache records are lists of them.
pub use kiln_cache::Layer;

/// Writes the tree under `dir` as a layer blob into `store`.
pub fn write_layer(
    dir: &Path,
    store: &ContentStore,
    opts: &TarOptions,
    compression: Compression,
) -> Result<Layer, SnapshotError> {
    write_layer_from(dir, store, compression, |w| write_dir_tar(dir, w, opts).map(drop))
}

/// Writes the tar stream that `tar` produces as a layer blob into `store`; `dir` names
/// the tree in errors. Gzip chunks the store's [`ChunkMemo`] knows are copied from the
/// blob holding them instead of compressed again (the same bytes either way).
pub fn write_layer_from(
    dir: &Path,
    store: &ContentStore,
    compression: Compression,
    tar: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Layer, SnapshotError> {
    write_layer_with_memo(dir, store, compression, Some(Arc::new(ChunkMemo::of(store))), tar)
}

/// As [`write_layer_from`] with the memo given: `None` compresses every chunk.
pub fn write_layer_with_memo(
    dir: &Path,
    store: &ContentStore,
    compression: Compression,
    memo: Option<Arc<ChunkMemo>>,
    tar: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Layer, SnapshotError> {
    // Tar and the diff id's hash run here, under one CPU of kiln's budget; compression
    // takes the CPUs the budget has free (see `kiln_cpu`).
    let _cpu = kiln_cpu::global().acquire();
    let blob = store.writer()?;
    let ctx = |source: io::Error| SnapshotError::Io {
        op: "cannot archive",
        path: dir.to_path_buf(),
        source,
    };
    let out =
        compressor_with_memo(compression, io::BufWriter::with_capacity(1 << 20, blob), memo.clone()).map_err(ctx)?;
    let mut hashing = Sha256Writer::new(out);
    tar(&mut hashing).map_err(ctx)?;
    let (diff_id, _, out) = hashing.finish();
    let (blob, placed) = out.finish_placed().map_err(ctx)?;
    let blob = blob.into_inner().map_err(|e| ctx(e.into_error()))?;
    let media_type = compression.media_type();
    let (digest, size) = blob.commit(None)?;
    if let Some(memo) = memo {
        memo.put(&digest, &placed);
    }
    Ok(Layer {
        diff_id,
        blob: Descriptor::new(media_type, digest, size),
    })
}

/// The uncompressed tar stream of a stored layer blob.
pub fn open_layer_tar(store: &ContentStore, blob: &Descriptor) -> Result<Box<dyn io::Read>, SnapshotError> {
    let f = io::BufReader::with_capacity(1 << 20, store.open(&blob.digest)?);
    let codec =
        LayerCodec::of_media_type(&blob.media_type).ok_or_else(|| SnapshotError::MediaType(blob.media_type.clone()))?;
    decompressor(codec.into(), f).map_err(|source| SnapshotError::Io {
        op: "cannot decompress",
        path: store.blob_path(&blob.digest),
        source,
    })
}

/// Stores `layer` again in `compression`: the same tar (its diff id is checked), a
/// new blob.
pub fn convert_layer(store: &ContentStore, layer: &Layer, compression: Compression) -> Result<Layer, SnapshotError> {
    let path = store.blob_path(&layer.blob.digest);
    let mut tar = open_layer_tar(store, &layer.blob)?;
    let converted = write_layer_from(&path, store, compression, |w| io::copy(&mut tar, w).map(drop))?;
    if converted.diff_id != layer.diff_id {
        return Err(SnapshotError::Io {
            op: "layer content does not match its diff id",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, format!("expected {}", layer.diff_id)),
        });
    }
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::media_types;

    fn sample(n: usize) -> Vec<u8> {
        // Half text-like, half noise: both kinds of zstd/gzip blocks.
        let mut state = 0x2545f4914f6cdd1du64;
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if (i / 65536) % 2 == 0 {
                    b"the quick brown fox "[i % 20]
                } else {
                    state as u8
                }
            })
            .collect()
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_worker_count() {
        let data = sample(6 << 20);
        let compress = |workers: u32| {
            let mut z = zstd::Encoder::new(Vec::new(), 3).unwrap();
            z.multithread(workers).unwrap();
            z.write_all(&data).unwrap();
            z.finish().unwrap()
        };
        let one = compress(1);
        assert_eq!(one, compress(2));
        assert_eq!(one, compress(4));
    }

    #[test]
    fn conversions_keep_the_diff_id_and_come_back_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path().join("blobs"), dir.path().join("tmp"));
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("d")).unwrap();
        std::fs::write(tree.join("d/big"), sample(3 << 20)).unwrap();
        std::fs::write(tree.join("small"), "small\n").unwrap();
        let gz = write_layer(&tree, &store, &TarOptions::default(), Compression::default()).unwrap();
        let zst = convert_layer(&store, &gz, Compression::Zstd(3)).unwrap();
        let raw = convert_layer(&store, &zst, Compression::Uncompressed).unwrap();
        let back = convert_layer(&store, &raw, Compression::default()).unwrap();
        assert_eq!(zst.blob.media_type, media_types::OCI_LAYER_ZSTD);
        assert_eq!(raw.blob.media_type, media_types::OCI_LAYER_TAR);
        assert_eq!(
            raw.blob.digest, gz.diff_id,
            "an uncompressed layer's digest is its diff id"
        );
        for l in [&zst, &raw, &back] {
            assert_eq!(l.diff_id, gz.diff_id);
        }
        assert_eq!(back.blob, gz.blob, "gzip is deterministic");
        assert!(zst.blob.size < raw.blob.size);
    }

    /// A fixed tree as a tar stream written header by header (no file system, so no
    /// host owner, umask or mtime gets in): a directory, a 3 MiB file (several pgzip
    /// chunks, both text-like and noise blocks), a small file and a symlink.
    fn golden_tar(w: &mut dyn Write) -> io::Result<()> {
        let mut b = tar::Builder::new(w);
        let mut entry = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l)?;
            }
            b.append_data(&mut h, path, data)
        };
        entry("d/", tar::EntryType::Directory, 0o755, &[], None)?;
        entry("d/big", tar::EntryType::Regular, 0o644, &sample(3 << 20), None)?;
        entry("small", tar::EntryType::Regular, 0o600, b"small\n", None)?;
        entry("link", tar::EntryType::Symlink, 0o777, &[], Some("d/big"))?;
        b.into_inner()?.flush()
    }

    /// Golden digests: a fixed tree must give these exact blobs. If this fails after a
    /// dependency bump (flate2/zlib-rs, zstd, tar) or a change to `pgzip.rs`, the bytes
    /// of every layer kiln writes changed, so every image id and cache key built from
    /// them changes too and pushed layers stop being shared with older builds. Do not
    /// just update the constants: find the change, decide it is wanted, say so in the
    /// changelog/commit, and only then pin the new digests (the diff id must not move
    /// unless the tar writer changed).
    #[test]
    fn gzip_and_zstd_layers_have_golden_digests() {
        const DIFF_ID: &str = "sha256:908e1de2c4858ea1a098f477510a108f1062db5d35b0319e570dfe722e635cc8";
        let golden = [
            (
                Compression::Gzip(6),
                "sha256:618595b0edd5b6c3ed7145c5e39965ef404133a36415fc6d0640b4787701421a",
                1_589_301,
            ),
            (
                Compression::Zstd(3),
                "sha256:07a4bff96bae3097aae1a91a99c529379cb4307a6804daff584bdf5251cd75fa",
                1_580_276,
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path().join("blobs"), dir.path().join("tmp"));
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let mut failures = Vec::new();
        for (compression, digest, size) in golden {
            let layer = write_layer_from(dir.path(), &store, compression, golden_tar).unwrap();
            if layer.diff_id.to_string() != DIFF_ID
                || layer.blob.digest.to_string() != digest
                || layer.blob.size != size
            {
                failures.push(format!(
                    "{compression:?}: diff id {} digest {} size {} (pinned: {DIFF_ID} {digest} {size})",
                    layer.diff_id, layer.blob.digest, layer.blob.size
                ));
            }
        }
        assert!(failures.is_empty(), "layer bytes changed:\n{}", failures.join("\n"));
    }

    #[test]
    fn compression_options_parse_like_buildx() {
        assert_eq!(Compression::parse("zstd", None), Ok(Compression::Zstd(3)));
        assert_eq!(Compression::parse("gzip", Some(9)), Ok(Compression::Gzip(9)));
        assert!(Compression::parse("gzip", Some(10))
            .unwrap_err()
            .contains("out of range"));
        assert!(Compression::parse("lz4", None)
            .unwrap_err()
            .contains("unknown compression `lz4`"));
        assert!(Compression::parse("uncompressed", Some(1)).is_err());
    }
}
