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

pub fn prune(root: &Path, a: PruneArgs) -> Result<()> {
    let opts = maintenance::prune_options(a.all, &a.filter, a.keep_storage.as_deref())?;
    outln!("{}", maintenance::prune_summary(&maintenance::prune(root, &opts)?));
    Ok(())
}

pub fn du(root: &Path, _a: DuArgs) -> Result<()> {
    for line in maintenance::usage_lines(&maintenance::disk_usage(root)?) {
        outln!("{line}");
    }
    Ok(())
}

pub fn fsck(root: &Path, a: FsckArgs) -> Result<()> {
    let opts = maintenance::FsckOptions {
        repair: a.repair,
        deep: a.deep,
    };
    let rep = maintenance::fsck(root, opts)?;
    for line in maintenance::fsck_lines(&rep) {
        outln!("{line}");
    }
    if !rep.problems.is_empty() && !a.repair {
        bail!("{} problems found; `kiln fsck --repair` fixes them", rep.problems.len());
    }
    Ok(())
}
