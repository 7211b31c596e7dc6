//! kiln-sbom makes an SPDX 2.3 software bill of materials of a root file system, natively
//! and offline.
//!
//! [`scan`] reads the package databases a base image or a build leaves behind — dpkg's
//! status, apk's installed DB, rpm's `rpmdb.sqlite`, Python `*.dist-info`/`*.egg-info`, npm `package.json` and
//! `package-lock.json`, Go binaries' build info, Rust binaries' `cargo auditable` data —
//! and returns an [`SpdxDocument`] shaped as BuildKit's default scanner (syft) writes
//! it. The tree is untrusted: every file is opened inside the root (a symlink never
//! leads out of it), every read is capped, and the number of packages is bounded.

mod binary;
mod dpkg;
mod elf;
mod license;
mod npm;
mod os;
mod python;
mod rpm;
mod spdx;
mod sqlite;
mod tree;

use std::io;
use std::path::{Path, PathBuf};

use kiln_image::{Digest, Platform};

pub use spdx::{Relationship, SpdxDocument, SpdxPackage};

/// SbomError is why a bill of materials could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The root directory could not be opened.
    #[error("cannot open the root file system `{path}`: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// More packages than [`Limits::max_packages`] were found.
    #[error("more than {limit} packages found in `{path}` (the limit)")]
    TooManyPackages { path: PathBuf, limit: usize },
    /// The tree has more entries than [`Limits::max_entries`].
    #[error("more than {limit} files and directories in `{path}` (the limit)")]
    TooManyEntries { path: PathBuf, limit: usize },
    /// The creation timestamp is outside what RFC 3339 can spell.
    #[error("creation timestamp `{0}` is out of range")]
    Timestamp(i64),
}

/// Limits bound what a scan of a hostile tree costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes read from one package database or metadata file; a longer file
    /// is read up to this size (its packages past it are not listed).
    pub max_file_bytes: u64,
    /// The most packages one document lists; more is an error.
    pub max_packages: usize,
    /// The most directory entries walked looking for metadata and binaries; a bigger
    /// tree is an error rather than a bill of materials that silently lacks packages.
    pub max_entries: usize,
    /// Binaries larger than this are not inspected for Go or Rust build data.
    pub max_binary_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 << 20,
            max_packages: 100_000,
            max_entries: 2_000_000,
            max_binary_bytes: 1 << 30,
        }
    }
}

/// BaseImage is an image the scanned tree was built from, listed by name and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The reference as written, e.g. `docker.io/library/debian:bookworm`.
    pub name: String,
    /// The digest of the manifest (or index) that was pulled.
    pub digest: Digest,
    /// The platform that was used, if one was selected.
    pub platform: Option<Platform>,
}

/// ScanOptions says what the document is named, when it was made and what it came from.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// The document's and root element's name (an image reference or a directory).
    pub name: String,
    /// `creationInfo.created` in seconds since the epoch (`SOURCE_DATE_EPOCH`); `None`
    /// takes the current time.
    pub created: Option<i64>,
    /// The base images, listed as packages the root descends from.
    pub base_images: Vec<BaseImage>,
    /// Caps on what is read.
    pub limits: Limits,
}

/// Kind is the ecosystem a package was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Deb,
    Apk,
    Rpm,
    Python,
    Npm,
    Go,
    Rust,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Deb => "deb",
            Kind::Apk => "apk",
            Kind::Rpm => "rpm",
            Kind::Python => "python",
            Kind::Npm => "npm",
            Kind::Go => "go-module",
            Kind::Rust => "rust-crate",
        }
    }
}

/// Package is one component found in the tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    /// The declared licence as written by the package (`None`: not declared).
    pub license: Option<String>,
    pub purl: String,
    /// Where it was found, absolute inside the root (`/var/lib/dpkg/status`).
    pub path: String,
    /// What read it, for `sourceInfo` (`DPKG DB`, `python package metadata`, …).
    pub source: &'static str,
}

/// Scans the root file system at `root` and returns its SPDX 2.3 document.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<SpdxDocument, SbomError> {
    let packages = scan_packages(root, &opts.limits)?;
    spdx::document(opts, packages)
}

/// Scans the root file system at `root` and returns its packages, sorted.
pub fn scan_packages(root: &Path, limits: &Limits) -> Result<Vec<Package>, SbomError> {
    let tree = tree::Tree::open(root, *limits).map_err(|source| SbomError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let release = os::Release::read(&tree);
    let mut out = Packages::new(root, limits.max_packages);
    dpkg::scan(&tree, &release, &mut out)?;
    os::scan_apk(&tree, &release, &mut out)?;
    rpm::scan(&tree, &release, &mut out)?;
    let walked = tree.walk()?;
    python::scan(&tree, &walked, &mut out)?;
    npm::scan(&tree, &walked, &mut out)?;
    binary::scan(&tree, &walked, &mut out)?;
    let mut list = out.list;
    list.sort();
    list.dedup();
    Ok(list)
}

/// Packages collects what the scanners find, refusing more than the limit.
pub(crate) struct Packages {
    root: PathBuf,
    limit: usize,
    list: Vec<Package>,
    purls: std::collections::HashSet<String>,
}

impl Packages {
    fn new(root: &Path, limit: usize) -> Self {
        Packages {
            root: root.to_path_buf(),
            limit,
            list: Vec::new(),
            purls: std::collections::HashSet::new(),
        }
    }

    pub(crate) fn push(&mut self, p: Package) -> Result<(), SbomError> {
        if self.list.len() >= self.limit {
            return Err(SbomError::TooManyPackages {
                path: self.root.clone(),
                limit: self.limit,
            });
        }
        self.purls.insert(p.purl.clone());
        self.list.push(p);
        Ok(())
    }

    pub(crate) fn has_purl(&self, purl: &str) -> bool {
        self.purls.contains(purl)
    }
}

/// Percent-encodes `s` for a purl component, keeping what the purl spec leaves bare
/// (`:` too, as syft writes a Debian epoch: `@1:2.38.1-5`).
pub(crate) fn purl_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'+' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod scan_tests;
