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
}

#[test]
fn an_unchanged_file_is_not_read_again_after_a_reload() {
    let ctx = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "hello\n").unwrap();
    let path = state.path().join("checksums").join("m.json");
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
    let path = state.path().join("m.json");
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
