//! `kiln build`: the flags parsed into a typed [`kiln_build::BuildRequest`], the build
//! run by [`kiln_build::build`], its events rendered, its result written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_build::{BuildEvent, BuildProgress, BuildRequest, BuildResult, Dest, Dockerfile, NetworkMode};
use kiln_image::{Platform, Reference};

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
    /// Output destination: `type=image|registry|oci|docker|local|tar[,dest=…][,name=…]`,
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
    /// Load the image into the docker daemon at `$DOCKER_HOST` (default
    /// unix:///var/run/docker.sock; Podman's socket too); shorthand for
    /// `--output type=docker`.
    #[arg(long)]
    load: bool,
    /// Progress output: auto, plain, tty, rawjson or quiet.
    #[arg(long, value_enum, default_value = "auto")]
    progress: Mode,
    /// Print only the image id on success.
    #[arg(short, long)]
    quiet: bool,
    /// Target platforms, comma-separated or repeated (e.g. linux/amd64,linux/arm64;
    /// default: the host's); more than one makes an image index.
    #[arg(long, value_name = "PLATFORMS")]
    platform: Vec<String>,
    /// Treat this registry as Docker treats an insecure one: HTTPS first with its
    /// certificate not verified, else plain HTTP (loopback hosts may always use plain
    /// HTTP); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Also trust the CA certificates in this PEM file for registry TLS (the system's
    /// store is always trusted).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// When to ask the registry for base images: `missing` (default: use the local
    /// store when it has the image), `always`, `never`. `--pull` alone and buildx's
    /// `--pull=true` mean always; `--pull=false` means missing.
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
    /// Export the build cache: `type=local,dest=DIR` or `type=registry,ref=REF` (a bare
    /// `REF` too), with `,mode=min|max` (min: the steps in the final image; max: every
    /// step of every stage) and `,ignore-error=true`; repeatable (exported to each).
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,
    /// Use an exported build cache: `type=local,src=DIR` or `type=registry,ref=REF` (a
    /// bare `REF` too); repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Add an annotation to the image manifest, as buildx: `KEY=VALUE` or
    /// `manifest:KEY=VALUE` (other types are refused); repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    annotations: Vec<(String, String)>,
    /// Attach SLSA provenance, as buildx: `true` (min), `false`, `min`, `max`, or
    /// `mode=min|max,version=v0.2|v1,builder-id=URI`. Default: min provenance on pushed
    /// and `type=oci` images, unless BUILDX_NO_DEFAULT_ATTESTATIONS is true.
    #[arg(long, value_name = "VALUE")]
    provenance: Option<String>,
    /// Attach an SPDX 2.3 SBOM of the image, made natively: `true`, `false`, or
    /// `scan-context=true,scan-stage=true`. `-o type=local`/`type=tar` get it as
    /// `sbom.spdx.json` beside the files.
    #[arg(long, value_name = "VALUE")]
    sbom: Option<String>,
    /// Attach an attestation, as buildx: `type=provenance,…` or `type=sbom,…`; repeatable.
    #[arg(long = "attest", value_name = "SPEC")]
    attest: Vec<String>,
    /// Add a name to every RUN step's /etc/hosts: `HOST:IP` (as docker) or `HOST=IP`
    /// (as buildx); repeatable. Part of the steps' cache key.
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = parse_add_host)]
    add_hosts: Vec<kiln_graph::ExtraHost>,
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
    /// How RUN steps are isolated: `auto` (the strongest this environment allows, said
    /// in one line when it is not `namespaces`), `namespaces`, `nosandbox-pid` (kiln's
    /// pid namespace and read-only /proc) or `chroot` (no namespace; copy snapshotter).
    #[arg(
        long,
        value_enum,
        value_name = "LEVEL",
        env = "KILN_ISOLATION",
        default_value = "auto"
    )]
    isolation: IsolationArg,
    /// Resource limit of every RUN step, as `docker build --ulimit`: `NAME=SOFT[:HARD]`
    /// (`nofile`, `nproc`, `core`, `memlock`, `stack`, `cpu`, `fsize`, …; -1 is
    /// unlimited; one value sets both); repeatable.
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = parse_ulimit)]
    ulimit: Vec<kiln_executor::Ulimit>,
    /// Most processes (threads included) one RUN step may have at once: a pids cgroup
    /// per step where kiln can make one (root), else RLIMIT_NPROC; -1 for no limit.
    #[arg(long = "pids-limit", value_name = "N", default_value_t = kiln_executor::limits::DEFAULT_PIDS_LIMIT as i64, allow_negative_numbers = true, value_parser = parse_pids_limit)]
    pids_limit: i64,
    /// Size of /dev/shm in RUN steps, as `docker build --shm-size`: bytes, or with a unit
    /// `k`, `m`, `g` (binary: `64m` is 64 MiB; the default).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = parse_shm_size)]
    shm_size: Option<u64>,
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

/// Parses one `--annotation`: `[TYPE:]KEY=VALUE`, split at the first `=`; the only
/// type kiln writes is `manifest` (buildx's default), a single-platform image having
/// no index of its own.
fn parse_annotation(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    let key = match key.split_once(':') {
        Some(("manifest", k)) => k,
        Some((t, _))
            if ["index", "manifest-descriptor", "index-descriptor"].contains(&t.split('[').next().unwrap_or(t))
                || t.starts_with("manifest[") =>
        {
            return Err(format!(
                "`{s}`: annotation type `{t}` is not supported; kiln writes `manifest` annotations (KEY=VALUE)"
            ))
        }
        _ => key,
    };
    if key.is_empty() {
        return Err(format!("`{s}` has no key (expected KEY=VALUE)"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Parses one `--add-host`: `HOST=IP`, else `HOST:IP` split at the first colon (so an
/// IPv6 address keeps its colons).
fn parse_add_host(s: &str) -> Result<kiln_graph::ExtraHost, String> {
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("`{s}` is not HOST:IP"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host name (expected HOST:IP)"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#') {
        return Err(format!("host name `{host}` has a space, control character or `#`"));
    }
    if ip == "host-gateway" {
        return Err(format!(
            "`{s}`: `host-gateway` is not supported (kiln has no daemon host gateway); give the address"
        ));
    }
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{ip}` is not an IP address (expected HOST:IP)"))?;
    Ok(kiln_graph::ExtraHost {
        host: host.to_string(),
        ip,
    })
}

/// Parses `--shm-size` as Docker's RAMInBytes: a number with an optional binary unit
/// (`b`, `k`, `m`, `g`, `t`, with or without a trailing `b`/`ib`).
fn parse_shm_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let shift = match unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit)
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("`{s}` is not a size (e.g. `64m`, `1g` or bytes)")),
    };
    match n.parse::<u64>().ok().and_then(|n| n.checked_mul(1 << shift)) {
        Some(0) => Err(format!("`{s}`: the size must be more than 0")),
        Some(b) => Ok(b),
        None => Err(format!("`{s}` is not a size (e.g. `64m`, `1g` or bytes)")),
    }
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

/// `--isolation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    Auto,
    Namespaces,
    NosandboxPid,
    Chroot,
}

impl IsolationArg {
    /// The level asked for; `None` for `auto`.
    fn forced(self) -> Option<kiln_executor::Isolation> {
        match self {
            IsolationArg::Auto => None,
            IsolationArg::Namespaces => Some(kiln_executor::Isolation::Namespaces),
            IsolationArg::NosandboxPid => Some(kiln_executor::Isolation::NosandboxPid),
            IsolationArg::Chroot => Some(kiln_executor::Isolation::Chroot),
        }
    }
}

/// `--network` values, as `docker buildx build` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    Default,
    Host,
    None,
}

/// `--pull` values, as buildah and podman take them, and buildx's `true`/`false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullArg {
    #[value(alias = "false")]
    Missing,
    #[value(alias = "true")]
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

/// Ctrl-C (or SIGTERM) cancels the build once the solve runs; a second one kills.
struct Interrupt;

impl kiln_build::Control for Interrupt {
    fn solving(&self) {
        crate::interrupt::install();
    }

    fn canceled(&self) -> bool {
        crate::interrupt::requested()
    }
}

/// SOURCE_DATE_EPOCH: the build arg, else the environment variable.
fn epoch(build_args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    match build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|s| !s.is_empty())
    {
        Some(s) => Ok(Some(s.parse::<i64>().with_context(|| {
            format!("invalid SOURCE_DATE_EPOCH `{s}`: expected seconds since 1970")
        })?)),
        None => Ok(None),
    }
}

/// `--platform`: comma-separated and repeatable, each normalised as containerd does
/// (`aarch64` → `linux/arm64`), repeats dropped; none: the host's.
fn platforms(flags: &[String]) -> Result<Vec<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for p in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        let parsed =
            Platform::parse(p).with_context(|| format!("invalid --platform `{p}`: expected os/arch[/variant]"))?;
        if parsed.os != "linux" {
            bail!("--platform `{p}`: kiln builds Linux images only");
        }
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// The typed request the flags describe.
fn request(root: &Path, a: &BuildArgs, progress: &dyn BuildProgress) -> Result<BuildRequest> {
    let tags = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("invalid tag `{t}`")))
        .collect::<Result<Vec<_>>>()?;
    let mut outputs = a
        .outputs
        .iter()
        .map(|o| kiln_build::parse_output(o, &tags))
        .collect::<Result<Vec<_>, _>>()?;
    if a.load {
        outputs.push(kiln_build::parse_output("type=docker", &tags)?);
    }
    let build_args = kv(&a.build_args, "--build-arg", true)?;
    let labels = kv(&a.labels, "--label", false)?;
    let secrets = kiln_build::resolve_secrets(&a.secrets, &a.ssh, &|w| progress.event(BuildEvent::Warning(w)))?;
    let platforms = platforms(&a.platform)?;
    let epoch = epoch(&build_args)?;
    let (context, dockerfile) = match (a.context.as_str(), a.file.as_deref()) {
        ("-", None | Some("-")) => (None, Dockerfile::Stdin),
        ("-", Some(f)) => (None, Dockerfile::Path(PathBuf::from(f))),
        (c, Some("-")) => (Some(PathBuf::from(c)), Dockerfile::Stdin),
        (c, Some(f)) => (Some(PathBuf::from(c)), Dockerfile::Path(PathBuf::from(f))),
        (c, None) => (Some(PathBuf::from(c)), Dockerfile::Default),
    };
    let registry = std::sync::Arc::new(crate::images::registry_client(
        a.insecure_registries.clone(),
        a.tls_ca.as_deref(),
    )?);
    let cache_to = a
        .cache_to
        .iter()
        .map(|s| kiln_build::parse_cache_to(s))
        .collect::<Result<Vec<_>, _>>()?;
    let cache_from = a
        .cache_from
        .iter()
        .map(|s| kiln_build::parse_cache_from(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut attest = kiln_build::AttestRequest {
        no_default: kiln_build::attest::no_default_attestations(
            std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS").ok().as_deref(),
        )?,
        ..Default::default()
    };
    for spec in &a.attest {
        attest.parse_attest(spec)?;
    }
    if let Some(v) = &a.provenance {
        attest.parse_provenance(v)?;
    }
    if let Some(v) = &a.sbom {
        attest.parse_sbom(v)?;
    }
    let mut build_contexts = BTreeMap::new();
    for spec in &a.build_contexts {
        let (name, context) = kiln_build::parse_build_context(spec)?;
        build_contexts.insert(name, context);
    }
    Ok(BuildRequest {
        root: root.to_path_buf(),
        context,
        dockerfile,
        build_args,
        labels,
        target: a.target.clone(),
        platforms,
        tags,
        outputs,
        push: a.push,
        cache_to,
        cache_from,
        extra_hosts: a.add_hosts.clone(),
        annotations: a.annotations.iter().cloned().collect(),
        build_contexts,
        secrets,
        network: match a.network {
            NetworkArg::None => NetworkMode::None,
            NetworkArg::Default => NetworkMode::Default,
            NetworkArg::Host => NetworkMode::Host,
        },
        entitlements: a.allow.clone(),
        limits: kiln_executor::Limits {
            ulimits: a.ulimit.clone(),
            pids: u64::try_from(a.pids_limit).ok().filter(|n| *n > 0),
            shm_size: a.shm_size,
        },
        runtime: a.runtime.clone(),
        snapshotter: match a.snapshotter {
            SnapshotterArg::Auto => kiln_worker::SnapshotterKind::Auto,
            SnapshotterArg::Overlay => kiln_worker::SnapshotterKind::Overlay,
            SnapshotterArg::Copy => kiln_worker::SnapshotterKind::Copy,
        },
        isolation: a.isolation.forced(),
        pull: a.pull.into(),
        jobs: a.jobs.map(|n| n as usize),
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        epoch,
        registry,
        attest,
        mode: if a.check {
            kiln_build::Mode::Check
        } else {
            kiln_build::Mode::Build
        },
    })
}

/// Runs `kiln build`.
pub fn run(root_path: &Path, a: BuildArgs) -> Result<()> {
    let mode = if a.quiet { Mode::Quiet } else { a.progress };
    let progress = Renderer::new(mode);
    let req = request(root_path, &a, &progress)?;
    let built = match kiln_build::build(&req, &progress, &Interrupt)? {
        BuildResult::Checked(report) => return crate::check::run(report),
        BuildResult::Built(b) => b,
    };
    let (id, metadata) = (built.id().clone(), &built.metadata);
    if let Some(path) = &a.iidfile {
        std::fs::write(path, id.to_string()).with_context(|| format!("cannot write --iidfile `{}`", path.display()))?;
    }
    if let Some(path) = &a.metadata_file {
        kiln_build::write_dest(&Dest::Path(path.clone()), "--metadata-file", |w| {
            serde_json::to_writer_pretty(&mut *w, metadata).map_err(kiln_build::BuildError::other)
        })?;
    }
    if a.quiet {
        {
            outln!("{id}");
        }
    }
    Ok(())
}
