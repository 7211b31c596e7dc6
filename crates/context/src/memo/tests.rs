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
