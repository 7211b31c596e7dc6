//! kiln-executor runs one process isolated over a prepared root filesystem.
//!
//! The built-in [`Sandbox`] re-executes the running binary as a small single-threaded
//! helper (see [`run_helper_if_requested`]), which unshares namespaces, mounts the
//! step's overlay, `/proc`, a minimal `/dev` and the `/etc` files, pivot_roots, drops to
//! Docker's default capabilities and the step's user, and execs the command.

pub mod binfmt;
mod cgroup;
mod chroot;
pub mod forward;
mod helper;
mod insecure;
pub mod interrupt;
pub mod isolation;
pub mod limits;
mod net;
mod runtime;
mod sandbox;
mod seccomp;
mod secrets;
mod stop;
mod sys;
pub mod userns;
pub mod users;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use isolation::{Isolation, NoIsolation};
pub use limits::{Limits, Ulimit, UlimitError};
pub use net::PRIVATE_DNS;
pub use runtime::OciRuntime;
pub use sandbox::Sandbox;

/// The argument that turns a re-executed binary into the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox";

/// ExecSpec is everything the sandbox needs to run one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The command and its arguments (`args[0]` is looked up in the step's `PATH`).
    pub args: Vec<String>,
    /// `KEY=value` environment of the step.
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing).
    pub cwd: String,
    /// `user[:group]`, by name or id, resolved in the container's `/etc/passwd`.
    #[serde(default)]
    pub user: Option<String>,
    pub hostname: String,
    pub network: Network,
    pub rootfs: Rootfs,
    /// Host files bind-mounted read-only over `/etc/hosts` and `/etc/resolv.conf` (never
    /// part of the layer). As in BuildKit there is no `/etc/hostname` mount: a step sees
    /// the image's, if any.
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// `RUN --mount`s, mounted in this order after the container's own file systems.
    #[serde(default)]
    pub mounts: Vec<SpecMount>,
    /// Secrets of the step (`RUN --mount=type=secret`): written to a tmpfs at
    /// `secrets_dir` that exists only in the step's own mount namespace, so they never
    /// touch a disk. Never serialized (the spec is a file).
    #[serde(skip)]
    pub secrets: Vec<SecretFile>,
    /// An empty directory the secrets tmpfs is mounted on (needed when `secrets` is
    /// not empty).
    #[serde(default)]
    pub secrets_dir: Option<PathBuf>,
    /// Environment variables whose value is a secret (`env=`): the name and an index
    /// into `secrets`; set for this step only.
    #[serde(default)]
    pub secret_env: Vec<(String, usize)>,
    /// Resource limits of the step: `--ulimit`s and the process limit.
    #[serde(default)]
    pub limits: Limits,
    /// The network namespace a [`Network::Private`] step joins (`/proc/PID/ns/net` of
    /// its holder): set by the executor, which makes it.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// `RUN --security`: the sandbox's restrictions, or none of them.
    #[serde(default)]
    pub security: Security,
    /// How the step is isolated: set by the [`Sandbox`] from its level.
    #[serde(default)]
    pub isolation: Isolation,
}

/// Security is how much of the sandbox's confinement a step gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Docker's default capabilities, its seccomp profile, masked and read-only `/proc`
    /// paths, read-only `/sys`.
    #[default]
    Sandbox,
    /// BuildKit's `security.insecure`: every capability, no seccomp filter, nothing
    /// masked, `/sys` writable, and (as root) the host's loop, fuse, tun, kvm devices.
    Insecure,
}

/// SecretFile is one secret's value and the mode and owner its file gets.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value.
        f.debug_struct("SecretFile")
            .field("len", &self.data.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

/// SpecMount is one extra mount of a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecMount {
    /// Absolute path inside the container.
    pub target: String,
    pub kind: SpecMountKind,
}

/// What a [`SpecMount`] is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecMountKind {
    /// A host file or directory (made by kiln for this step), optionally read-only.
    Bind { source: PathBuf, readonly: bool },
    /// An empty tmpfs.
    Tmpfs { size: Option<u64> },
    /// Secret `index` of [`ExecSpec::secrets`], bind-mounted read-only, nosuid, nodev
    /// (and noexec unless `executable`, i.e. its mode has an x bit).
    Secret { index: usize, executable: bool },
}

/// Network is the step's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network (`--network=host`, or `RUN --network=host` with
    /// `--allow network.host`).
    Host,
    /// A new network namespace with only `lo`.
    None,
    /// A new network namespace with outbound access through slirp4netns and no way to
    /// the host's loopback or abstract unix sockets (the default).
    Private,
}

/// Rootfs is the overlay the step runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rootfs {
    /// Lower directories, topmost first; none means `upper` is a whole tree to
    /// bind-mount (the copy snapshotter).
    pub lower: Vec<PathBuf>,
    /// Where the step's changes land.
    pub upper: PathBuf,
    /// Overlay's work directory (same file system as `upper`).
    pub work: PathBuf,
    /// An empty directory the overlay is mounted on.
    pub target: PathBuf,
}

/// ExecError is a step that could not be run (not one that ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start the sandbox helper `{helper}`: {source}")]
    Spawn {
        helper: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox: {0}")]
    Setup(String),
    /// Overlayfs cannot be mounted here (no such file system, or not in this user
    /// namespace): the copy snapshotter can still run the step.
    #[error("sandbox: cannot mount the overlay ({options}): {reason}")]
    OverlayUnavailable { options: String, reason: String },
    #[error("cannot start {command}: {reason}")]
    Start { command: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "RUN's default network is private and needs `slirp4netns`, which is not installed \
         (Debian: `apt-get install slirp4netns`); or build with `--network=host` to share the \
         host's network or `--network=none` for none"
    )]
    NoSlirp4netns,
    #[error("cannot set up the step's private network: {0}")]
    Network(String),
    #[error(transparent)]
    NoIsolation(#[from] NoIsolation),
    #[error("cannot write the OCI runtime config: {0}")]
    OciConfig(#[from] oci_spec::OciSpecError),
}

/// Stops a running step.
pub type StopFn = Box<dyn FnOnce() + Send>;

/// Executor runs steps.
pub trait Executor: Send + Sync {
    /// Runs `spec`, passing each line of the step's combined stdout/stderr to `output`,
    /// and returns the step's exit code (128 + signal when it was killed).
    ///
    /// Once the step is started, `stop` receives a function that kills it (and with it
    /// the step's whole process tree and mounts), for cancelling the build.
    fn run(
        &self,
        spec: &ExecSpec,
        output: &mut dyn FnMut(&str),
        stop: &mut dyn FnMut(StopFn),
    ) -> Result<i32, ExecError>;

    /// Whether the step's root may be several stacked lower directories; `false` when
    /// the executor reads the root before mounting it (an OCI runtime resolves the
    /// user in the topmost lower), so it gets the parent's merged tree alone.
    fn stacks_lowers(&self) -> bool {
        true
    }
}

/// Marks every descriptor above 2 close-on-exec, so that nothing kiln inherited (a host
/// file a shell left open on fd 7) reaches a helper, a runtime or a step. Call it in
/// `main` right after [`run_helper_if_requested`] (the helper keeps its setup-error
/// pipe on fd 3 and does the same for the step itself).
pub fn cloexec_inherited_fds() -> std::io::Result<()> {
    sys::cloexec_from(3)
}

/// If this process was started as the sandbox helper (`<exe> __kiln-sandbox SPEC`) or a
/// network namespace holder (`<exe> __kiln-netns`), runs it and exits; otherwise
/// returns. Call it first thing in `main`, before any thread is started.
pub fn run_helper_if_requested() {
    let mut args = std::env::args_os();
    let first = args.nth(1);
    if first.as_deref() == Some(std::ffi::OsStr::new(HELPER_ARG)) {
        let code = helper::main(args.next().map(PathBuf::from));
        std::process::exit(code);
    }
    if first.as_deref() == Some(std::ffi::OsStr::new(isolation::PROBE_ARG)) {
        let level = args.next();
        std::process::exit(isolation::probe_main(level.as_ref().and_then(|l| l.to_str())));
    }
    if first.as_deref() == Some(std::ffi::OsStr::new(net::NETNS_ARG)) {
        std::process::exit(net::holder_main());
    }
}
