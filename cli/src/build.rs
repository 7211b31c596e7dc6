//! `kiln build`: read the Dockerfile and context, lower, solve, export.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_cache::{KilnRoot, RootLock};
use kiln_exporter::BuiltImage;
use kiln_image::{Platform, Reference};
use kiln_solver::Solver;
use kiln_worker::{Value, Worker};

use crate::cachespec::{parse_cache_from, parse_cache_to, CacheFrom};
use crate::export::{self, write_dest};
use crate::outputs::{self, Dest, Output};
use crate::progress::{Mode, Renderer};

/// Arguments of `kiln build`, named as `docker build` names them.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Build context directory, or `-` to read a Dockerfile from stdin with no context.
    #[arg(value_name = "PATH")]
    context: String,
    /// Name of the Dockerfile (default: PATH/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<String>,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Secret for `RUN --mount=type=secret`: `id=ID[,src=PATH][,env=VAR][,type=file|env]`
    /// (only an id: the variable ID if set, else the file ID); repeatable.
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,
    /// SSH agent for `RUN --mount=type=ssh`: `default|ID[=SOCKET]` (no socket:
    /// $SSH_AUTH_SOCK); repeatable.
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    ssh: Vec<String>,
    /// Build this stage and what it needs, not the last one.
    #[arg(long)]
    target: Option<String>,
    /// Set a label on the image (`KEY=VALUE`); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Output destination: `type=image|oci|docker|local|tar[,dest=…][,name=…]`,
    /// a directory for a local export, or `-` for a rootfs tar on stdout. Repeatable.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Name an extra build context: `NAME=DIR`, `NAME=docker-image://REF` or
    /// `NAME=oci-layout://DIR[:TAG|@DIGEST]`; `FROM NAME` and `--from=NAME` use it
    /// (before stages and images of that name). Repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Write the image id (config digest) to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write the build result's metadata (image digest, descriptor, names) as JSON to
    /// this file, as buildx does.
    #[arg(long = "metadata-file", value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Push the image to the registries its names (`-t`) point at; shorthand for
    /// `--output type=registry`.
    #[arg(long)]
    push: bool,
    /// Progress output: auto, plain, tty, rawjson or quiet.
    #[arg(long, value_enum, default_value = "auto")]
    progress: Mode,
    /// Print only the image id on success.
    #[arg(short, long)]
    quiet: bool,
    /// Target platform (only the host platform can be built so far).
    #[arg(long)]
    platform: Option<String>,
    /// Reach this registry host over plain HTTP (loopback hosts always are); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Trust the CA certificates in this PEM file for registry TLS (instead of the
    /// built-in roots).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// When to ask the registry for base images: `missing` (default: use the local
    /// store when it has the image), `always`, `never`. `--pull` alone means always.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "missing", num_args = 0..=1, require_equals = true, default_missing_value = "always")]
    pull: PullArg,
    /// Network of RUN steps that do not set `RUN --network`: `default` (a private
    /// network with outbound access through slirp4netns; the host's loopback and abstract
    /// sockets out of reach), `host` (the host's network), or `none` (only loopback).
    #[arg(long, value_enum, value_name = "MODE", default_value = "default")]
    network: NetworkArg,
    /// Grant an entitlement a Dockerfile cannot take by itself: `network.host` (for
    /// `RUN --network=host`) or `security.insecure` (for `RUN --security=insecure`);
    /// repeatable or comma-separated, as buildx.
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',', value_parser = parse_entitlement)]
    allow: Vec<kiln_graph::Entitlement>,
    /// Export the build cache: `type=local,dest=DIR[,mode=min|max]` (min: the steps in
    /// the final image; max: every step of every stage).
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Option<String>,
    /// Use an exported build cache: `type=local,src=DIR` (repeatable).
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Run at most N steps at once (default: twice the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Do not use the build cache: run every step (results are still recorded).
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Do not use the cache for these stages (names; repeatable or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Run RUN steps with an OCI runtime (`runc`, `crun` or a path) instead of kiln's
    /// built-in sandbox, as Buildah does. Root only.
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<String>,
    /// How RUN steps get a writable root: `auto` (overlayfs, else copy), `overlay`, or
    /// `copy` (a clone of the parent tree per step, diffed afterwards; slower, works on
    /// any file system).
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        env = "KILN_SNAPSHOTTER",
        default_value = "auto"
    )]
    snapshotter: SnapshotterArg,
    /// Resource limit of every RUN step, as `docker build --ulimit`: `NAME=SOFT[:HARD]`
    /// (`nofile`, `nproc`, `core`, `memlock`, `stack`, `cpu`, `fsize`, …; -1 is
    /// unlimited; one value sets both); repeatable.
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = parse_ulimit)]
    ulimit: Vec<kiln_executor::Ulimit>,
    /// Most processes (threads included) one RUN step may have at once: a pids cgroup
    /// per step where kiln can make one (root), else RLIMIT_NPROC; -1 for no limit.
    #[arg(long = "pids-limit", value_name = "N", default_value_t = kiln_executor::limits::DEFAULT_PIDS_LIMIT as i64, allow_negative_numbers = true, value_parser = parse_pids_limit)]
    pids_limit: i64,
    /// Run the build checks only, as `docker build --check`: print each warning with
    /// its rule, documentation URL and Dockerfile line, build nothing; exit 1 when
    /// there is a warning (or an error).
    #[arg(long)]
    check: bool,
}

/// Parses one `--ulimit` value.
fn parse_ulimit(s: &str) -> Result<kiln_executor::Ulimit, kiln_executor::UlimitError> {
    kiln_executor::Ulimit::parse(s)
}

/// Parses `--pids-limit`: a positive number, or -1 (as docker, 0 too) for no limit.
fn parse_pids_limit(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a process count (a whole number, or -1 for no limit)"
        )),
    }
}

/// Parses one `--allow` value.
fn parse_entitlement(s: &str) -> Result<kiln_graph::Entitlement, String> {
    kiln_graph::Entitlement::parse(s).ok_or_else(|| {
        let names: Vec<&str> = kiln_graph::Entitlement::ALL.iter().map(|e| e.name()).collect();
        format!("unknown entitlement `{s}` (expected one of: {})", names.join(", "))
    })
}

/// `--snapshotter` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotterArg {
    Auto,
    Overlay,
    Copy,
}

/// `--network` values, as `docker buildx build` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    Default,
    Host,
    None,
}

/// `--pull` values, as buildah and podman take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullArg {
    Missing,
    Always,
    Never,
}

impl From<PullArg> for kiln_worker::PullPolicy {
    fn from(p: PullArg) -> Self {
        match p {
            PullArg::Missing => kiln_worker::PullPolicy::Missing,
            PullArg::Always => kiln_worker::PullPolicy::Always,
            PullArg::Never => kiln_worker::PullPolicy::Never,
        }
    }
}

/// Snippet is a Dockerfile error shown with the offending line, as BuildKit does.
#[derive(Debug)]
pub struct Snippet {
    pub file: String,
    pub line: usize,
    pub lines: Vec<(usize, String)>,
    pub message: String,
    /// What caused it (an op's error), so that the whole chain is printed, e.g. the
    /// `No space left on device` below `cannot write `PATH``.
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Snippet {
    /// The excerpt printed above the error message.
    pub fn render(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let mut s = format!("{}:{}\n--------------------\n", self.file, self.line);
        for (n, text) in &self.lines {
            let mark = if *n == self.line { ">>>" } else { "   " };
            s.push_str(&format!("{n:>4} | {mark} {text}\n"));
        }
        s.push_str("--------------------\n");
        s
    }
}

impl std::fmt::Display for Snippet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Snippet {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

fn snippet(file: &str, text: &str, line: usize, message: String) -> Snippet {
    let all: Vec<&str> = text.lines().collect();
    let lines = if line >= 1 && line <= all.len() {
        let lo = line.saturating_sub(2).max(1);
        let hi = (line + 1).min(all.len());
        (lo..=hi).map(|n| (n, all[n - 1].to_string())).collect()
    } else {
        Vec::new()
    };
    Snippet {
        file: file.to_string(),
        line,
        lines,
        message,
        source: None,
    }
}

struct Inputs {
    dockerfile_name: String,
    dockerfile: String,
    context: Option<PathBuf>,
    ignore: Vec<String>,
}

fn read_inputs(a: &BuildArgs) -> Result<Inputs> {
    let context = if a.context == "-" {
        None
    } else {
        let p = PathBuf::from(&a.context);
        let md = std::fs::metadata(&p).with_context(|| format!("build context `{}` does not exist", p.display()))?;
        if !md.is_dir() {
            bail!("build context `{}` is not a directory", p.display());
        }
        Some(p)
    };
    let stdin_file = a.file.as_deref() == Some("-") || (a.context == "-" && a.file.is_none());
    if a.context == "-" && a.file.as_deref().is_some_and(|f| f != "-") {
        bail!(
            "with `-` as the context the Dockerfile is read from stdin; `-f {}` cannot be used",
            a.file.as_deref().unwrap_or_default()
        );
    }
    // Read at most one byte past the limit, so a huge file is refused, not loaded.
    let limit = kiln_frontend::syntax::MAX_DOCKERFILE_SIZE;
    let too_large = |what: &str| anyhow::anyhow!("{what} is larger than the limit of {limit} bytes (16 MiB)");
    let (dockerfile_name, dockerfile, df_path) = if stdin_file {
        let mut s = String::new();
        std::io::stdin()
            .take(limit as u64 + 1)
            .read_to_string(&mut s)
            .context("cannot read the Dockerfile from stdin")?;
        if s.len() > limit {
            return Err(too_large("the Dockerfile on stdin"));
        }
        ("Dockerfile".to_string(), s, None)
    } else {
        let path = match &a.file {
            Some(f) => PathBuf::from(f),
            None => context.as_ref().expect("context given").join("Dockerfile"),
        };
        // The default Dockerfile is a file of the (untrusted) context: read inside it.
        let bytes = match (&a.file, &context) {
            (None, Some(c)) => read_in_root(c, Path::new("Dockerfile"), limit),
            _ => std::fs::File::open(&path).and_then(|f| read_capped(f, limit)),
        }
        .with_context(|| format!("cannot read Dockerfile `{}`", path.display()))?;
        if bytes.len() > limit {
            return Err(too_large(&format!("Dockerfile `{}`", path.display())));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("Dockerfile `{}` is not valid UTF-8", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into());
        (name, text, Some(path))
    };
    // `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's.
    let mut ignore_text = None;
    if let Some(p) = &df_path {
        let specific = PathBuf::from(format!("{}.dockerignore", p.display()));
        if let (Some(dir), Some(name)) = (specific.parent(), specific.file_name()) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            ignore_text = read_ignore(dir, Path::new(name))?;
        }
    }
    if ignore_text.is_none() {
        if let Some(c) = &context {
            ignore_text = read_ignore(c, Path::new(".dockerignore"))?;
        }
    }
    let ignore = ignore_text
        .map(|t| kiln_frontend::dockerignore::parse_ignore_file(&t))
        .unwrap_or_default();
    Ok(Inputs {
        dockerfile_name,
        dockerfile,
        context,
        ignore,
    })
}

/// Reads the file `rel` names below `dir` without leaving `dir`: a symlink resolves
/// inside it (a context's link to a host file reads as missing), a FIFO is refused.
fn read_in_root(dir: &Path, rel: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    read_capped(kiln_snapshotter::RootDir::open(dir)?.open_file_following(rel)?, limit)
}

/// Reads at most one byte past `limit` (the caller refuses a longer result), so a huge
/// file is never loaded whole.
fn read_capped(f: impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The ignore file `rel` below `dir`, if it is there (resolved inside `dir`).
fn read_ignore(dir: &Path, rel: &Path) -> Result<Option<String>> {
    let shown = dir.join(rel);
    let limit = kiln_frontend::syntax::MAX_DOCKERFILE_SIZE;
    match read_in_root(dir, rel, limit) {
        Ok(bytes) if bytes.len() > limit => Err(anyhow::anyhow!(
            "`{}` is larger than the limit of {limit} bytes (16 MiB)",
            shown.display()
        )),
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("`{}` is not valid UTF-8", shown.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", shown.display())),
    }
}

fn kv(list: &[String], flag: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for item in list {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                // Docker takes a bare `--build-arg KEY` from the environment, if set.
                if let Ok(v) = std::env::var(item) {
                    m.insert(item.clone(), v);
                }
            }
            _ => bail!("invalid {flag} `{item}`: expected KEY=VALUE"),
        }
    }
    Ok(m)
}

/// The compression new layers are made in: what every image output asks for, so
/// nothing has to be converted at export; gzip when they differ or say nothing.
fn new_layer_compression(outputs: &[Output]) -> kiln_snapshotter::Compression {
    let asked: Vec<Option<kiln_snapshotter::Compression>> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Image { layers, .. } | Output::Oci { layers, .. } | Output::Docker { layers, .. } => {
                Some(layers.compression)
            }
            _ => None,
        })
        .collect();
    match asked.first() {
        Some(Some(c)) if asked.iter().all(|a| *a == Some(*c)) => *c,
        _ => kiln_snapshotter::Compression::default(),
    }
}

/// Runs `kiln build`.
pub fn run(root_path: &Path, a: BuildArgs) -> Result<()> {
    let started = Instant::now();
    let mode = if a.quiet { Mode::Quiet } else { a.progress };
    let progress = Renderer::new(mode);
    let tags = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("invalid tag `{t}`")))
        .collect::<Result<Vec<_>>>()?;
    let mut outputs = a
        .outputs
        .iter()
        .map(|o| outputs::parse(o, &tags))
        .collect::<Result<Vec<_>>>()?;
    if a.push {
        let mut pushed = false;
        for o in outputs.iter_mut() {
            if let Output::Image { push, .. } = o {
                *push = true;
                pushed = true;
            }
        }
        if !pushed {
            outputs.push(Output::Image {
                names: tags.clone(),
                push: true,
                layers: Default::default(),
            });
        }
    }
    if outputs.is_empty() {
        outputs.push(Output::Image {
            names: tags.clone(),
            push: false,
            layers: Default::default(),
        });
    }
    for o in &outputs {
        if let Output::Image { names, push: true, .. } = o {
            if names.is_empty() {
                bail!("pushing needs an image name: add -t HOST/REPO[:TAG] (or name= to the output)");
            }
        }
    }
    let build_args = kv(&a.build_args, "--build-arg", true)?;
    let labels = kv(&a.labels, "--label", false)?;
    let build_secrets = crate::secrets::resolve(&a.secrets, &a.ssh)?;
    let host = Platform::host();
    let platform = match &a.platform {
        None => host.clone(),
        Some(p) => {
            let parsed =
                Platform::parse(p).with_context(|| format!("invalid --platform `{p}`: expected os/arch[/variant]"))?;
            if parsed.os != host.os || parsed.architecture != host.architecture {
                bail!("--platform `{p}` is not supported yet: kiln builds for the host platform `{host}` only");
            }
            parsed
        }
    };
    let epoch = match build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(
            s.parse::<i64>()
                .with_context(|| format!("invalid SOURCE_DATE_EPOCH `{s}`: expected seconds since 1970"))?,
        ),
        None => None,
    };
    let inputs = read_inputs(&a)?;
    let registry = std::sync::Arc::new(crate::images::registry_client(
        a.insecure_registries.clone(),
        a.tls_ca.as_deref(),
    )?);
    let root = KilnRoot::open(root_path).with_context(|| format!("cannot open kiln root `{}`", root_path.display()))?;
    let _lock = RootLock::shared_after_sweep(&root.lock_path(), &root.tmp_dir())?;
    let images = std::sync::Arc::new(kiln_worker::ImageSource::new(
        root.clone(),
        Some(registry.clone()),
        a.pull.into(),
    ));
    let cache_to = a.cache_to.as_deref().map(parse_cache_to).transpose()?;
    let cache_from = a
        .cache_from
        .iter()
        .map(|s| parse_cache_from(s))
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let resolver = std::sync::Arc::new(kiln_worker::BaseResolver::new(images.clone()));
    let mut named_locals = BTreeMap::new();
    let mut named_contexts = BTreeMap::new();
    for spec in &a.build_contexts {
        let (name, value) = spec
            .split_once('=')
            .with_context(|| format!("invalid --build-context `{spec}`: expected NAME=VALUE"))?;
        let name = name.trim().to_lowercase();
        if name.is_empty() {
            bail!("invalid --build-context `{spec}`: the name is empty");
        }
        let context = if let Some(r) = value.strip_prefix("docker-image://") {
            let r = Reference::parse(r).with_context(|| format!("invalid --build-context `{spec}`"))?;
            kiln_frontend::NamedContext::Image(r.to_string())
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            let dir_part = layout.split(['@', ':']).next().unwrap_or(layout);
            let dir = std::fs::canonicalize(dir_part)
                .with_context(|| format!("invalid --build-context `{spec}`: no OCI layout at `{dir_part}`"))?;
            kiln_frontend::NamedContext::Image(format!("oci-layout://{}{}", dir.display(), &layout[dir_part.len()..]))
        } else if value.contains("://") {
            bail!(
                "invalid --build-context `{spec}`: only a directory, docker-image:// and oci-layout:// are supported"
            );
        } else {
            let dir = std::fs::canonicalize(value)
                .ok()
                .filter(|d| d.is_dir())
                .with_context(|| format!("invalid --build-context `{spec}`: `{value}` is not a directory"))?;
            let local = format!("context:{name}");
            named_locals.insert(local.clone(), dir);
            kiln_frontend::NamedContext::Local(local)
        };
        named_contexts.insert(name, context);
    }
    let opts = kiln_frontend::BuildOptions {
        named_contexts,
        allow: a.allow.iter().copied().collect(),
        dockerfile_name: inputs.dockerfile_name.clone(),
        build_args,
        target: a.target.clone(),
        platform: platform.clone(),
        build_platform: host,
        labels,
        ignore_patterns: inputs.ignore.clone(),
        resolver: Some(resolver.clone()),
        max_graph_size: kiln_frontend::convert::MAX_GRAPH_SIZE,
    };
    if a.check {
        return crate::check::run(&inputs.dockerfile_name, &inputs.dockerfile, &opts, |e| {
            frontend_error(&inputs, e)
        });
    }
    let plan = kiln_frontend::build_plan(&inputs.dockerfile, &opts).map_err(|e| {
        // `check=error=true`: the warnings the error is about come first.
        if let kiln_frontend::ErrorKind::Lint { warnings, .. } = e.kind() {
            for w in warnings {
                eprintln!("WARN: {w}");
            }
        }
        frontend_error(&inputs, e)
    })?;
    let solver = Solver::new(&progress, 1)
        .jobs(a.jobs.map_or_else(kiln_solver::default_jobs, |n| n as usize))
        .no_cache(a.no_cache)
        .no_cache_stages(a.no_cache_filter.iter().map(|s| s.to_ascii_lowercase()).collect());
    progress.internal(
        solver.allocate_vertex(),
        &format!("[internal] load build definition from {}", inputs.dockerfile_name),
        &[format!("transferring dockerfile: {}B done", inputs.dockerfile.len())],
        t0.elapsed(),
    );
    let resolved = std::mem::take(&mut *resolver.resolved.lock().unwrap_or_else(|e| e.into_inner()));
    let mut shown_once = std::collections::BTreeSet::new();
    for (reference, took) in resolved {
        if !shown_once.insert(reference.clone()) {
            continue;
        }
        let shown = kiln_image::Reference::parse(&reference).map_or(reference.clone(), |r| r.to_string());
        progress.internal(
            solver.allocate_vertex(),
            &format!("[internal] load metadata for {shown}"),
            &[],
            took,
        );
    }
    for w in &plan.warnings {
        eprintln!("WARN: {w}");
    }
    for f in &a.no_cache_filter {
        let lower = f.to_ascii_lowercase();
        if !plan
            .definition
            .nodes
            .values()
            .any(|n| n.meta.stage.as_deref() == Some(lower.as_str()))
        {
            eprintln!("WARN: --no-cache-filter {f}: no stage of this build is named `{f}`");
        }
    }

    let mut locals = BTreeMap::new();
    // With `-` there is no context: COPY sees an empty one, as with `docker build -`.
    let empty_context = tempfile::Builder::new()
        .prefix("empty-context-")
        .tempdir_in(root.tmp_dir())
        .context("cannot create an empty build context")?;
    let context_dir = inputs
        .context
        .clone()
        .unwrap_or_else(|| empty_context.path().to_path_buf());
    locals.insert("context".to_string(), context_dir);
    locals.extend(named_locals);
    let executor: std::sync::Arc<dyn kiln_executor::Executor> = match &a.runtime {
        None => std::sync::Arc::new(kiln_executor::Sandbox::default()),
        Some(name) => std::sync::Arc::new(kiln_executor::OciRuntime::new(name).map_err(anyhow::Error::msg)?),
    };
    let network = match a.network {
        NetworkArg::None => kiln_executor::Network::None,
        NetworkArg::Default => kiln_executor::Network::Private,
        NetworkArg::Host => kiln_executor::Network::Host,
    };
    let worker = Worker::new(root.clone(), locals, epoch.unwrap_or(0))?
        .with_mtime_clamp(epoch)
        .with_compression(new_layer_compression(&outputs))
        .with_images(images)
        .with_executor(executor, network)
        .with_secrets(build_secrets)
        .with_limits(kiln_executor::Limits {
            ulimits: a.ulimit.clone(),
            pids: u64::try_from(a.pids_limit).ok().filter(|n| *n > 0),
        })
        .with_snapshotter(match a.snapshotter {
            SnapshotterArg::Auto => kiln_worker::SnapshotterKind::Auto,
            SnapshotterArg::Overlay => kiln_worker::SnapshotterKind::Overlay,
            SnapshotterArg::Copy => kiln_worker::SnapshotterKind::Copy,
        });
    // As BuildKit: RUN steps that --no-cache(-filter) re-runs start with empty cache mounts.
    let stages: Vec<String> = a.no_cache_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    kiln_worker::cachemount::prune_for_rerun(&root, &plan.definition, a.no_cache, &stages)?;
    let mut imported = Vec::new();
    for spec in &cache_from {
        let opened = match spec {
            CacheFrom::Dir(dir) => kiln_worker::ImportedCache::open(dir),
            CacheFrom::Registry(r) => kiln_worker::ImportedCache::from_registry(registry.clone(), r.clone()),
        };
        match opened {
            Ok(c) => imported.push(c),
            // As buildx: a cache that cannot be read is a warning, not a failed build.
            Err(e) => eprintln!("WARN: --cache-from {spec}: {e}"),
        }
    }
    let worker = worker.with_cache_from(imported);
    // Ctrl-C (or SIGTERM) cancels the build like a failing step does: running steps are
    // killed, nothing half-written is kept, and the error says so. A second one kills.
    crate::interrupt::install();
    let finished = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                if crate::interrupt::requested() {
                    solver.cancel_handle().cancel();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = solver.solve(&plan.definition, &worker);
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    worker.finish();
    // What unpacking base layers skipped (device nodes when rootless, unmapped owners),
    // and special files a COPY left out or changed.
    for w in worker.take_warnings() {
        eprintln!("WARN: {w}");
    }
    let (checked, hashed) = worker.context_stats();
    if checked > 0 {
        progress.internal(
            solver.allocate_vertex(),
            "[internal] load build context",
            &[format!("{checked} files checked, {hashed} read")],
            Duration::ZERO,
        );
    }
    let result = result.map_err(|e| solve_error(&inputs, e))?;
    let Value::Fs(layers) = result else {
        bail!("the build result is not a filesystem")
    };

    let export_started = Instant::now();
    let built = kiln_exporter::assemble(&root, &plan.image, &layers, epoch)?;
    let mut lines = vec![
        format!("exporting layers done"),
        format!("writing image {} done", built.id()),
    ];
    // Files first, the local store last: a failed export leaves the store unchanged.
    let (store_outs, file_outs): (Vec<&Output>, Vec<&Output>) =
        outputs.iter().partition(|o| matches!(o, Output::Image { .. }));
    // The image the metadata describes: the first image output's, as written.
    let mut written: Option<BuiltImage> = None;
    for out in file_outs.into_iter().chain(store_outs) {
        let (l, image) = export::export(&root, &worker, &registry, &built, out)?;
        lines.extend(l);
        if written.is_none() {
            written = image;
        }
    }
    let written = written.unwrap_or_else(|| built.clone());
    let name = match outputs.as_slice() {
        [Output::Image { .. }] => "exporting to image".to_string(),
        [Output::Oci { .. }] => "exporting to oci image format".to_string(),
        [Output::Docker { .. }] => "exporting to docker image format".to_string(),
        [Output::Local { .. }] => "exporting to client directory".to_string(),
        [Output::Tar { .. }] => "exporting to client tarball".to_string(),
        _ => "exporting outputs".to_string(),
    };
    progress.internal(solver.allocate_vertex(), &name, &lines, export_started.elapsed());
    if let Some(c) = &cache_to {
        let t = Instant::now();
        let (what, name) = match &c.target {
            kiln_worker::CacheTarget::Dir(d) => (d.display().to_string(), "exporting cache to client directory"),
            kiln_worker::CacheTarget::Registry(r) => (r.to_string(), "exporting cache to registry"),
        };
        match worker
            .export_cache(&c.target, Some(&registry), c.mode, &layers)
            .with_context(|| format!("cannot export the cache to `{what}`"))
        {
            Ok(n) => progress.internal(
                solver.allocate_vertex(),
                name,
                &[format!("writing {n} cache records done")],
                t.elapsed(),
            ),
            // As buildx: `ignore-error=true` makes a failed cache export a warning.
            Err(e) if c.ignore_error => eprintln!("WARN: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    if let Some(path) = &a.iidfile {
        std::fs::write(path, built.id().to_string())
            .with_context(|| format!("cannot write --iidfile `{}`", path.display()))?;
    }
    if let Some(path) = &a.metadata_file {
        write_dest(&Dest::Path(path.clone()), "--metadata-file", |w| {
            serde_json::to_writer_pretty(&mut *w, &export::metadata(&written, &outputs))?;
            Ok(())
        })?;
    }
    if a.quiet {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", built.id());
        }
    }
    let _ = started;
    Ok(())
}

fn frontend_error(inputs: &Inputs, e: kiln_frontend::FrontendError) -> anyhow::Error {
    let message = e.to_string();
    match e.line() {
        Some(line) => anyhow::Error::new(snippet(&inputs.dockerfile_name, &inputs.dockerfile, line, message)),
        None => anyhow::anyhow!(message),
    }
}

fn solve_error(inputs: &Inputs, e: kiln_solver::SolveError<kiln_worker::WorkerError>) -> anyhow::Error {
    match e {
        kiln_solver::SolveError::Op {
            description,
            node,
            source,
        } => {
            // The op's error stays the source, so the renderer prints its whole chain
            // (an IO error's errno included), not only its first line.
            match &node.meta.span {
                Some(span) => {
                    let message = format!("{}:{}: {description}", span.file, span.start_line);
                    let mut s = snippet(
                        &inputs.dockerfile_name,
                        &inputs.dockerfile,
                        span.start_line as usize,
                        message,
                    );
                    s.source = Some(Box::new(source));
                    anyhow::Error::new(s)
                }
                None => anyhow::Error::new(source).context(description),
            }
        }
        other => anyhow::Error::new(other),
    }
}
