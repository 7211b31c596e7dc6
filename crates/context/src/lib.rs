//! kiln-context owns the build context's rules: `.dockerignore` with Docker's pattern
//! semantics ([`dockerignore`]), Go `filepath.Match` globs for COPY sources
//! ([`pathmatch`]), which files of a tree a COPY/ADD reads ([`select`]: sources,
//! globs, ignore rules, `--exclude`, `--parents`) and the context checksum memo
//! ([`memo`]). The worker describes the action and the tree (with how a path resolves
//! inside it) and calls these.

pub mod dockerignore;
pub mod memo;
pub mod pathmatch;
pub mod select;
