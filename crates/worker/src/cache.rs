//! The worker's side of the build cache: content keys for COPY from the build context
//! (the selected files' paths, types, modes, sizes, link targets and contents, after
//! .dockerignore — not owners, which the layer does not keep, and not times), the
//! context checksum memo that makes an unchanged context cost a `stat` per file, and
//! cache records (a step's layer chain by cache key).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_graph::{FileAction, Node, Op};
use kiln_image::Digest;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::copy::{select, SourceTree};
use crate::{Value, Worker, WorkerError};

/// What the memo knows of one file: its stat identity and content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MemoEntry {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    mode: u32,
    sha256: String,
}

impl MemoEntry {
    fn matches(&self, md: &std::fs::Metadata) -> bool {
        self.size == md.size()
            && self.mtime == (md.mtime(), md.mtime_nsec())
            && self.ctime == (md.ctime(), md.ctime_nsec())
            && self.ino == md.ino()
            && self.mode == md.mode()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MemoFile {
    root: PathBuf,
    files: HashMap<String, MemoEntry>,
}

/// ContextMemo remembers file digests of one context directory across builds.
#[derive(Debug)]
pub struct ContextMemo {
    path: PathBuf,
    root: PathBuf,
    known: HashMap<String, MemoEntry>,
    /// Entries seen in this build (what is saved).
    seen: Mutex<HashMap<String, MemoEntry>>,
    changed: std::sync::atomic::AtomicBool,
    /// Files looked at and files read, for the progress line.
    checked: std::sync::atomic::AtomicUsize,
    hashed: std::sync::atomic::AtomicUsize,
}

impl ContextMemo {
    fn load(path: PathBuf, root: &Path) -> Self {
        let known = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<MemoFile>(&b).ok())
            .filter(|m| m.root == root)
            .map(|m| m.files)
            .unwrap_or_default();
        ContextMemo {
            path,
            root: root.to_path_buf(),
            known,
            seen: Mutex::new(HashMap::new()),
            changed: std::sync::atomic::AtomicBool::new(false),
            checked: std::sync::atomic::AtomicUsize::new(0),
            hashed: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Content digests of the files at `rels` (relative to the context root), hashing
    /// only those whose stat changed, in parallel.
    fn digests(&self, files: &[(&Path, &std::fs::Metadata)]) -> Result<Vec<String>, WorkerError> {
        let mut out: Vec<Option<String>> = vec![None; files.len()];
        let mut todo = Vec::new();
        {
            let seen = self.seen.lock().expect("memo lock");
            for (i, (rel, md)) in files.iter().enumerate() {
                let key = rel.to_string_lossy();
                let hit = seen
                    .get(key.as_ref())
                    .or_else(|| self.known.get(key.as_ref()))
                    .filter(|e| e.matches(md));
                match hit {
                    Some(e) => out[i] = Some(e.sha256.clone()),
                    None => todo.push(i),
                }
            }
        }
        self.checked
            .fetch_add(files.len(), std::sync::atomic::Ordering::Relaxed);
        self.hashed.fetch_add(todo.len(), std::sync::atomic::Ordering::Relaxed);
        if !todo.is_empty() {
            let root_dir = kiln_snapshotter::RootDir::open(&self.root).map_err(|source| WorkerError::Io {
                path: self.root.clone(),
                source,
            })?;
            let root_dir = &root_dir;
            let threads = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(todo.len());
            // Files are handed out one at a time, so a few big ones do not leave one
            // thread with most of the bytes.
            let next = std::sync::atomic::AtomicUsize::new(0);
            let hashed: Vec<Result<Vec<(usize, String)>, WorkerError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut buf = vec![0u8; HASH_BUF];
                            let mut done = Vec::new();
                            loop {
                                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some(&i) = todo.get(n) else { break };
                                match hash_file(root_dir, files[i].0, &mut buf) {
                                    Ok(d) => done.push((i, d)),
                                    Err(e) => {
                                        next.store(todo.len(), std::sync::atomic::Ordering::Relaxed);
                                        return Err(e);
                                    }
                                }
                            }
                            Ok(done)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("hash thread")).collect()
            });
            for part in hashed {
                for (i, d) in part? {
                    out[i] = Some(d);
                }
            }
            self.changed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut seen = self.seen.lock().expect("memo lock");
        let digests: Vec<String> = out.into_iter().map(|d| d.expect("every file digested")).collect();
        for ((rel, md), d) in files.iter().zip(&digests) {
            seen.insert(
                rel.to_string_lossy().into_owned(),
                MemoEntry {
                    size: md.size(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    ctime: (md.ctime(), md.ctime_nsec()),
                    ino: md.ino(),
                    mode: md.mode(),
                    sha256: d.clone(),
                },
            );
        }
        Ok(digests)
    }

    /// Writes the memo back when this build learnt something new.
    fn save(&self, tmp: &Path) {
        let seen = self.seen.lock().expect("memo lock");
        if !self.changed.load(std::sync::atomic::Ordering::Relaxed) && seen.len() == self.known.len() {
            return;
        }
        let mut files = self.known.clone();
        files.extend(seen.iter().map(|(k, v)| (k.clone(), v.clone())));
        // Forget files that are gone.
        files.retain(|k, _| self.root.join(k).symlink_metadata().is_ok());
        let memo = MemoFile {
            root: self.root.clone(),
            files,
        };
        let Ok(bytes) = serde_json::to_vec(&memo) else { return };
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = tempfile::Builder::new().prefix("memo-").tempfile_in(tmp) {
            use std::io::Write;
            if f.write_all(&bytes).is_ok() {
                let _ = f.persist(&self.path);
            }
        }
    }
}

/// Read size for hashing context files.
const HASH_BUF: usize = 256 << 10;

/// The sha256 in hex of the regular file at `rel` below `root`, opened inside the root
/// (never through a symlink out of it, never a FIFO) and read through `buf`.
fn hash_file(root: &kiln_snapshotter::RootDir, rel: &Path, buf: &mut [u8]) -> Result<String, WorkerError> {
    use std::io::Read;
    let io = |source| WorkerError::Io {
        path: root.path().join(rel),
        source,
    };
    use std::io::Write;
    let mut f = root.open_file(rel).map_err(io)?;
    let mut w = kiln_image::Sha256Writer::new(std::io::sink());
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => w.write_all(&buf[..n]).map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(w.finish().0.hex().to_string())
}

impl Worker {
    fn memo(&self, dir: &Path) -> Arc<ContextMemo> {
        let mut memos = self.memos.lock().expect("memo lock");
        let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        memos
            .entry(canon.clone())
            .or_insert_with(|| {
                let name = Digest::of(canon.as_os_str().as_bytes());
                let path = self
                    .root
                    .bucket(kiln_cache::Bucket::Checksums)
                    .join(format!("{}.json", name.hex()));
                Arc::new(ContextMemo::load(path, dir))
            })
            .clone()
    }

    /// How many context files the build's COPYs looked at, and how many of them had to
    /// be read because the memo did not know them.
    pub fn context_stats(&self) -> (usize, usize) {
        let memos = self.memos.lock().expect("memo lock");
        memos.values().fold((0, 0), |(c, h), m| {
            (
                c + m.checked.load(std::sync::atomic::Ordering::Relaxed),
                h + m.hashed.load(std::sync::atomic::Ordering::Relaxed),
            )
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
        };
        let selected = select(action, &src)?;
        let files: Vec<(&Path, &std::fs::Metadata)> = selected
            .iter()
            .filter(|e| e.md.is_file())
            .map(|e| (e.rel.as_path(), &e.md))
            .collect();
        let digests = self.memo(dir).digests(&files)?;
        let mut digests = digests.into_iter();
        let mut h = sha2::Sha256::new();
        for e in &selected {
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
                ("file", digests.next().unwrap_or_default())
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
