//! kiln-context owns the build context's rules: `.dockerignore` with Docker's pattern
//! semantics ([`dockerignore`]) and Go `filepath.Match` globs for COPY sources
//! ([`pathmatch`]).
//!
//! Selecting a COPY's sources inside the context root and the context checksum memo
//! still live in `kiln-worker` (`copy/select.rs`, `cache.rs`): they need the graph's
//! `CopyAction`, the snapshotter's in-root resolution and the store's buckets.

pub mod dockerignore;
pub mod pathmatch;
