//! The kiln side of the built-in sandbox: writes the spec, starts the helper, streams
//! the step's output and collects its exit code.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]
#![allow(unsafe_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::helper::ERR_FD;
use crate::{ExecError, ExecSpec, Executor, Isolation, Network, NoIsolation, HELPER_ARG};

/// Sandbox is the built-in namespace sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper: PathBuf,
    /// The isolation level, or why none can be had here (said at the first RUN step,
    /// so that builds without one still work).
    level: Result<Isolation, NoIsolation>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            helper: PathBuf::from("/proc/self/exe"),
            level: Ok(Isolation::Namespaces),
        }
    }
}

impl Sandbox {
    /// A sandbox whose helper is the binary at `helper` (it must call
    /// [`crate::run_helper_if_requested`] first thing in `main`).
    pub fn with_helper(helper: PathBuf) -> Self {
        Sandbox {
            helper,
            ..Sandbox::default()
        }
    }

    /// This sandbox with isolation `level` (or the error every RUN step gets).
    pub fn with_isolation(self, level: Result<Isolation, NoIsolation>) -> Self {
        Sandbox { level, ..self }
    }
}

impl Executor for Sandbox {
    fn run(
        &self,
        spec: &ExecSpec,
        output: &mut dyn FnMut(&str),
        stop: &mut dyn FnMut(crate::StopFn),
    ) -> Result<i32, ExecError> {
        let level = self.level.clone()?;
        let mut owned = spec.clone();
        owned.isolation = level;
        if level == Isolation::Chroot {
            if !owned.secrets.is_empty() {
                return Err(ExecError::Setup(
                    "RUN secrets need a private tmpfs, which isolation `chroot` cannot give (no mount \
                     namespace can be made here; see docs/security.md)"
                        .into(),
                ));
            }
            // No network namespace can be made: the step shares kiln's network, and so
            // its resolvers (not the private network's forwarder).
            if owned.network == Network::Private {
                owned.network = Network::Host;
                let host = std::path::Path::new("/etc/resolv.conf");
                if host.is_file() {
                    owned.resolv_conf = host.to_path_buf();
                }
            }
        }
        let spec = &owned;
        // The private network lives as long as this guard: until the helper is reaped.
        let (_net, spec) = crate::net::prepare(spec, &self.helper)?;
        let spec = &*spec;
        let state = spec
            .rootfs
            .target
            .parent()
            .map(|p| p.join("spec.json"))
            .ok_or_else(|| ExecError::Setup("root file system target has no parent".into()))?;
        fs_err::write(&state, serde_json::to_vec(spec).map_err(std::io::Error::other)?)?;

        let (out_r, out_w) = crate::sys::pipe()?;
        let (err_r, err_w) = crate::sys::pipe()?;
        let err_w_raw = std::os::fd::AsRawFd::as_raw_fd(&err_w);
        // Secrets go on a tmpfs in a mount namespace made for the helper (which makes
        // its own inside that one), never on disk.
        let secrets = crate::secrets::SecretsSetup::new(spec)?;
        let has_secrets = secrets.is_some();
        // Kept until the step is over: dropping it removes the step's cgroup.
        let pids = crate::limits::StepPids::new(&spec.limits);
        let enter_pids = pids.raw();
        let mut cmd = Command::new(&self.helper);
        cmd.arg(HELPER_ARG)
            .arg(&state)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w.try_clone()?))
            .stderr(Stdio::from(out_w));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(err_w_raw, ERR_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing else kiln has open reaches the helper.
                crate::sys::cloexec_from_raw(ERR_FD as libc::c_uint + 1);
                enter_pids.enter()?;
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if let Some(s) = &secrets {
                    s.apply(true)?;
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(cmd); // closes our copies of the write ends
        drop(err_w);
        let mut child = spawned.map_err(|source| {
            if has_secrets {
                ExecError::Setup(format!(
                    "cannot write the step's secrets to a private tmpfs (or start the sandbox helper `{}`): {source}",
                    self.helper.display()
                ))
            } else {
                ExecError::Spawn {
                    helper: self.helper.clone(),
                    source,
                }
            }
        })?;

        // Killing the helper kills pid 1 of the step's namespace (PDEATHSIG), and so
        // every process of the step; its mounts go with the mount namespace.
        let killer = match crate::stop::StepKiller::new(&child) {
            Ok(k) => k,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecError::Setup(format!("cannot hold on to the sandbox helper: {e}")));
            }
        };
        let k = killer.clone();
        stop(Box::new(move || k.kill()));
        crate::sys::stream_lines(out_r, output)?;
        let mut err = Vec::new();
        std::fs::File::from(err_r).read_to_end(&mut err)?;
        let status = child.wait()?;
        drop(killer);
        let _ = std::fs::remove_file(&state);
        drop(pids);
        if !err.is_empty() {
            let msg = String::from_utf8_lossy(&err).into_owned();
            if let Some(rest) = msg.strip_prefix("start\0") {
                let (command, reason) = rest.split_once('\0').unwrap_or((rest, ""));
                return Err(ExecError::Start {
                    command: format!("{command:?}"),
                    reason: reason.to_string(),
                });
            }
            if let Some(rest) = msg.strip_prefix(crate::helper::OVERLAY_TAG) {
                let (options, reason) = rest.split_once('\0').unwrap_or((rest, ""));
                return Err(ExecError::OverlayUnavailable {
                    options: options.to_string(),
                    reason: reason.to_string(),
                });
            }
            return Err(ExecError::Setup(msg));
        }
        match status.code() {
            Some(c) => Ok(c),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Ok(128 + status.signal().unwrap_or(0))
            }
        }
    }
}
