//! The persistent directories of `RUN --mount=type=cache`, kept as BuildKit keys them
//! (solver/llbsolver/mounts: `key := id; if ref != nil { key += ":" + ref.ID() }`).
//!
//! Layout, under `cachemounts-v2/` in the root: one directory per id (`sha256(id)`), in
//! it one cache per key: `plain` for the unseeded cache, `seed-<digest>` for one on top
//! of a seed (a `from=` input's content and `source=` path, or the mkdir BuildKit makes
//! for `mode`/`uid`/`gid`). `sharing=private` adds `<key>.<n>` copies for concurrent
//! users; `<key>.lock` files carry the flocks. `--no-cache` removes, before the build,
//! every cache of each id a re-run RUN uses (the unseeded one, or all seeded ones), as
//! BuildKit's detectPrunedCacheID/PruneCacheMounts do.
//!
//! `cachemounts-v1/` (kiln before: one directory per id, seeds ignored) is moved in
//! whole, each id's directory becoming that id's unseeded cache.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_cache::{Bucket, KilnRoot};
use kiln_graph::{CacheSharing, Definition, MountKind, Op};
use kiln_image::Digest;

use crate::{Value, WorkerError};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The store's bucket in the root.
const STORE: Bucket = Bucket::CacheMounts;
/// The layout before seeds were part of the key.
const OLD_STORE: Bucket = Bucket::CacheMountsV1;
/// The unseeded cache of an id.
const PLAIN: &str = "plain";

/// The cache-mount store of `root`, with any `cachemounts-v1/` moved in first.
pub(crate) fn store(root: &KilnRoot) -> Result<PathBuf, WorkerError> {
    let store = root.bucket(STORE);
    std::fs::create_dir_all(&store).map_err(io_err(&store))?;
    migrate(root, &store)?;
    Ok(store)
}

/// Every cache directory in `root` (v2's `<id>/<key>`, v1's `<id>`), changing nothing.
pub(crate) fn dirs(root: &KilnRoot) -> Vec<PathBuf> {
    let is_dir = |e: &std::fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
    let list = |d: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .filter(is_dir)
            .collect()
    };
    let mut out: Vec<PathBuf> = list(&root.bucket(STORE))
        .iter()
        .flat_map(|id| list(&id.path()))
        .map(|e| e.path())
        .collect();
    out.extend(list(&root.bucket(OLD_STORE)).iter().map(|e| e.path()));
    out
}

/// Moves each `cachemounts-v1/<sha256(id)>` to `cachemounts-v2/<sha256(id)>/plain`
/// (unless that exists already) and drops the rest of v1 (its lock files, and what
/// could not be moved, atomically).
fn migrate(root: &KilnRoot, store: &Path) -> Result<(), WorkerError> {
    let old = root.bucket(OLD_STORE);
    let Ok(rd) = std::fs::read_dir(&old) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_cache = e.file_type().is_ok_and(|t| t.is_dir()) && name.len() == 64 && !name.starts_with('.');
        if is_cache {
            let dir = store.join(&name);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let to = dir.join(PLAIN);
            if !to.exists() && std::fs::rename(e.path(), &to).is_ok() {
                continue;
            }
        }
        root.remove_atomic(&e.path())?;
    }
    root.remove_atomic(&old)?;
    Ok(())
}

/// The key of a cache mount within its id: `plain`, or `seed-<digest>` naming what it
/// is made on top of.
pub(crate) fn key(inputs: &[Value], seed: &Option<(u32, String)>, perms: Option<(u32, u32, u32)>) -> String {
    let mut what = String::new();
    match seed {
        Some((input, source)) => {
            match inputs.get(*input as usize) {
                Some(Value::Fs(layers)) => {
                    what.push_str("layers");
                    for l in layers.iter() {
                        what.push(' ');
                        what.push_str(&l.diff_id.to_string());
                    }
                }
                Some(Value::Local { name, dir, .. }) => {
                    what.push_str(&format!("local {name} {}", dir.display()));
                }
                Some(Value::Remote(_)) | None => what.push_str(&format!("input {input}")),
            }
            what.push_str(&format!("\nsource {source}"));
        }
        None if perms.is_none() => return PLAIN.to_string(),
        None => what.push_str("scratch"),
    }
    if let Some((mode, uid, gid)) = perms {
        what.push_str(&format!("\nmkdir {mode:o} {uid}:{gid}"));
    }
    format!("seed-{}", Digest::of(what.as_bytes()).hex())
}

/// Takes a flock on `path` (made if missing); `wait` blocks until it is free, else
/// `None` when another holds it.
fn flock(path: &Path, wait: bool) -> Result<Option<std::fs::File>, WorkerError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let op = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(&f, op) {
        Ok(()) => Ok(Some(f)),
        Err(e) if !wait && e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(io_err(path)(e.into())),
    }
}

/// Where a cache lives and the lock that holds it for the step (if any). `shared` takes
/// none; `locked` waits for the key's lock; `private` takes the first free copy of the
/// key, making a new one when all are in use (as BuildKit does).
pub(crate) fn locate(
    store: &Path,
    id: &str,
    key: &str,
    sharing: CacheSharing,
) -> Result<(PathBuf, Option<std::fs::File>), WorkerError> {
    let dir = store.join(Digest::of(id.as_bytes()).hex());
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    match sharing {
        CacheSharing::Shared => Ok((dir.join(key), None)),
        CacheSharing::Locked => {
            let lock = flock(&dir.join(format!("{key}.lock")), true)?;
            Ok((dir.join(key), lock))
        }
        CacheSharing::Private => {
            for n in 0.. {
                let name = if n == 0 { key.to_string() } else { format!("{key}.{n}") };
                if let Some(lock) = flock(&dir.join(format!("{name}.lock")), false)? {
                    return Ok((dir.join(name), Some(lock)));
                }
            }
            unreachable!("the loop returns")
        }
    }
}

/// Makes the cache directory `path` if missing: `fill` copies the seed into the temp
/// path it is given, or leaves it absent for an empty directory, and returns the
/// attributes (mode, uid, gid) to give the directory, if any. Built beside `path` and
/// renamed in, so no half-made cache is ever used.
pub(crate) fn create(
    path: &Path,
    chown: bool,
    fill: impl FnOnce(&Path) -> Result<Option<(u32, u32, u32)>, WorkerError>,
) -> Result<(), WorkerError> {
    if path.is_dir() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".new-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let attrs = fill(&tmp)?;
    if !tmp.is_dir() {
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    }
    if let Some((mode, uid, gid)) = attrs {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
        if chown {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(io_err(&tmp))?;
        }
    }
    if std::fs::rename(&tmp, path).is_err() {
        // Another build made it first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// `--no-cache` (`all`) or `--no-cache-filter` (`stages`): the RUN steps that will run
/// again start with empty caches. As BuildKit, before the build every cache of each id
/// they mount is removed: the unseeded one for an unseeded mount, every seeded one for a
/// seeded mount (the seed's identity is not known before the build). Returns how many
/// were removed.
pub fn prune_for_rerun(root: &KilnRoot, def: &Definition, all: bool, stages: &[String]) -> Result<usize, WorkerError> {
    let mut doomed: Vec<(String, bool)> = Vec::new();
    for node in def.nodes.values() {
        let rerun = all || node.meta.stage.as_ref().is_some_and(|s| stages.contains(s));
        let Op::Exec(exec) = &node.op else { continue };
        if !rerun {
            continue;
        }
        for m in &exec.mounts {
            if let MountKind::Cache { id, seed, perms, .. } = &m.kind {
                doomed.push((id.clone(), seed.is_some() || *perms));
            }
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    let store = store(root)?;
    let mut removed = 0;
    doomed.sort();
    doomed.dedup();
    for (id, seeded) in doomed {
        let dir = store.join(Digest::of(id.as_bytes()).hex());
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.split('.').next().unwrap_or_default();
            let hit = if seeded {
                base.starts_with("seed-")
            } else {
                base == PLAIN
            };
            if hit && !name.ends_with(".lock") && root.remove_atomic(&e.path())? {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_seeds_and_perms() {
        let plain = key(&[], &None, None);
        assert_eq!(plain, "plain");
        let mkdir = key(&[], &None, Some((0o700, 0, 0)));
        assert!(mkdir.starts_with("seed-") && mkdir != plain);
        assert_ne!(mkdir, key(&[], &None, Some((0o755, 0, 0))));
        let inputs = [Value::Fs(std::sync::Arc::new(Vec::new()))];
        let a = key(&inputs, &Some((0, "/a".into())), None);
        let b = key(&inputs, &Some((0, "/b".into())), None);
        assert!(a.starts_with("seed-") && a != b && a != mkdir);
        assert_eq!(a, key(&inputs, &Some((0, "/a".into())), None), "stable");
    }

    /// A fresh directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("kiln-cachemount-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn private_takes_a_free_copy_shared_the_first() {
        let t = TempDir::new("locate");
        let (p0, l0) = locate(&t.0, "x", "plain", CacheSharing::Private).unwrap();
        assert!(p0.ends_with("plain") && l0.is_some());
        // Held: the next private user gets another copy; once free, the first again.
        let (p1, l1) = locate(&t.0, "x", "plain", CacheSharing::Private).unwrap();
        assert!(p1.ends_with("plain.1"), "{}", p1.display());
        drop((l0, l1));
        let (p2, _l2) = locate(&t.0, "x", "plain", CacheSharing::Private).unwrap();
        assert_eq!(p2, p0);
        let (shared, none) = locate(&t.0, "x", "plain", CacheSharing::Shared).unwrap();
        assert!(shared == p0 && none.is_none());
        // Another id is another directory.
        let (other, _) = locate(&t.0, "y", "plain", CacheSharing::Shared).unwrap();
        assert_ne!(other.parent(), p0.parent());
    }

    #[test]
    fn v1_caches_become_the_unseeded_cache_of_their_id() {
        let t = TempDir::new("migrate");
        let root = KilnRoot::open(t.0.join("root")).unwrap();
        let id = Digest::of(b"pip").hex().to_string();
        let old = root.bucket(OLD_STORE).join(&id);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("wheel"), "w").unwrap();
        std::fs::write(root.bucket(OLD_STORE).join(format!("{id}.lock")), "").unwrap();
        let store = store(&root).unwrap();
        assert_eq!(
            std::fs::read_to_string(store.join(&id).join(PLAIN).join("wheel")).unwrap(),
            "w"
        );
        assert!(!root.bucket(OLD_STORE).exists());
        let (path, _) = locate(&store, "pip", PLAIN, CacheSharing::Shared).unwrap();
        assert!(path.join("wheel").is_file());
    }
}
