//! Listing what `snapshots-v1/` holds, typed, for prune, `du` and fsck, so they do not
//! read the directory's naming scheme themselves.

use std::path::PathBuf;

use crate::snapshots::Snapshots;

/// SnapshotEntry is one top-level entry of the snapshots directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotEntry {
    /// A tree named by its chain id's hex; [`Snapshots::record`] has its record.
    Tree { chain: String, path: PathBuf },
    /// A record file (`<chain>.json`); `tree` says whether its tree is beside it (a
    /// record alone is the harmless trace of a create or delete cut short).
    Record { chain: String, path: PathBuf, tree: bool },
    /// Anything else: not made by kiln, or by an older kiln.
    Stray { name: String, path: PathBuf },
}

/// Whether `name` is a chain id's hex (64 hex digits).
fn is_chain_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Snapshots {
    /// Every entry of the snapshots directory, classified (unreadable entries skipped).
    pub fn entries(&self) -> Vec<SnapshotEntry> {
        let Ok(rd) = std::fs::read_dir(self.dir()) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                // A symlink is never a tree, wherever it points.
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                match name.strip_suffix(".json") {
                    Some(chain) if is_chain_hex(chain) && path.is_file() => SnapshotEntry::Record {
                        chain: chain.to_string(),
                        tree: self.dir().join(chain).is_dir(),
                        path,
                    },
                    None if is_chain_hex(&name) && is_dir => SnapshotEntry::Tree { chain: name, path },
                    _ => SnapshotEntry::Stray { name, path },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_classified_by_name_and_type() {
        let d = tempfile::tempdir().unwrap();
        let root = kiln_cache::KilnRoot::open(d.path()).unwrap();
        let snaps = Snapshots::new(&root).unwrap();
        let hex = "a".repeat(64);
        let lone = "b".repeat(64);
        std::fs::create_dir(snaps.dir().join(&hex)).unwrap();
        std::fs::write(snaps.dir().join(format!("{hex}.json")), "{}").unwrap();
        std::fs::write(snaps.dir().join(format!("{lone}.json")), "{}").unwrap();
        std::fs::write(snaps.dir().join(&lone), "").unwrap();
        std::fs::create_dir(snaps.dir().join("junk")).unwrap();
        let linked = "c".repeat(64);
        std::os::unix::fs::symlink(d.path(), snaps.dir().join(&linked)).unwrap();
        let mut got = snaps.entries();
        got.sort_by_key(|e| format!("{e:?}"));
        let dir = snaps.dir().to_path_buf();
        let mut want = vec![
            SnapshotEntry::Tree {
                chain: hex.clone(),
                path: dir.join(&hex),
            },
            SnapshotEntry::Record {
                chain: hex.clone(),
                path: dir.join(format!("{hex}.json")),
                tree: true,
            },
            SnapshotEntry::Record {
                chain: lone.clone(),
                path: dir.join(format!("{lone}.json")),
                tree: false,
            },
            // A file named like a chain is not a tree.
            SnapshotEntry::Stray {
                name: lone.clone(),
                path: dir.join(&lone),
            },
            SnapshotEntry::Stray {
                name: linked.clone(),
                path: dir.join(&linked),
            },
            SnapshotEntry::Stray {
                name: "junk".into(),
                path: dir.join("junk"),
            },
        ];
        want.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, want);
    }
}
