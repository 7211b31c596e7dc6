//! Measures what a layer costs to write, for docs/benchmarks.md ("Layers without
//! recompressing"): a tree like bench/noop-rebuild.sh's context (20,000 base64 files of
//! 8,500 bytes and ten 10 MB random files, about 270 MB), written as
//! - `tar+sha256`: the tar stream hashed, nothing stored (the floor of any layer);
//! - `uncompressed`: a tar blob (option (a): local layers kept uncompressed);
//! - `gzip`: today's layer, every chunk compressed;
//! - `gzip+memo`: the same with the chunk memo (option (b)), on the unchanged tree and
//!   after one line was appended to one small file;
//! - `tar->gzip`: the uncompressed layer after that change compressed for an output
//!   (option (a)'s cost at export or push: a new diff id has no conversion record).
//!
//! Usage: cargo run --release -p kiln-snapshotter --example layer_memo [-- DIR [text]]
//! (DIR: where the tree and the store go; default a temp dir under /var/tmp; `text`:
//! the small files are English-like text, which gzip's zlib path compresses, instead
//! of base64, which its fast path stores nearly as is).

#![allow(
    clippy::disallowed_methods,
    reason = "a measuring tool: an io error ends it with its message"
)]
// A measuring tool: its output is the point.
#![allow(clippy::print_stdout)]

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kiln_cache::ContentStore;
use kiln_image::Sha256Writer;
use kiln_snapshotter::{convert_layer, write_dir_tar, write_layer_with_memo, ChunkMemo, Compression, TarOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from);
    let text = std::env::args().nth(2).as_deref() == Some("text");
    let tmp = tempfile::tempdir_in(base.as_deref().unwrap_or(Path::new("/var/tmp")))?;
    let tree = tmp.path().join("ctx");
    make_tree(&tree, text)?;
    std::fs::create_dir_all(tmp.path().join("tmp"))?;
    let store = ContentStore::new(tmp.path().join("content"), tmp.path().join("tmp"));
    let opts = TarOptions::default();
    let write = |c: Compression, memo: Option<Arc<ChunkMemo>>| {
        write_layer_with_memo(&tree, &store, c, memo, |w| write_dir_tar(&tree, w, &opts).map(drop))
    };
    let time = |what: &str, f: &mut dyn FnMut() -> Result<String, Box<dyn std::error::Error>>| {
        let t = Instant::now();
        let note = f()?;
        println!("{what:<34} {:>7.3} s  {note}", t.elapsed().as_secs_f64());
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    time("tar+sha256 (nothing stored)", &mut || {
        let mut h = Sha256Writer::new(io::sink());
        write_dir_tar(&tree, &mut h, &opts)?;
        h.flush()?;
        let (d, n, _) = h.finish();
        Ok(format!("{n} bytes, {d}"))
    })?;
    time("uncompressed blob", &mut || {
        Ok(format!("{} bytes", write(Compression::Uncompressed, None)?.blob.size))
    })?;
    time("gzip, no memo (today)", &mut || {
        Ok(format!("{} bytes", write(Compression::default(), None)?.blob.size))
    })?;
    let memo = || Some(Arc::new(ChunkMemo::of(&store)));
    time("gzip+memo, first (records made)", &mut || {
        let m = memo();
        let l = write(Compression::default(), m.clone())?;
        Ok(format!(
            "{}, {} chunks reused",
            l.blob.digest,
            m.map_or(0, |m| m.hits())
        ))
    })?;
    time("gzip+memo, unchanged tree", &mut || {
        let m = memo();
        let l = write(Compression::default(), m.clone())?;
        Ok(format!(
            "{}, {} chunks reused",
            l.blob.digest,
            m.map_or(0, |m| m.hits())
        ))
    })?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(tree.join("d100/f050.txt"))?;
    writeln!(f, "changed by layer_memo")?;
    drop(f);
    let mut raw = None;
    time("uncompressed blob, one file changed", &mut || {
        let l = write(Compression::Uncompressed, None)?;
        let s = format!("{} bytes", l.blob.size);
        raw = Some(l);
        Ok(s)
    })?;
    time("tar->gzip of it (at export)", &mut || {
        let l = convert_layer(&store, raw.as_ref().expect("written"), Compression::default())?;
        Ok(format!("{}", l.blob.digest))
    })?;
    time("gzip, no memo, one file changed", &mut || {
        Ok(format!("{}", write(Compression::default(), None)?.blob.digest))
    })?;
    time("gzip+memo, one file changed", &mut || {
        let m = memo();
        let l = write(Compression::default(), m.clone())?;
        Ok(format!(
            "{}, {} chunks reused",
            l.blob.digest,
            m.map_or(0, |m| m.hits())
        ))
    })?;
    Ok(())
}

/// bench/lib.sh's make_big_ctx: 200 x 100 files of 8,500 base64 bytes, ten 10 MB
/// random files.
fn make_tree(dir: &Path, text: bool) -> io::Result<()> {
    const WORDS: [&str; 16] = [
        "layer ", "build ", "image ", "cache ", "step ", "copy ", "the ", "of ", "file ", "tar ", "kiln ", "and ",
        "run ", "digest ", "blob ", "to ",
    ];
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for d in 0..200 {
        let sub = dir.join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..100 {
            let mut body: Vec<u8> = Vec::with_capacity(8600);
            while body.len() < 8500 {
                if text {
                    body.extend_from_slice(WORDS[(next() & 15) as usize].as_bytes());
                } else {
                    body.push(if body.len() % 77 == 76 {
                        b'\n'
                    } else {
                        B64[(next() & 63) as usize]
                    });
                }
            }
            body.truncate(8500);
            std::fs::write(sub.join(format!("f{f:03}.txt")), body)?;
        }
    }
    std::fs::create_dir_all(dir.join("bin"))?;
    for b in 0..10 {
        let body: Vec<u8> = (0..10_000_000 / 8).flat_map(|_| next().to_le_bytes()).collect();
        std::fs::write(dir.join(format!("bin/blob{b:02}.bin")), body)?;
    }
    Ok(())
}
