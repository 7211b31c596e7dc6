//! An external OCI runtime (runc, crun) as the executor, as Buildah does: kiln writes a
//! bundle (`config.json` + `rootfs/`) and runs `RUNTIME run --bundle DIR ID`.
//!
//! The overlay is mounted in a private mount namespace that exists only for the
//! runtime's process: it cannot outlive the step on the host.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helper::{step_env, DEFAULT_CAPS};
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
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 || !kiln_snapshotter::ids::initial_userns() {
            return Err(format!(
                "--runtime {name} needs root; rootless builds use the built-in sandbox (leave --runtime out)"
            ));
        }
        Ok(OciRuntime { binary })
    }

    fn config(&self, spec: &ExecSpec) -> Result<serde_json::Value, ExecError> {
        // The tree the step starts from: the overlay's lower, or the copy snapshotter's clone.
        let lower = spec.rootfs.lower.first().unwrap_or(&spec.rootfs.upper);
        let user = crate::users::resolve(lower, spec.user.as_deref().unwrap_or("0")).map_err(ExecError::Setup)?;
        let insecure = spec.security == Security::Insecure;
        let caps: Vec<&str> = if insecure {
            crate::insecure::current_cap_names()
        } else {
            CAP_NAMES
                .iter()
                .filter(|(n, _)| DEFAULT_CAPS.contains(n))
                .map(|(_, s)| *s)
                .collect()
        };
        let mut namespaces = vec![
            json!({"type": "pid"}),
            json!({"type": "ipc"}),
            json!({"type": "uts"}),
            json!({"type": "mount"}),
        ];
        match (spec.network, &spec.netns) {
            (Network::None, _) => namespaces.push(json!({"type": "network"})),
            (Network::Private, Some(path)) => namespaces.push(json!({"type": "network", "path": path})),
            (Network::Private, None) => {
                return Err(ExecError::Setup("no network namespace was made for the step".into()))
            }
            (Network::Host, _) => {}
        }
        let bind_ro = |dest: &str, src: &Path| json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]});
        let cwd = if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() };
        let mounts: Vec<serde_json::Value> = [
                json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
                json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
                json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
                json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
                json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": if insecure { vec!["nosuid", "noexec", "nodev", "rw"] } else { vec!["nosuid", "noexec", "nodev", "ro"] }}),
                bind_ro("/etc/hosts", &spec.hosts),
                bind_ro("/etc/resolv.conf", &spec.resolv_conf),
                bind_ro("/etc/hostname", &spec.hostname_file)
        ].into_iter().chain(spec.mounts.iter().map(|m| match &m.kind {
                crate::SpecMountKind::Bind { source, readonly } => json!({
                    "destination": m.target, "type": "bind", "source": source,
                    "options": ["rbind", if *readonly { "ro" } else { "rw" }, "nodev"]
                }),
                crate::SpecMountKind::Secret { index, executable } => json!({
                    "destination": m.target, "type": "bind",
                    "source": spec.secrets_dir.as_deref().map(|d| crate::secrets::secret_path(d, *index)),
                    "options": if *executable { vec!["bind", "ro", "nosuid", "nodev"] } else { vec!["bind", "ro", "nosuid", "nodev", "noexec"] }
                }),
                crate::SpecMountKind::Tmpfs { size } => json!({
                    "destination": m.target, "type": "tmpfs", "source": "tmpfs",
                    "options": match size {
                        Some(n) => vec!["nosuid".to_string(), "nodev".to_string(), "mode=1777".to_string(), format!("size={n}")],
                        None => vec!["nosuid".to_string(), "nodev".to_string(), "mode=1777".to_string()],
                    }
                }),
            })).collect();
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
        let rlimits: Vec<serde_json::Value> = spec
            .limits
            .ulimits
            .iter()
            .filter_map(|u| {
                let (soft, hard) = u.raw();
                Some(json!({"type": u.oci_name()?, "soft": soft, "hard": hard}))
            })
            .collect();
        // As Docker: every device denied but runc's default set (null, zero, full,
        // random, urandom, tty, ptmx/pts), so a node the step makes cannot be opened.
        let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
        if let Some(n) = spec.limits.pids {
            resources["pids"] = json!({"limit": n});
        }
        let root_caps = if user.uid == 0 || insecure {
            caps.clone()
        } else {
            vec![]
        };
        let mut capabilities = json!({"bounding": caps, "effective": root_caps, "permitted": root_caps});
        let mut linux = json!({
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            "seccomp": crate::seccomp::oci_profile(DEFAULT_CAPS),
        });
        if insecure {
            // BuildKit's `WithInsecureSpec`: every capability (ambient too, so that a
            // non-root user has them), nothing masked, no filter, the host's devices.
            capabilities["inheritable"] = json!(caps);
            capabilities["ambient"] = json!(caps);
            linux = json!({
                "namespaces": linux["namespaces"].take(),
                "devices": insecure_devices(),
                "resources": linux["resources"].take(),
            });
            linux["resources"]["devices"] = json!([
                {"allow": true, "type": "c", "access": "rwm"},
                {"allow": true, "type": "b", "access": "rwm"}
            ]);
        }
        Ok(json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.groups},
                "args": spec.args,
                "env": env,
                "cwd": cwd,
                "capabilities": capabilities,
                "noNewPrivileges": true,
                "rlimits": rlimits
            },
            "root": {"path": spec.rootfs.target, "readonly": false},
            "hostname": spec.hostname,
            "mounts": mounts,
            "linux": linux,
        }))
    }
}

/// The host devices of an insecure step as OCI `linux.devices` (runc creates them).
fn insecure_devices() -> Vec<serde_json::Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    crate::insecure::host_devices()
        .into_iter()
        .filter_map(|d| {
            let path = Path::new("/dev").join(&d);
            let md = std::fs::metadata(&path).ok()?;
            let kind = if md.file_type().is_block_device() {
                "b"
            } else if md.file_type().is_char_device() {
                "c"
            } else {
                return None;
            };
            Some(json!({
                "path": path, "type": kind,
                "major": libc::major(md.rdev()), "minor": libc::minor(md.rdev()),
                "fileMode": md.mode() & 0o777, "uid": 0, "gid": 0
            }))
        })
        .collect()
}

impl Executor for OciRuntime {
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
                std::fs::write(bundle.join("config.json"), config)?;
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
