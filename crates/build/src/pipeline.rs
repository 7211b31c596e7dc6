//! [`build`]: plan → solve → export → push → cache export.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error is wrapped with the path in its message (`ctx`, `BuildError::Message`)"
)]

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
    let wall_started = unix_now();
    let host = Platform::host();
    let platforms = match req.platforms.is_empty() {
        true => vec![host.clone()],
        false => req.platforms.clone(),
    };
    let multi = platforms.len() > 1;
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
        platform: platforms[0].clone(),
        build_platform: host,
        labels: req.labels.clone(),
        ignore_patterns: inputs.ignore.clone(),
        resolver: Some(resolver.clone()),
        max_graph_size: kiln_frontend::convert::MAX_GRAPH_SIZE,
        extra_hosts: req.extra_hosts.clone(),
        multi_platform: multi,
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
    // One graph per target platform; their ops meet in one definition, where steps
    // that are the same for several platforms (a `$BUILDPLATFORM` stage, the context)
    // have one digest and so run once.
    let mut plans = Vec::with_capacity(platforms.len());
    for p in &platforms {
        let mut opts = opts.clone();
        opts.platform = p.clone();
        let plan = kiln_frontend::build_plan(&inputs.dockerfile, &opts).map_err(|e| {
            // `check=error=true`: the warnings the error is about come first.
            if let kiln_frontend::ErrorKind::Lint { warnings, .. } = e.kind() {
                for w in warnings {
                    warn(progress, w.to_string());
                }
            }
            frontend_error(&inputs, e)
        })?;
        plans.push(plan);
    }
    let (definition, roots) = crate::multi::merge(&plans)?;
    let steps = Steps(progress);
    let interrupted = || control.canceled();
    let solver = Solver::new(&steps, 1)
        .interrupted_by(&interrupted)
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
    let mut warned = std::collections::BTreeSet::new();
    for w in plans.iter().flat_map(|p| &p.warnings) {
        if warned.insert(w.to_string()) {
            warn(progress, w.to_string());
        }
    }
    for f in &req.no_cache_filter {
        let lower = f.to_ascii_lowercase();
        if !definition
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
    let has_run = definition
        .nodes
        .values()
        .any(|n| matches!(n.op, kiln_graph::Op::Exec(_)));
    // A RUN step for a platform this machine cannot run fails here, before any step
    // starts, naming the platform (see kiln_executor::binfmt).
    crate::multi::check_emulation(&definition, &roots)?;
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
    kiln_worker::cachemount::prune_for_rerun(&root, &definition, req.no_cache, &stages).map_err(BuildError::other)?;
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
    // BUILDKIT_SBOM_SCAN_STAGE (or `scan-stage=true`): each platform's marked stages,
    // whose final states are solved as extra roots (the target reaches them already).
    let scanned: Vec<Vec<&kiln_frontend::BuiltStage>> = plans
        .iter()
        .map(|p| match &req.attest.sbom {
            Some(s) => p.stages.iter().filter(|st| st.sbom_scan || s.scan_stage).collect(),
            None => Vec::new(),
        })
        .collect();
    let mut solve_roots = roots.clone();
    solve_roots.extend(scanned.iter().flatten().map(|st| st.fs.clone()));
    // A cancel (Ctrl-C) stops the build like a failing step does: running steps are
    // killed, nothing half-written is kept, and the error says so.
    control.solving();
    // The watcher asks every 20 ms, and is woken at once when the solve is over (the
    // sender is dropped), so a build never waits for its last nap.
    let (finished, done) = std::sync::mpsc::channel::<()>();
    let cancel = solver.cancel_handle();
    let result = std::thread::scope(|s| {
        s.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(Duration::from_millis(20)) {
                if control.canceled() {
                    cancel.cancel();
                    return;
                }
            }
        });
        let r = solver.solve_all(&definition, &solve_roots, &worker);
        drop(finished);
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
    let results = result.map_err(|e| solve_error(&inputs, e))?;
    let mut finals = Vec::with_capacity(results.len());
    for r in results {
        let Value::Fs(layers) = r else {
            bail!("the build result is not a filesystem")
        };
        finals.push(layers);
    }
    let stage_layers = finals.split_off(roots.len());
    // Per platform: (stage name, final op, merged root filesystem).
    let mut stage_roots: Vec<Vec<(String, kiln_image::Digest, Option<std::path::PathBuf>)>> = Vec::new();
    let mut stage_layers = stage_layers.iter();
    for stages in &scanned {
        let mut v = Vec::with_capacity(stages.len());
        for (st, layers) in stages.iter().zip(stage_layers.by_ref()) {
            let tree = worker.snapshots().merged(layers).map_err(BuildError::other)?;
            v.push((st.name.clone(), st.fs.op.clone(), tree));
        }
        stage_roots.push(v);
    }

    let export_started = Instant::now();

    let mut images = Vec::with_capacity(finals.len());
    for ((plan, layers), platform) in plans.iter().zip(&finals).zip(&platforms) {
        let image = kiln_exporter::assemble(&root, &plan.image, layers, req.epoch, &req.annotations)
            .map_err(BuildError::other)?;
        images.push(kiln_exporter::PlatformImage {
            platform: platform.clone(),
            image,
        });
    }
    let built = images[0].image.clone();
    let mut lines = vec!["exporting layers done".to_string()];
    for i in &images {
        lines.push(match multi {
            true => format!("exporting manifest {} for {} done", i.image.manifest.digest, i.platform),
            false => format!("writing image {} done", i.image.id()),
        });
    }
    let attest_started = Instant::now();
    // Per platform: provenance names the platform, the SBOM reads its file system.
    let mut per_platform = Vec::with_capacity(images.len());
    for ((i, plan), stages) in images.iter().zip(&plans).zip(&stage_roots) {
        per_platform.push(attestations(
            req,
            &outputs,
            // That platform's graph: its root is that platform's image.
            &plan.definition,
            &inputs,
            &worker,
            &i.image,
            &i.platform,
            plan.sbom_scan_context,
            stages,
            wall_started,
            progress,
            per_platform.is_empty(),
        )?);
    }
    if per_platform.iter().any(|a| !a.with_default.0.is_empty()) {
        let lines: Vec<String> = per_platform.iter().flat_map(|a| a.lines.iter().cloned()).collect();
        internal(
            progress,
            solver.allocate_vertex(),
            "[internal] making attestations",
            &lines,
            attest_started.elapsed(),
        );
    }
    // Files first, the local store last: a failed export leaves the store unchanged.
    let (store_outs, file_outs): (Vec<&Output>, Vec<&Output>) =
        outputs.iter().partition(|o| matches!(o, Output::Image { .. }));
    // The image the metadata describes: the first image output's, as written.
    let mut written = None;
    let mut written_index = None;
    let mut index = None;
    for out in file_outs.into_iter().chain(store_outs) {
        if multi {
            let attest: Vec<&crate::attest::Predicates> =
                per_platform.iter().filter_map(|a| a.for_output(out)).collect();
            let (l, i) = crate::multi::export(
                progress,
                &root,
                &worker,
                &registry,
                &images,
                out,
                &attest,
                req.epoch,
                &req.index_annotations,
            )?;
            lines.extend(l);
            if index.is_none() {
                index = i;
            }
            continue;
        }
        let attest = per_platform[0].for_output(out).map(|predicates| export::AttestFor {
            predicates,
            platform: &platforms[0],
            epoch: req.epoch,
        });
        let e = export::export(
            progress,
            &root,
            &worker,
            &registry,
            &built,
            out,
            attest,
            &req.index_annotations,
        )?;
        lines.extend(e.lines);
        if written.is_none() && e.image.is_some() {
            written = e.image;
            written_index = e.index;
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
            .export_cache(
                &c.target,
                Some(&registry),
                c.mode,
                &finals.iter().map(|l| l.as_slice()).collect::<Vec<_>>(),
            )
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
    let metadata = match multi {
        true => crate::multi::metadata(index.as_ref(), &outputs),
        false => export::metadata(&written, written_index.as_ref(), &outputs),
    };
    Ok(BuildResult::Built(Box::new(crate::Built {
        image: built,
        written,
        metadata,
        index,
        platforms: images,
    })))
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The attestations of this build: the predicates asked for explicitly, and buildx's
/// default min provenance, which goes only to outputs that hold an image index (buildx
/// asks for it `inline-only`: BuildKit's local and tar exporters filter it out).
struct Attestations {
    explicit: crate::attest::Predicates,
    with_default: crate::attest::Predicates,
    /// What was made, for the progress step.
    lines: Vec<String>,
}

impl Attestations {
    fn for_output(&self, out: &Output) -> Option<&crate::attest::Predicates> {
        match out {
            Output::Image { push: true, .. } | Output::Oci { .. } => Some(&self.with_default),
            Output::Image { push: false, .. } | Output::Local { .. } | Output::Tar { .. } => Some(&self.explicit),
            Output::Docker { .. } | Output::Load { .. } => None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn attestations(
    req: &BuildRequest,
    outputs: &[Output],
    definition: &kiln_graph::Definition,
    inputs: &Inputs,
    worker: &Worker,
    built: &kiln_exporter::BuiltImage,
    platform: &Platform,
    scan_context: bool,
    stage_roots: &[(String, kiln_image::Digest, Option<std::path::PathBuf>)],
    started: i64,
    progress: &dyn BuildProgress,
    first: bool,
) -> Result<Attestations> {
    use crate::attest::{Provenance, ProvenanceOpts};
    let a = &req.attest;
    let index_outputs = outputs
        .iter()
        .any(|o| matches!(o, Output::Image { push: true, .. } | Output::Oci { .. }));
    if first && a.explicit() {
        for o in outputs {
            if let Output::Docker { .. } | Output::Load { .. } = o {
                warn(
                    progress,
                    "type=docker: the docker-archive holds the image only; attestations go into type=oci, type=image, --push, type=local and type=tar outputs",
                );
            }
        }
    }
    let wants_default = matches!(a.provenance, Provenance::Default) && !a.no_default && index_outputs;
    let explicit_prov: Option<ProvenanceOpts> = match &a.provenance {
        Provenance::On(p) => Some(p.clone()),
        _ => None,
    };
    if explicit_prov.is_none() && a.sbom.is_none() && !wants_default {
        return Ok(Attestations {
            explicit: Default::default(),
            with_default: Default::default(),
            lines: Vec::new(),
        });
    }
    let mut sbom = a.sbom.clone();
    if let Some(s) = sbom.as_mut() {
        // `ARG BUILDKIT_SBOM_SCAN_CONTEXT` as the frontend read it for the target.
        s.scan_context |= scan_context;
    }
    let stages: Vec<crate::attest::StageRoot<'_>> = stage_roots
        .iter()
        .map(|(name, op, tree)| crate::attest::StageRoot {
            name: name.clone(),
            op,
            rootfs: tree.as_deref(),
        })
        .collect();
    let git = inputs.context.as_deref().and_then(crate::attest::GitInfo::read);
    let facts = crate::attest::Facts {
        definition,
        dockerfile_name: &inputs.dockerfile_name,
        dockerfile: &inputs.dockerfile,
        build_args: &req.build_args,
        labels: &req.labels,
        target: req.target.as_deref(),
        platform,
        context: inputs.context.as_deref(),
        secret_ids: req.secrets.ids(),
        started,
        finished: unix_now(),
        epoch: req.epoch,
        git,
        resolved: &|op| worker.resolved_source(op),
    };
    let rootfs = if sbom.is_some() {
        worker.snapshots().merged(&built.layers).map_err(BuildError::other)?
    } else {
        None
    };
    let mut lines = Vec::new();
    let prov = crate::attest::collect(explicit_prov.as_ref(), None, &[], &facts, None)?;
    if let Some(p) = &explicit_prov {
        let version = match p.version {
            crate::attest::SlsaVersion::V02 => "SLSA v0.2",
            crate::attest::SlsaVersion::V1 => "SLSA v1",
        };
        let mode = match p.mode {
            crate::attest::ProvenanceMode::Min => "min",
            crate::attest::ProvenanceMode::Max => "max",
        };
        lines.push(format!("provenance ({version}, mode={mode}) done"));
    }
    let t_sbom = Instant::now();
    let sboms = crate::attest::collect(None, sbom.as_ref(), &stages, &facts, rootfs.as_deref())?;
    for doc in sboms.0.iter().map(|p| &p.value) {
        let n = doc["packages"].as_array().map_or(0, |p| p.len());
        lines.push(format!(
            "SBOM of the {}: {n} SPDX packages in {:.3}s done",
            doc["name"].as_str().unwrap_or_default(),
            t_sbom.elapsed().as_secs_f64()
        ));
    }
    let mut explicit = prov;
    explicit.0.extend(sboms.0);
    let with_default = if wants_default {
        lines.insert(0, "provenance (SLSA v0.2, mode=min, the default) done".to_string());
        let mut d = crate::attest::collect(Some(&ProvenanceOpts::default()), None, &[], &facts, None)?;
        d.0.extend(explicit.0.iter().cloned());
        d
    } else {
        explicit.clone()
    };
    Ok(Attestations {
        explicit,
        with_default,
        lines,
    })
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
