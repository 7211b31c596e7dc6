//! kiln-build: the build as a library. A [`BuildRequest`] (typed: the CLI parses its
//! flags into it) goes through plan → solve → export → push → cache export in
//! [`build`], which reports progress and warnings as [`BuildEvent`]s and returns a
//! [`BuildResult`]. Nothing here writes to stderr: the caller's renderer owns it.

pub mod attest;
mod cachespec;
mod check;
mod error;
mod export;
pub mod flags;
mod inputs;
mod load;
pub mod maintenance;
mod multi;
mod outputs;
mod pipeline;
mod push;
mod resolver;
mod secrets;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use attest::AttestRequest;
pub use cachespec::{parse_cache_from, parse_cache_to, CacheFrom, CacheTo};
pub use check::{render_check, CheckReport};
pub use error::{chain_text, BuildError, Snippet};
pub use export::{metadata, write_dest};
pub use kiln_exporter::{BuiltImage, PlatformImage};
pub use outputs::{parse as parse_output, Dest, LayerOpts, Output};
pub use pipeline::{build, parse_build_context};
pub use push::{push_image, push_stored, Pushed};
pub use secrets::resolve_secrets;

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dockerfile {
    /// `Dockerfile` in the context, read inside it.
    Default,
    /// A file named by the caller (`-f PATH`).
    Path(PathBuf),
    /// Standard input (`-f -`, or `-` as the context).
    Stdin,
    /// Text the caller has already.
    Text { name: String, text: String },
}

/// A named build context (`--build-context NAME=VALUE`), as [`parse_build_context`]
/// resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A directory (canonical path).
    Dir(PathBuf),
    /// An image: a reference, or `oci-layout://DIR[:TAG|@DIGEST]` with a canonical DIR.
    Image(String),
}

/// The network of RUN steps that do not set `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A private network with outbound access through slirp4netns.
    #[default]
    Default,
    /// The host's network.
    Host,
    /// Only loopback.
    None,
}

/// How the build's result is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Build and export.
    #[default]
    Build,
    /// Run the build checks only (`--check`): nothing is built.
    Check,
}

/// BuildRequest is everything one build needs, typed.
pub struct BuildRequest {
    /// Where kiln keeps images and cache.
    pub root: PathBuf,
    /// The context directory; None: no context (COPY sees an empty one).
    pub context: Option<PathBuf>,
    pub dockerfile: Dockerfile,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The target platforms (`--platform`), normalised and without repeats; empty:
    /// the host's. With more than one, the image is an index of one per platform.
    pub platforms: Vec<kiln_image::Platform>,
    /// Image names (`-t`).
    pub tags: Vec<kiln_image::Reference>,
    /// The exports, in order; empty: the local store under `tags`.
    pub outputs: Vec<Output>,
    /// `--push`: every image output pushes (one is added if there is none).
    pub push: bool,
    pub cache_to: Vec<CacheTo>,
    pub cache_from: Vec<CacheFrom>,
    /// `--annotation`s of the image manifest.
    pub annotations: BTreeMap<String, String>,
    /// `--annotation index:…`: of the image index (an error where none is written).
    pub index_annotations: BTreeMap<String, String>,
    /// `--add-host`: names every RUN step's `/etc/hosts` gets.
    pub extra_hosts: Vec<kiln_graph::ExtraHost>,
    /// Named build contexts, name (lower case) → what it is.
    pub build_contexts: BTreeMap<String, NamedContext>,
    pub secrets: kiln_worker::BuildSecrets,
    pub network: NetworkMode,
    pub entitlements: Vec<kiln_graph::Entitlement>,
    pub limits: kiln_executor::Limits,
    /// An OCI runtime (`runc`, `crun` or a path) instead of the built-in sandbox.
    pub runtime: Option<String>,
    pub snapshotter: kiln_worker::SnapshotterKind,
    /// How RUN steps are isolated (`--isolation`); None: `auto`, the strongest level this
    /// environment allows, probed once per build that has a RUN step.
    pub isolation: Option<kiln_executor::Isolation>,
    pub pull: kiln_worker::PullPolicy,
    /// Steps run at once; None: the solver's default.
    pub jobs: Option<usize>,
    pub no_cache: bool,
    /// Stages (lower case names) that do not use the cache.
    pub no_cache_filter: Vec<String>,
    /// SOURCE_DATE_EPOCH: new layers' times clamped to it, history times set to it.
    pub epoch: Option<i64>,
    /// The registry client for base images, pushes and registry caches.
    pub registry: Arc<kiln_registry::Client>,
    pub mode: Mode,
    /// `--provenance`, `--sbom`, `--attest`.
    pub attest: attest::AttestRequest,
}

/// BuildEvent is one thing the build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A step's progress (BuildKit's `#N` vertices), the build's own steps included.
    Step(kiln_solver::Event),
    /// Something the build did not do as asked, but went on (`WARN:`).
    Warning(String),
    /// How the build runs, where it is not the default (`NOTE:`): e.g. the isolation
    /// level `auto` chose when namespaces could not be made.
    Note(String),
    /// A blob of a pushed image: `digest: Pushed`, as `docker push` prints it.
    Push {
        reference: kiln_image::Reference,
        line: String,
    },
}

/// BuildProgress receives a build's events; renderers implement it.
pub trait BuildProgress: Sync {
    fn event(&self, e: BuildEvent);
}

/// Control is how the caller cancels a running build (Ctrl-C).
pub trait Control: Sync {
    /// The solve is about to start: from now on a cancel is honoured.
    fn solving(&self) {}
    /// Whether the caller asked to cancel; polled while steps run.
    fn canceled(&self) -> bool {
        false
    }
}

/// A [`Control`] that never cancels.
pub struct NoControl;

impl Control for NoControl {}

/// The [`Control`] of a command-line build: Ctrl-C (or SIGTERM) cancels it once the
/// solve runs, a second one kills (`kiln_executor::interrupt`).
pub struct Interrupt;

impl Control for Interrupt {
    fn solving(&self) {
        kiln_executor::interrupt::install();
    }

    fn canceled(&self) -> bool {
        kiln_executor::interrupt::requested()
    }
}

/// Built is the image a build made.
pub struct Built {
    /// The image as assembled (its id is the config digest).
    pub image: BuiltImage,
    /// The image as the first image output wrote it (its compression), which the
    /// metadata describes.
    pub written: BuiltImage,
    /// `--metadata-file`'s JSON, with the keys buildx writes.
    pub metadata: serde_json::Value,
    /// A multi-platform build: the image index the first image output wrote (its
    /// digest is the build's image id, as buildx's `--iidfile` has it), and every
    /// platform's image.
    pub index: Option<kiln_image::Descriptor>,
    pub platforms: Vec<kiln_exporter::PlatformImage>,
}

impl Built {
    /// What `--iidfile` and `-q` name: the image config's digest, or for a
    /// multi-platform image its index's digest.
    pub fn id(&self) -> &kiln_image::Digest {
        match &self.index {
            Some(i) => &i.digest,
            None => self.image.id(),
        }
    }
}

/// BuildResult is what [`build`] did: built an image, or (`Mode::Check`) checked.
pub enum BuildResult {
    Built(Box<Built>),
    Checked(CheckReport),
}

impl BuildRequest {
    /// A request with `docker build`'s defaults: `Dockerfile` of `context`, the local
    /// store as the output, the host platform, no registry options.
    pub fn new(root: PathBuf, context: Option<PathBuf>) -> Self {
        BuildRequest {
            root,
            context,
            dockerfile: Dockerfile::Default,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            target: None,
            platforms: Vec::new(),
            tags: Vec::new(),
            outputs: Vec::new(),
            push: false,
            cache_to: Vec::new(),
            cache_from: Vec::new(),
            extra_hosts: Vec::new(),
            annotations: BTreeMap::new(),
            index_annotations: BTreeMap::new(),
            build_contexts: BTreeMap::new(),
            secrets: kiln_worker::BuildSecrets::default(),
            network: NetworkMode::Default,
            entitlements: Vec::new(),
            limits: kiln_executor::Limits::default(),
            runtime: None,
            snapshotter: kiln_worker::SnapshotterKind::Auto,
            isolation: None,
            pull: kiln_worker::PullPolicy::Missing,
            jobs: None,
            no_cache: false,
            no_cache_filter: Vec::new(),
            epoch: None,
            registry: Arc::new(kiln_registry::Client::new(Vec::new())),
            mode: Mode::Build,
            attest: attest::AttestRequest::default(),
        }
    }
}
