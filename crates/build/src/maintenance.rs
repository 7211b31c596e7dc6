//! `kiln prune`, `kiln du`, `kiln fsck` as a library: their option grammar (`until=`
//! durations, `--keep-storage` sizes) and the root's exclusive lock around the worker's
//! garbage collector and checker; the lines their reports print as (`prune_summary`,
//! `usage_lines`, `fsck_lines`). The CLI declares the flags and prints the lines.

use std::path::Path;
use std::time::Duration;

use kiln_cache::{KilnRoot, LockKind, RootLock};
use kiln_worker::gc;

pub use kiln_worker::gc::{FsckOptions, FsckReport, PruneOptions, PruneReport, Usage};

use crate::error::{bail, Ctx};
use crate::BuildError;

type Result<T> = std::result::Result<T, BuildError>;

/// `24h`, `90m`, `7d`, `1h30m`, `45s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ctx(|| format!("invalid duration `{s}`"))?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("invalid duration `{s}` (use s, m, h or d, e.g. `24h`)"),
        };
        any = true;
    }
    if !num.is_empty() || !any {
        bail!("invalid duration `{s}` (a unit is required, e.g. `24h`)");
    }
    Ok(Duration::from_secs(total))
}

/// `1024`, `512KB`, `10MB`, `1.5GB`, `2GiB` (decimal and binary units, as Docker).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().ctx(|| format!("invalid size `{s}`"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024f64.powi(4),
        _ => bail!("invalid size `{s}` (e.g. `512MB`, `5GB`, `2GiB`)"),
    };
    Ok((n * mult) as u64)
}

/// The prune options of `kiln prune [--all] [--filter until=D]… [--keep-storage SIZE]`.
pub fn prune_options(all: bool, filters: &[String], keep_storage: Option<&str>) -> Result<PruneOptions> {
    let mut opts = PruneOptions {
        all,
        ..Default::default()
    };
    for f in filters {
        match f.split_once('=') {
            Some(("until", v)) => opts.until = Some(parse_duration(v).ctx(|| format!("--filter {f}"))?),
            _ => bail!("--filter {f}: unknown filter (supported: until=DURATION)"),
        }
    }
    if let Some(s) = keep_storage {
        opts.keep_storage = Some(parse_size(s).ctx(|| format!("--keep-storage {s}"))?);
    }
    Ok(opts)
}

/// Opens the root and takes its lock exclusively: builds hold it shared, so this
/// waits for them to finish.
fn open_exclusive(root: &Path) -> Result<(KilnRoot, RootLock)> {
    let r = KilnRoot::open(root).ctx(|| format!("cannot open kiln root `{}`", root.display()))?;
    let lock = RootLock::acquire(&r.lock_path(), LockKind::Exclusive).map_err(BuildError::other)?;
    Ok((r, lock))
}

/// `kiln prune`.
pub fn prune(root: &Path, opts: &PruneOptions) -> Result<PruneReport> {
    let (r, _lock) = open_exclusive(root)?;
    gc::prune(&r, opts).map_err(BuildError::other)
}

/// `kiln du`.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let (r, _lock) = open_exclusive(root)?;
    gc::disk_usage(&r).map_err(BuildError::other)
}

/// `kiln fsck [--repair] [--deep]`.
pub fn fsck(root: &Path, opts: FsckOptions) -> Result<FsckReport> {
    let (r, _lock) = open_exclusive(root)?;
    gc::fsck(&r, opts).map_err(BuildError::other)
}

/// A size as `kiln prune` and `kiln du` show it: bytes, or kB/MB with one decimal,
/// GB with two.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes}B"),
        1_000..1_000_000 => format!("{:.1}kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}MB", b / 1e6),
        _ => format!("{:.2}GB", b / 1e9),
    }
}

/// What `kiln prune` prints: what it deleted and the space it reclaimed.
pub fn prune_summary(rep: &PruneReport) -> String {
    format!(
        "Deleted {} cache records, {} blobs, {} snapshots, {} cache mounts, {} partial downloads\nTotal reclaimed space: {}",
        rep.records,
        rep.blobs,
        rep.snapshots,
        rep.cache_mounts,
        rep.partials,
        human_bytes(rep.bytes)
    )
}

/// `kiln du`'s table: a row per kind of thing the root holds (count, size, what
/// `prune` may reclaim).
pub fn usage_lines(u: &Usage) -> Vec<String> {
    let (n, dash) = (human_bytes, || "-".to_string());
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
    rows.into_iter()
        .map(|(kind, count, size, reclaimable)| format!("{kind:<14}{count:>8}{size:>12}{reclaimable:>14}"))
        .collect()
}

/// `kiln fsck`'s lines: each problem, each repair, then what was checked.
pub fn fsck_lines(rep: &FsckReport) -> Vec<String> {
    let problems = rep.problems.iter().map(|p| format!("PROBLEM: {p}"));
    let repaired = rep.repaired.iter().map(|p| format!("REPAIRED: {p}"));
    problems
        .chain(repaired)
        .chain([format!(
            "checked {} blobs and {} snapshots: {} problems",
            rep.blobs_checked,
            rep.snapshots_checked,
            rep.problems.len()
        )])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("1y").is_err());
        assert_eq!(parse_size("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn report_lines() {
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1_500), "1.5kB");
        assert_eq!(human_bytes(2_340_000_000), "2.34GB");
        let rep = PruneReport {
            records: 2,
            bytes: 1_200_000,
            ..Default::default()
        };
        assert_eq!(
            prune_summary(&rep),
            "Deleted 2 cache records, 0 blobs, 0 snapshots, 0 cache mounts, 0 partial downloads\nTotal reclaimed space: 1.2MB"
        );
        let lines = usage_lines(&Usage::default());
        assert_eq!(lines[0], "TYPE             COUNT        SIZE   RECLAIMABLE");
        assert_eq!(lines[2], "Build cache          0          0B            0B");
        let rep = FsckReport {
            blobs_checked: 3,
            problems: vec!["blob x is corrupt".into()],
            ..Default::default()
        };
        assert_eq!(
            fsck_lines(&rep),
            [
                "PROBLEM: blob x is corrupt",
                "checked 3 blobs and 0 snapshots: 1 problems"
            ]
        );
    }
}
