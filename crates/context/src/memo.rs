//! The context checksum memo: file digests of one context directory remembered across
//! builds by (size, mtime, ctime, inode, mode), so an unchanged file costs one `stat`.
//! Where it is stored (the root's `checksums-v1` bucket) is the caller's choice.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here carry the path (`MemoError::Io`, `SelectError::Io`)"
)]

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// MemoError is a context file that could not be read for its digest.
#[derive(Debug, thiserror::Error)]
pub enum MemoError {
    #[error("`{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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
    /// Reads the memo stored at `path` for the context directory `root` (an unreadable
    /// or foreign one counts as empty).
    pub fn load(path: PathBuf, root: &Path) -> Self {
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
    /// only those whose stat changed, in parallel. `open_root` is called once, only when
    /// something must be read, and gives the function that opens a file inside the root
    /// (the caller's: it must never follow a symlink out of the root, nor open a FIFO).
    pub fn digests<F>(
        &self,
        files: &[(&Path, &std::fs::Metadata)],
        open_root: impl FnOnce(&Path) -> std::io::Result<F>,
    ) -> Result<Vec<String>, MemoError>
    where
        F: Fn(&Path) -> std::io::Result<std::fs::File> + Sync,
    {
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
            let open = open_root(&self.root).map_err(|source| MemoError::Io {
                path: self.root.clone(),
                source,
            })?;
            let open = &open;
            let root = self.root.as_path();
            // Files are handed out one at a time, so a few big ones do not leave one
            // thread with most of the bytes; this thread and one helper for each CPU
            // of kiln's budget free now hash them.
            let next = std::sync::atomic::AtomicUsize::new(0);
            let budget = kiln_cpu::global();
            let hashed: Vec<Result<Vec<(usize, String)>, MemoError>> = budget.workers(todo.len(), || {
                budget.working();
                let mut buf = vec![0u8; HASH_BUF];
                let mut done = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = todo.get(n) else { break };
                    match hash_file(root, open, files[i].0, &mut buf) {
                        Ok(d) => done.push((i, d)),
                        Err(e) => {
                            next.store(todo.len(), std::sync::atomic::Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
                Ok(done)
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

    /// The content digest of the file at `rel` this build learnt (by
    /// [`ContextMemo::digests`]), if the file still has the stat `md` it had then.
    pub fn known_digest(&self, rel: &Path, md: &std::fs::Metadata) -> Option<String> {
        let seen = self.seen.lock().expect("memo lock");
        seen.get(rel.to_str()?)
            .filter(|e| e.matches(md))
            .map(|e| e.sha256.clone())
    }

    /// How many files [`ContextMemo::digests`] looked at, and how many of them it read.
    pub fn stats(&self) -> (usize, usize) {
        (
            self.checked.load(std::sync::atomic::Ordering::Relaxed),
            self.hashed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Writes the memo back when this build learnt something new (through a temp file
    /// in `tmp`, renamed into place).
    pub fn save(&self, tmp: &Path) {
        let seen = self.seen.lock().expect("memo lock");
        if !self.changed.load(std::sync::atomic::Ordering::Relaxed) && seen.len() == self.known.len() {
            return;
        }
        // Forget files that are gone: those this build saw exist (it just looked at
        // them); only the others are asked.
        let mut files: HashMap<String, MemoEntry> = self
            .known
            .iter()
            .filter(|(k, _)| !seen.contains_key(*k) && self.root.join(k).symlink_metadata().is_ok())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        files.extend(seen.iter().map(|(k, v)| (k.clone(), v.clone())));
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

/// The sha256 in hex of the regular file at `rel` below `root`, opened by `open` inside
/// the root (never through a symlink out of it, never a FIFO) and read through `buf`.
fn hash_file(
    root: &Path,
    open: &(impl Fn(&Path) -> std::io::Result<std::fs::File> + Sync),
    rel: &Path,
    buf: &mut [u8],
) -> Result<String, MemoError> {
    use std::io::Read;
    let io = |source| MemoError::Io {
        path: root.join(rel),
        source,
    };
    use std::io::Write;
    let mut f = open(rel).map_err(io)?;
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
