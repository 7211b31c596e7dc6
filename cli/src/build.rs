//! `kiln build`: its flags (clap) handed to [`kiln_build::flags::BuildFlags`], which
//! makes the typed [`kiln_build::BuildRequest`]; the build run by [`kiln_build::build`],
//! its events rendered, its result written.

use std::path::{Path, PathBuf};

use anyhow::Result;
use kiln_build::flags::{self, BuildFlags};
use kiln_build::{BuildResult, NetworkMode};
use kiln_executor::Isolation;
use kiln_worker::{PullPolicy, SnapshotterKind};

use crate::images::RegistryArgs;
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
    #[command(flatten)]
    registry: RegistryArgs,
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
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',', value_parser = flags::parse_entitlement)]
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
    /// Add an annotation, as buildx: `KEY=VALUE` or `manifest:KEY=VALUE` (each image
    /// manifest), `index:KEY=VALUE` (the image index of several platforms or of an image
    /// with attestations); other types are refused; repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = flags::parse_annotation)]
    annotations: Vec<(kiln_build::flags::AnnotationKind, String, String)>,
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
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = flags::parse_add_host)]
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
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = flags::parse_ulimit)]
    ulimit: Vec<kiln_executor::Ulimit>,
    /// Most processes (threads included) one RUN step may have at once: a pids cgroup
    /// per step where kiln can make one (root), else RLIMIT_NPROC; -1 for no limit.
    #[arg(long = "pids-limit", value_name = "N", default_value_t = kiln_executor::limits::DEFAULT_PIDS_LIMIT as i64, allow_negative_numbers = true, value_parser = flags::parse_pids_limit)]
    pids_limit: i64,
    /// Size of /dev/shm in RUN steps, as `docker build --shm-size`: bytes, or with a unit
    /// `k`, `m`, `g` (binary: `64m` is 64 MiB; the default).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = flags::parse_shm_size)]
    shm_size: Option<u64>,
    /// Run the build checks only, as `docker build --check`: print each warning with
    /// its rule, documentation URL and Dockerfile line, build nothing; exit 1 when
    /// there is a warning (or an error).
    #[arg(long)]
    check: bool,
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

impl BuildArgs {
    /// The flags as the library takes them; the enums clap parsed made its types.
    fn flags(&self) -> BuildFlags {
        BuildFlags {
            context: self.context.clone(),
            file: self.file.clone(),
            tags: self.tags.clone(),
            build_args: self.build_args.clone(),
            secrets: self.secrets.clone(),
            ssh: self.ssh.clone(),
            target: self.target.clone(),
            labels: self.labels.clone(),
            outputs: self.outputs.clone(),
            build_contexts: self.build_contexts.clone(),
            push: self.push,
            load: self.load,
            platforms: self.platform.clone(),
            insecure_registries: self.registry.insecure_registries.clone(),
            tls_ca: self.registry.tls_ca.clone(),
            pull: match self.pull {
                PullArg::Missing => PullPolicy::Missing,
                PullArg::Always => PullPolicy::Always,
                PullArg::Never => PullPolicy::Never,
            },
            network: match self.network {
                NetworkArg::None => NetworkMode::None,
                NetworkArg::Default => NetworkMode::Default,
                NetworkArg::Host => NetworkMode::Host,
            },
            entitlements: self.allow.clone(),
            cache_to: self.cache_to.clone(),
            cache_from: self.cache_from.clone(),
            annotations: self.annotations.clone(),
            provenance: self.provenance.clone(),
            sbom: self.sbom.clone(),
            attest: self.attest.clone(),
            extra_hosts: self.add_hosts.clone(),
            jobs: self.jobs,
            no_cache: self.no_cache,
            no_cache_filter: self.no_cache_filter.clone(),
            runtime: self.runtime.clone(),
            snapshotter: match self.snapshotter {
                SnapshotterArg::Auto => SnapshotterKind::Auto,
                SnapshotterArg::Overlay => SnapshotterKind::Overlay,
                SnapshotterArg::Copy => SnapshotterKind::Copy,
            },
            isolation: match self.isolation {
                IsolationArg::Auto => None,
                IsolationArg::Namespaces => Some(Isolation::Namespaces),
                IsolationArg::NosandboxPid => Some(Isolation::NosandboxPid),
                IsolationArg::Chroot => Some(Isolation::Chroot),
            },
            ulimits: self.ulimit.clone(),
            pids_limit: self.pids_limit,
            shm_size: self.shm_size,
            check: self.check,
        }
    }
}

/// Runs `kiln build`.
pub fn run(root_path: &Path, a: BuildArgs) -> Result<()> {
    let mode = if a.quiet { Mode::Quiet } else { a.progress };
    let progress = Renderer::new(mode);
    let req = a.flags().request(root_path, &progress)?;
    let built = match kiln_build::build(&req, &progress, &kiln_build::Interrupt)? {
        BuildResult::Checked(report) => return crate::check::run(report),
        BuildResult::Built(b) => b,
    };
    built.write_files(a.iidfile.as_deref(), a.metadata_file.as_deref())?;
    if a.quiet {
        outln!("{}", built.id());
    }
    Ok(())
}
