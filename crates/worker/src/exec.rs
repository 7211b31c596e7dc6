//! RUN: an exec op on an overlay of its input's tree, in the executor's sandbox.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::collections::VecDeque;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_executor::{ExecSpec, Network, Rootfs, SecretFile, Security, SpecMount, SpecMountKind};
use kiln_graph::{ExecOp, MountKind, NetworkMode, SecurityMode};
use kiln_snapshotter::{CommitOptions, CopySnapshotter, Layer, OverlaySnapshotter, Prepared, RootMount, Snapshotter};
use kiln_solver::VertexLog;

use crate::{SnapshotterKind, Value, Worker, WorkerError};

/// How many of a failed step's last output lines the error shows.
const TAIL_LINES: usize = 10;

/// The hostname every step sees.
pub const HOSTNAME: &str = "kilnsandbox";

/// Mount points the sandbox creates when the image lacks them and removes again before
/// the layer is written, as BuildKit's `MountStubsCleaner` does (its list, with
/// parents): `/dev`, `/proc` and `/sys`, made the same way, stay in the layer there too.
const MOUNT_POINTS: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc"];

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Worker {
    pub(crate) fn exec(&self, op: &ExecOp, inputs: &[Value], log: &VertexLog<'_>) -> Result<Value, WorkerError> {
        use std::sync::atomic::Ordering;
        let parent: Vec<Layer> = match inputs.first() {
            Some(Value::Fs(l)) => l.as_ref().clone(),
            _ => return Err(WorkerError::Malformed("exec op input 0 is not a filesystem".into())),
        };
        let copy = match self.snapshotter {
            SnapshotterKind::Copy => true,
            SnapshotterKind::Overlay => false,
            SnapshotterKind::Auto => self.overlay_failed.load(Ordering::Relaxed),
        };
        let backend = |copy: bool| -> Box<dyn Snapshotter> {
            if copy {
                Box::new(CopySnapshotter::new(self.snapshots.clone()))
            } else {
                Box::new(OverlaySnapshotter::new(self.snapshots.clone()))
            }
        };
        match self.exec_on(op, &parent, inputs, log, &*backend(copy)) {
            Err(WorkerError::Exec(e @ kiln_executor::ExecError::OverlayUnavailable { .. }))
                if !copy && self.snapshotter == SnapshotterKind::Auto =>
            {
                let msg = e.to_string();
                let msg = msg.strip_prefix("sandbox: ").unwrap_or(&msg);
                log.line(format!(
                    "overlayfs is not usable here ({msg}); using the copy snapshotter"
                ));
                self.overlay_failed.store(true, Ordering::Relaxed);
                self.exec_on(op, &parent, inputs, log, &*backend(true))
            }
            other => other,
        }
    }

    fn exec_on(
        &self,
        op: &ExecOp,
        parent: &[Layer],
        inputs: &[Value],
        log: &VertexLog<'_>,
        snapshotter: &dyn Snapshotter,
    ) -> Result<Value, WorkerError> {
        let Some(executor) = &self.executor else {
            return Err(WorkerError::Unsupported("RUN without a sandbox".to_string()));
        };
        let run = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.root.tmp_dir())
            .map_err(io_err(&self.root.tmp_dir()))?;
        let dir = run.path();
        let snap = snapshotter.prepare(parent, dir, executor.stacks_lowers())?;
        std::fs::create_dir(dir.join("rootfs")).map_err(io_err(&dir.join("rootfs")))?;
        let (lower, upper, work, overlay) = match snap.mount() {
            RootMount::Overlay { lower, upper, work } => (lower, upper, work, true),
            RootMount::Tree(tree) => (Vec::new(), tree, dir.join("work"), false),
        };
        let mut step = StepSecrets::default();
        let (mounts, _cache_locks) = self.prepare_mounts(op, inputs, dir, &mut step)?;
        // Mount points the sandbox may have to create, deepest first: theirs, then its own.
        let mut points: Vec<String> = Vec::new();
        for m in op.mounts.iter().filter(|m| !m.target.starts_with("/dev/")) {
            let mut p = Path::new(m.target.trim_start_matches('/'));
            loop {
                if p.as_os_str().is_empty() {
                    break;
                }
                points.push(p.to_string_lossy().into_owned());
                p = p.parent().unwrap_or(Path::new(""));
            }
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        points.dedup();
        points.extend(MOUNT_POINTS.iter().map(|s| s.to_string()));
        let missing: Vec<&str> = points
            .iter()
            .map(String::as_str)
            .filter(|p| snap.parent_entry(Path::new(p)).is_none())
            .collect();

        let hosts = dir.join("hosts");
        let resolv = dir.join("resolv.conf");
        let network = match op.network {
            NetworkMode::None => Network::None,
            NetworkMode::Host => Network::Host,
            NetworkMode::Default => self.network,
        };
        let mut hosts_text = format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        // `--add-host`, after the defaults, as BuildKit writes them.
        for h in &op.extra_hosts {
            hosts_text.push_str(&format!("{}\t{}\n", h.ip, h.host));
        }
        write(&hosts, &hosts_text)?;
        write(&resolv, &resolv_conf(network))?;

        let mut env = op.env.clone();
        // As BuildKit: a step with SSH mounts has SSH_AUTH_SOCK at the first one, unless
        // it sets the variable itself.
        if let Some(first) = op.mounts.iter().find(|m| matches!(m.kind, MountKind::Ssh { .. })) {
            if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={}", first.target));
            }
        }
        let secrets_dir = (!step.files.is_empty()).then(|| dir.join("secrets"));
        let spec = ExecSpec {
            args: op.args.clone(),
            env,
            cwd: op.cwd.clone(),
            user: op.user.clone(),
            hostname: HOSTNAME.to_string(),
            network,
            rootfs: Rootfs {
                lower,
                upper: upper.clone(),
                work,
                target: dir.join("rootfs"),
            },
            hosts,
            resolv_conf: resolv,
            mounts,
            secrets: std::mem::take(&mut step.files),
            secrets_dir,
            secret_env: std::mem::take(&mut step.env),
            limits: self.limits.clone(),
            netns: None,
            security: match op.security {
                SecurityMode::Sandbox => Security::Sandbox,
                SecurityMode::Insecure => Security::Insecure,
            },
            isolation: Default::default(),
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let code = executor.run(
            &spec,
            &mut |line| {
                log.line(line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            },
            &mut |stop| log.on_cancel(stop),
        );
        drop(spec);
        drop(step); // stops the SSH forwards
        let code = code?;
        if code != 0 {
            return Err(WorkerError::RunFailed {
                code,
                tail: tail.into_iter().collect(),
            });
        }
        remove_mount_points(&upper, &*snap, &missing, overlay);
        let opts = CommitOptions {
            clamp_mtime: self.clamp_mtime,
            compression: self.compression,
        };
        let layer = snap.commit(&self.root.content(), opts)?;
        drop(run);
        let mut layers = parent.to_vec();
        layers.push(layer);
        Ok(Value::Fs(Arc::new(layers)))
    }
}

/// Holds a `sharing=locked` cache mount for the duration of a step.
pub(crate) struct CacheLock(#[allow(dead_code)] std::fs::File);

/// A step's secrets and SSH forwards, while it runs.
#[derive(Default)]
struct StepSecrets {
    /// The values of its secret mounts (files on the sandbox's private tmpfs).
    files: Vec<SecretFile>,
    /// `env=` secrets: variable name, index into `files`.
    env: Vec<(String, usize)>,
    /// Sockets relaying to `--ssh` agents; dropping them stops them.
    forwards: Vec<crate::ssh::SshForward>,
}

impl Worker {
    /// Makes what each `RUN --mount` needs on the host, in `dir` or the cache-mount store.
    fn prepare_mounts(
        &self,
        op: &ExecOp,
        inputs: &[Value],
        dir: &Path,
        step: &mut StepSecrets,
    ) -> Result<(Vec<SpecMount>, Vec<CacheLock>), WorkerError> {
        let mut out = Vec::new();
        let mut locks = Vec::new();
        for (n, m) in op.mounts.iter().enumerate() {
            let kind = match &m.kind {
                MountKind::Bind {
                    input,
                    source,
                    readonly,
                } => {
                    let path = self.mount_source(inputs, *input, source, &dir.join(format!("mount-{n}")), !readonly)?;
                    SpecMountKind::Bind {
                        source: path,
                        readonly: *readonly,
                    }
                }
                MountKind::Cache {
                    id,
                    sharing,
                    readonly,
                    mode,
                    uid,
                    gid,
                    seed,
                    perms,
                } => {
                    let store = crate::cachemount::store(&self.root)?;
                    let given = perms.then_some((*mode, *uid, *gid));
                    let key = crate::cachemount::key(inputs, seed, given);
                    let (path, lock) = crate::cachemount::locate(&store, id, &key, *sharing)?;
                    locks.extend(lock.map(CacheLock));
                    // What BuildKit mounts: the seed's path (its own attributes: BuildKit
                    // ignores mode/uid/gid with `source=`); with mode/uid/gid and no
                    // `source=`, `/cache` of the seed after `mkdir /cache` with them (kept
                    // as it is when the seed has one); unseeded, a new directory (mode,
                    // uid, gid as given, else 0755 root). Modes as `mkdir`'s: 0o777 bits.
                    let made = Some((*mode & 0o777, *uid, *gid));
                    crate::cachemount::create(&path, self.privileged, |tmp| match seed {
                        Some((input, source)) if *perms && source == "/" => {
                            match self.mount_source(inputs, *input, "/cache", tmp, true) {
                                Ok(_) => Ok(None),
                                Err(WorkerError::SourceNotFound { .. }) => Ok(made),
                                Err(e) => Err(e),
                            }
                        }
                        Some((input, source)) => self.mount_source(inputs, *input, source, tmp, true).map(|_| None),
                        None => Ok(made),
                    })?;
                    SpecMountKind::Bind {
                        source: path,
                        readonly: *readonly,
                    }
                }
                MountKind::Tmpfs { size } => SpecMountKind::Tmpfs { size: *size },
                MountKind::File { data, mode } => {
                    let path = dir.join(format!("file-{n}"));
                    std::fs::write(&path, data).map_err(io_err(&path))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(io_err(&path))?;
                    SpecMountKind::Bind {
                        source: path,
                        readonly: true,
                    }
                }
                MountKind::Secret {
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                    env,
                } => {
                    let Some(value) = self.secrets.secret(id) else {
                        if *required {
                            return Err(WorkerError::NotGiven {
                                what: "secret",
                                id: id.clone(),
                                flag: format!("--secret id={id}[,src=FILE|,env=VARIABLE]"),
                            });
                        }
                        continue; // an optional secret that was not given is left out, as BuildKit does
                    };
                    let bad = |reason: String| WorkerError::BadSecret {
                        what: "secret",
                        id: id.clone(),
                        reason,
                    };
                    if (*uid, *gid) != (0, 0) && !kiln_snapshotter::ids::can_chown() {
                        return Err(bad(format!(
                            "cannot give its file uid={uid},gid={gid}: rootless kiln without a subordinate id range maps only root"
                        )));
                    }
                    let index = step.files.len();
                    step.files.push(SecretFile {
                        data: value.to_vec(),
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    });
                    if let Some(name) = env {
                        if std::str::from_utf8(value).is_err() || value.contains(&0) {
                            return Err(bad(format!(
                                "cannot be the value of ${name}: it is not text (or holds a NUL byte)"
                            )));
                        }
                        step.env.push((name.clone(), index));
                    }
                    if index == 0 {
                        let d = dir.join("secrets");
                        std::fs::create_dir(&d).map_err(io_err(&d))?;
                    }
                    // With `env=` and no target the secret is only the variable.
                    if m.target.is_empty() {
                        continue;
                    }
                    SpecMountKind::Secret {
                        index,
                        executable: mode & 0o111 != 0,
                    }
                }
                MountKind::Ssh {
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(agent) = self.secrets.ssh_socket(id) else {
                        if *required {
                            return Err(WorkerError::NotGiven {
                                what: "SSH agent",
                                id: id.clone(),
                                flag: match id.as_str() {
                                    "default" => "--ssh default[=SOCKET] (default: $SSH_AUTH_SOCK)".to_string(),
                                    _ => format!("--ssh {id}=SOCKET"),
                                },
                            });
                        }
                        continue; // as BuildKit: an optional agent that was not given is left out
                    };
                    let bad = |reason: String| WorkerError::BadSecret {
                        what: "SSH agent",
                        id: id.clone(),
                        reason,
                    };
                    if (*uid, *gid) != (0, 0) && !kiln_snapshotter::ids::can_chown() {
                        return Err(bad(format!(
                            "cannot give its socket uid={uid},gid={gid}: rootless kiln without a subordinate id range maps only root"
                        )));
                    }
                    let sock = dir.join(format!("ssh-{n}.sock"));
                    let fwd = crate::ssh::SshForward::start(&sock, agent, *uid, *gid, *mode)
                        .map_err(|e| bad(format!("cannot make its socket {}: {e}", sock.display())))?;
                    step.forwards.push(fwd);
                    SpecMountKind::Bind {
                        source: sock,
                        readonly: false,
                    }
                }
            };
            out.push(SpecMount {
                target: m.target.clone(),
                kind,
            });
        }
        Ok((out, locks))
    }

    /// The host path a bind mount shows: `source` inside input `input`. Build-context
    /// sources are copied with `.dockerignore` applied (ignored files are not there, as
    /// with BuildKit's context transfer); a writable mount gets a private copy, so the
    /// step's writes are discarded.
    fn mount_source(
        &self,
        inputs: &[Value],
        input: u32,
        source: &str,
        scratch: &Path,
        writable: bool,
    ) -> Result<PathBuf, WorkerError> {
        let rel = crate::copy::clean_abs(source);
        let bad = |reason: String| WorkerError::BadSource {
            path: source.to_string(),
            reason,
        };
        match inputs.get(input as usize) {
            Some(Value::Local { dir: ctx, ignore, .. }) => {
                let from = kiln_snapshotter::resolve_in_root(ctx, &rel, true).map_err(bad)?;
                if from.symlink_metadata().is_err() {
                    return Err(WorkerError::SourceNotFound {
                        path: source.to_string(),
                        source_label: "the build context".to_string(),
                    });
                }
                copy_filtered(ctx, &from, scratch, Some(ignore)).map_err(io_err(scratch))?;
                Ok(scratch.to_path_buf())
            }
            Some(Value::Fs(layers)) => {
                let tree = match self.snapshots.merged(layers)? {
                    Some(t) => t,
                    None => {
                        std::fs::create_dir_all(scratch).map_err(io_err(scratch))?;
                        return Ok(scratch.to_path_buf());
                    }
                };
                let from = kiln_snapshotter::resolve_in_root(&tree, &rel, true).map_err(bad)?;
                if from.symlink_metadata().is_err() {
                    return Err(WorkerError::SourceNotFound {
                        path: source.to_string(),
                        source_label: "the mount's `from`".to_string(),
                    });
                }
                if !writable {
                    return Ok(from);
                }
                copy_filtered(&tree, &from, scratch, None).map_err(io_err(scratch))?;
                Ok(scratch.to_path_buf())
            }
            _ => Err(WorkerError::Malformed(format!("mount input {input} is missing"))),
        }
    }
}

/// Copies `from` (inside `root`) to `to`, keeping modes, owners and times, skipping what
/// `ignore` excludes (paths relative to `root`).
fn copy_filtered(
    root: &Path,
    from: &Path,
    to: &Path,
    ignore: Option<&kiln_context::dockerignore::PatternMatcher>,
) -> std::io::Result<()> {
    let md = std::fs::metadata(from)?;
    if md.is_dir() {
        std::fs::create_dir(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
            if ignore.is_some_and(|m| m.is_excluded(&rel)) {
                continue;
            }
            let ft = e.file_type()?;
            let dest = to.join(e.file_name());
            if ft.is_dir() {
                copy_filtered(root, &p, &dest, ignore)?;
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&p)?, &dest)?;
            } else if ft.is_file() {
                std::fs::copy(&p, &dest)?;
                let m = e.metadata()?;
                if kiln_snapshotter::ids::can_chown() {
                    let _ = std::os::unix::fs::lchown(&dest, Some(m.uid()), Some(m.gid()));
                }
                let _ = kiln_snapshotter::set_mtime(&dest, m.mtime());
            }
        }
    } else {
        std::fs::copy(from, to)?;
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    if kiln_snapshotter::ids::can_chown() {
        let _ = std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()));
    }
    let _ = kiln_snapshotter::set_mtime(to, md.mtime());
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), WorkerError> {
    std::fs::write(path, text).map_err(io_err(path))
}

/// The step's resolv.conf: the host's, except that a step with its own network
/// namespace cannot reach the host's loopback resolvers, and a private network's only
/// resolver is its forwarder (which forwards to the host's, wherever they are).
fn resolv_conf(network: Network) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let mut servers = 0;
    if network == Network::Private {
        out.push_str(&format!("nameserver {}\n", kiln_executor::PRIVATE_DNS));
        servers += 1;
    }
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            let addr = f.next().unwrap_or_default();
            if network == Network::Private || (network == Network::None && (addr.starts_with("127.") || addr == "::1"))
            {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 && network == Network::Host {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Removes what the sandbox created only to mount over (empty files and directories
/// that the lower tree does not have), restoring the parent directory's mtime.
fn remove_mount_points(upper: &Path, snap: &dyn Prepared, missing: &[&str], overlay: bool) {
    let mut parents = std::collections::BTreeSet::new();
    for rel in missing {
        let p: PathBuf = upper.join(rel);
        let Ok(md) = p.symlink_metadata() else { continue };
        let removed = if md.is_dir() {
            std::fs::remove_dir(&p).is_ok()
        } else if md.is_file() && md.len() == 0 {
            std::fs::remove_file(&p).is_ok()
        } else {
            false
        };
        if let Some(parent) = Path::new(rel).parent().filter(|p| removed && !p.as_os_str().is_empty()) {
            parents.insert(parent.to_path_buf());
        }
    }
    for parent in parents.iter().rev() {
        let up = upper.join(parent);
        let Some(low) = snap.parent_entry(parent) else { continue };
        let (Ok(u), Ok(l)) = (up.symlink_metadata(), low.symlink_metadata()) else {
            continue;
        };
        if u.mode() != l.mode() || u.uid() != l.uid() || u.gid() != l.gid() {
            continue;
        }
        let names = |d: &Path| -> Option<std::collections::BTreeSet<std::ffi::OsString>> {
            std::fs::read_dir(d)
                .ok()?
                .map(|e| e.ok().map(|e| e.file_name()))
                .collect()
        };
        if overlay {
            // A directory copied up only to hold a mount point carries nothing of its own.
            if names(&up).is_some_and(|n| n.is_empty()) {
                let _ = std::fs::remove_dir(&up);
            }
        } else if names(&up).is_some() && names(&up) == names(&low) {
            // Only the mount point came and went: the directory keeps the lower's times.
            let t = rustix::fs::Timespec {
                tv_sec: l.mtime(),
                tv_nsec: l.mtime_nsec(),
            };
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                &up,
                &rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
        }
    }
}
