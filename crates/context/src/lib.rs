//! kiln-context owns the build context's rules: `.dockerignore` with Docker's pattern
//! semantics ([`dockerignore`]), Go `filepath.Match` globs for COPY sources
//! ([`pathmatch`]) and the context checksum memo ([`memo`]).
//!
//! Selecting a COPY's sources inside the context root still lives in `kiln-worker`
//! (`copy/select.rs`): it needs the graph's `CopyAction` and the snapshotter's in-root
//! resolution, edges this crate does not have.

pub mod dockerignore;
pub mod memo;
pub mod pathmatch;
