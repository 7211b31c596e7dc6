//! kiln-cache owns what kiln keeps on disk under `$KILN_ROOT`: the content store of
//! blobs, the OCI-layout image store with its tags, layer records, and the locks that
//! let builds share the root.
//!
//! Layout of `$KILN_ROOT` (each format versioned in its path):
//! - `content-v1/blobs/sha256/…`: every blob a build produced or pulled (the cache side);
//! - `content-v1/ingest/<hex>`: partial downloads, resumed by the next pull of the blob;
//! - `store/`: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) holding
//!   tagged images; its blobs are hard links into the content store, so a failed build
//!   never touches it;
//! - `layers-v1/<diffid>.json`: what a layer compressed to and when it was first made;
//! - `cache-v1/<key>.json`: the build cache, a step's result by cache key;
//! - `checksums-v1/<context>.json`: file digests of a build context, by path and stat;
//! - `tmp/`: temp files, renamed into place when complete.

mod bucket;
mod error;
mod images;
mod ingest;
mod layers;
mod lock;
mod records;
mod root;
mod store;

pub use bucket::Bucket;
pub use error::CacheError;
pub use images::{ImageStore, StoredImage};
pub use ingest::Partial;
pub use layers::{LayerRecord, LayerRecords};
pub use lock::{LockKind, RootLock};
pub use records::{CacheRecord, CacheRecords, Layer};
pub use root::{remove_via_tmp, KilnRoot};
pub use store::{BlobWriter, ContentStore};
