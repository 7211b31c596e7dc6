//! The memo end to end: layers written with it are byte-identical to layers written
//! from scratch, across edits, a pruned blob and a damaged record.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use kiln_cache::ContentStore;

use super::ChunkMemo;
use crate::layer::write_layer_with_memo;
use crate::tarw::{write_dir_tar, TarOptions};
use crate::{Compression, Layer};

fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Text-like and noise blocks: both of pgzip's paths.
            if (i / 40_000 + seed as usize).is_multiple_of(2) {
                b"kiln memo test line\n"[i % 20]
            } else {
                state as u8
            }
        })
        .collect()
}

/// About 3.4 MiB in 12 files: four chunks.
fn make_tree(dir: &Path) {
    for i in 0..12u64 {
        let sub = dir.join(format!("d{}", i % 3));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i:02}")), noise(i + 1, 280_000)).unwrap();
    }
}

struct Store {
    _dir: tempfile::TempDir,
    store: ContentStore,
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let store = ContentStore::new(dir.path().join("content"), dir.path().join("tmp"));
    Store { _dir: dir, store }
}

fn layer(tree: &Path, store: &ContentStore, memo: Option<Arc<ChunkMemo>>) -> Layer {
    let opts = TarOptions::default();
    write_layer_with_memo(tree, store, Compression::default(), memo, |w| {
        write_dir_tar(tree, w, &opts).map(drop)
    })
    .unwrap()
}

/// The layer of `tree` with the memo of `with` (which has seen earlier versions), and
/// from scratch in a new store: they must be the same blob.
fn check_same(tree: &Path, with: &ContentStore, what: &str) -> usize {
    let memo = Arc::new(ChunkMemo::of(with));
    let incremental = layer(tree, with, Some(memo.clone()));
    let scratch = store();
    let full = layer(tree, &scratch.store, None);
    assert_eq!(incremental, full, "{what}: the memo changed the layer");
    memo.hits()
}

#[test]
fn layers_from_the_memo_equal_layers_from_scratch_across_edits() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);
    let s = store();
    assert_eq!(check_same(&tree, &s.store, "first build"), 0);
    assert!(
        check_same(&tree, &s.store, "the same tree again") >= 4,
        "an unchanged tree comes from the memo"
    );

    // One file changed in place (same size): all but the chunks around it reused.
    let f = tree.join("d1/f10");
    let mut bytes = fs::read(&f).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&f, bytes).unwrap();
    let hits = check_same(&tree, &s.store, "one file changed in place");
    assert!(hits >= 2, "most chunks are reused after an in-place change: {hits}");

    type Edit<'a> = (&'a str, &'a dyn Fn(&Path));
    let edits: [Edit; 6] = [
        ("append to a file", &|t| {
            let p = t.join("d0/f00");
            let mut b = fs::read(&p).unwrap();
            b.extend_from_slice(b"one more line\n");
            fs::write(&p, b).unwrap();
        }),
        ("add a file", &|t| {
            fs::write(t.join("d2/new"), noise(99, 70_000)).unwrap()
        }),
        ("remove a file", &|t| fs::remove_file(t.join("d1/f04")).unwrap()),
        ("rename a file", &|t| {
            fs::rename(t.join("d2/f05"), t.join("d2/f05-renamed")).unwrap()
        }),
        ("chmod a file", &|t| {
            fs::set_permissions(t.join("d0/f03"), fs::Permissions::from_mode(0o600)).unwrap()
        }),
        ("replace a file with a directory", &|t| {
            let p = t.join("d0/f06");
            fs::remove_file(&p).unwrap();
            fs::create_dir(&p).unwrap();
            fs::write(p.join("inside"), b"now a directory\n").unwrap();
        }),
    ];
    for (what, edit) in edits {
        edit(&tree);
        check_same(&tree, &s.store, what);
    }
}

#[test]
fn a_pruned_blob_or_a_damaged_record_falls_back_to_compressing() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);
    let s = store();
    let first = layer(&tree, &s.store, Some(Arc::new(ChunkMemo::of(&s.store))));

    // Damaged records (a wrong CRC, garbage) are ignored.
    let records: Vec<_> = walkdir::WalkDir::new(s.store.root().join("chunks"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    assert!(records.len() >= 4, "one record per chunk: {}", records.len());
    let line = fs::read_to_string(&records[0]).unwrap();
    let mut parts: Vec<&str> = line.split_whitespace().collect();
    let bad_crc = (parts[3].parse::<u32>().unwrap() ^ 1).to_string();
    parts[3] = &bad_crc;
    fs::write(&records[0], parts.join(" ")).unwrap();
    fs::write(&records[1], "garbage").unwrap();
    let memo = Arc::new(ChunkMemo::of(&s.store));
    assert_eq!(layer(&tree, &s.store, Some(memo.clone())), first);
    assert_eq!(memo.hits(), records.len() - 2, "all but the two damaged records used");

    // The blob the records point into is pruned: every chunk is compressed again.
    fs::remove_file(s.store.blob_path(&first.blob.digest)).unwrap();
    let memo = Arc::new(ChunkMemo::of(&s.store));
    assert_eq!(memo.sweep(), records.len(), "records of a gone blob are swept");
    assert_eq!(layer(&tree, &s.store, Some(memo.clone())), first);
    assert_eq!(memo.hits(), 0);
    assert!(s.store.has(&first.blob.digest));
}
