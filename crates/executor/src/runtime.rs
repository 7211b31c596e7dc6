//! An external OCI runtime (runc, crun) as the executor, as Buildah does: kiln writes a
//! bundle (`config.json` + `rootfs/`) and runs `RUNTIME run --bundle DIR ID`.
//!
//! The overlay is mounted in a private mount namespace that exists only for the
//! runtime's process: it cannot outlive the step on the host.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::helper::{step_env, DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS};
use crate::{ExecError, ExecSpec, Executor, Network, Security};

/// Capability names by number, for the OCI config.
const CAP_NAMES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// OciRuntime runs steps through `runc`, `crun` or another OCI runtime binary.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    binary: PathBuf,
}

impl OciRuntime {
    /// `name` is `runc`, `crun` (looked up in PATH) or a path to a runtime binary.
    pub fn new(name: &str) -> Result<Self, String> {
        let binary = if name.contains('/') {
            PathBuf::from(name)
        } else {
            let path = std::env::var_os("PATH")
                .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| format!("--runtime {name}: `{name}` is not installed (not found in PATH)"))?
        };
        if !binary.is_file() {
            return Err(format!("--runtime {name}: `{}` does not exist", binary.display()));
        }
        if !rustix::process::geteuid().is_root() || !kiln_snapshotter::ids::initial_userns() {
            return Err(format!(
                "--runtime {name} needs root; rootless builds use the built-in sandbox (leave --runtime out)"
            ));
        }
        Ok(OciRuntime { binary })
    }

    fn config(&self, spec: &ExecSpec) -> Result<Spec, ExecError> {
        // The tree the step starts from: the overlay's lower, or the copy snapshotter's clone.
        let lower = spec.rootfs.lower.first().unwrap_or(&spec.rootfs.upper);
        let user = crate::users::resolve(lower, spec.user.as_deref().unwrap_or("0")).map_err(ExecError::Setup)?;
        let insecure = spec.security == Security::Insecure;
        let cap_names: Vec<&str> = if insecure {
            crate::insecure::current_cap_names()
        } else {
            CAP_NAMES
                .iter()
                .filter(|(n, _)| DEFAULT_CAPS.contains(n))
                .map(|(_, s)| *s)
                .collect()
        };
        let caps = cap_names
            .iter()
            .map(|name| {
                serde_json::from_value::<Capability>(serde_json::Value::from(*name))
                    .map_err(|e| ExecError::Setup(format!("capability {name} has no OCI name: {e}")))
            })
            .collect::<Result<Capabilities, _>>()?;
        let namespace = |typ: LinuxNamespaceType, path: Option<&Path>| {
            let b = LinuxNamespaceBuilder::default().typ(typ);
            match path {
                Some(p) => b.path(p).build(),
                None => b.build(),
            }
        };
        let mut namespaces = vec![
            namespace(LinuxNamespaceType::Pid, None)?,
            namespace(LinuxNamespaceType::Ipc, None)?,
            namespace(LinuxNamespaceType::Uts, None)?,
            namespace(LinuxNamespaceType::Mount, None)?,
        ];
        match (spec.network, &spec.netns) {
            (Network::None, _) => namespaces.push(namespace(LinuxNamespaceType::Network, None)?),
            (Network::Private, Some(path)) => namespaces.push(namespace(LinuxNamespaceType::Network, Some(path))?),
            (Network::Private, None) => {
                return Err(ExecError::Setup("no network namespace was made for the step".into()))
            }
            (Network::Host, _) => {}
        }
        let mount = |dest: &Path, typ: &str, source: &Path, options: &[&str]| {
            MountBuilder::default()
                .destination(dest)
                .typ(typ)
                .source(source)
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
        };
        let bind_ro = |dest: &str, src: &Path| {
            mount(
                Path::new(dest),
                "bind",
                src,
                &["rbind", "ro", "nosuid", "nodev", "noexec"],
            )
        };
        let sys_access = if insecure { "rw" } else { "ro" };
        let mut mounts = vec![
            mount(
                "/proc".as_ref(),
                "proc",
                "proc".as_ref(),
                &["nosuid", "noexec", "nodev"],
            )?,
            mount(
                "/dev".as_ref(),
                "tmpfs",
                "tmpfs".as_ref(),
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            )?,
            mount(
                "/dev/pts".as_ref(),
                "devpts",
                "devpts".as_ref(),
                &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            )?,
            mount(
                "/dev/shm".as_ref(),
                "tmpfs",
                "shm".as_ref(),
                &[
                    "nosuid",
                    "noexec",
                    "nodev",
                    "mode=1777",
                    spec.limits.shm_option().as_str(),
                ],
            )?,
            mount(
                "/sys".as_ref(),
                "sysfs",
                "sysfs".as_ref(),
                &["nosuid", "noexec", "nodev", sys_access],
            )?,
            bind_ro("/etc/hosts", &spec.hosts)?,
            bind_ro("/etc/resolv.conf", &spec.resolv_conf)?,
        ];
        for m in &spec.mounts {
            let target = Path::new(&m.target);
            mounts.push(match &m.kind {
                crate::SpecMountKind::Bind { source, readonly } => mount(
                    target,
                    "bind",
                    source,
                    &["rbind", if *readonly { "ro" } else { "rw" }, "nodev"],
                )?,
                crate::SpecMountKind::Secret { index, executable } => {
                    let dir = spec.secrets_dir.as_deref().ok_or_else(|| {
                        ExecError::Setup(format!("no secrets directory for the secret at {}", m.target))
                    })?;
                    let options: &[&str] = if *executable {
                        &["bind", "ro", "nosuid", "nodev"]
                    } else {
                        &["bind", "ro", "nosuid", "nodev", "noexec"]
                    };
                    mount(target, "bind", &crate::secrets::secret_path(dir, *index), options)?
                }
                crate::SpecMountKind::Tmpfs { size } => {
                    let size = size.map(|n| format!("size={n}"));
                    let mut options = vec!["nosuid", "nodev", "mode=1777"];
                    options.extend(size.as_deref());
                    mount(target, "tmpfs", "tmpfs".as_ref(), &options)?
                }
            });
        }
        let mut env = step_env(&spec.env, &user.home);
        for (name, index) in &spec.secret_env {
            let value = spec
                .secrets
                .get(*index)
                .map(|s| String::from_utf8_lossy(&s.data).into_owned())
                .ok_or_else(|| ExecError::Setup(format!("no secret for ${name}")))?;
            env.retain(|e| e.split('=').next() != Some(name.as_str()));
            env.push(format!("{name}={value}"));
        }
        let mut rlimits = Vec::new();
        for u in &spec.limits.ulimits {
            let Some(name) = u.oci_name() else { continue };
            let typ = serde_json::from_value::<PosixRlimitType>(serde_json::Value::from(name))
                .map_err(|e| ExecError::Setup(format!("--ulimit {}: no OCI rlimit {name}: {e}", u.name)))?;
            let (soft, hard) = u.raw();
            rlimits.push(PosixRlimitBuilder::default().typ(typ).soft(soft).hard(hard).build()?);
        }
        let device_rule = |allow: bool, typ: Option<LinuxDeviceType>| {
            let b = LinuxDeviceCgroupBuilder::default().allow(allow).access("rwm");
            match typ {
                Some(t) => b.typ(t).build(),
                None => b.build(),
            }
        };
        // As Docker: every device denied but runc's default set (null, zero, full,
        // random, urandom, tty, ptmx/pts), so a node the step makes cannot be opened.
        // An insecure step (BuildKit's `WithInsecureSpec`) gets every device.
        let device_rules = if insecure {
            vec![
                device_rule(true, Some(LinuxDeviceType::C))?,
                device_rule(true, Some(LinuxDeviceType::B))?,
            ]
        } else {
            vec![device_rule(false, None)?]
        };
        let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
        if let Some(n) = spec.limits.pids {
            let limit = i64::try_from(n).map_err(|_| ExecError::Setup(format!("process limit {n} is too large")))?;
            resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
        }
        let root_caps = if user.uid == 0 || insecure {
            caps.clone()
        } else {
            Capabilities::new()
        };
        let mut capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(root_caps.clone())
            .permitted(root_caps);
        let mut linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .resources(resources.build()?);
        if insecure {
            // BuildKit's `WithInsecureSpec`: every capability (ambient too, so that a
            // non-root user has them), nothing masked, no filter, the host's devices.
            capabilities = capabilities.inheritable(caps.clone()).ambient(caps);
            linux = linux.devices(insecure_devices()?);
        } else {
            linux = linux
                .masked_paths(MASKED_PATHS.iter().map(|p| p.to_string()).collect::<Vec<_>>())
                .readonly_paths(READONLY_PATHS.iter().map(|p| p.to_string()).collect::<Vec<_>>())
                .seccomp(crate::seccomp::oci_profile(DEFAULT_CAPS)?);
        }
        let mut linux = linux.build()?;
        if insecure {
            // The builder fills these from `Linux::default()`; an insecure step has none.
            linux.set_masked_paths(None).set_readonly_paths(None);
        }
        let mut capabilities = capabilities.build()?;
        if !insecure {
            // The builder fills these from `LinuxCapabilities::default()`; a step has none.
            capabilities.set_inheritable(None).set_ambient(None);
        }
        let process = ProcessBuilder::default()
            .terminal(false)
            .user(
                UserBuilder::default()
                    .uid(user.uid)
                    .gid(user.gid)
                    .additional_gids(user.groups)
                    .build()?,
            )
            .args(spec.args.clone())
            .env(env)
            .cwd(if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() })
            .capabilities(capabilities)
            .no_new_privileges(true)
            .rlimits(rlimits)
            .build()?;
        let mut config = SpecBuilder::default()
            .version("1.0.2")
            .process(process)
            .root(
                RootBuilder::default()
                    .path(&spec.rootfs.target)
                    .readonly(false)
                    .build()?,
            )
            .hostname(spec.hostname.clone())
            .mounts(mounts)
            .linux(linux)
            .build()?;
        // The builder fills unset fields from `Spec::default()` (empty annotations).
        config.set_annotations(None);
        Ok(config)
    }
}

/// The host devices of an insecure step as OCI `linux.devices` (runc creates them).
fn insecure_devices() -> Result<Vec<LinuxDevice>, ExecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    for d in crate::insecure::host_devices() {
        let path = Path::new("/dev").join(&d);
        let Ok(md) = std::fs::metadata(&path) else { continue };
        let typ = if md.file_type().is_block_device() {
            LinuxDeviceType::B
        } else if md.file_type().is_char_device() {
            LinuxDeviceType::C
        } else {
            continue;
        };
        out.push(
            LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(i64::from(libc::major(md.rdev())))
                .minor(i64::from(libc::minor(md.rdev())))
                .file_mode(md.mode() & 0o777)
                .uid(0u32)
                .gid(0u32)
                .build()?,
        );
    }
    Ok(out)
}

impl Executor for OciRuntime {
    fn stacks_lowers(&self) -> bool {
        false
    }

    fn run(
        &self,
        spec: &ExecSpec,
        output: &mut dyn FnMut(&str),
        stop: &mut dyn FnMut(crate::StopFn),
    ) -> Result<i32, ExecError> {
        let bundle = spec
            .rootfs
            .target
            .parent()
            .ok_or_else(|| ExecError::Setup("root file system target has no parent".into()))?
            .to_path_buf();
        let id = format!(
            "kiln-{}-{}",
            std::process::id(),
            bundle.file_name().and_then(|n| n.to_str()).unwrap_or("step")
        );
        // The private network lives as long as this guard: until the container is gone.
        let (_net, spec) = crate::net::prepare(spec, Path::new("/proc/self/exe"))?;
        let spec = &*spec;
        let config = serde_json::to_vec_pretty(&self.config(spec)?).map_err(std::io::Error::other)?;
        // With secrets the config (it may hold `env=` secret values) is written to the
        // secrets tmpfs, which becomes the bundle; it never touches a disk.
        let mut secrets = crate::secrets::SecretsSetup::new(spec)?;
        let bundle = match &mut secrets {
            Some(s) => {
                s.add_private_file("config.json", config)?;
                PathBuf::from(std::ffi::OsStr::from_bytes(s.dir().as_bytes()))
            }
            None => {
                fs_err::write(bundle.join("config.json"), config)?;
                bundle
            }
        };
        let r = &spec.rootfs;
        let lower: Vec<String> = r.lower.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off",
            lower.join(":"),
            r.upper.display(),
            r.work.display()
        );
        let paths = r.lower.iter().chain([&r.upper, &r.work]);
        if let Some(bad) = paths.map(|p| p.display().to_string()).find(|p| p.contains([',', ':'])) {
            return Err(ExecError::Setup(format!(
                "cannot use {bad} in an overlay (a ',' or ':' in the path)"
            )));
        }
        let c_opts = CString::new(opts).map_err(|_| ExecError::Setup("NUL in a path".into()))?;
        let bind = r.lower.is_empty();
        let c_upper =
            CString::new(r.upper.display().to_string()).map_err(|_| ExecError::Setup("NUL in a path".into()))?;
        let c_target =
            CString::new(r.target.display().to_string()).map_err(|_| ExecError::Setup("NUL in a path".into()))?;

        let (out_r, out_w) = crate::sys::pipe()?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w.try_clone()?))
            .stderr(Stdio::from(out_w));
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) < 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) < 0
                    || (bind
                        && (libc::mount(
                            c_upper.as_ptr(),
                            c_target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ) < 0
                            // Before Linux 5.12 (no mount_setattr) the device cgroup
                            // alone denies device nodes.
                            || (crate::sys::set_nodev_raw(&c_target, false) < 0
                                && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS))))
                    || (!bind
                        && libc::mount(
                            c"overlay".as_ptr(),
                            c_target.as_ptr(),
                            c"overlay".as_ptr(),
                            // Device nodes in layers stay inert (runc's device cgroup
                            // denies them too).
                            libc::MS_NODEV,
                            c_opts.as_ptr().cast(),
                        ) < 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(s) = &secrets {
                    s.apply(false)?;
                }
                crate::sys::cloexec_from_raw(3);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = spawned.map_err(|source| ExecError::Spawn {
            helper: self.binary.clone(),
            source,
        })?;
        let (binary, cid) = (self.binary.clone(), id.clone());
        stop(Box::new(move || {
            let _ = Command::new(&binary)
                .args(["kill", "--all", &cid, "KILL"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }));
        crate::sys::stream_lines(out_r, output)?;
        let status = child.wait()?;
        // The container is gone when `run` returns; make sure its state is too.
        let _ = Command::new(&self.binary)
            .args(["delete", "--force", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests;
