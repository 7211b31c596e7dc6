//! The chunk memo: compressed pgzip chunks found again instead of compressed again.
//!
//! [`pgzip`](super::pgzip) compresses a layer in fixed 1 MiB chunks, each from its own
//! bytes, the previous chunk's last 32 KiB (its dictionary), the level and whether it
//! ends the stream; nothing else goes in, so the same four give the same deflate bytes.
//! When a layer blob is stored, the memo remembers where each of its chunks' bytes lie
//! in it, keyed by the sha256 of those four (and of the encoder's own output on a fixed
//! sample, so a kiln whose deflate changed never reuses an older one's bytes). A later
//! layer whose tar stream reproduces a chunk at the same chunk boundary (a rebuild of a
//! big `COPY` where one file changed in place, say) copies those bytes out of the old
//! blob instead of compressing: the output is byte for byte what compressing gives.
//!
//! Records live beside the blobs, in `content-v1/chunks/<2 hex>/<key hex>`, one line
//! each: `<blob hex> <offset> <length> <crc32 of the bytes>`. A record whose blob is
//! gone (pruned) or whose bytes do not match its CRC is ignored, and the chunk is
//! compressed as if the memo were empty; `kiln prune` removes the records of blobs it
//! removed ([`ChunkMemo::sweep`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use flate2::Crc;
use kiln_cache::ContentStore;
use kiln_image::{Digest, Sha256Writer};

use super::deflate::Scratch;
use super::pgzip::{compress_chunk, CHUNK};

/// What a chunk is known by: the sha256 of the encoder, level, end flag, dictionary
/// and bytes.
pub type ChunkKey = [u8; 32];

/// A chunk as written into a blob: its key and where its compressed bytes lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub key: ChunkKey,
    pub offset: u64,
    pub len: u64,
    /// CRC-32 of the compressed bytes, checked when they are read back.
    pub crc: u32,
}

/// ChunkMemo finds compressed chunks of stored blobs by key; see the module docs.
#[derive(Debug)]
pub struct ChunkMemo {
    dir: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    hits: AtomicUsize,
}

/// Layers of fewer chunks than this are not remembered: compressing them again costs
/// little, and every record is a small file.
const MIN_CHUNKS: usize = 2;

impl ChunkMemo {
    /// The memo of `store`'s blobs (`<store root>/chunks`).
    pub fn of(store: &ContentStore) -> Self {
        ChunkMemo {
            dir: store.root().join("chunks"),
            blobs: store.root().join("blobs/sha256"),
            tmp: store.tmp_dir().to_path_buf(),
            hits: AtomicUsize::new(0),
        }
    }

    /// Chunks found in the memo so far (for tests and `--progress` details).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    fn record_path(&self, key: &ChunkKey) -> PathBuf {
        let hex = to_hex(key);
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The compressed bytes of the chunk `key`, when a stored blob holds them.
    pub(crate) fn get(&self, key: &ChunkKey) -> Option<Vec<u8>> {
        let line = std::fs::read_to_string(self.record_path(key)).ok()?;
        let (blob, offset, len, crc) = parse_record(&line)?;
        // A chunk is at most 1 MiB of input; stored blocks add 5 bytes per 64 KiB.
        if len > (2 * CHUNK) as u64 {
            return None;
        }
        let f = File::open(self.blobs.join(blob)).ok()?;
        let mut out = vec![0; len as usize];
        f.read_exact_at(&mut out, offset).ok()?;
        let mut c = Crc::new();
        c.update(&out);
        if c.sum() != crc {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(out)
    }

    /// Remembers where the chunks of the stored blob `digest` lie. Best effort: a
    /// record that cannot be written only costs a compression later.
    pub(crate) fn put(&self, digest: &Digest, placed: &[Placed]) {
        if placed.len() < MIN_CHUNKS {
            return;
        }
        for p in placed {
            let path = self.record_path(&p.key);
            let line = format!("{} {} {} {}\n", digest.hex(), p.offset, p.len, p.crc);
            if std::fs::read_to_string(&path).is_ok_and(|old| old == line) {
                continue;
            }
            let _ = write_atomic(&path, &self.tmp, line.as_bytes());
        }
    }

    /// Removes the records whose blob is gone; returns how many.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for shard in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for rec in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let keep = std::fs::read_to_string(rec.path())
                    .ok()
                    .and_then(|l| parse_record(&l).map(|r| r.0.to_string()))
                    .is_some_and(|blob| self.blobs.join(blob).is_file());
                if !keep && std::fs::remove_file(rec.path()).is_ok() {
                    removed += 1;
                }
            }
            // Only when empty.
            let _ = std::fs::remove_dir(shard.path());
        }
        removed
    }
}

fn parse_record(line: &str) -> Option<(&str, u64, u64, u32)> {
    let mut it = line.trim_end().split(' ');
    let blob = it.next()?;
    if blob.len() != 64 || !blob.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let offset = it.next()?.parse().ok()?;
    let len = it.next()?.parse().ok()?;
    let crc = it.next()?.parse().ok()?;
    it.next().is_none().then_some((blob, offset, len, crc))
}

fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = tempfile::Builder::new().prefix("chunk-").tempfile_in(tmp)?;
    f.write_all(bytes)?;
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a chunk: what goes into its deflate bytes, and the encoder itself.
pub(crate) fn chunk_key(level: u32, last: bool, dict: &[u8], data: &[u8]) -> ChunkKey {
    let mut h = Sha256Writer::new(io::sink());
    let lens = [dict.len() as u64, data.len() as u64];
    let head = format!("kiln-pgzip-chunk-v1 {level} {last} {lens:?} ");
    let parts: [&[u8]; 4] = [head.as_bytes(), &encoder_fingerprint(level)[..], dict, data];
    for p in parts {
        h.write_all(p).expect("a sink takes everything");
    }
    let (digest, _, _) = h.finish();
    let mut key = [0; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest.hex()[2 * i..2 * i + 2], 16).expect("sha256 hex");
    }
    key
}

/// The sha256 of the encoder's output at `level` for a fixed sample taking both of its
/// paths (zlib for text, the fast parse for noise): when an upgrade changes the bytes
/// kiln's deflate makes, the keys change with them and old records are never used.
fn encoder_fingerprint(level: u32) -> [u8; 32] {
    static PRINTS: [OnceLock<[u8; 32]>; 10] = [const { OnceLock::new() }; 10];
    let Some(cell) = PRINTS.get(level as usize) else {
        return [0; 32];
    };
    *cell.get_or_init(|| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let sample: Vec<u8> = (0..256 << 10)
            .map(|i: usize| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i < 128 << 10 {
                    b"kiln encoder fingerprint "[i % 25]
                } else {
                    state as u8
                }
            })
            .collect();
        let mut h = Sha256Writer::new(io::sink());
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        for (dict, data, last) in [
            (&[][..], &sample[..128 << 10], false),
            (&sample[96 << 10..128 << 10], &sample[128 << 10..], true),
        ] {
            // An error here only means no chunk of this level is ever reused.
            if compress_chunk(data, dict, level, last, &mut out, &mut scratch).is_err() {
                out = b"error".to_vec();
            }
            h.write_all(&out).expect("a sink takes everything");
        }
        let (digest, _, _) = h.finish();
        let mut print = [0; 32];
        for (i, b) in print.iter_mut().enumerate() {
            *b = u8::from_str_radix(&digest.hex()[2 * i..2 * i + 2], 16).expect("sha256 hex");
        }
        print
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_strictly() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_record(&format!("{hex} 10 20 30\n")), Some((&hex[..], 10, 20, 30)));
        assert_eq!(parse_record(&format!("{hex} 10 20\n")), None);
        assert_eq!(parse_record(&format!("{hex} 10 20 30 40\n")), None);
        assert_eq!(parse_record("../../etc/passwd 1 2 3"), None);
        assert_eq!(parse_record(&format!("{hex} -1 20 30")), None);
    }

    #[test]
    fn keys_differ_by_every_input() {
        let k = chunk_key(6, false, b"dict", b"data");
        assert_eq!(k, chunk_key(6, false, b"dict", b"data"));
        for other in [
            chunk_key(5, false, b"dict", b"data"),
            chunk_key(6, true, b"dict", b"data"),
            chunk_key(6, false, b"dic", b"tdata"),
            chunk_key(6, false, b"dict", b"datb"),
        ] {
            assert_ne!(k, other);
        }
    }
}

#[cfg(test)]
#[path = "memo_tests.rs"]
mod layer_tests;
