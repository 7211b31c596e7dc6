//! kiln-cache owns what kiln keeps on disk under `$KILN_ROOT`: the content store of
//! blobs, the OCI-layout image store with its tags, layer records, the build cache
//! index and its exchange format (`--cache-to/--cache-from`), and the locks that let
//! builds share the root.
//!
//! Every top-level directory of the root is a [`Bucket`] (each format versioned in its
//! name; `docs/dev/architecture.md` has the table), reached through
//! [`KilnRoot::bucket`] or the store type that owns it.

mod bucket;
mod error;
mod exchange;
mod images;
mod ingest;
mod layers;
mod lock;
mod records;
mod root;
mod store;
mod writebehind;

pub use bucket::Bucket;
pub use error::CacheError;
pub use exchange::{CacheMode, ExportedCache, ExportedRecord, CACHE_MEDIA_TYPE};
pub use images::{is_index, ImageStore, StoredImage};
pub use ingest::Partial;
pub use layers::{LayerRecord, LayerRecords};
pub use lock::{LockKind, RootLock};
pub use records::{CacheRecord, CacheRecords, Layer};
pub use root::{remove_via_tmp, KilnRoot};
pub use store::{BlobWriter, ContentStore};
pub use writebehind::WriteBehind;
