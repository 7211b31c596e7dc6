//! [`build`]: plan → solve → export → push → cache export.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_cache::{KilnRoot, RootLock};
use kiln_image::{Platform, Reference};
use kiln_solver::Solver;
use kiln_worker::{Value, Worker};

use crate::error::{bail, Ctx};
use crate::export;
use crate::inputs::{read_inputs, Inputs};
use crate::outputs::Output;
use crate::{
    BuildError, BuildEvent, BuildProgress, BuildRequest, BuildResult, CacheFrom, CheckReport, Control, Mode,
    NamedContext, NetworkMode, Snippet,
};

type Result<T> = std::result::Result<T, BuildError>;

/// The solver's events as build events.
struct Steps<'a>(&'a dyn BuildProgress);

impl kiln_solver::Progress for Steps<'_> {
    fn event(&self, e: kiln_solver::Event) {
        self.0.event(BuildEvent::Step(e));
    }
}

/// A step the build runs itself (loading the Dockerfile, exporting): started, its
/// lines, done.
fn internal(progress: &dyn BuildProgress, vertex: u32, name: &str, lines: &[String], elapsed: Duration) {
    let step = |e| progress.event(BuildEvent::Step(e));
    step(kiln_solver::Event::Started {
        vertex,
        name: name.to_string(),
    });
    for l in lines {
        step(kiln_solver::Event::Status {
            vertex,
            line: l.clone(),
        });
    }
    step(kiln_solver::Event::Done { vertex, elapsed });
}

fn warn(progress: &dyn BuildProgress, w: impl Into<String>) {
    progress.event(BuildEvent::Warning(w.into()));
}

/// Parses one `--build-context NAME=VALUE`: `NAME=DIR`, `NAME=docker-image://REF` or
/// `NAME=oci-layout://DIR[:TAG|@DIGEST]`; the name comes back in lower case.
pub fn parse_build_context(spec: &str) -> Result<(String, NamedContext)> {
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| BuildError::Message(format!("invalid --build-context `{spec}`: expected NAME=VALUE")))?;
    let name = name.trim().to_lowercase();
    if name.is_empty() {
        bail!("invalid --build-context `{spec}`: the name is empty");
    }
    let context = if let Some(r) = value.strip_prefix("docker-image://") {
        let r = Reference::parse(r).ctx(|| format!("invalid --build-context `{spec}`"))?;
        NamedContext::Image(r.to_string())
    } else if let Some(layout) = value.strip_prefix("oci-layout://") {
        let dir_part = layout.split(['@', ':']).next().unwrap_or(layout);
        let dir = std::fs::canonicalize(dir_part)
            .ctx(|| format!("invalid --build-context `{spec}`: no OCI layout at `{dir_part}`"))?;
        NamedContext::Image(format!("oci-layout://{}{}", dir.display(), &layout[dir_part.len()..]))
    } else if value.contains("://") {
        bail!("invalid --build-context `{spec}`: only a directory, docker-image:// and oci-layout:// are supported");
    } else {
        let dir = std::fs::canonicalize(value)
            .ok()
            .filter(|d| d.is_dir())
            .ok_or_else(|| {
                BuildError::Message(format!(
                    "invalid --build-context `{spec}`: `{value}` is not a directory"
                ))
            })?;
        NamedContext::Dir(dir)
    };
    Ok((name, context))
}

/// The outputs the build writes: the request's, `push` applied, the local store when
/// none is given.
fn outputs(req: &BuildRequest) -> Result<Vec<Output>> {
    let mut outputs = req.outputs.clone();
    if req.push {
        let mut pushed = false;
        for o in outputs.iter_mut() {
            if let Output::Image { push, .. } = o {
                *push = true;
                pushed = true;
            }
        }
        if !pushed {
            outputs.push(Output::Image {
                names: req.tags.clone(),
                push: true,
                layers: Default::default(),
            });
        }
    }
    if outputs.is_empty() {
        outputs.push(Output::Image {
            names: req.tags.clone(),
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
    Ok(outputs)
}

/// The compression new layers are made in: what every image output asks for, so
/// nothing has to be converted at export; gzip when they differ or say nothing.
fn new_layer_compression(outputs: &[Output]) -> kiln_snapshotter::Compression {
    let asked: Vec<Option<kiln_snapshotter::Compression>> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Image { layers, .. }
            | Output::Oci { layers, .. }
            | Output::Docker { layers, .. }
            | Output::Load { layers, .. } => Some(layers.compression),
            _ => None,
        })
        .collect();
    match asked.first() {
        Some(Some(c)) if asked.iter().all(|a| *a == Some(*c)) => *c,
        _ => kiln_snapshotter::Compression::default(),
    }
}

/// Runs one build: reads the Dockerfile, lowers it, solves it, writes the outputs,
/// exports the cache. Progress and warnings go to `progress`; `control` may cancel.
pub fn build(req: &BuildRequest, progress: &dyn BuildProgress, control: &dyn Control) -> Result<BuildResult> {
    let outputs = outputs(req)?;
    let host = Platform::host();
    let inputs = read_inputs(req.context.as_deref(), &req.dockerfile)?;
    let registry = req.registry.clone();
    let root = KilnRoot::open(&req.root).ctx(|| format!("cannot open kiln root `{}`", req.root.display()))?;
    let _lock = RootLock::shared_after_sweep(&root.lock_path(), &root.tmp_dir()).map_err(BuildError::other)?;
    let images = std::sync::Arc::new(kiln_worker::ImageSource::new(
        root.clone(),
        Some(registry.clone()),
        req.pull,
    ));
    let t0 = Instant::now();
    let resolver = std::sync::Arc::new(crate::resolver::BaseResolver::new(images.clone()));
    let mut named_locals = BTreeMap::new();
    let mut named_contexts = BTreeMap::new();
    for (name, context) in &req.build_contexts {
        let context = match context {
            NamedContext::Image(r) => kiln_frontend::NamedContext::Image(r.clone()),
            NamedContext::Dir(dir) => {
                let local = format!("context:{name}");
                named_locals.insert(local.clone(), dir.clone());
                kiln_frontend::NamedContext::Local(local)
            }
        };
        named_contexts.insert(name.clone(), context);
    }
    let opts = kiln_frontend::BuildOptions {
        named_contexts,
        allow: req.entitlements.iter().copied().collect(),
        dockerfile_name: inputs.dockerfile_name.clone(),
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        platform: req.platform.clone(),
        build_platform: host,
        labels: req.labels.clone(),
        ignore_patterns: inputs.ignore.clone(),
        resolver: Some(resolver.clone()),
        max_graph_size: kiln_frontend::convert::MAX_GRAPH_SIZE,
        extra_hosts: req.extra_hosts.clone(),
    };
    if req.mode == Mode::Check {
        let report = kiln_frontend::check(&inputs.dockerfile, &opts);
        return Ok(BuildResult::Checked(CheckReport {
            error: report.error.map(|e| frontend_error(&inputs, e)),
            warnings: report.warnings,
            dockerfile_name: inputs.dockerfile_name,
            dockerfile: inputs.dockerfile,
        }));
    }
    let plan = kiln_frontend::build_plan(&inputs.dockerfile, &opts).map_err(|e| {
        // `check=error=true`: the warnings the error is about come first.
        if let kiln_frontend::ErrorKind::Lint { warnings, .. } = e.kind() {
            for w in warnings {
                warn(progress, w.to_string());
            }
        }
        frontend_error(&inputs, e)
    })?;
    let steps = Steps(progress);
    let solver = Solver::new(&steps, 1)
        .jobs(req.jobs.unwrap_or_else(kiln_solver::default_jobs))
        .no_cache(req.no_cache)
        .no_cache_stages(req.no_cache_filter.iter().map(|s| s.to_ascii_lowercase()).collect());
    internal(
        progress,
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
        let shown = Reference::parse(&reference).map_or(reference.clone(), |r| r.to_string());
        internal(
            progress,
            solver.allocate_vertex(),
            &format!("[internal] load metadata for {shown}"),
            &[],
            took,
        );
    }
    for w in &plan.warnings {
        warn(progress, w.to_string());
    }
    for f in &req.no_cache_filter {
        let lower = f.to_ascii_lowercase();
        if !plan
            .definition
            .nodes
            .values()
            .any(|n| n.meta.stage.as_deref() == Some(lower.as_str()))
        {
            warn(
                progress,
                format!("--no-cache-filter {f}: no stage of this build is named `{f}`"),
            );
        }
    }

    let mut locals = BTreeMap::new();
    // With no context, COPY sees an empty one, as with `docker build -`.
    let empty_context = tempfile::Builder::new()
        .prefix("empty-context-")
        .tempdir_in(root.tmp_dir())
        .ctx(|| "cannot create an empty build context".to_string())?;
    let context_dir = inputs
        .context
        .clone()
        .unwrap_or_else(|| empty_context.path().to_path_buf());
    locals.insert("context".to_string(), context_dir);
    locals.extend(named_locals);
    // Resolved (probed, for `auto`) once per build; a RUN step gets the error if none works.
    let has_run = plan
        .definition
        .nodes
        .values()
        .any(|n| matches!(n.op, kiln_graph::Op::Exec(_)));
    let isolation = match req.runtime {
        Some(_) => None,
        None if has_run => Some(kiln_executor::isolation::resolve(req.isolation)),
        None => None,
    };
    let chroot = matches!(&isolation, Some(Ok(c)) if c.level == kiln_executor::Isolation::Chroot);
    if chroot && req.snapshotter == kiln_worker::SnapshotterKind::Overlay {
        return Err(BuildError::Message(
            "--isolation chroot needs --snapshotter copy (a step's root cannot be an overlay mount)".into(),
        ));
    }
    let executor: std::sync::Arc<dyn kiln_executor::Executor> = match (&req.runtime, isolation) {
        (Some(name), _) => {
            std::sync::Arc::new(kiln_executor::OciRuntime::new(name).map_err(|e| BuildError::Message(e.to_string()))?)
        }
        (None, level) => {
            let level = level.unwrap_or(Ok(kiln_executor::isolation::Choice::default()));
            if let Ok(kiln_executor::isolation::Choice { note: Some(n), .. }) = &level {
                progress.event(BuildEvent::Note(n.strip_prefix("NOTE: ").unwrap_or(n).to_string()));
            }
            std::sync::Arc::new(kiln_executor::Sandbox::default().with_isolation(level.map(|c| c.level)))
        }
    };
    let snapshotter = if chroot {
        kiln_worker::SnapshotterKind::Copy
    } else {
        req.snapshotter
    };
    let network = match req.network {
        NetworkMode::None => kiln_executor::Network::None,
        NetworkMode::Default => kiln_executor::Network::Private,
        NetworkMode::Host => kiln_executor::Network::Host,
    };
    let worker = Worker::new(root.clone(), locals, req.epoch.unwrap_or(0))
        .map_err(BuildError::other)?
        .with_mtime_clamp(req.epoch)
        .with_compression(new_layer_compression(&outputs))
        .with_images(images)
        .with_executor(executor, network)
        .with_secrets(req.secrets.clone())
        .with_limits(req.limits.clone())
        .with_snapshotter(snapshotter);
    // As BuildKit: RUN steps that --no-cache(-filter) re-runs start with empty cache mounts.
    let stages: Vec<String> = req.no_cache_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    kiln_worker::cachemount::prune_for_rerun(&root, &plan.definition, req.no_cache, &stages)
        .map_err(BuildError::other)?;
    let mut imported = Vec::new();
    for spec in &req.cache_from {
        let opened = match spec {
            CacheFrom::Dir(dir) => kiln_worker::ImportedCache::open(dir),
            CacheFrom::Registry(r) => kiln_worker::ImportedCache::from_registry(registry.clone(), r.clone()),
        };
        match opened {
            Ok(c) => imported.push(c),
            // As buildx: a cache that cannot be read is a warning, not a failed build.
            Err(e) => warn(progress, format!("--cache-from {spec}: {e}")),
        }
    }
    let worker = worker.with_cache_from(imported);
    // A cancel (Ctrl-C) stops the build like a failing step does: running steps are
    // killed, nothing half-written is kept, and the error says so.
    control.solving();
    let finished = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                if control.canceled() {
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
        warn(progress, w);
    }
    let (checked, hashed) = worker.context_stats();
    if checked > 0 {
        internal(
            progress,
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
    let built =
        kiln_exporter::assemble(&root, &plan.image, &layers, req.epoch, &req.annotations).map_err(BuildError::other)?;
    let mut lines = vec![
        "exporting layers done".to_string(),
        format!("writing image {} done", built.id()),
    ];
    // Files first, the local store last: a failed export leaves the store unchanged.
    let (store_outs, file_outs): (Vec<&Output>, Vec<&Output>) =
        outputs.iter().partition(|o| matches!(o, Output::Image { .. }));
    // The image the metadata describes: the first image output's, as written.
    let mut written = None;
    for out in file_outs.into_iter().chain(store_outs) {
        let (l, image) = export::export(progress, &root, &worker, &registry, &built, out)?;
        lines.extend(l);
        if written.is_none() {
            written = image;
        }
    }
    let written = written.unwrap_or_else(|| built.clone());
    let name = match outputs.as_slice() {
        [Output::Image { .. }] => "exporting to image",
        [Output::Oci { .. }] => "exporting to oci image format",
        [Output::Docker { .. } | Output::Load { .. }] => "exporting to docker image format",
        [Output::Local { .. }] => "exporting to client directory",
        [Output::Tar { .. }] => "exporting to client tarball",
        _ => "exporting outputs",
    };
    internal(
        progress,
        solver.allocate_vertex(),
        name,
        &lines,
        export_started.elapsed(),
    );
    for c in &req.cache_to {
        let t = Instant::now();
        let (what, name) = match &c.target {
            kiln_worker::CacheTarget::Dir(d) => (d.display().to_string(), "exporting cache to client directory"),
            kiln_worker::CacheTarget::Registry(r) => (r.to_string(), "exporting cache to registry"),
        };
        match worker
            .export_cache(&c.target, Some(&registry), c.mode, &layers)
            .ctx(|| format!("cannot export the cache to `{what}`"))
        {
            Ok(n) => internal(
                progress,
                solver.allocate_vertex(),
                name,
                &[format!("writing {n} cache records done")],
                t.elapsed(),
            ),
            // As buildx: `ignore-error=true` makes a failed cache export a warning.
            Err(e) if c.ignore_error => warn(progress, crate::chain_text(&e)),
            Err(e) => return Err(e),
        }
    }
    let metadata = export::metadata(&written, &outputs);
    Ok(BuildResult::Built(Box::new(crate::Built {
        image: built,
        written,
        metadata,
    })))
}

fn frontend_error(inputs: &Inputs, e: kiln_frontend::FrontendError) -> BuildError {
    let message = e.to_string();
    match e.line() {
        Some(line) => BuildError::Dockerfile(Box::new(Snippet::new(
            &inputs.dockerfile_name,
            &inputs.dockerfile,
            line,
            message,
        ))),
        None => BuildError::Message(message),
    }
}

fn solve_error(inputs: &Inputs, e: kiln_solver::SolveError<kiln_worker::WorkerError>) -> BuildError {
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
                    let mut s = Snippet::new(
                        &inputs.dockerfile_name,
                        &inputs.dockerfile,
                        span.start_line as usize,
                        message,
                    );
                    s.source = Some(Box::new(source));
                    BuildError::Dockerfile(Box::new(s))
                }
                None => BuildError::Context {
                    what: description,
                    source: Box::new(source),
                },
            }
        }
        other => BuildError::Solve(Box::new(other)),
    }
}
