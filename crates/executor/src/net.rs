//! The private network of a RUN step: a network namespace of its own with outbound
//! access and no way to the host's loopback, as root and rootless.
//!
//! A small re-executed holder process (`<exe> __kiln-netns`) creates the namespace and
//! brings `lo` up; slirp4netns, a user-mode TCP/IP stack, attaches a tap device to that
//! namespace (by the holder's pid) and turns the step's packets into ordinary sockets
//! opened by kiln's user on the host. The step joins the namespace by its path
//! (`/proc/PID/ns/net`): the built-in sandbox with setns(2), an OCI runtime through
//! `linux.namespaces` in config.json.
//!
//! slirp4netns runs with `--disable-host-loopback` (its gateway 10.0.2.2 would otherwise
//! lead to the host's 127.0.0.1), `--enable-sandbox` and `--enable-seccomp` (it parses the
//! step's packets). Abstract unix sockets are scoped by network namespace, so the host's
//! are out of reach too. Both helpers end with the step: [`PrivateNet`]'s drop kills them,
//! and if kiln dies first the holder gets SIGKILL (parent-death signal) and slirp4netns
//! exits when its exit descriptor, held only by kiln, closes.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::{ExecError, ExecSpec, Network, Security};

/// The argument that turns a re-executed binary into the network namespace holder.
pub const NETNS_ARG: &str = "__kiln-netns";

/// The DNS forwarder slirp4netns serves inside the step's namespace (it forwards to the
/// host's resolvers, wherever they are).
pub const PRIVATE_DNS: &str = "10.0.2.3";

/// The step's network interface (10.0.2.100/24, gateway 10.0.2.2).
const IFACE: &str = "eth0";
/// slirp4netns' recommended MTU: fewer, larger packets through the user-mode stack.
const MTU: &str = "--mtu=65520";
/// The descriptors slirp4netns is given: it exits when the first reaches end of file and
/// writes to the second once the interface is configured.
const EXIT_FD: i32 = 3;
const READY_FD: i32 = 4;

/// PrivateNet is a step's network namespace with slirp4netns attached; dropping it ends
/// both helpers.
#[derive(Debug)]
pub(crate) struct PrivateNet {
    holder: Child,
    /// Kept open while the holder should live (it exits on end of file).
    holder_stdin: Option<ChildStdin>,
    slirp: Option<Child>,
    /// slirp4netns' exit descriptor: kiln's end, closed on drop.
    exit: Option<OwnedFd>,
    path: PathBuf,
}

/// Where slirp4netns is, from `PATH` (or Debian's default path).
fn find_slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
}

fn net_err(what: &str) -> impl FnOnce(io::Error) -> ExecError + '_ {
    move |e| ExecError::Network(format!("{what}: {e}"))
}

/// Sets the parent-death signal in a child about to exec.
fn die_with_parent() -> io::Result<()> {
    // rustix's prctl is the bare system call: async-signal-safe.
    crate::sys::kill_with_parent()
}

impl PrivateNet {
    /// Creates the namespace with `helper` (a binary that calls
    /// [`crate::run_helper_if_requested`]) as its holder and attaches slirp4netns.
    pub(crate) fn start(helper: &Path) -> Result<PrivateNet, ExecError> {
        let slirp4netns = find_slirp4netns().ok_or(ExecError::NoSlirp4netns)?;
        let mut cmd = Command::new(helper);
        cmd.arg(NETNS_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: only prctl between fork and exec.
        unsafe { cmd.pre_exec(die_with_parent) };
        let mut holder = cmd.spawn().map_err(|source| ExecError::Spawn {
            helper: helper.to_path_buf(),
            source,
        })?;
        let holder_stdin = holder.stdin.take();
        // The holder answers `ok` once the namespace exists, or says why not, and closes
        // its stdout either way.
        let mut answer = String::new();
        if let Some(mut out) = holder.stdout.take() {
            let _ = out.read_to_string(&mut answer);
        }
        if answer.trim() != "ok" {
            let _ = holder.kill();
            let _ = holder.wait();
            let why = if answer.trim().is_empty() {
                "the namespace holder ended without a word".to_string()
            } else {
                answer.trim().to_string()
            };
            return Err(ExecError::Network(why));
        }
        let path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));

        // From here on, dropping `net` ends what was started.
        let mut net = PrivateNet {
            holder,
            holder_stdin,
            slirp: None,
            exit: None,
            path,
        };
        net.attach(&slirp4netns)?;
        Ok(net)
    }

    /// Starts slirp4netns on the holder's namespace and waits until it has configured
    /// the interface.
    fn attach(&mut self, slirp4netns: &Path) -> Result<(), ExecError> {
        let (exit_r, exit_w) = crate::sys::pipe().map_err(net_err("pipe"))?;
        let (ready_r, ready_w) = crate::sys::pipe().map_err(net_err("pipe"))?;
        let mut ready_r = std::fs::File::from(ready_r);
        // The child's ends, moved above the descriptors they go to in slirp4netns so that
        // the moves cannot clobber each other (the originals close here: kiln must hold
        // no write end of the ready pipe, or a failed start would never read as such).
        let exit_r = above_stdio(exit_r)?;
        let ready_w = above_stdio(ready_w)?;
        // slirp4netns' messages go to an anonymous file, read only if it fails.
        let log = rustix::fs::memfd_create("kiln-slirp4netns", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| net_err("memfd_create")(e.into()))?;
        let mut log = std::fs::File::from(log);
        let (exit_raw, ready_raw) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
        let mut cmd = Command::new(slirp4netns);
        cmd.args([
            "--configure",
            MTU,
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
        ])
        .arg(format!("--exit-fd={EXIT_FD}"))
        .arg(format!("--ready-fd={READY_FD}"))
        .arg(self.holder.id().to_string())
        .arg(IFACE)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().map_err(net_err("dup"))?))
        .stderr(Stdio::from(log.try_clone().map_err(net_err("dup"))?));
        // SAFETY: only dup2 and prctl between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(exit_raw, EXIT_FD) < 0 || libc::dup2(ready_raw, READY_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                die_with_parent()
            });
        }
        let spawned = cmd.spawn();
        drop(cmd);
        drop((exit_r, ready_w));
        let slirp = self
            .slirp
            .insert(spawned.map_err(|e| ExecError::Network(format!("cannot start `{}`: {e}", slirp4netns.display())))?);
        self.exit = Some(exit_w);
        let mut ready = [0u8; 1];
        let n = loop {
            match ready_r.read(&mut ready) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r.unwrap_or(0),
            }
        };
        if n == 1 {
            return Ok(());
        }
        let status = slirp.wait().map_err(net_err("wait for slirp4netns"))?;
        let mut text = String::new();
        let _ = log.rewind().and_then(|()| log.read_to_string(&mut text));
        let text: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("WARNING: Support for seccomp is experimental"))
            .collect();
        let hint = if text.iter().any(|l| l.contains("/dev/net/tun")) {
            " (slirp4netns needs /dev/net/tun readable and writable by kiln's user: mode 0666, as udev sets it)"
        } else {
            ""
        };
        Err(ExecError::Network(format!(
            "`{}` failed ({status}): {}{hint}",
            slirp4netns.display(),
            text.join("; ")
        )))
    }

    /// The namespace's path, for setns(2) or an OCI runtime's config.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Private networks of finished steps, ready for the next step of this build.
///
/// Starting a namespace holder and slirp4netns costs tens of milliseconds, more than a
/// trivial RUN step itself; BuildKit keeps a pool of network namespaces for the same
/// reason. A namespace is only handed to one step at a time (parallel steps get their
/// own, so two steps never share ports), and only after every process of the previous
/// step is gone (the guard is dropped after the step is reaped). Without
/// `CAP_NET_ADMIN` (not in Docker's default set) a step cannot change the namespace's
/// addresses, routes or firewall, so the next step finds it as it was made; a
/// `--security=insecure` step, which can, never returns its namespace to the pool.
///
/// Pooled networks end with the thread that started them (their parent-death signal
/// follows that thread), which the solver keeps until no step is left to start; a dead
/// one is dropped when it is next taken.
static POOL: std::sync::Mutex<Vec<PrivateNet>> = std::sync::Mutex::new(Vec::new());

/// NetLease is a step's private network: back to the pool when the step is over, or
/// ended with it.
#[derive(Debug)]
pub(crate) struct NetLease {
    net: Option<PrivateNet>,
    reusable: bool,
}

impl Drop for NetLease {
    fn drop(&mut self) {
        let Some(mut net) = self.net.take() else { return };
        if self.reusable && net.alive() {
            POOL.lock().unwrap_or_else(|e| e.into_inner()).push(net);
        }
    }
}

impl PrivateNet {
    /// Whether both helpers still run (a pooled network may have lost them).
    fn alive(&mut self) -> bool {
        let slirp = self.slirp.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        slirp && matches!(self.holder.try_wait(), Ok(None))
    }
}

/// A live network from the pool, or a new one.
fn lease(helper: &Path) -> Result<PrivateNet, ExecError> {
    loop {
        let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(mut net) => {
                if net.alive() {
                    return Ok(net);
                }
            }
            None => return PrivateNet::start(helper),
        }
    }
}

/// For a [`Network::Private`] step: its network (the step's until the lease is dropped)
/// and the spec naming its namespace; other steps are passed through.
pub(crate) fn prepare<'a>(
    spec: &'a ExecSpec,
    helper: &Path,
) -> Result<(Option<NetLease>, Cow<'a, ExecSpec>), ExecError> {
    if spec.network != Network::Private {
        return Ok((None, Cow::Borrowed(spec)));
    }
    let reusable = spec.security == Security::Sandbox;
    let net = if reusable {
        lease(helper)?
    } else {
        PrivateNet::start(helper)?
    };
    let mut spec = spec.clone();
    spec.netns = Some(net.path().to_path_buf());
    Ok((
        Some(NetLease {
            net: Some(net),
            reusable,
        }),
        Cow::Owned(spec),
    ))
}

/// `fd` moved to a descriptor number of 10 or more (close-on-exec).
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, ExecError> {
    rustix::io::fcntl_dupfd_cloexec(&fd, 10).map_err(|e| net_err("dup")(e.into()))
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        self.exit.take();
        if let Some(slirp) = &mut self.slirp {
            let _ = slirp.kill();
            let _ = slirp.wait();
        }
        self.holder_stdin.take();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Joins the network namespace at `path` (the sandbox helper, before it unshares the
/// rest).
pub(crate) fn enter(path: &Path) -> io::Result<()> {
    let ns = fs_err::File::open(path)?;
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(io::Error::from)
}

/// Moves this (single-threaded) process into a new user namespace mapping root to itself
/// and a new network namespace owned by it.
fn owned_net_namespace() -> io::Result<()> {
    crate::sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)?;
    for (path, data) in [
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", "0 0 1"),
        ("/proc/self/gid_map", "0 0 1"),
    ] {
        fs_err::write(path, data)?;
    }
    Ok(())
}

/// The namespace holder (`<exe> __kiln-netns`): creates a network namespace, brings `lo`
/// up, says `ok` on stdout and then lives until its stdin closes. Runs single-threaded,
/// first thing in `main`.
pub(crate) fn holder_main() -> i32 {
    // Had kiln died before this, stdin (whose only writer was kiln) reads end of file.
    let _ = crate::sys::kill_with_parent();
    let mut out = io::stdout().lock();
    if let Err(e) = crate::sys::unshare(libc::CLONE_NEWNET) {
        let _ = writeln!(out, "cannot create a network namespace: {e}");
        return 1;
    }
    if let Err(e) = crate::sys::loopback_up() {
        // Root without CAP_NET_ADMIN (a container given CAP_SYS_ADMIN only: Docker drops
        // NET_ADMIN by default) cannot configure a namespace owned by its own user
        // namespace. One it owns through a new user namespace (root mapped to itself) it
        // can; kiln, root in the parent namespace and its owner, keeps every capability
        // over it, so the step and slirp4netns join it as before.
        let retried = e.raw_os_error() == Some(libc::EPERM)
            && rustix::process::geteuid().is_root()
            && owned_net_namespace().and_then(|()| crate::sys::loopback_up()).is_ok();
        if !retried {
            let _ = writeln!(out, "cannot bring up lo in the step's network namespace: {e}");
            return 1;
        }
    }
    let _ = writeln!(out, "ok");
    let _ = out.flush();
    drop(out);
    // Close stdout so that kiln's read of the answer ends.
    // SAFETY: fd 1 is not used again by this process.
    unsafe { libc::close(1) };
    let mut buf = [0u8; 64];
    let mut stdin = io::stdin().lock();
    while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    0
}
