//! The worker's side of the build cache: content keys for COPY from the build context
//! (the selected files' paths, types, modes, sizes, link targets, hard links and
//! contents, after .dockerignore — not owners, which the layer does not keep, and not times), the
//! context checksum memos in use (`kiln_context::memo`: an unchanged context costs a
//! `stat` per file), stored in the root's `Checksums` bucket, and cache records (a
//! step's layer chain by cache key).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use kiln_graph::{FileAction, Node, Op};
use kiln_image::Digest;
use sha2::Digest as _;

use crate::copy::{select, SourceTree};
use kiln_context::memo::ContextMemo;

use crate::{Value, Worker, WorkerError};

impl Worker {
    pub(crate) fn memo(&self, dir: &Path) -> Arc<ContextMemo> {
        let mut memos = self.memos.lock().expect("memo lock");
        let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        memos
            .entry(canon.clone())
            .or_insert_with(|| {
                let name = Digest::of(canon.as_os_str().as_bytes());
                let path = self
                    .root
                    .bucket(kiln_cache::Bucket::Checksums)
                    .join(format!("{}.bin", name.hex()));
                Arc::new(ContextMemo::load(path, dir))
            })
            .clone()
    }

    /// How many context files the build's COPYs looked at, and how many of them had to
    /// be read because the memo did not know them.
    pub fn context_stats(&self) -> (usize, usize) {
        let memos = self.memos.lock().expect("memo lock");
        memos.values().fold((0, 0), |(c, h), m| {
            let (checked, hashed) = m.stats();
            (c + checked, h + hashed)
        })
    }

    /// Saves what the build learnt about its contexts (call once the build is over).
    pub fn finish(&self) {
        for memo in self.memos.lock().expect("memo lock").values() {
            memo.save(&self.root.tmp_dir());
        }
    }

    /// A digest of exactly what `action` selects from a build context.
    fn selection_digest(
        &self,
        action: &kiln_graph::CopyAction,
        dir: &Path,
        ignore: &kiln_context::dockerignore::PatternMatcher,
    ) -> Result<String, WorkerError> {
        let src = SourceTree {
            root: dir,
            ignore: Some(ignore),
            label: "the build context".to_string(),
            keep_owner: false,
            memo: None,
        };
        // The walk of a big context runs on every CPU of kiln's budget free now.
        let selected = select(action, &src)?;
        let memo = self.memo(dir);
        let files: Vec<(&Path, &std::fs::Metadata)> = selected
            .iter()
            .filter(|e| e.md.is_file())
            .map(|e| (e.rel.as_path(), &e.md))
            .collect();
        let digests = memo
            .digests(&files, |root| {
                let dir = kiln_snapshotter::RootDir::open(root)?;
                Ok(move |rel: &Path| dir.open_file(rel))
            })
            .map_err(|kiln_context::memo::MemoError::Io { path, source }| WorkerError::Io { path, source })?;
        let mut digests = digests.into_iter();
        let mut h = sha2::Sha256::new();
        // Files that are hard links to each other are copied as hard links: which one a
        // file is linked to is part of the layer.
        let mut first_of_inode: std::collections::HashMap<(u64, u64), &Path> = Default::default();
        for e in &selected {
            if e.md.is_file() && e.md.nlink() > 1 {
                let first = *first_of_inode.entry((e.md.dev(), e.md.ino())).or_insert(&e.rel);
                if first != e.rel {
                    h.update(b"hardlink\0");
                    h.update(first.as_os_str().as_bytes());
                    h.update(b"\n");
                }
            }
            use std::os::unix::fs::FileTypeExt;
            let ft = e.md.file_type();
            let (kind, extra) = if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    e.link.as_ref().map(|l| l.display().to_string()).unwrap_or_default(),
                )
            } else if ft.is_file() {
                ("file", digests.next().map(hex::encode).unwrap_or_default())
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else if ft.is_socket() {
                ("socket", String::new())
            } else if ft.is_char_device() {
                ("char", e.md.rdev().to_string())
            } else {
                ("block", e.md.rdev().to_string())
            };
            let size = if ft.is_file() { e.md.size() } else { 0 };
            // A followed symlink: the name it was matched as names the copy.
            if let Some(named) = &e.named {
                h.update(b"named\0");
                h.update(named.as_os_str().as_bytes());
                h.update(b"\n");
            }
            h.update(e.rel.as_os_str().as_bytes());
            h.update(format!("\0{kind}\0{:o}\0{size}\0{extra}\n", e.md.mode() & 0o7777).as_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }

    pub(crate) fn copy_content_key(&self, node: &Node, inputs: &[Value]) -> Result<Option<Digest>, WorkerError> {
        match &node.op {
            Op::File(f) => {
                // Directories a file op creates get the build's fixed time.
                let mut s = format!("epoch {}\n", self.epoch);
                for (n, action) in f.actions.iter().enumerate() {
                    let FileAction::Copy(c) = action else { continue };
                    let Some(Value::Local { dir, ignore, .. }) = inputs.get(c.input as usize) else {
                        continue;
                    };
                    s.push_str(&format!("copy {n} {}\n", self.selection_digest(c, dir, ignore)?));
                }
                Ok(Some(Digest::of(s.as_bytes())))
            }
            Op::Exec(e) => {
                // What a bind mount of the build context shows is part of the step.
                let mut s = String::new();
                for (n, m) in e.mounts.iter().enumerate() {
                    let kiln_graph::MountKind::Bind { input, source, .. } = &m.kind else {
                        continue;
                    };
                    let Some(Value::Local { dir, ignore, .. }) = inputs.get(*input as usize) else {
                        continue;
                    };
                    let action = kiln_graph::CopyAction {
                        input: *input,
                        src: source.clone(),
                        dest: "/".to_string(),
                        dest_is_dir: true,
                        chown: None,
                        chmod: None,
                        allow_wildcard: false,
                        allow_empty_wildcard: false,
                        exclude: Vec::new(),
                        parents: None,
                        unpack: false,
                    };
                    s.push_str(&format!("mount {n} {}\n", self.selection_digest(&action, dir, ignore)?));
                }
                Ok((!s.is_empty()).then(|| Digest::of(s.as_bytes())))
            }
            _ => Ok(None),
        }
    }

    pub(crate) fn load_cached(&self, key: &Digest, node: &Node) -> Option<Value> {
        if !matches!(node.op, Op::File(_) | Op::Exec(_)) {
            return None;
        }
        let records = self.root.cache_records();
        let local = records.get(key).and_then(|layers| {
            let content = self.root.content();
            let mut present = self.present_blobs.lock().unwrap_or_else(|p| p.into_inner());
            for l in &layers {
                if present.contains(&l.blob.digest) {
                    continue;
                }
                if !content.has(&l.blob.digest) {
                    // The blobs were pruned or lost: the step runs again.
                    records.remove(key);
                    return None;
                }
                present.insert(l.blob.digest.clone());
            }
            Some(layers)
        });
        let layers = Arc::new(local.or_else(|| self.load_imported(key))?);
        self.used.lock().expect("used lock").push((key.clone(), layers.clone()));
        Some(Value::Fs(layers))
    }

    pub(crate) fn save_cached(&self, key: &Digest, node: &Node, out: &Value) -> Result<(), WorkerError> {
        let (Op::File(_) | Op::Exec(_), Value::Fs(layers)) = (&node.op, out) else {
            return Ok(());
        };
        self.root.cache_records().put(key, layers)?;
        self.used.lock().expect("used lock").push((key.clone(), layers.clone()));
        Ok(())
    }
}
