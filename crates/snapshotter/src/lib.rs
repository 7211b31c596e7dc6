//! kiln-snapshotter turns layers into directories and directories into layers:
//! deterministic tar writing, the safe layer applier, and unpacked snapshots of layer
//! chains that build steps write on.

#![allow(
    clippy::disallowed_methods,
    reason = "every io error of the snapshotter becomes `SnapshotError::Io { path }` or names the path in its message; crate-wide while the snapshotter is reorganised (Snapshotter trait)"
)]

pub mod apply;
pub mod backend;
mod check;
mod clone;
pub mod compression;
pub mod cursor;
pub mod diff;
mod entries;
mod error;
pub mod extract;
pub mod ids;
mod inroot;
pub mod layer;
mod snapshots;
pub mod stack;
pub mod tarw;
mod verify;

pub use apply::{apply_tar, resolve_in_root, set_mtime, set_mtime_ns, ApplyOptions, ApplyReport};
pub use backend::{CommitOptions, CopySnapshotter, OverlaySnapshotter, Prepared, RootMount, Snapshotter};
pub use check::{check_snapshot, deep_check};
pub use clone::tree_stats;
pub use compression::pgzip;
pub use compression::ChunkMemo;
pub use entries::SnapshotEntry;
pub use error::{DiffIdMismatch, SnapshotError};
pub use extract::{ExtractPolicy, TarEntry};
pub use inroot::{open_in_root, RootDir};
pub use layer::{
    convert_layer, open_layer_tar, write_layer, write_layer_from, write_layer_with_memo, Compression, Layer,
};
pub use snapshots::{chain_id, chain_ids, ActiveSnapshot, SnapshotRecord, Snapshots};
pub use tarw::{append_dir_tree, write_dir_tar, OwnerOverrides, TarOptions, TarWriter};
pub use verify::{apply_layer_verified, verify_layer, DiffIdWriter};
