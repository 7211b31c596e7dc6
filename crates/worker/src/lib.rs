//! kiln-worker binds graph ops to real backends: sources (scratch, build context),
//! file ops (COPY, WORKDIR) on snapshots, and later exec ops in containers.

mod add;
mod cache;
mod cache_export;
pub mod cachemount;
mod copy;
mod exec;
mod fetch_git;
mod fetch_http;
pub mod gc;
mod images;
mod secrets;
mod ssh;

mod unpack;
mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_cache::KilnRoot;
use kiln_context::dockerignore::PatternMatcher;
use kiln_graph::{FileAction, Node, Op, SourceOp};
use kiln_image::Digest;
use kiln_snapshotter::{Compression, Layer, Snapshots};
use kiln_solver::{OpRunner, VertexLog};

pub use cache_export::{CacheMode, CacheTarget, ImportedCache, CACHE_MEDIA_TYPE};
pub use copy::clean_abs;
pub use images::{BaseImage, ImageSource, PullPolicy};
pub use secrets::BuildSecrets;

/// Value is what an op produces.
#[derive(Debug, Clone)]
pub enum Value {
    /// A filesystem as a chain of layers (empty for scratch).
    Fs(Arc<Vec<Layer>>),
    /// A local directory and its ignore rules.
    Local {
        name: String,
        dir: PathBuf,
        ignore: Arc<PatternMatcher>,
    },
    /// A download or git checkout for `ADD`, fetched when first copied from.
    Remote(Arc<add::Remote>),
}

/// WorkerError is a failed op, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("`{path}`: not found in {source_label}")]
    SourceNotFound { path: String, source_label: String },
    #[error("invalid source `{path}`: {reason}")]
    BadSource { path: String, reason: String },
    #[error("unknown user `{user}` (not in the image's /etc/passwd)")]
    UnknownUser { user: String },
    #[error("unknown group `{group}` (not in the image's /etc/group)")]
    UnknownGroup { group: String },
    #[error("no local directory named `{0}` was given to the build")]
    NoLocal(String),
    #[error("invalid .dockerignore pattern: {0}")]
    Ignore(String),
    #[error("image `{0}` is not in the local store (and --pull=never, or no registry access)")]
    NotLocal(String),
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("{what} `{id}` is required by this RUN but was not given to the build (pass it with {flag})")]
    NotGiven {
        what: &'static str,
        id: String,
        flag: String,
    },
    #[error("{what} `{id}`: {reason}")]
    BadSecret {
        what: &'static str,
        id: String,
        reason: String,
    },
    #[error("RUN failed (exit code {code}){}", tail_text(tail))]
    RunFailed { code: i32, tail: Vec<String> },
    #[error(transparent)]
    Exec(#[from] kiln_executor::ExecError),
    #[error("malformed op: {0}")]
    Malformed(String),
    #[error("`{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] kiln_snapshotter::SnapshotError),
    #[error(transparent)]
    Store(#[from] kiln_cache::CacheError),
    #[error(transparent)]
    Registry(#[from] kiln_registry::RegistryError),
    /// A base image's layer is not what the image says it is (diff id, compression).
    #[error("`{reference}`: {source}")]
    BaseLayer {
        reference: String,
        #[source]
        source: Box<kiln_snapshotter::SnapshotError>,
    },
    #[error("cannot download `{url}`: {message}")]
    Download { url: String, message: String },
    #[error("checksum mismatch for `{url}`: the download is `{actual}`, but `--checksum` expects `{expected}`")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("git source `{remote}`: {message}")]
    Git { remote: String, message: String },
    #[error("cannot unpack `{path}`: {reason}")]
    Archive { path: String, reason: String },
}

impl From<kiln_context::select::SelectError> for WorkerError {
    fn from(e: kiln_context::select::SelectError) -> Self {
        use kiln_context::select::SelectError as S;
        match e {
            S::SourceNotFound { path, source_label } => WorkerError::SourceNotFound { path, source_label },
            S::BadSource { path, reason } => WorkerError::BadSource { path, reason },
            S::Io { path, source } => WorkerError::Io { path, source },
        }
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut s = String::from("; last output:");
    for l in tail {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

/// `1.05MB`, as BuildKit's progress prints sizes.
fn human_bytes(n: u64) -> String {
    let f = n as f64;
    match n {
        0..1_000 => format!("{n}B"),
        1_000..1_000_000 => format!("{:.2}kB", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}MB", f / 1e6),
        _ => format!("{:.2}GB", f / 1e9),
    }
}

/// Worker executes ops against a kiln root.
pub struct Worker {
    root: KilnRoot,
    snapshots: Snapshots,
    locals: BTreeMap<String, PathBuf>,
    privileged: bool,
    epoch: i64,
    /// SOURCE_DATE_EPOCH: no file time in a new layer is later than this.
    clamp_mtime: Option<i64>,
    compression: Compression,
    images: Option<Arc<ImageSource>>,
    executor: Option<Arc<dyn kiln_executor::Executor>>,
    network: kiln_executor::Network,
    snapshotter: SnapshotterKind,
    /// Set once the overlay failed under `Auto`: later steps go straight to copy.
    overlay_failed: std::sync::atomic::AtomicBool,
    /// Context checksum memos by canonical context directory.
    memos: std::sync::Mutex<BTreeMap<PathBuf, Arc<kiln_context::memo::ContextMemo>>>,
    /// `--cache-from` directories.
    imported: Vec<cache_export::ImportedCache>,
    /// Blobs of the base images this build used (kept as pulled unless
    /// `force-compression`).
    base_blobs: std::sync::Mutex<std::collections::BTreeSet<Digest>>,
    /// Cache records this build hit or wrote, for `--cache-to`.
    used: std::sync::Mutex<Vec<(Digest, Arc<Vec<Layer>>)>>,
    /// Layer blobs a cache hit of this build found in the store already: each step's
    /// hit checks only the layers its parent's did not (a chain of n cached steps costs
    /// O(n) checks, not O(n²)).
    present_blobs: std::sync::Mutex<std::collections::HashSet<Digest>>,
    /// `--secret` values and `--ssh` agents (never part of a cache key).
    secrets: BuildSecrets,
    /// What keying ADD's downloads and git sources found out, for running them.
    remote: add::RemoteMemo,
    /// `--ulimit`s and the process limit of every RUN step (not part of a cache key).
    limits: kiln_executor::Limits,
    /// What steps left out or changed (special files in a COPY), for the caller to show.
    warnings: std::sync::Mutex<Vec<String>>,
}

/// How RUN steps get a writable root file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterKind {
    /// Overlayfs, falling back to copy when it cannot be mounted.
    Auto,
    /// Overlayfs only.
    Overlay,
    /// A full clone of the parent tree per step, diffed afterwards.
    Copy,
}

impl Worker {
    /// A worker over `root` with the named local directories (e.g. `context`).
    /// `epoch` is the mtime given to directories kiln creates (SOURCE_DATE_EPOCH or 0).
    pub fn new(root: KilnRoot, locals: BTreeMap<String, PathBuf>, epoch: i64) -> Result<Self, WorkerError> {
        Ok(Worker {
            snapshots: Snapshots::new(&root)?,
            root,
            locals,
            privileged: kiln_snapshotter::ids::can_chown(),
            epoch,
            clamp_mtime: None,
            compression: Compression::default(),
            images: None,
            executor: None,
            network: kiln_executor::Network::Private,
            snapshotter: SnapshotterKind::Auto,
            overlay_failed: std::sync::atomic::AtomicBool::new(false),
            memos: std::sync::Mutex::new(BTreeMap::new()),
            imported: Vec::new(),
            base_blobs: Default::default(),
            used: std::sync::Mutex::new(Vec::new()),
            present_blobs: Default::default(),
            secrets: BuildSecrets::default(),
            remote: add::RemoteMemo::default(),
            limits: kiln_executor::Limits::default(),
            warnings: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Makes new layers in `compression` (gzip level 6 by default).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Clamps every file time in the layers this build makes to `epoch`
    /// (SOURCE_DATE_EPOCH), so they do not depend on when the build ran.
    pub fn with_mtime_clamp(mut self, epoch: Option<i64>) -> Self {
        self.clamp_mtime = epoch;
        self
    }

    /// Lets the worker use base images from `source`.
    pub fn with_images(mut self, source: Arc<ImageSource>) -> Self {
        self.images = Some(source);
        self
    }

    /// Lets the worker run RUN steps with `executor`; `network` is what
    /// `RUN --network=default` means (the global `--network` flag).
    pub fn with_executor(
        mut self,
        executor: Arc<dyn kiln_executor::Executor>,
        network: kiln_executor::Network,
    ) -> Self {
        self.executor = Some(executor);
        self.network = network;
        self
    }

    /// Gives RUN steps the build's `--secret`s and `--ssh` agents.
    pub fn with_secrets(mut self, secrets: BuildSecrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Gives every RUN step these resource limits (`--ulimit`, `--pids-limit`).
    pub fn with_limits(mut self, limits: kiln_executor::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Chooses how RUN steps get their root file system.
    pub fn with_snapshotter(mut self, kind: SnapshotterKind) -> Self {
        self.snapshotter = kind;
        self
    }

    /// The layer blobs that came from base images.
    pub fn base_blobs(&self) -> std::collections::BTreeSet<Digest> {
        self.base_blobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The warnings of the steps run and the layers unpacked since the last call, without
    /// repeats: special files a COPY left out or changed, and what unpacking skipped.
    pub fn take_warnings(&self) -> Vec<String> {
        let mut taken = std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()));
        taken.extend(self.snapshots.take_warnings());
        let mut seen = std::collections::HashSet::new();
        taken.retain(|w| seen.insert(w.clone()));
        taken
    }

    /// The snapshots this worker uses.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    fn source(&self, op: &SourceOp, log: &VertexLog<'_>) -> Result<Value, WorkerError> {
        match op {
            SourceOp::Scratch => Ok(Value::Fs(Arc::new(Vec::new()))),
            SourceOp::Local { name, exclude, .. } => {
                let dir = self
                    .locals
                    .get(name)
                    .ok_or_else(|| WorkerError::NoLocal(name.clone()))?;
                let ignore = PatternMatcher::new(exclude).map_err(|e| WorkerError::Ignore(e.to_string()))?;
                Ok(Value::Local {
                    name: name.clone(),
                    dir: dir.clone(),
                    ignore: Arc::new(ignore),
                })
            }
            SourceOp::Image { reference, platform } => self.pull(reference, platform, log),
            SourceOp::Http { .. } | SourceOp::Git { .. } => Ok(self.remote_value(op)),
        }
    }

    /// Pulls a base image (or finds it locally) and returns its layer chain.
    fn pull(
        &self,
        reference: &str,
        platform: &kiln_image::Platform,
        log: &VertexLog<'_>,
    ) -> Result<Value, WorkerError> {
        let Some(images) = &self.images else {
            return Err(WorkerError::NotLocal(reference.to_string()));
        };
        // BuildKit's transfer lines: `sha256:… 1.05MB / 2.81MB`.
        let (_, layers) = images.pull_progress(reference, platform, &mut |d, n, size| {
            log.line(format!("{} {} / {}", d.digest, human_bytes(n), human_bytes(size)))
        })?;
        self.base_blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(layers.iter().map(|l| l.blob.digest.clone()));
        Ok(Value::Fs(Arc::new(layers)))
    }

    /// Where the previous result of the file step `digest` is recorded, if the step can
    /// share files with it (see [`copy::reuse`]): every action a plain COPY from a build
    /// context, in a build that sets owners on disk. The key is the step's definition
    /// and its contexts' directories, not their contents: that is what changes between
    /// the runs that share.
    fn copy_history(&self, digest: &Digest, op: &kiln_graph::FileOp, inputs: &[Value]) -> Option<copy::reuse::History> {
        use std::os::unix::ffi::OsStrExt;
        if !self.privileged || op.actions.is_empty() {
            return None;
        }
        let mut key = format!("kiln incremental copy v1\n{digest}\n").into_bytes();
        for action in &op.actions {
            let FileAction::Copy(c) = action else { return None };
            let Some(Value::Local { dir, .. }) = inputs.get(c.input as usize) else {
                return None;
            };
            if c.unpack {
                return None;
            }
            let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            key.extend_from_slice(canon.as_os_str().as_bytes());
            key.push(0);
        }
        let bucket = self.root.bucket(kiln_cache::Bucket::Copies);
        Some(copy::reuse::History::new(&bucket, Digest::of(&key).hex()))
    }

    fn file(
        &self,
        digest: &Digest,
        op: &kiln_graph::FileOp,
        inputs: &[Value],
        log: &VertexLog<'_>,
    ) -> Result<Value, WorkerError> {
        let parent: Vec<Layer> = match op.base {
            None => Vec::new(),
            Some(i) => match inputs.get(i as usize) {
                Some(Value::Fs(l)) => l.as_ref().clone(),
                _ => {
                    return Err(WorkerError::Malformed(format!(
                        "file op base input {i} is not a filesystem"
                    )))
                }
            },
        };
        let mut snap = self.snapshots.prepare(&parent)?;
        let history = self.copy_history(digest, op, inputs);
        let mut writer = copy::FileWriter::new(&mut snap, self.privileged, self.epoch);
        if let Some(previous) = history.as_ref().and_then(|h| h.load(&self.snapshots)) {
            writer.share_with(previous);
        }
        // Stage sources are unpacked trees; keep them alive for the whole op.
        let mut stage_trees: BTreeMap<u32, Option<PathBuf>> = BTreeMap::new();
        let mut empty: Option<tempfile::TempDir> = None;
        for action in &op.actions {
            match action {
                FileAction::Copy(c) => {
                    let input = inputs
                        .get(c.input as usize)
                        .ok_or_else(|| WorkerError::Malformed(format!("copy input {} missing", c.input)))?;
                    match input {
                        Value::Local { name, dir, ignore } => {
                            let label = if name == "context" {
                                "the build context".to_string()
                            } else {
                                format!("build context `{name}`")
                            };
                            let memo = self.memo(dir);
                            let src = copy::SourceTree {
                                root: dir,
                                ignore: Some(ignore),
                                label,
                                keep_owner: false,
                                memo: Some(&memo),
                            };
                            writer.copy(c, &src)?;
                        }
                        Value::Fs(layers) => {
                            let tree = match stage_trees.entry(c.input) {
                                std::collections::btree_map::Entry::Occupied(e) => e.get().clone(),
                                std::collections::btree_map::Entry::Vacant(e) => {
                                    e.insert(self.snapshots.merged(layers)?).clone()
                                }
                            };
                            // An empty stage (scratch) is an empty tree.
                            let tree = match tree {
                                Some(t) => t,
                                None => empty
                                    .get_or_insert(tempfile_empty_dir(&self.root)?)
                                    .path()
                                    .to_path_buf(),
                            };
                            let src = copy::SourceTree {
                                root: &tree,
                                ignore: None,
                                label: "the `--from` source".to_string(),
                                keep_owner: true,
                                memo: None,
                            };
                            writer.copy(c, &src)?;
                        }
                        Value::Remote(r) => {
                            let (_guard, tree) = self.remote_tree(r)?;
                            let src = copy::SourceTree {
                                root: &tree,
                                ignore: None,
                                label: r.label(),
                                keep_owner: false,
                                memo: None,
                            };
                            writer.copy(c, &src)?;
                        }
                    }
                }
                FileAction::Mkdir { path, mode, chown } => writer.mkdir(path, *mode, chown)?,
                FileAction::Mkfile {
                    path,
                    mode,
                    data,
                    chown,
                } => writer.mkfile(path, *mode, data.as_bytes(), chown)?,
            }
        }
        let (warnings, written) = writer.finish()?;
        for w in warnings {
            log.line(format!("WARN: {w}"));
            self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(w);
        }
        if written.shared > 0 {
            log.line(format!("{} files shared with the previous result", written.shared));
        }
        let layer = snap.commit(&self.root.content(), self.clamp_mtime, self.compression)?;
        if let Some(h) = history {
            let chain = Snapshots::chain_name(&parent, &layer);
            match self.snapshots.layer_dir(&chain) {
                Some(_) => h.save(&self.root.tmp_dir(), chain, written.files),
                None => h.forget(),
            }
        }
        let mut layers = parent;
        layers.push(layer);
        Ok(Value::Fs(Arc::new(layers)))
    }
}

fn tempfile_empty_dir(root: &KilnRoot) -> Result<tempfile::TempDir, WorkerError> {
    tempfile::Builder::new()
        .prefix("empty-")
        .tempdir_in(root.tmp_dir())
        .map_err(|source| WorkerError::Io {
            path: root.tmp_dir(),
            source,
        })
}

impl OpRunner for Worker {
    type Output = Value;
    type Error = WorkerError;

    fn run(
        &self,
        _digest: &Digest,
        node: &Node,
        inputs: Vec<Value>,
        log: &VertexLog<'_>,
    ) -> Result<Value, WorkerError> {
        match &node.op {
            Op::Source(s) => self.source(s, log),
            Op::File(f) => self.file(_digest, f, &inputs, log),
            Op::Exec(e) => self.exec(e, &inputs, log),
        }
    }

    fn content_key(&self, node: &Node, inputs: &[Value]) -> Result<Option<Digest>, WorkerError> {
        // An image counts by what its reference resolves to now (`COPY --from=image`
        // names it by tag; FROM lines arrive pinned, which resolves locally).
        if let Op::Source(s @ (SourceOp::Http { .. } | SourceOp::Git { .. })) = &node.op {
            return self.remote_content_key(s);
        }
        if let (Op::Source(SourceOp::Image { reference, platform }), Some(images)) = (&node.op, &self.images) {
            let img = images.resolve(reference, platform)?;
            return Ok(Some(Digest::of(img.shown.as_bytes())));
        }
        let key = self.copy_content_key(node, inputs)?;
        // Clamped layers differ from unclamped ones: the clamp is part of every key.
        Ok(match (self.clamp_mtime, &node.op) {
            (Some(e), Op::File(_) | Op::Exec(_)) => {
                let inner = key.map(|k| k.to_string()).unwrap_or_default();
                Some(Digest::of(format!("{inner} clamp-mtime {e}").as_bytes()))
            }
            _ => key,
        })
    }

    fn load(&self, key: &Digest, node: &Node) -> Option<Value> {
        self.load_cached(key, node)
    }

    fn save(&self, key: &Digest, node: &Node, out: &Value) -> Result<(), WorkerError> {
        self.save_cached(key, node, out)
    }
}
