#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::path::Path;

use super::ContextMemo;

fn digests(memo: &ContextMemo, dir: &Path, names: &[&str], opened: &std::cell::Cell<bool>) -> Vec<String> {
    let mds: Vec<_> = names
        .iter()
        .map(|n| std::fs::symlink_metadata(dir.join(n)).unwrap())
        .collect();
    let files: Vec<(&Path, &std::fs::Metadata)> = names.iter().map(Path::new).zip(&mds).collect();
    memo.digests(&files, |root| {
        opened.set(true);
        let root = root.to_path_buf();
        Ok(move |rel: &Path| std::fs::File::open(root.join(rel)))
    })
    .unwrap()
    .iter()
    .map(hex::encode)
    .collect()
}

#[test]
fn an_unchanged_file_is_not_read_again_after_a_reload() {
    let ctx = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "hello\n").unwrap();
    let path = state.path().join("checksums").join("m.bin");
    let hello = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path.clone(), ctx.path());
    assert_eq!(digests(&memo, ctx.path(), &["a"], &opened), [hello]);
    assert!(opened.get(), "a file the memo did not know must be read");
    assert_eq!(memo.stats(), (1, 1));
    memo.save(state.path());

    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path.clone(), ctx.path());
    assert_eq!(digests(&memo, ctx.path(), &["a"], &opened), [hello]);
    assert!(!opened.get(), "an unchanged file must cost a stat only");
    assert_eq!(memo.stats(), (1, 0));

    // A changed file (size, mtime, ctime) is read again.
    std::fs::write(ctx.path().join("a"), "changed\n").unwrap();
    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path, ctx.path());
    let d = digests(&memo, ctx.path(), &["a"], &opened);
    assert!(opened.get());
    assert_ne!(d, [hello]);
}

#[test]
fn a_memo_of_another_directory_is_not_used() {
    let ctx = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "x").unwrap();
    let path = state.path().join("m.bin");
    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path.clone(), ctx.path());
    digests(&memo, ctx.path(), &["a"], &opened);
    memo.save(state.path());

    std::fs::copy(ctx.path().join("a"), other.path().join("a")).unwrap();
    let memo = ContextMemo::load(path, other.path());
    assert_eq!(memo.stats(), (0, 0));
    let opened = std::cell::Cell::new(false);
    digests(&memo, other.path(), &["a"], &opened);
    assert!(opened.get(), "another directory's entries must not answer");
}

#[test]
fn names_that_are_not_utf8_are_remembered_as_they_are() {
    use std::os::unix::ffi::OsStrExt;
    let ctx = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // Two names that would be one after a lossy conversion.
    let (a, b) = (
        std::ffi::OsStr::from_bytes(b"f\xff"),
        std::ffi::OsStr::from_bytes(b"f\xfe"),
    );
    std::fs::write(ctx.path().join(a), "a").unwrap();
    std::fs::write(ctx.path().join(b), "b").unwrap();
    let path = state.path().join("m.bin");
    let names = [a.to_str(), b.to_str()];
    assert_eq!(names, [None, None]);
    let files = |memo: &ContextMemo, opened: &std::cell::Cell<bool>| {
        let mds: Vec<_> = [a, b]
            .iter()
            .map(|n| std::fs::symlink_metadata(ctx.path().join(n)).unwrap())
            .collect();
        let rels = [Path::new(a), Path::new(b)];
        let files: Vec<(&Path, &std::fs::Metadata)> = rels.into_iter().zip(&mds).collect();
        memo.digests(&files, |root| {
            opened.set(true);
            let root = root.to_path_buf();
            Ok(move |rel: &Path| std::fs::File::open(root.join(rel)))
        })
        .unwrap()
    };
    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path.clone(), ctx.path());
    let first = files(&memo, &opened);
    assert_ne!(first[0], first[1]);
    memo.save(state.path());
    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path, ctx.path());
    assert_eq!(files(&memo, &opened), first);
    assert!(!opened.get(), "both names must be known after a reload");
}

#[test]
fn a_truncated_memo_counts_as_empty_and_an_unchanged_one_is_not_rewritten() {
    let ctx = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "hello\n").unwrap();
    std::fs::write(ctx.path().join("b"), "world\n").unwrap();
    let path = state.path().join("m.bin");
    let opened = std::cell::Cell::new(false);
    let memo = ContextMemo::load(path.clone(), ctx.path());
    digests(&memo, ctx.path(), &["a", "b"], &opened);
    memo.save(state.path());
    let stored = std::fs::read(&path).unwrap();

    // Nothing new learnt: the file is left as it is (not even rewritten).
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let memo = ContextMemo::load(path.clone(), ctx.path());
    let opened = std::cell::Cell::new(false);
    digests(&memo, ctx.path(), &["a", "b"], &opened);
    assert!(!opened.get());
    memo.save(state.path());
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);

    // Cut in the middle of the last entry: nothing of it is believed.
    std::fs::write(&path, &stored[..stored.len() - 3]).unwrap();
    let memo = ContextMemo::load(path, ctx.path());
    let opened = std::cell::Cell::new(false);
    digests(&memo, ctx.path(), &["a"], &opened);
    assert!(opened.get(), "a truncated memo must not answer");
}

/// The reader ahead of the hashing threads stays within its window past the file
/// they take next, skips what they took already, and ends when stopped.
#[test]
fn the_prefetcher_reads_at_most_a_window_ahead_of_the_hashing_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    const MIB: u64 = 1 << 20;
    assert_eq!(
        super::Prefetch::WINDOW,
        32 * MIB,
        "the expectations below are for 32 MiB"
    );
    let next = AtomicUsize::new(0);
    let sizes = vec![MIB; 100];
    let ahead = super::Prefetch::new(&next, &sizes);
    assert!(ahead.worth_it());
    let opened = Mutex::new(Vec::new());
    let wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while opened.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Long enough to see one file too many.
        std::thread::sleep(std::time::Duration::from_millis(100));
        opened.lock().unwrap().clone()
    };
    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            ahead.run(|k| {
                opened.lock().unwrap().push(k);
                None
            })
        });
        // Files 0..=31 end within 32 MiB of the start.
        assert_eq!(wait_for(32), (0..32).collect::<Vec<_>>());
        // The hashing threads took files 0..50: 32..50 are skipped, 50..=81 read.
        next.store(50, Ordering::Relaxed);
        assert_eq!(wait_for(64), (0..32).chain(50..82).collect::<Vec<_>>());
        ahead.stop();
        runner.join().unwrap();
    });
    // Not worth a thread: few files, or few bytes.
    assert!(!super::Prefetch::new(&next, &[MIB; 10]).worth_it());
    assert!(!super::Prefetch::new(&next, &[1024; 1000]).worth_it());
}

/// Files on the disk (not in the page cache) wake the prefetcher, files in the page
/// cache do not; the digests are the files' either way.
#[test]
fn files_read_from_the_disk_are_read_ahead_and_files_in_memory_are_not() {
    use sha2::Digest as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ctx = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..400).map(|i| format!("f{i:03}")).collect();
    let mut want = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let body: Vec<u8> = (0..32 * 1024).map(|j| (i * 7 + j * 13) as u8).collect();
        want.push(hex::encode(sha2::Sha256::digest(&body)));
        std::fs::write(ctx.path().join(n), &body).unwrap();
    }
    let paths: Vec<_> = names.iter().map(|n| ctx.path().join(n)).collect();
    let run = || {
        let opens = AtomicUsize::new(0);
        let memo = ContextMemo::load(state.path().join("m.bin"), ctx.path());
        let mds: Vec<_> = names
            .iter()
            .map(|n| std::fs::symlink_metadata(ctx.path().join(n)).unwrap())
            .collect();
        let files: Vec<(&Path, &std::fs::Metadata)> = names.iter().map(Path::new).zip(&mds).collect();
        let got: Vec<String> = memo
            .digests(&files, |root| {
                let root = root.to_path_buf();
                let opens = &opens;
                Ok(move |rel: &Path| {
                    opens.fetch_add(1, Ordering::Relaxed);
                    std::fs::File::open(root.join(rel))
                })
            })
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(got, want);
        opens.load(Ordering::Relaxed)
    };

    // In memory (just written, then read once): each file opened once, to be hashed.
    run();
    assert_eq!(run(), names.len(), "files in the page cache must not be read ahead");

    let evicted = kiln_testkit::evict_from_page_cache(&paths);
    if !kiln_testkit::require(evicted, "the temp dir's file system keeps files in memory (tmpfs?)") {
        return;
    }
    let opens = run();
    assert!(
        opens > names.len(),
        "files on the disk must be read ahead: {opens} opens for {} files",
        names.len()
    );
}
