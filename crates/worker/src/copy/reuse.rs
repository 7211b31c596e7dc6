//! Incremental COPY (issue 20 item 1): a COPY from a build context whose sources changed
//! in a few files shares every unchanged file with the previous result of the same step
//! instead of copying it again.
//!
//! The previous result is the layer directory the step's last run kept (see
//! `kiln_snapshotter::Snapshots::layer_dir`), with a record of what that run wrote: each
//! regular file's path in the layer and the digest of its contents (the build context's
//! checksum memo knows every source file's digest already: it made the cache key). A
//! file of this run is shared, by a hard link to the previous result's inode, only when
//! the record gives its path the same digest and the previous file has exactly the
//! mode, owner, size and time this run would give the copy — so the layer's tar is the
//! same bytes as a full copy's. Layer directories are never written (later steps see
//! them as overlay lower directories; flattening links them into merged trees, which
//! the copy snapshotter clones by copying file data), so the shared inode can never be
//! changed through the link. An inode is shared once per step (two targets sharing one
//! would become a hard link in the layer), and anything that fails (the previous result
//! pruned, a link refused) copies the file as before.
//!
//! Only steps whose every action is a plain COPY from a build context take part: ADD's
//! extraction may hard-link and then change an entry it wrote.

#![allow(
    clippy::disallowed_methods,
    reason = "the record is a cache: an unreadable one is no previous result, and one that cannot be written is none next time"
)]

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What one run of a step wrote, as stored in the root's `copies-v1/` bucket.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// The chain id (hex) of the result's layer directory.
    chain: String,
    /// Each regular file written: its path in the layer and its contents' sha256 (hex).
    files: Vec<(String, String)>,
}

/// History is where one step's previous result is recorded.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    /// The record named `key` (a digest's hex) in `bucket`.
    pub fn new(bucket: &Path, key: &str) -> Self {
        History {
            path: bucket.join(format!("{key}.json")),
        }
    }

    /// The previous result, if it was recorded and its layer directory is still there.
    pub fn load(&self, snaps: &kiln_snapshotter::Snapshots) -> Option<Previous> {
        let bytes = std::fs::read(&self.path).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        let dir = snaps.layer_dir(&record.chain)?;
        Some(Previous {
            dir,
            files: record.files.into_iter().collect(),
            linked: Mutex::new(HashSet::new()),
        })
    }

    /// Records the result whose layer directory is the chain `chain` (through a temp
    /// file in `tmp`, renamed into place). Best effort.
    pub fn save(&self, tmp: &Path, chain: String, files: Vec<(String, String)>) {
        let Ok(bytes) = serde_json::to_vec(&Record { chain, files }) else {
            return;
        };
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = tempfile::Builder::new().prefix("copies-").tempfile_in(tmp) {
            use std::io::Write;
            if f.write_all(&bytes).is_ok() {
                let _ = f.persist(&self.path);
            }
        }
    }

    /// Forgets the previous result (the step now writes something the record cannot
    /// describe).
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the records in `bucket` whose layer directory is gone (`kiln prune`);
/// returns how many.
pub fn sweep(bucket: &Path, snaps: &kiln_snapshotter::Snapshots) -> usize {
    #[derive(Deserialize)]
    struct Chain {
        chain: String,
    }
    let mut removed = 0;
    for e in std::fs::read_dir(bucket).into_iter().flatten().flatten() {
        let keep = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Chain>(&b).ok())
            .is_some_and(|c| snaps.layer_dir(&c.chain).is_some());
        if !keep && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Previous is the last result of a step: its layer directory and its files' digests.
#[derive(Debug)]
pub struct Previous {
    dir: PathBuf,
    files: HashMap<String, String>,
    /// The previous result's inodes shared in this run, by (device, inode).
    linked: Mutex<HashSet<(u64, u64)>>,
}

/// The file a new copy should be, to be shared.
pub(crate) struct Wanted {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    pub mtime: i64,
    pub size: u64,
}

impl Previous {
    /// The previous result's file at `target` (a path in the layer), if the record says
    /// it had the contents `digest`.
    pub(crate) fn candidate(&self, target: &Path, digest: &str) -> Option<PathBuf> {
        let key = target.to_str()?;
        (self.files.get(key)? == digest).then(|| self.dir.join(target))
    }

    /// Makes `to` a hard link to `prev` if `prev` is a regular file that is exactly the
    /// copy `want` describes and no other target of this run shares it; returns the
    /// shared inode, or `None` when the file must be copied.
    pub(crate) fn share(&self, prev: &Path, to: &Path, want: &Wanted) -> Option<u64> {
        let md = prev.symlink_metadata().ok()?;
        let same = md.file_type().is_file()
            && md.mode() & 0o7777 == want.mode
            && md.size() == want.size
            && md.mtime() == want.mtime
            && md.mtime_nsec() == 0
            && want.owner.is_none_or(|(u, g)| md.uid() == u && md.gid() == g);
        if !same {
            return None;
        }
        let id = (md.dev(), md.ino());
        if !self.linked.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            return None;
        }
        match std::fs::hard_link(prev, to) {
            Ok(()) => Some(md.ino()),
            Err(_) => {
                // Pruned meanwhile, or too many links: copied instead.
                self.linked.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                None
            }
        }
    }
}
