//! `kiln prune`, `kiln du`, `kiln fsck`: keeping the root in shape.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_cache::{KilnRoot, LockKind, RootLock};
use kiln_worker::gc;

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
        let n: u64 = num.parse().with_context(|| format!("invalid duration `{s}`"))?;
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
    let n: f64 = n.parse().with_context(|| format!("invalid size `{s}`"))?;
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

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes}B"),
        1_000..1_000_000 => format!("{:.1}kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}MB", b / 1e6),
        _ => format!("{:.2}GB", b / 1e9),
    }
}

fn open_exclusive(root: &Path) -> Result<(KilnRoot, RootLock)> {
    let r = KilnRoot::open(root).with_context(|| format!("cannot open kiln root `{}`", root.display()))?;
    // Builds hold the lock shared; this waits for them to finish.
    let lock = RootLock::acquire(&r.lock_path(), LockKind::Exclusive)?;
    Ok((r, lock))
}

pub fn prune(root: &Path, a: PruneArgs) -> Result<()> {
    let mut opts = gc::PruneOptions {
        all: a.all,
        ..Default::default()
    };
    for f in &a.filter {
        match f.split_once('=') {
            Some(("until", v)) => opts.until = Some(parse_duration(v).with_context(|| format!("--filter {f}"))?),
            _ => bail!("--filter {f}: unknown filter (supported: until=DURATION)"),
        }
    }
    if let Some(s) = &a.keep_storage {
        opts.keep_storage = Some(parse_size(s).with_context(|| format!("--keep-storage {s}"))?);
    }
    let (r, _lock) = open_exclusive(root)?;
    let rep = gc::prune(&r, &opts)?;
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
    let (r, _lock) = open_exclusive(root)?;
    let u = gc::disk_usage(&r)?;
    outln!("{:<14}{:>8}{:>12}{:>14}", "TYPE", "COUNT", "SIZE", "RECLAIMABLE");
    outln!("{:<14}{:>8}{:>12}{:>14}", "Images", u.images, "-", "-");
    outln!(
        "{:<14}{:>8}{:>12}{:>14}",
        "Build cache",
        u.records,
        human(u.records_bytes),
        human(u.dangling_bytes)
    );
    outln!("{:<14}{:>8}{:>12}{:>14}", "Blobs", u.blobs, human(u.blobs_bytes), "-");
    outln!(
        "{:<14}{:>8}{:>12}{:>14}",
        "Snapshots",
        u.snapshots,
        human(u.snapshots_bytes),
        "-"
    );
    outln!(
        "{:<14}{:>8}{:>12}{:>14}",
        "Cache mounts",
        u.cache_mounts,
        human(u.cache_mounts_bytes),
        human(u.cache_mounts_bytes)
    );
    outln!(
        "{:<14}{:>8}{:>12}{:>14}",
        "Partial blobs",
        u.partials,
        human(u.partials_bytes),
        human(u.partials_bytes)
    );
    outln!(
        "{:<14}{:>8}{:>12}{:>14}",
        "Temp files",
        "-",
        human(u.temp_bytes),
        human(u.temp_bytes)
    );
    Ok(())
}

pub fn fsck(root: &Path, a: FsckArgs) -> Result<()> {
    let (r, _lock) = open_exclusive(root)?;
    let opts = gc::FsckOptions {
        repair: a.repair,
        deep: a.deep,
    };
    let rep = gc::fsck(&r, opts)?;
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
}
