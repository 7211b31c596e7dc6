//! Keeping `$KILN_ROOT` in shape: `prune` (drop build cache and everything only it
//! needed), `disk_usage`, and `fsck` (verify every blob, image, record and snapshot;
//! optionally quarantine what is broken so the next build recomputes it).
//!
//! All three run under the root's exclusive lock (builds hold it shared), so nothing
//! they look at is being written.
//!
//! A prune may be killed at any moment and must leave nothing a later build could
//! misread: every entry goes in one visible step (a file is unlinked; a tree, which
//! takes long to delete, is first renamed into `tmp/`), and things go in an order that
//! never leaves a reference to something missing (cache records before the blobs they
//! name, layer records before their blobs, a snapshot's tree before its record).

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kiln_cache::{Bucket, CacheRecord, KilnRoot};
use kiln_image::{Digest, ImageConfig, Manifest};
use kiln_snapshotter::{chain_id, chain_ids, SnapshotEntry, Snapshots};

use crate::WorkerError;

/// PruneOptions selects what `prune` removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Every cache record, not only those no tagged image contains.
    pub all: bool,
    /// Only records last used longer ago than this.
    pub until: Option<Duration>,
    /// Remove least recently used records until the cache holds at most this many bytes.
    pub keep_storage: Option<u64>,
}

/// What `prune` removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub records: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub snapshots: usize,
    pub cache_mounts: usize,
    /// Partial downloads of killed pulls.
    pub partials: usize,
}

/// The layers of every tagged image (by manifest), plus their manifest and config blobs.
struct Tagged {
    blobs: BTreeSet<Digest>,
    chains: Vec<Vec<Digest>>,
}

fn tagged(root: &KilnRoot) -> Result<Tagged, WorkerError> {
    let store = root.images();
    let mut t = Tagged {
        blobs: BTreeSet::new(),
        chains: Vec::new(),
    };
    for img in store.list()? {
        t.blobs.insert(img.manifest.digest.clone());
        // An index entry's attestation manifests and their blobs too.
        if let Ok(extra) = store.index_blobs(&img) {
            t.blobs.extend(extra.into_iter().map(|d| d.digest));
        }
        // Every platform's manifest of a multi-platform image.
        for (d, m) in store.manifests(&img).unwrap_or_default() {
            t.blobs.insert(d.digest.clone());
            t.blobs.insert(m.config.digest.clone());
            t.blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
            if let Some(c) = store
                .blobs()
                .read_all(&m.config.digest)
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok())
            {
                t.chains.push(c.rootfs.diff_ids);
            }
        }
    }
    Ok(t)
}

/// Chain ids of every prefix of `diff_ids` (computed once each: linear).
fn prefix_chains(diff_ids: &[Digest], out: &mut BTreeSet<String>) {
    out.extend(chain_ids(diff_ids).iter().map(|c| c.hex().to_string()));
}

fn dir_size(p: &Path) -> u64 {
    dir_size_once(p, &mut HashSet::new())
}

/// The bytes of the files under `p` whose inode is not in `seen` yet (adding them): a
/// file hard-linked under several names, or into several snapshots, counts once, as
/// `du` counts it.
fn dir_size_once(p: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .filter(|m| m.nlink() < 2 || seen.insert((m.dev(), m.ino())))
        .map(|m| m.len())
        .sum()
}

/// Empties `tmp/`: temp files of interrupted builds and trees a killed prune had begun
/// to delete (only called while no build holds the root).
fn sweep_tmp(root: &KilnRoot) {
    if let Ok(rd) = std::fs::read_dir(root.tmp_dir()) {
        for e in rd.flatten() {
            let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
}

/// Removes build cache records (see [`PruneOptions`]) and then every blob, snapshot and
/// layer record that neither a tagged image nor a remaining record needs.
pub fn prune(root: &KilnRoot, opts: &PruneOptions) -> Result<PruneReport, WorkerError> {
    let mut report = PruneReport::default();
    let tagged = tagged(root)?;
    let cache = root.cache_records();
    let content = root.content();
    let now = SystemTime::now();
    let mut recs = cache.list();
    // Oldest first, for least-recently-used order.
    recs.sort_by_key(|r| r.used);
    let own_size = |r: &CacheRecord| -> u64 {
        r.layers
            .as_ref()
            .and_then(|l| l.last())
            .map(|l| l.blob.size)
            .unwrap_or(0)
    };
    let old_enough = |r: &CacheRecord| {
        opts.until
            .is_none_or(|u| now.duration_since(r.used).unwrap_or_default() >= u)
    };
    let dangling = |r: &CacheRecord| {
        r.layers
            .as_ref()
            .and_then(|l| l.last())
            .is_none_or(|l| !tagged.blobs.contains(&l.blob.digest))
    };
    let mut total: u64 = recs.iter().map(own_size).sum();
    let mut keep = Vec::new();
    for r in recs {
        let remove = match opts.keep_storage {
            Some(limit) => total > limit && old_enough(&r),
            None => (opts.all || dangling(&r)) && old_enough(&r),
        };
        if remove {
            total -= own_size(&r);
            cache.remove(&r.key);
            report.records += 1;
        } else {
            keep.push(r);
        }
    }

    // What is still needed.
    let mut blobs = tagged.blobs.clone();
    let mut chains = BTreeSet::new();
    for c in &tagged.chains {
        prefix_chains(c, &mut chains);
    }
    for r in &keep {
        if let Some(layers) = &r.layers {
            blobs.extend(layers.iter().map(|l| l.blob.digest.clone()));
            let ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
            prefix_chains(&ids, &mut chains);
        }
    }
    let doomed: BTreeSet<Digest> = content.list()?.into_iter().filter(|d| !blobs.contains(d)).collect();
    // Layer records of blobs about to go, before the blobs (a kill in between leaves
    // blobs without a record, which the next prune removes, never a record naming
    // missing blobs).
    let layer_records = root.layers();
    for (path, rec) in layer_records.list() {
        // One that does not parse is left for fsck to report.
        let Some(rec) = rec else { continue };
        if rec
            .blobs
            .iter()
            .all(|b| doomed.contains(&b.digest) || !content.has(&b.digest))
        {
            layer_records.remove(&path);
        }
    }
    for d in &doomed {
        let p = content.blob_path(d);
        let size = p.metadata().map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(&p).is_ok() {
            report.bytes += size;
            report.blobs += 1;
        }
    }
    // The chunk memo's records of removed blobs (only ever ignored when left).
    if report.blobs > 0 {
        kiln_snapshotter::ChunkMemo::of(&content).sweep();
    }
    root.images().collect_garbage()?;
    // Unpacked trees: `--all` drops them all (they are rebuilt from blobs when needed).
    // Each is renamed away whole before it is deleted: a half-deleted tree left by a
    // kill would otherwise be used as a step's lower tree.
    let merged = Snapshots::new(root)?;
    // Merged trees and layer directories alike.
    for snaps in [merged.clone(), merged.layer_dirs()] {
        for entry in snaps.entries() {
            let name = match entry {
                // A record whose tree is gone (a create or delete cut short).
                SnapshotEntry::Record { path, tree: false, .. } => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                SnapshotEntry::Record { tree: true, .. } => continue,
                SnapshotEntry::Tree { chain, path } => {
                    let complete = snaps.is_complete(&path);
                    if !opts.all && chains.contains(&chain) && complete {
                        continue;
                    }
                    chain
                }
                // Not kiln's: no build can use it.
                SnapshotEntry::Stray { name, .. } => name,
            };
            if snaps.remove(&name)? {
                report.snapshots += 1;
            }
        }
    }
    // Incremental COPY's records of results whose layer directory is gone.
    crate::copy::reuse::sweep(&root.bucket(Bucket::Copies), &merged);
    // Cache mounts are build cache too; `--all` drops them (a filter keeps the recently used).
    if opts.all {
        // Each cache of each id (`cachemounts-v2/<id>/<key>`), after moving v1's in.
        if !crate::cachemount::dirs(root).is_empty() {
            crate::cachemount::store(root)?;
        }
        let caches = std::fs::read_dir(root.bucket(Bucket::CacheMounts))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|id| std::fs::read_dir(id.path()).ok())
            .flat_map(|rd| rd.flatten());
        for e in caches {
            let used = e.metadata().and_then(|m| m.modified()).unwrap_or(now);
            let old = opts
                .until
                .is_none_or(|u| now.duration_since(used).unwrap_or_default() >= u);
            // Whole or not at all: a half-emptied package cache misleads the tool
            // that fills it.
            if old && root.remove_atomic(&e.path())? && e.file_type().is_ok_and(|t| t.is_dir()) {
                report.cache_mounts += 1;
            }
        }
    }
    report.partials = content.remove_partials().len();
    sweep_tmp(root);
    Ok(report)
}

/// What the root holds, for `kiln du`.
#[derive(Debug, Default)]
pub struct Usage {
    pub images: usize,
    pub records: usize,
    /// Bytes of the layers the records made themselves.
    pub records_bytes: u64,
    /// Records no tagged image contains (what `prune` removes).
    pub dangling: usize,
    pub dangling_bytes: u64,
    pub blobs: usize,
    pub blobs_bytes: u64,
    pub snapshots: usize,
    pub snapshots_bytes: u64,
    /// Partial downloads a later pull resumes (`content-v1/ingest/`).
    pub partials: usize,
    pub partials_bytes: u64,
    /// Temp files and trees being deleted (`tmp/`).
    pub temp_bytes: u64,
    /// `RUN --mount=type=cache` directories (each key of each id; `prune --all` removes them).
    pub cache_mounts: usize,
    pub cache_mounts_bytes: u64,
}

/// Counts and sizes of what the root holds.
pub fn disk_usage(root: &KilnRoot) -> Result<Usage, WorkerError> {
    let tagged = tagged(root)?;
    let mut u = Usage {
        images: root.images().list()?.len(),
        ..Usage::default()
    };
    for r in root.cache_records().list() {
        let last = r.layers.as_ref().and_then(|l| l.last());
        let size = last.map(|l| l.blob.size).unwrap_or(0);
        u.records += 1;
        u.records_bytes += size;
        if last.is_none_or(|l| !tagged.blobs.contains(&l.blob.digest)) {
            u.dangling += 1;
            u.dangling_bytes += size;
        }
    }
    let content = root.content();
    for d in content.list()? {
        u.blobs += 1;
        u.blobs_bytes += content.blob_path(&d).metadata().map(|m| m.len()).unwrap_or(0);
    }
    // Read only: `Snapshots::new` would create the bucket.
    let snaps = root
        .bucket(Bucket::Snapshots)
        .is_dir()
        .then(|| Snapshots::new(root))
        .transpose()?;
    // One set for every snapshot: the copy snapshotter and layer unpacking hard-link.
    let mut seen = HashSet::new();
    for e in snaps
        .iter()
        .flat_map(|s| [s.clone(), s.layer_dirs()])
        .flat_map(|s| s.entries())
    {
        if let SnapshotEntry::Tree { path, .. } | SnapshotEntry::Stray { path, .. } = e {
            // Not through a symlink: `dir_size` would walk wherever it points.
            if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                u.snapshots += 1;
                u.snapshots_bytes += dir_size_once(&path, &mut seen);
            }
        }
    }
    for p in content.partials() {
        u.partials += 1;
        u.partials_bytes += p.bytes;
    }
    u.temp_bytes = dir_size(&root.tmp_dir());
    // Read only: each key of each id, and a not yet migrated v1 cache per id.
    for dir in crate::cachemount::dirs(root) {
        u.cache_mounts += 1;
        u.cache_mounts_bytes += dir_size(&dir);
    }
    Ok(u)
}

/// FsckOptions says what `fsck` does besides reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsckOptions {
    /// Quarantine or drop what is broken, so the next build recomputes it.
    pub repair: bool,
    /// Also unpack every snapshot's layers afresh and compare the trees (slow).
    pub deep: bool,
}

/// What `fsck` found and did.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub snapshots_checked: usize,
    pub problems: Vec<String>,
    pub repaired: Vec<String>,
}

/// Verifies every blob's digest, every tagged image's manifest, config and layers,
/// every cache and layer record, and every snapshot (against its record; with `deep`,
/// against its layers). With `repair`, corrupt blobs go to `quarantine-v1/`, records
/// and tags that need a missing blob are dropped, and broken snapshots are removed, so
/// the next build recomputes (or re-pulls) them.
pub fn fsck(root: &KilnRoot, opts: FsckOptions) -> Result<FsckReport, WorkerError> {
    let repair = opts.repair;
    let mut rep = FsckReport::default();
    let content = root.content();
    let store = root.images();
    let quarantine = quarantine_dir(root);
    let mut bad: BTreeSet<Digest> = BTreeSet::new();
    let mut seen_inodes: HashMap<(u64, u64), bool> = HashMap::new();
    for (label, blobs) in [("content", &content), ("store", store.blobs())] {
        for d in blobs.list()? {
            let p = blobs.blob_path(&d);
            let ino = p.metadata().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
            let ok = match ino.as_ref().ok().and_then(|i| seen_inodes.get(i)) {
                Some(ok) => *ok,
                None => {
                    rep.blobs_checked += 1;
                    let ok = blobs.verify(&d).is_ok();
                    if let Ok(i) = ino {
                        seen_inodes.insert(i, ok);
                    }
                    ok
                }
            };
            if !ok {
                rep.problems.push(format!("{label} blob {d} does not match its digest"));
                bad.insert(d.clone());
                if repair {
                    let _ = std::fs::create_dir_all(&quarantine);
                    let dest = quarantine.join(format!("{label}-{}", d.hex()));
                    if std::fs::rename(&p, &dest).is_ok() {
                        rep.repaired
                            .push(format!("moved {} to {}", p.display(), dest.display()));
                    }
                }
            }
        }
    }
    let missing =
        |d: &Digest, in_store: bool| bad.contains(d) || !(if in_store { store.blobs().has(d) } else { content.has(d) });

    // Tagged images.
    for img in store.list()? {
        let name = img
            .name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_else(|| img.manifest.digest.to_string());
        let mut why = None;
        if missing(&img.manifest.digest, true) {
            why = Some(format!("manifest {} is missing or corrupt", img.manifest.digest));
        } else {
            match store.manifest(&img) {
                Err(e) => why = Some(format!("manifest does not parse: {e}")),
                Ok(m) => {
                    let m: Manifest = m;
                    if let Some(d) = std::iter::once(&m.config.digest)
                        .chain(m.layers.iter().map(|l| &l.digest))
                        .find(|d| missing(d, true))
                    {
                        why = Some(format!("blob {d} is missing or corrupt"));
                    }
                }
            }
        }
        if let Some(why) = why {
            rep.problems.push(format!("image {name}: {why}"));
            if repair {
                if let Some(n) = &img.name {
                    if store.remove(&n.to_string()).is_ok() {
                        rep.repaired.push(format!("untagged {name}"));
                    }
                }
            }
        }
    }

    // Cache records.
    let cache = root.cache_records();
    for r in cache.list() {
        let why = match &r.layers {
            None => Some("does not parse".to_string()),
            Some(layers) => layers
                .iter()
                .find(|l| missing(&l.blob.digest, false))
                .map(|l| format!("needs blob {} which is missing or corrupt", l.blob.digest)),
        };
        if let Some(why) = why {
            rep.problems.push(format!("cache record {}: {why}", r.key));
            if repair {
                cache.remove(&r.key);
                rep.repaired.push(format!("dropped cache record {}", r.key));
            }
        }
    }
    for p in cache.strays() {
        rep.problems
            .push(format!("stray file in the cache index: {}", p.display()));
        if repair && cache.remove_stray(&p) {
            rep.repaired.push(format!("removed {}", p.display()));
        }
    }

    // Layer records.
    let layer_records = root.layers();
    for (path, parsed) in layer_records.list() {
        let why = match &parsed {
            None => Some("does not parse".to_string()),
            Some(rec) if rec.blobs.iter().all(|b| missing(&b.digest, false)) => {
                Some("none of its blobs is present".to_string())
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            rep.problems.push(format!("layer record {}: {why}", path.display()));
            if repair && layer_records.remove(&path) {
                rep.repaired.push(format!("removed {}", path.display()));
            }
        }
    }

    fsck_snapshots(root, &bad, opts, &mut rep)?;
    Ok(rep)
}

/// Snapshots: every tree must have its record (a snapshot is made and deleted whole, so
/// a tree without one was made or half deleted by an older kiln) and match it; `deep`
/// also applies its layers afresh and compares. After a bad blob none can be trusted.
fn fsck_snapshots(
    root: &KilnRoot,
    bad: &BTreeSet<Digest>,
    opts: FsckOptions,
    rep: &mut FsckReport,
) -> Result<(), WorkerError> {
    let merged = Snapshots::new(root)?;
    let content = root.content();
    // Merged trees, then layer directories (stacked under RUN steps): the same records.
    for (snaps, what) in [(merged.clone(), "snapshot"), (merged.layer_dirs(), "layer directory")] {
        for entry in snaps.entries() {
            let (name, path, stray) = match entry {
                // A record is checked with its tree; alone it is the harmless trace of a
                // create or delete cut short.
                SnapshotEntry::Record { .. } => continue,
                SnapshotEntry::Tree { chain, path } => (chain, path, false),
                SnapshotEntry::Stray { name, path } => (name, path, true),
            };
            let why = if stray {
                Some(format!("stray entry in {}: {}", snaps.dir().display(), path.display()))
            } else {
                rep.snapshots_checked += 1;
                match snaps.record(&name) {
                None => Some(format!(
                    "{what} {name} is incomplete: it has no record (an older kiln made it or was killed deleting it); builds do not use it"
                )),
                Some(rec) => {
                    let ids: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
                    let blobs_here = rec.layers.iter().all(|l| content.has(&l.blob.digest));
                    if chain_id(&ids).is_none_or(|c| c.hex() != name) {
                        Some(format!("{what} {name}: its record names the layers of another chain"))
                    } else if let Some(why) = kiln_snapshotter::check_snapshot(&path, &rec) {
                        Some(format!("{what} {name} {why}"))
                    } else if opts.deep && what != "snapshot" {
                        match kiln_snapshotter::stack::deep_check_layer_dir(&snaps, &path, &rec) {
                            Ok(None) => None,
                            Ok(Some(diff)) => Some(format!("{what} {name} differs from its layer: {diff}")),
                            Err(e) => Some(format!("{what} {name} cannot be checked against its layer: {e}")),
                        }
                    } else if opts.deep && blobs_here {
                        match kiln_snapshotter::deep_check(&snaps, &path, &rec) {
                            Ok(diffs) if diffs.is_empty() => None,
                            Ok(diffs) => Some(format!("snapshot {name} differs from its layers: {}", diffs.join("; "))),
                            Err(e) => Some(format!("snapshot {name} cannot be checked against its layers: {e}")),
                        }
                    } else {
                        None
                    }
                }
            }
            };
            let drop_it = match &why {
                Some(why) => {
                    rep.problems.push(why.clone());
                    true
                }
                None => !bad.is_empty(),
            };
            // The tree is only a cache of its layers: the next build that needs it unpacks
            // it again.
            if opts.repair && drop_it && snaps.remove(&name)? {
                rep.repaired.push(format!("removed {what} {name}"));
            }
        }
    }
    Ok(())
}

/// Where `fsck --repair` puts corrupt blobs.
pub fn quarantine_dir(root: &KilnRoot) -> PathBuf {
    root.bucket(Bucket::Quarantine)
}
