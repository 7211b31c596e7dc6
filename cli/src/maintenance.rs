//! `kiln prune`, `kiln du`, `kiln fsck`: keeping the root in shape. Their flags and
//! reports; the work is `kiln_build::maintenance`.

use std::path::Path;

use anyhow::{bail, Result};
use kiln_build::maintenance;

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove every build cache record, not only those no tagged image contains, and
    /// every unpacked snapshot.
    #[arg(short, long)]
    all: bool,
    /// `until=DURATION` (e.g. `24h`, `90m`, `7d`): only what was last used longer ago.
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Keep at most this much build cache (e.g. `5GB`), removing the least recently
    /// used records first.
    #[arg(long = "keep-storage", value_name = "SIZE")]
    keep_storage: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DuArgs {}

#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// Quarantine corrupt blobs, drop the records and tags that need them and remove
    /// broken snapshots, so the next build recomputes (or pulls) them.
    #[arg(long)]
    repair: bool,
    /// Also unpack every snapshot's layers afresh (checking their diff ids) and compare
    /// the trees file by file; slow.
    #[arg(long)]
    deep: bool,
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes}B"),
        1_000..1_000_000 => format!("{:.1}kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}MB", b / 1e6),
        _ => format!("{:.2}GB", b / 1e9),
    }
}

pub fn prune(root: &Path, a: PruneArgs) -> Result<()> {
    let opts = maintenance::prune_options(a.all, &a.filter, a.keep_storage.as_deref())?;
    let rep = maintenance::prune(root, &opts)?;
    outln!(
        "Deleted {} cache records, {} blobs, {} snapshots, {} cache mounts, {} partial downloads\nTotal reclaimed space: {}",
        rep.records,
        rep.blobs,
        rep.snapshots,
        rep.cache_mounts,
        rep.partials,
        human(rep.bytes)
    );
    Ok(())
}

pub fn du(root: &Path, _a: DuArgs) -> Result<()> {
    let u = maintenance::disk_usage(root)?;
    let (n, dash) = (human, || "-".to_string());
    let rows = [
        ("TYPE", "COUNT".into(), "SIZE".into(), "RECLAIMABLE".into()),
        ("Images", u.images.to_string(), dash(), dash()),
        (
            "Build cache",
            u.records.to_string(),
            n(u.records_bytes),
            n(u.dangling_bytes),
        ),
        ("Blobs", u.blobs.to_string(), n(u.blobs_bytes), dash()),
        ("Snapshots", u.snapshots.to_string(), n(u.snapshots_bytes), dash()),
        (
            "Cache mounts",
            u.cache_mounts.to_string(),
            n(u.cache_mounts_bytes),
            n(u.cache_mounts_bytes),
        ),
        (
            "Partial blobs",
            u.partials.to_string(),
            n(u.partials_bytes),
            n(u.partials_bytes),
        ),
        ("Temp files", dash(), n(u.temp_bytes), n(u.temp_bytes)),
    ];
    for (kind, count, size, reclaimable) in rows {
        outln!("{kind:<14}{count:>8}{size:>12}{reclaimable:>14}");
    }
    Ok(())
}

pub fn fsck(root: &Path, a: FsckArgs) -> Result<()> {
    let opts = maintenance::FsckOptions {
        repair: a.repair,
        deep: a.deep,
    };
    let rep = maintenance::fsck(root, opts)?;
    for p in &rep.problems {
        outln!("PROBLEM: {p}");
    }
    for p in &rep.repaired {
        outln!("REPAIRED: {p}");
    }
    outln!(
        "checked {} blobs and {} snapshots: {} problems",
        rep.blobs_checked,
        rep.snapshots_checked,
        rep.problems.len()
    );
    if !rep.problems.is_empty() && !a.repair {
        bail!("{} problems found; `kiln fsck --repair` fixes them", rep.problems.len());
    }
    Ok(())
}
