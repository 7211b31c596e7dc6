//! The top-level entries of `$KILN_ROOT`: one enum, so every versioned on-disk format
//! is named in one place and nothing adds a directory the store does not know.

/// Bucket is one top-level directory of `$KILN_ROOT`, named with its format version.
///
/// A format change gets a new variant (and a new directory name) rather than a silent
/// reinterpretation of old files; the old variant stays while something still migrates
/// or removes its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// `content-v1/`: every blob by digest (`blobs/sha256/…`) and partial downloads
    /// (`ingest/`).
    Content,
    /// `store/`: the OCI image layout holding tagged images (blobs hard-linked from
    /// the content store).
    Store,
    /// `layers-v1/`: per diff id, what the layer compressed to and when it was made.
    Layers,
    /// `cache-v1/`: the build cache index, a step's result by cache key.
    Cache,
    /// `snapshots-v1/`: unpacked layer trees by chain id, each with its record.
    Snapshots,
    /// `layerdirs-v1/`: one layer's own directory in overlayfs format (whiteouts as
    /// 0/0 character devices, opaque markers as xattrs) by chain id, each with its
    /// record: stacked as overlay lower directories under later RUN steps.
    LayerDirs,
    /// `diffids-v1/`: per layer blob, the diff id computed from its bytes.
    DiffIds,
    /// `checksums-v1/`: file digests of a build context, by path and stat.
    Checksums,
    /// `copies-v1/`: per COPY step from a build context, what its last result wrote
    /// (each file's path and content digest) and its layer directory: the files an
    /// incremental COPY shares.
    Copies,
    /// `http-v1/`: ETag and digest of `ADD <url>` downloads, for revalidation.
    Http,
    /// `conversions-v1/`: a layer blob recompressed for an export, by source and target.
    Conversions,
    /// `cachemounts-v2/`: `RUN --mount=type=cache` directories, `<id>/<key>`.
    CacheMounts,
    /// `cachemounts-v1/`: the layout before seeds were part of the key; moved into
    /// [`Bucket::CacheMounts`] when next used.
    CacheMountsV1,
    /// `quarantine-v1/`: blobs `fsck --repair` found corrupt.
    Quarantine,
    /// `tmp/`: temp files renamed into place when complete, and trees being deleted.
    Tmp,
}

impl Bucket {
    /// Every bucket, in the order `KilnRoot::open` lays them out.
    pub const ALL: [Bucket; 15] = [
        Bucket::Content,
        Bucket::Store,
        Bucket::Layers,
        Bucket::Cache,
        Bucket::Snapshots,
        Bucket::LayerDirs,
        Bucket::DiffIds,
        Bucket::Checksums,
        Bucket::Copies,
        Bucket::Http,
        Bucket::Conversions,
        Bucket::CacheMounts,
        Bucket::CacheMountsV1,
        Bucket::Quarantine,
        Bucket::Tmp,
    ];

    /// The directory's name under the root.
    pub fn dir_name(self) -> &'static str {
        match self {
            Bucket::Content => "content-v1",
            Bucket::Store => "store",
            Bucket::Layers => "layers-v1",
            Bucket::Cache => "cache-v1",
            Bucket::Snapshots => "snapshots-v1",
            Bucket::LayerDirs => "layerdirs-v1",
            Bucket::DiffIds => "diffids-v1",
            Bucket::Checksums => "checksums-v1",
            Bucket::Copies => "copies-v1",
            Bucket::Http => "http-v1",
            Bucket::Conversions => "conversions-v1",
            Bucket::CacheMounts => "cachemounts-v2",
            Bucket::CacheMountsV1 => "cachemounts-v1",
            Bucket::Quarantine => "quarantine-v1",
            Bucket::Tmp => "tmp",
        }
    }

    /// The bucket named `name`, if it is one.
    pub fn from_dir_name(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.dir_name() == name)
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// The lock files at the top of the root: `lock` (builds shared, GC exclusive) and
/// `store.lock` (writers of the image store's index).
pub(crate) const ROOT_LOCK: &str = "lock";
pub(crate) const STORE_LOCK: &str = "store.lock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = Bucket::ALL.iter().map(|b| b.dir_name()).collect();
        for b in Bucket::ALL {
            assert_eq!(Bucket::from_dir_name(b.dir_name()), Some(b));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Bucket::ALL.len(), "two buckets share a directory");
        assert!(!names.contains(&ROOT_LOCK) && !names.contains(&STORE_LOCK));
        assert_eq!(Bucket::from_dir_name("cache-v9"), None);
    }
}
