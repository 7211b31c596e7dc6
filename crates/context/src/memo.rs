//! The context checksum memo: file digests of one context directory remembered across
//! builds by (size, mtime, ctime, inode, mode), so an unchanged file costs one `stat`.
//! Where it is stored (the root's `checksums-v1` bucket) is the caller's choice; the
//! format is a small binary one (see [`encode`]), read in a few milliseconds for tens of
//! thousands of files.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here carry the path (`MemoError::Io`, `SelectError::Io`)"
)]

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// A sha256 digest.
type Sha256 = [u8; 32];

/// What the memo knows of one file: its stat identity and content digest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemoEntry {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    mode: u32,
    sha256: [u8; 32],
}

impl MemoEntry {
    fn of(md: &std::fs::Metadata, sha256: [u8; 32]) -> Self {
        MemoEntry {
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            mode: md.mode(),
            sha256,
        }
    }

    fn matches(&self, md: &std::fs::Metadata) -> bool {
        self.size == md.size()
            && self.mtime == (md.mtime(), md.mtime_nsec())
            && self.ctime == (md.ctime(), md.ctime_nsec())
            && self.ino == md.ino()
            && self.mode == md.mode()
    }
}

/// A file the stored memo knows, and whether this build found it unchanged.
#[derive(Debug)]
struct Known {
    entry: MemoEntry,
    seen: AtomicBool,
}

/// ContextMemo remembers file digests of one context directory across builds.
#[derive(Debug)]
pub struct ContextMemo {
    path: PathBuf,
    root: PathBuf,
    /// The stored memo, by path below the root (bytes).
    known: HashMap<Box<[u8]>, Known>,
    /// Files this build read (new or changed).
    fresh: Mutex<HashMap<Box<[u8]>, MemoEntry>>,
    /// Files looked at and files read, for the progress line.
    checked: AtomicUsize,
    hashed: AtomicUsize,
}

impl ContextMemo {
    /// Reads the memo stored at `path` for the context directory `root` (an unreadable,
    /// malformed or foreign one counts as empty).
    pub fn load(path: PathBuf, root: &Path) -> Self {
        let known = match std::fs::read(&path) {
            Ok(b) => decode(&b, root).unwrap_or_default(),
            Err(_) => {
                // The memo of an older kiln (JSON, `<name>.json` beside it) is never read
                // again: it goes when its successor is first looked for.
                let _ = std::fs::remove_file(path.with_extension("json"));
                HashMap::new()
            }
        };
        ContextMemo {
            path,
            root: root.to_path_buf(),
            known,
            fresh: Mutex::new(HashMap::new()),
            checked: AtomicUsize::new(0),
            hashed: AtomicUsize::new(0),
        }
    }

    /// Content digests (sha256) of the files at `rels` (relative to the context root),
    /// hashing only those whose stat changed, in parallel. `open_root` is called once,
    /// only when something must be read, and gives the function that opens a file
    /// inside the root (the caller's: it must never follow a symlink out of the root,
    /// nor open a FIFO).
    pub fn digests<F>(
        &self,
        files: &[(&Path, &std::fs::Metadata)],
        open_root: impl FnOnce(&Path) -> std::io::Result<F>,
    ) -> Result<Vec<[u8; 32]>, MemoError>
    where
        F: Fn(&Path) -> std::io::Result<std::fs::File> + Sync,
    {
        let mut out: Vec<[u8; 32]> = vec![[0; 32]; files.len()];
        let mut todo = Vec::new();
        {
            let fresh = self.fresh.lock().expect("memo lock");
            for (i, (rel, md)) in files.iter().enumerate() {
                let key = rel.as_os_str().as_bytes();
                if let Some(e) = fresh.get(key).filter(|e| e.matches(md)) {
                    out[i] = e.sha256;
                } else if let Some(k) = self.known.get(key).filter(|k| k.entry.matches(md)) {
                    k.seen.store(true, Ordering::Relaxed);
                    out[i] = k.entry.sha256;
                } else {
                    todo.push(i);
                }
            }
        }
        self.checked.fetch_add(files.len(), Ordering::Relaxed);
        self.hashed.fetch_add(todo.len(), Ordering::Relaxed);
        if todo.is_empty() {
            return Ok(out);
        }
        let open = open_root(&self.root).map_err(|source| MemoError::Io {
            path: self.root.clone(),
            source,
        })?;
        let open = &open;
        let root = self.root.as_path();
        // Files are handed out one at a time, so a few big ones do not leave one thread
        // with most of the bytes; this thread and one helper for each CPU of kiln's
        // budget free now hash them.
        let next = AtomicUsize::new(0);
        let budget = kiln_cpu::global();
        let sizes: Vec<u64> = todo.iter().map(|&i| files[i].1.len()).collect();
        // Files not in the page cache are read from the disk one read at a time per
        // hashing thread; a reader ahead of them keeps more of them in flight.
        let ahead = Prefetch::new(&next, &sizes);
        let hashed: Vec<Result<Vec<(usize, Sha256)>, MemoError>> = std::thread::scope(|s| {
            if ahead.worth_it() {
                let ahead = &ahead;
                let todo = &todo;
                s.spawn(move || {
                    if ahead.wait_until_woken() {
                        ahead.run(|k| open(files[todo[k]].0).ok());
                    }
                });
            }
            let hashed = budget.workers(todo.len(), || {
                budget.working();
                let mut buf = vec![0u8; HASH_BUF];
                let mut done = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(n) else { break };
                    match hash_file(root, open, files[i].0, &mut buf, &|| ahead.wake()) {
                        Ok(d) => done.push((i, d)),
                        Err(e) => {
                            next.store(todo.len(), Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
                Ok(done)
            });
            ahead.stop();
            hashed
        });
        let mut fresh = self.fresh.lock().expect("memo lock");
        for part in hashed {
            for (i, d) in part? {
                out[i] = d;
                let (rel, md) = files[i];
                fresh.insert(rel.as_os_str().as_bytes().into(), MemoEntry::of(md, d));
            }
        }
        Ok(out)
    }

    /// The content digest of the file at `rel` this build learnt (by
    /// [`ContextMemo::digests`]), if the file still has the stat `md` it had then.
    pub fn known_digest(&self, rel: &Path, md: &std::fs::Metadata) -> Option<[u8; 32]> {
        let key = rel.as_os_str().as_bytes();
        if let Some(e) = self.fresh.lock().expect("memo lock").get(key) {
            return e.matches(md).then_some(e.sha256);
        }
        self.known
            .get(key)
            .filter(|k| k.seen.load(Ordering::Relaxed) && k.entry.matches(md))
            .map(|k| k.entry.sha256)
    }

    /// How many files [`ContextMemo::digests`] looked at, and how many of them it read.
    pub fn stats(&self) -> (usize, usize) {
        (
            self.checked.load(Ordering::Relaxed),
            self.hashed.load(Ordering::Relaxed),
        )
    }

    /// Writes the memo back when this build learnt something new (through a temp file
    /// in `tmp`, renamed into place): every file this build read or found unchanged,
    /// and the stored ones it did not look at that still exist.
    pub fn save(&self, tmp: &Path) {
        let fresh = self.fresh.lock().expect("memo lock");
        if fresh.is_empty() && self.known.values().all(|k| k.seen.load(Ordering::Relaxed)) {
            return;
        }
        let mut entries: Vec<(&[u8], &MemoEntry)> = fresh.iter().map(|(k, e)| (&**k, e)).collect();
        for (k, known) in &self.known {
            if fresh.contains_key(k) {
                continue;
            }
            // Forget files that are gone: only those this build did not see are asked.
            if known.seen.load(Ordering::Relaxed)
                || self
                    .root
                    .join(std::ffi::OsStr::from_bytes(k))
                    .symlink_metadata()
                    .is_ok()
            {
                entries.push((k, &known.entry));
            }
        }
        let bytes = encode(&self.root, &entries);
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

/// The stored memo's first bytes: a format change gets a new one (an older memo then
/// counts as empty, which costs one read of every file).
const MAGIC: &[u8] = b"kiln-context-memo-v2\n";

/// The stored memo: [`MAGIC`], the root (u32 length, bytes), then per file the size,
/// mtime and ctime (seconds, nanoseconds), inode (u64/i64 little-endian), mode (u32),
/// sha256 (32 bytes) and path below the root (u32 length, bytes).
fn encode(root: &Path, entries: &[(&[u8], &MemoEntry)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 64 + entries.len() * 120);
    out.extend_from_slice(MAGIC);
    let root = root.as_os_str().as_bytes();
    out.extend_from_slice(&(root.len() as u32).to_le_bytes());
    out.extend_from_slice(root);
    for (path, e) in entries {
        out.extend_from_slice(&e.size.to_le_bytes());
        for t in [e.mtime.0, e.mtime.1, e.ctime.0, e.ctime.1] {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&e.ino.to_le_bytes());
        out.extend_from_slice(&e.mode.to_le_bytes());
        out.extend_from_slice(&e.sha256);
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
    }
    out
}

/// Reads what [`encode`] wrote for `root`; `None` for anything else.
fn decode(bytes: &[u8], root: &Path) -> Option<HashMap<Box<[u8]>, Known>> {
    let mut r = Reader(bytes.strip_prefix(MAGIC)?);
    let len = r.u32()? as usize;
    if r.take(len)? != root.as_os_str().as_bytes() {
        return None;
    }
    let mut known = HashMap::new();
    while !r.0.is_empty() {
        let size = r.u64()?;
        let mtime = (r.u64()? as i64, r.u64()? as i64);
        let ctime = (r.u64()? as i64, r.u64()? as i64);
        let ino = r.u64()?;
        let mode = r.u32()?;
        let sha256: [u8; 32] = r.take(32)?.try_into().ok()?;
        let len = r.u32()? as usize;
        let path = r.take(len)?;
        let entry = MemoEntry {
            size,
            mtime,
            ctime,
            ino,
            mode,
            sha256,
        };
        known.insert(
            path.into(),
            Known {
                entry,
                seen: AtomicBool::new(false),
            },
        );
    }
    Some(known)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Asks the kernel to read files ahead of the threads that hash them
/// (`posix_fadvise(WILLNEED)`: the reads are queued, not waited for), at most
/// [`Prefetch::WINDOW`] bytes past the file being hashed — once a hashing thread found
/// a file not in the page cache (a context in the page cache needs none of it).
struct Prefetch<'a> {
    /// The index of the next file a hashing thread takes.
    next: &'a AtomicUsize,
    /// `ends[k]`: the size of the files before `k` plus file `k`'s own.
    ends: Vec<u64>,
    stopped: AtomicBool,
    /// (woken, stopped) for [`Prefetch::wait_until_woken`].
    state: Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl<'a> Prefetch<'a> {
    const WINDOW: u64 = 32 << 20;
    /// Below this (files, bytes), hashing starts reading as soon as a reader would.
    const MIN_FILES: usize = 64;
    const MIN_BYTES: u64 = 4 << 20;

    fn new(next: &'a AtomicUsize, sizes: &[u64]) -> Self {
        let ends = sizes
            .iter()
            .scan(0u64, |sum, &n| {
                *sum = sum.saturating_add(n);
                Some(*sum)
            })
            .collect();
        Prefetch {
            next,
            ends,
            stopped: AtomicBool::new(false),
            state: Mutex::new((false, false)),
            changed: std::sync::Condvar::new(),
        }
    }

    /// Called by a hashing thread that had to wait for the disk.
    fn wake(&self) {
        let mut st = self.state.lock().expect("prefetch lock");
        if !st.0 {
            st.0 = true;
            self.changed.notify_all();
        }
    }

    /// Whether [`Prefetch::wake`] was called before [`Prefetch::stop`].
    fn wait_until_woken(&self) -> bool {
        let mut st = self.state.lock().expect("prefetch lock");
        while !st.0 && !st.1 {
            st = self.changed.wait(st).expect("prefetch lock");
        }
        st.0 && !st.1
    }

    fn worth_it(&self) -> bool {
        self.ends.len() >= Self::MIN_FILES && self.ends.last().is_some_and(|&n| n >= Self::MIN_BYTES)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.state.lock().expect("prefetch lock").1 = true;
        self.changed.notify_all();
    }

    /// Reads ahead file after file (`open(k)` opens file `k`, or gives none to skip
    /// it), waiting while it is a window ahead; returns when every file was taken by a
    /// hashing thread or [`Prefetch::stop`] was called.
    fn run(&self, open: impl Fn(usize) -> Option<std::fs::File>) {
        for k in 0..self.ends.len() {
            loop {
                if self.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let taken = self.next.load(Ordering::Relaxed);
                if taken > k {
                    break;
                }
                let before = if taken == 0 { 0 } else { self.ends[taken - 1] };
                if self.ends[k] - before <= Self::WINDOW || taken == k {
                    let size = self.ends[k] - if k == 0 { 0 } else { self.ends[k - 1] };
                    let len = std::num::NonZeroU64::new(size.min(Self::WINDOW));
                    if let (Some(len), Some(f)) = (len, open(k)) {
                        let _ = rustix::fs::fadvise(&f, 0, Some(len), rustix::fs::Advice::WillNeed);
                    }
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
        }
    }
}

/// Read size for hashing context files.
const HASH_BUF: usize = 256 << 10;

/// The sha256 in hex of the regular file at `rel` below `root`, opened by `open` inside
/// the root (never through a symlink out of it, never a FIFO) and read through `buf`;
/// `on_disk` is called when its first bytes were not in the page cache.
fn hash_file(
    root: &Path,
    open: &(impl Fn(&Path) -> std::io::Result<std::fs::File> + Sync),
    rel: &Path,
    buf: &mut [u8],
    on_disk: &dyn Fn(),
) -> Result<[u8; 32], MemoError> {
    use std::io::Read;
    let io = |source| MemoError::Io {
        path: root.join(rel),
        source,
    };
    use sha2::Digest as _;
    let mut f = open(rel).map_err(io)?;
    let mut h = sha2::Sha256::new();
    // The first read only from the page cache (u64::MAX: at, and moving, the file's
    // offset); EAGAIN says the bytes are on the disk.
    let first = rustix::io::preadv2(
        &f,
        &mut [std::io::IoSliceMut::new(buf)],
        u64::MAX,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    match first {
        Ok(0) => return Ok(h.finalize().into()),
        Ok(n) => h.update(&buf[..n]),
        Err(rustix::io::Errno::AGAIN) => on_disk(),
        // Not supported here (EOPNOTSUPP), interrupted: read as usual.
        Err(_) => {}
    }
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(h.finalize().into())
}
