//! The sandbox helper: runs in a freshly executed, single-threaded copy of the binary.
//!
//! Process tree: kiln → helper (unshares namespaces, waits) → init of the new pid
//! namespace (mounts, pivot_root, drops privileges, execs the step). The helper and the
//! step both die with SIGKILL when their parent dies, so killing kiln kills the step's
//! whole namespace, and its mounts go with the mount namespace.
//!
//! Setup failures are written to fd 3 (a pipe kiln reads) and end with exit code 125.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;
use crate::users::{self, User};
use crate::{ExecSpec, Isolation, Network, Security, SpecMount, SpecMountKind, HELPER_ARG};

/// The descriptor setup errors are reported on.
pub const ERR_FD: libc::c_int = 3;
/// Exit code of a helper that could not set the step up.
pub const SETUP_FAILED: i32 = 125;

/// How the helper's error starts when the overlay cannot be mounted (`overlay\0<options>\0<errno>`).
pub(crate) const OVERLAY_TAG: &str = "overlay\0";

/// Docker's default capability set.
pub(crate) const DEFAULT_CAPS: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Ends the process with a setup error.
pub(crate) fn fail(msg: impl std::fmt::Display) -> ! {
    sys::write_fd(ERR_FD, msg.to_string().as_bytes());
    sys::exit(SETUP_FAILED)
}

pub(crate) trait Context<T> {
    fn or_fail(self, what: impl FnOnce() -> String) -> T;
}

impl<T> Context<T> for io::Result<T> {
    fn or_fail(self, what: impl FnOnce() -> String) -> T {
        match self {
            Ok(v) => v,
            Err(e) => fail(format!("{}: {e}", what())),
        }
    }
}

pub fn main(spec_path: Option<PathBuf>) -> i32 {
    if sys::set_cloexec(ERR_FD).is_err() {
        eprintln!("{HELPER_ARG}: internal helper, started by kiln only");
        return 2;
    }
    let _ = sys::kill_with_parent();
    let Some(spec_path) = spec_path else {
        fail("no spec given")
    };
    let text = std::fs::read(&spec_path).or_fail(|| format!("cannot read {}", spec_path.display()));
    let spec: ExecSpec = match serde_json::from_slice(&text) {
        Ok(s) => s,
        Err(e) => fail(format!("bad spec {}: {e}", spec_path.display())),
    };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    match spec.isolation {
        Isolation::Namespaces => flags |= libc::CLONE_NEWPID,
        Isolation::NosandboxPid => {}
        Isolation::Chroot => return crate::chroot::run(&spec),
    }
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    if spec.network == Network::Private {
        let Some(ns) = &spec.netns else {
            fail("no network namespace was made for the step")
        };
        crate::net::enter(ns).or_fail(|| format!("cannot join the step's network namespace {}", ns.display()));
    }
    sys::unshare(flags).or_fail(|| format!("cannot create namespaces (isolation `{}`)", spec.isolation));
    let pid = sys::fork().or_fail(|| "cannot fork".into());
    if pid == 0 {
        init(&spec)
    }
    sys::wait(pid).or_fail(|| "cannot wait for the step".into())
}

/// Pid 1 of the step's namespace: prepares the container and execs the command.
fn init(spec: &ExecSpec) -> ! {
    let _ = sys::kill_with_parent();
    sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
        .or_fail(|| "cannot make mounts private".into());
    mount_overlay(spec);

    // Handles on host objects, taken before the host disappears.
    let devs = ["null", "zero", "full", "random", "urandom", "tty"].map(|d| {
        let p = Path::new("/dev").join(d);
        (
            d,
            sys::open_tree_clone(&p, false).or_fail(|| format!("cannot open {}", p.display())),
        )
    });
    let etc = [("/etc/hosts", &spec.hosts), ("/etc/resolv.conf", &spec.resolv_conf)].map(|(t, src)| {
        (
            t,
            sys::open_tree_clone(src, false).or_fail(|| format!("cannot open {}", src.display())),
        )
    });
    let host_sys = sys::open_tree_clone(Path::new("/sys"), true).ok();
    let insecure = spec.security == Security::Insecure;
    let host_devs = if insecure && crate::insecure::gets_host_devices() {
        crate::insecure::open_host_devices()
    } else {
        Vec::new()
    };
    let binds: Vec<Option<(libc::c_int, bool)>> = spec
        .mounts
        .iter()
        .map(|m| match &m.kind {
            SpecMountKind::Bind { source, .. } => {
                let fd = sys::open_tree_clone(source, true).or_fail(|| format!("cannot open {}", source.display()));
                Some((fd, source.is_dir()))
            }
            SpecMountKind::Tmpfs { .. } => None,
            SpecMountKind::Secret { index, .. } => {
                let source = secret_source(spec, *index);
                let fd = sys::open_tree_clone(&source, false)
                    .or_fail(|| format!("cannot open the secret file {}", source.display()));
                Some((fd, false))
            }
        })
        .collect();
    // `env=` secrets are read from the tmpfs while it is still in reach.
    let secret_env: Vec<String> = spec
        .secret_env
        .iter()
        .map(|(name, index)| {
            let source = secret_source(spec, *index);
            let value = std::fs::read(&source).or_fail(|| format!("cannot read the secret for ${name}"));
            match String::from_utf8(value) {
                Ok(v) if !v.contains('\0') => format!("{name}={v}"),
                _ => fail(format!("the secret for ${name} is not text without NUL bytes")),
            }
        })
        .collect();

    // /proc goes in while the host's is still visible: a user namespace may only mount
    // a new proc where a full one is already mounted.
    if spec.isolation == Isolation::NosandboxPid {
        let target = spec.rootfs.target.join("proc");
        proc_mount_point(&target);
        crate::chroot::bind_proc(&target).or_fail(|| "cannot bind /proc read-only".into());
    } else {
        mount_proc(&spec.rootfs.target.join("proc"));
    }
    std::env::set_current_dir(&spec.rootfs.target).or_fail(|| "cannot enter the root file system".into());
    sys::pivot_root_dot().or_fail(|| "pivot_root".into());
    sys::umount_detach(Path::new(".")).or_fail(|| "cannot detach the host root".into());
    std::env::set_current_dir("/").or_fail(|| "chdir /".into());

    mount_dev(&devs, &spec.limits.shm_option());
    crate::insecure::bind_host_devices(&host_devs).or_fail(|| "cannot add the host's devices".into());
    mount_sys(host_sys, !insecure);
    if !insecure {
        mask_proc();
    }
    for (target, fd) in etc {
        bind_etc(Path::new(target), fd);
    }
    for (m, bind) in spec.mounts.iter().zip(binds) {
        mount_extra(m, bind);
    }
    sys::sethostname(&spec.hostname).or_fail(|| "cannot set the hostname".into());
    if spec.network == Network::None {
        sys::loopback_up().or_fail(|| "cannot bring up lo".into());
    }
    run_step(spec, secret_env)
}

/// The step's own setup, once its root is `/`: user, environment, working directory,
/// limits, privileges, seccomp; then the exec.
pub(crate) fn run_step(spec: &ExecSpec, secret_env: Vec<String>) -> ! {
    let insecure = spec.security == Security::Insecure;
    let user = match users::resolve(Path::new("/"), spec.user.as_deref().unwrap_or("0")) {
        Ok(u) => u,
        Err(e) => fail(e),
    };
    let mut env = step_env(&spec.env, &user.home);
    for e in secret_env {
        let key = e.split('=').next().unwrap_or_default().len() + 1;
        env.retain(|old| old.get(..key) != e.get(..key));
        env.push(e);
    }
    let cwd = if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() };
    if !Path::new(cwd).is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(cwd)
            .or_fail(|| format!("cannot create the working directory {cwd}"));
    }
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .or_fail(|| "cannot open /dev/null".into());
    sys::dup2_stdin(&devnull).or_fail(|| "stdin".into());

    // Before the capabilities go: raising a hard limit needs CAP_SYS_RESOURCE.
    apply_ulimits(spec);
    drop_privileges(&user, insecure);
    std::env::set_current_dir(cwd).or_fail(|| format!("cannot change to the working directory {cwd}"));
    leave_kilns_session();
    sys::set_no_new_privs().or_fail(|| "no_new_privs".into());
    let _ = sys::kill_with_parent();
    // Last: from here on only exec (and, if it fails, writing the error and exiting).
    if !insecure {
        crate::seccomp::Filter::docker_default(DEFAULT_CAPS)
            .install()
            .or_fail(|| "cannot install the seccomp filter".into());
    }
    exec(&spec.args, &env)
}

/// Where secret `index` is on the step's secrets tmpfs.
fn secret_source(spec: &ExecSpec, index: usize) -> PathBuf {
    match &spec.secrets_dir {
        Some(dir) => crate::secrets::secret_path(dir, index),
        None => fail("a secret mount without a secrets directory"),
    }
}

fn mount_overlay(spec: &ExecSpec) {
    let r = &spec.rootfs;
    if r.lower.is_empty() {
        // The copy snapshotter: the upper is a whole tree of its own.
        let src = sys::cstr(&r.upper).or_fail(|| "path".into());
        sys::mount(Some(&src), &r.target, None, libc::MS_BIND | libc::MS_REC, None)
            .or_fail(|| format!("cannot bind {}", r.upper.display()));
        // Device nodes in the tree (from a base layer or a step's mknod) stay inert.
        sys::set_nodev(&r.target, false).or_fail(|| format!("cannot make {} nodev", r.upper.display()));
        return;
    }
    let mut lower = String::new();
    for (i, l) in r.lower.iter().enumerate() {
        let s = l.to_str().unwrap_or_default();
        if s.is_empty() || s.contains([',', ':']) {
            fail(format!(
                "cannot use {} as an overlay layer (a ',' or ':' in the path)",
                l.display()
            ));
        }
        if i > 0 {
            lower.push(':');
        }
        lower.push_str(s);
    }
    // Renamed directories and metadata-only copy-ups would leave xattr pointers into the
    // lower tree that a layer cannot carry: turn both off.
    let mut opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        r.upper.display(),
        r.work.display()
    );
    if sys::getuid() != 0 || !kiln_snapshotter::ids::initial_userns() {
        // In a user namespace: overlay's xattrs in the user.* namespace ("off" would still
        // follow redirects when the module says so, which userxattr forbids).
        opts.push_str(",userxattr,redirect_dir=nofollow,metacopy=off");
    } else {
        opts.push_str(",redirect_dir=off,metacopy=off");
    }
    // nodev: a device node in a layer or made by the step (`mknod /tmp/l b 7 1`) must
    // not open the host's device; the standard ones are bind-mounted on /dev.
    let mount = |opts: &str| {
        let data = sys::cstr(opts).or_fail(|| "overlay options".into());
        sys::mount(
            Some(c"overlay"),
            &r.target,
            Some(c"overlay"),
            libc::MS_NODEV,
            Some(&data),
        )
    };
    // volatile: the step's own fsync/sync calls do not wait for the disk (dpkg syncs
    // every file it unpacks), nor does the unmount; the upper is thrown away if the
    // step does not finish, and synced once before it is kept as a layer directory
    // (`OverlayStep::commit`). A kernel without the option (before 5.10) refuses it:
    // then the mount is made without it, and its error, if any, is the one reported.
    mount(&format!("{opts},volatile"))
        .or_else(|_| mount(&opts))
        .unwrap_or_else(|e| {
            // Tagged so the caller gets ExecError::OverlayUnavailable, not a message to match.
            fail(format!("{OVERLAY_TAG}{opts}\0{e}"))
        });
}

fn ensure_dir(p: &Path, mode: u32) {
    if p.is_dir() {
        return;
    }
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .or_fail(|| format!("cannot create {}", p.display()));
}

fn mount_proc(target: &Path) {
    proc_mount_point(target);
    sys::mount(
        Some(c"proc"),
        target,
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .or_fail(|| "cannot mount /proc".into());
}

fn proc_mount_point(target: &Path) {
    match target.symlink_metadata() {
        // The image's /proc is used only if it is a plain directory (never a symlink out).
        Ok(m) if m.is_dir() => {}
        Ok(_) => fail("/proc in the image is not a directory"),
        // As runc makes a missing mount point (and BuildKit then leaves it in the layer).
        Err(_) => ensure_dir(target, 0o755),
    }
}

fn bind(fd: libc::c_int, target: &Path, readonly: bool) {
    sys::move_mount(fd, target).or_fail(|| format!("cannot bind {}", target.display()));
    if readonly {
        sys::mount(
            None,
            target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .or_fail(|| format!("cannot make {} read-only", target.display()));
    }
}

fn touch(p: &Path) {
    if p.symlink_metadata().is_ok() {
        return;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(p)
        .or_fail(|| format!("cannot create {}", p.display()));
}

fn mount_dev(devs: &[(&str, libc::c_int)], shm_size: &str) {
    let dev = Path::new("/dev");
    ensure_dir(dev, 0o755);
    sys::mount(
        Some(c"tmpfs"),
        dev,
        Some(c"tmpfs"),
        // nodev: a node the step makes here is inert; the standard nodes below are bind
        // mounts of the host's, each a mount of its own that keeps working.
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some(c"mode=755,size=65536k"),
    )
    .or_fail(|| "cannot mount /dev".into());
    for (name, fd) in devs {
        let p = dev.join(name);
        touch(&p);
        bind(*fd, &p, false);
    }
    let pts = dev.join("pts");
    ensure_dir(&pts, 0o755);
    let ptsopts = if kiln_snapshotter::ids::initial_userns() {
        c"newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        c"newinstance,ptmxmode=0666,mode=0620"
    };
    sys::mount(
        Some(c"devpts"),
        &pts,
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(ptsopts),
    )
    .or_fail(|| "cannot mount /dev/pts".into());
    let shm = dev.join("shm");
    ensure_dir(&shm, 0o1777);
    sys::mount(
        Some(c"shm"),
        &shm,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&std::ffi::CString::new(format!("mode=1777,{shm_size}")).expect("no NUL in a number")),
    )
    .or_fail(|| "cannot mount /dev/shm".into());
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).or_fail(|| format!("cannot create /dev/{link}"));
    }
}

/// Docker's masked paths (moby `oci/defaults.go`): hidden behind `/dev/null` or an empty
/// read-only tmpfs, by the sandbox here and by an OCI runtime through `linux.maskedPaths`.
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths (`linux.readonlyPaths`).
pub(crate) const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Docker's masked and read-only paths: kernel interfaces a build step has no business
/// with are hidden (a file behind `/dev/null`, a directory behind an empty read-only
/// tmpfs) or made read-only.
fn mask_proc() {
    for p in MASKED_PATHS.iter().map(Path::new) {
        let Ok(md) = p.symlink_metadata() else { continue };
        let r = if md.is_dir() {
            sys::mount(
                Some(c"tmpfs"),
                p,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NODEV,
                Some(c"size=0"),
            )
        } else {
            sys::mount(Some(c"/dev/null"), p, None, libc::MS_BIND, None)
        };
        r.or_fail(|| format!("cannot mask {}", p.display()));
    }
    for p in READONLY_PATHS.iter().map(Path::new) {
        if p.symlink_metadata().is_err() {
            continue;
        }
        let src = sys::cstr(p).or_fail(|| "path".into());
        sys::mount(Some(&src), p, None, libc::MS_BIND | libc::MS_REC, None)
            .and_then(|()| {
                sys::mount(
                    None,
                    p,
                    None,
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    None,
                )
            })
            .or_fail(|| format!("cannot make {} read-only", p.display()));
    }
}

fn mount_sys(host_sys: Option<libc::c_int>, readonly: bool) {
    let target = Path::new("/sys");
    // A missing /sys is made, as runc makes a missing mount point; it stays in the layer.
    if target.symlink_metadata().is_err() {
        ensure_dir(target, 0o755);
    }
    if !target.is_dir() {
        return;
    }
    let rdonly = if readonly { libc::MS_RDONLY } else { 0 };
    let ro = rdonly | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if sys::mount(Some(c"sysfs"), target, Some(c"sysfs"), ro, None).is_ok() {
        return;
    }
    // Without a network namespace of its own a user namespace may not mount sysfs;
    // a read-only bind of the host's is what rootless runtimes do.
    if let Some(fd) = host_sys {
        sys::move_mount(fd, target).or_fail(|| "cannot bind /sys".into());
        let _ = sys::mount(None, target, None, libc::MS_BIND | libc::MS_REMOUNT | ro, None);
    }
}

/// A `RUN --mount`: its target (and missing parents) is made, then the mount goes on.
fn mount_extra(m: &SpecMount, bind: Option<(libc::c_int, bool)>) {
    let target = Path::new(&m.target);
    let is_dir = bind.is_none_or(|(_, dir)| dir);
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .or_fail(|| format!("cannot create the mount point {}", m.target));
    }
    if target.symlink_metadata().is_err() {
        if is_dir {
            ensure_dir(target, 0o755);
        } else {
            touch(target);
        }
    }
    match (&m.kind, bind) {
        (SpecMountKind::Bind { readonly, .. }, Some((fd, _))) => bind_fd(fd, target, *readonly),
        (SpecMountKind::Secret { executable, .. }, Some((fd, _))) => {
            sys::move_mount(fd, target).or_fail(|| format!("cannot mount the secret on {}", m.target));
            let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
            if !executable {
                flags |= libc::MS_NOEXEC;
            }
            sys::mount(None, target, None, flags, None)
                .or_fail(|| format!("cannot make the secret on {} read-only", m.target));
        }
        (SpecMountKind::Tmpfs { size }, _) => {
            let opts = match size {
                Some(n) => format!("mode=1777,size={n}"),
                None => "mode=1777".to_string(),
            };
            let data = sys::cstr(&opts).or_fail(|| "tmpfs options".into());
            sys::mount(
                Some(c"tmpfs"),
                target,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
            )
            .or_fail(|| format!("cannot mount a tmpfs on {}", m.target));
        }
        _ => fail(format!("mount {} has no source", m.target)),
    }
}

/// Attaches a detached mount at `target`, nodev (a node the step makes in a cache
/// or a writable bind stays inert), and read-only when asked, mounts below it included.
fn bind_fd(fd: libc::c_int, target: &Path, readonly: bool) {
    sys::move_mount(fd, target).or_fail(|| format!("cannot mount {}", target.display()));
    sys::set_nodev(target, readonly).or_fail(|| {
        if readonly {
            format!("cannot make {} read-only and nodev", target.display())
        } else {
            format!("cannot make {} nodev", target.display())
        }
    });
}

fn bind_etc(target: &Path, fd: libc::c_int) {
    ensure_dir(Path::new("/etc"), 0o755);
    match target.symlink_metadata() {
        Err(_) => touch(target),
        // A symlink is followed inside the container; one that leads nowhere is left alone.
        Ok(m) if m.file_type().is_symlink() && target.metadata().is_err() => return,
        Ok(_) => {}
    }
    if target.metadata().map(|m| m.is_file()).unwrap_or(false) {
        bind(fd, target, true);
    }
}

pub(crate) fn step_env(env: &[String], home: &str) -> Vec<String> {
    let mut out = env.to_vec();
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !out.iter().any(|e| e.starts_with("HOME=")) {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Sets the step's `--ulimit`s on this process; the step inherits them.
fn apply_ulimits(spec: &ExecSpec) {
    for u in &spec.limits.ulimits {
        match u.apply() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => fail(format!(
                "cannot set --ulimit {u}: {e} (raising a hard limit above kiln's own needs root)"
            )),
            Err(e) => fail(format!("cannot set --ulimit {u}: {e}")),
        }
    }
}

/// Cuts what the step would otherwise share with the process that started kiln: a
/// new, empty session keyring (the keys of kiln's session are not the step's), and
/// every descriptor above 2 close-on-exec (a host file a shell left open on fd 7, or
/// one kiln was started with, never reaches the step; the setup-error pipe on fd 3 is
/// still usable until the exec).
fn leave_kilns_session() {
    // EPERM: a seccomp filter (Docker's default, with `chroot`) forbids keyctl, to the
    // step as well, so there is no keyring it could reach.
    match sys::join_new_session_keyring() {
        Err(e) if e.raw_os_error() != Some(libc::EPERM) => fail(format!("cannot join a new session keyring: {e}")),
        _ => {}
    }
    sys::cloexec_from(ERR_FD).or_fail(|| "cannot mark inherited descriptors close-on-exec".into());
}

/// Switches to `user` with Docker's default capabilities (every one it has when
/// `all_caps`).
fn drop_privileges(user: &User, all_caps: bool) {
    let last = crate::insecure::last_cap();
    let keep: Vec<u32> = if all_caps {
        crate::insecure::current_caps()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    let mut mask = 0u64;
    for cap in 0..=last {
        if keep.contains(&cap) {
            mask |= 1 << cap;
        } else {
            sys::drop_bounding_cap(cap).or_fail(|| format!("cannot drop capability {cap}"));
        }
    }
    // Supplementary groups cannot be set where setgroups is denied (a single-id
    // user namespace); the step then simply has none.
    if let Err(e) = sys::setgroups(&user.groups) {
        if e.raw_os_error() != Some(libc::EPERM) || !user.groups.is_empty() {
            fail(format!("cannot set supplementary groups: {e}"));
        }
    }
    let unmapped = |what: &str, id: u32, e: io::Error| -> String {
        if e.raw_os_error() == Some(libc::EINVAL) {
            format!(
                "cannot switch to {what} {id}: it is not mapped in kiln's user namespace \
                 (rootless without a subordinate id range maps only root)"
            )
        } else {
            format!("cannot switch to {what} {id}: {e}")
        }
    };
    if all_caps && user.uid != 0 {
        crate::insecure::keep_caps().or_fail(|| "cannot keep capabilities".into());
    }
    if let Err(e) = sys::setresgid(user.gid) {
        fail(unmapped("group", user.gid, e));
    }
    if let Err(e) = sys::setresuid(user.uid) {
        fail(unmapped("user", user.uid, e));
    }
    if user.uid == 0 {
        sys::capset(mask).or_fail(|| "cannot set capabilities".into());
    } else if all_caps {
        crate::insecure::raise_ambient(mask).or_fail(|| "cannot raise ambient capabilities".into());
    }
}

fn exec(args: &[String], env: &[String]) -> ! {
    let Some(cmd) = args.first() else {
        fail("no command given")
    };
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| fail("argument contains a NUL byte")))
        .collect();
    let envp: Vec<CString> = env.iter().filter_map(|e| CString::new(e.as_bytes()).ok()).collect();
    let start_err = |reason: String| -> ! { fail(format!("start\0{cmd}\0{reason}")) };
    sys::default_signals();
    if cmd.contains('/') {
        let p = sys::cstr(cmd).unwrap_or_else(|_| start_err("bad path".into()));
        let e = sys::execve(&p, &argv, &envp);
        start_err(e.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let full = format!("{dir}/{cmd}");
        let Ok(p) = sys::cstr(&full) else { continue };
        let e = sys::execve(&p, &argv, &envp);
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::EACCES) => denied = Some(e),
            _ => start_err(format!("{full}: {e}")),
        }
    }
    match denied {
        Some(e) => start_err(e.to_string()),
        None => start_err("executable file not found in $PATH".to_string()),
    }
}
