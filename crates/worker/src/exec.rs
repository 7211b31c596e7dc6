//! RUN: an exec op on an overlay of its input's tree, in the executor's sandbox.

use std::collections::VecDeque;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_executor::{ExecSpec, Network, Rootfs};
use kiln_graph::{ExecOp, NetworkMode};
use kiln_snapshotter::diff::CopyRun;
use kiln_snapshotter::{Layer, TarOptions};
use kiln_solver::VertexLog;

use crate::{SnapshotterKind, Value, Worker, WorkerError};

/// How the sandbox's error starts when the overlay cannot be mounted.
const OVERLAY_FAILED: &str = "cannot mount the overlay";

/// How many of a failed step's last output lines the error shows.
const TAIL_LINES: usize = 10;

/// The hostname every step sees.
pub const HOSTNAME: &str = "kilnsandbox";

/// Paths the sandbox mounts over; when the image lacks them the sandbox creates them
/// in the upper directory, and they are removed again before the layer is written.
const MOUNT_POINTS: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc/hostname", "etc", "proc", "dev"];

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
        match self.exec_on(op, &parent, log, copy) {
            Err(WorkerError::Exec(kiln_executor::ExecError::Setup(msg)))
                if !copy && self.snapshotter == SnapshotterKind::Auto && msg.starts_with(OVERLAY_FAILED) =>
            {
                log.line(format!(
                    "overlayfs is not usable here ({msg}); using the copy snapshotter"
                ));
                self.overlay_failed.store(true, Ordering::Relaxed);
                self.exec_on(op, &parent, log, true)
            }
            other => other,
        }
    }

    fn exec_on(&self, op: &ExecOp, parent: &[Layer], log: &VertexLog<'_>, copy: bool) -> Result<Value, WorkerError> {
        let Some(executor) = &self.executor else {
            return Err(WorkerError::Unsupported("RUN without a sandbox".to_string()));
        };
        let mut snap = self.snapshots.prepare(parent)?;
        let run = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.root.tmp_dir())
            .map_err(io_err(&self.root.tmp_dir()))?;
        let dir = run.path();
        for d in ["work", "rootfs", "empty"] {
            std::fs::create_dir(dir.join(d)).map_err(io_err(&dir.join(d)))?;
        }
        let parent_tree = snap.lower().map(Path::to_path_buf);
        let lower = parent_tree.clone().unwrap_or_else(|| dir.join("empty"));
        let (upper, cloned) = if copy {
            let tree = dir.join("tree");
            let c = CopyRun::clone_tree(parent_tree.as_deref(), &tree, &dir.join("cloned")).map_err(io_err(&tree))?;
            (tree, Some(c))
        } else {
            // The overlay's root directory takes the upper's attributes: make them the lower's.
            let root_md = std::fs::metadata(&lower).map_err(io_err(&lower))?;
            let upper = snap.upper().to_path_buf();
            if self.privileged {
                std::os::unix::fs::chown(&upper, Some(root_md.uid()), Some(root_md.gid())).map_err(io_err(&upper))?;
            }
            std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(root_md.mode() & 0o7777))
                .map_err(io_err(&upper))?;
            (upper, None)
        };
        let missing: Vec<&str> = MOUNT_POINTS
            .iter()
            .copied()
            .filter(|p| lower.join(p).symlink_metadata().is_err())
            .collect();

        let hosts = dir.join("hosts");
        let resolv = dir.join("resolv.conf");
        let hostname = dir.join("hostname");
        let network = match op.network {
            NetworkMode::None => Network::None,
            NetworkMode::Host => Network::Host,
            NetworkMode::Default => self.network,
        };
        write(
            &hosts,
            &format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        )?;
        write(&resolv, &resolv_conf(network))?;
        write(&hostname, &format!("{HOSTNAME}\n"))?;

        let spec = ExecSpec {
            args: op.args.clone(),
            env: op.env.clone(),
            cwd: op.cwd.clone(),
            user: op.user.clone(),
            hostname: HOSTNAME.to_string(),
            network,
            rootfs: Rootfs {
                lower: if copy { Vec::new() } else { vec![lower.clone()] },
                upper: upper.clone(),
                work: dir.join("work"),
                target: dir.join("rootfs"),
            },
            hosts,
            resolv_conf: resolv,
            hostname_file: hostname,
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
        )?;
        if code != 0 {
            return Err(WorkerError::RunFailed {
                code,
                tail: tail.into_iter().collect(),
            });
        }
        remove_mount_points(&upper, &lower, &missing, !copy);
        let layer = match cloned {
            Some(c) => {
                let opts = TarOptions::default();
                kiln_snapshotter::write_layer_from(&upper, &self.root.content(), self.compression, |w| {
                    c.write_diff(parent_tree.as_deref(), w, &opts).map(drop)
                })?
            }
            None => {
                snap.overlay_upper = true;
                snap.commit(&self.root.content(), None, self.compression)?
            }
        };
        drop(run);
        let mut layers = parent.to_vec();
        layers.push(layer);
        Ok(Value::Fs(Arc::new(layers)))
    }
}

fn write(path: &Path, text: &str) -> Result<(), WorkerError> {
    std::fs::write(path, text).map_err(io_err(path))
}

/// The step's resolv.conf: the host's, except that a step with its own network
/// namespace cannot reach the host's loopback resolvers.
fn resolv_conf(network: Network) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            let addr = f.next().unwrap_or_default();
            if network == Network::None && (addr.starts_with("127.") || addr == "::1") {
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
fn remove_mount_points(upper: &Path, lower: &Path, missing: &[&str], overlay: bool) {
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
        let (up, low) = (upper.join(parent), lower.join(parent));
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
