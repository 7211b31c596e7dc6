//! RUN: an exec op on an overlay of its input's tree, in the executor's sandbox.

use std::collections::VecDeque;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_executor::{ExecSpec, Network, Rootfs};
use kiln_graph::{ExecOp, NetworkMode};
use kiln_snapshotter::Layer;
use kiln_solver::VertexLog;

use crate::{Value, Worker, WorkerError};

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
        let Some(executor) = &self.executor else {
            return Err(WorkerError::Unsupported("RUN without a sandbox".to_string()));
        };
        let parent: Vec<Layer> = match inputs.first() {
            Some(Value::Fs(l)) => l.as_ref().clone(),
            _ => return Err(WorkerError::Malformed("exec op input 0 is not a filesystem".into())),
        };
        let mut snap = self.snapshots.prepare(&parent)?;
        let run = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.root.tmp_dir())
            .map_err(io_err(&self.root.tmp_dir()))?;
        let dir = run.path();
        for d in ["work", "rootfs", "empty"] {
            std::fs::create_dir(dir.join(d)).map_err(io_err(&dir.join(d)))?;
        }
        let lower = match snap.lower() {
            Some(l) => l.to_path_buf(),
            None => dir.join("empty"),
        };
        // The overlay's root directory takes the upper's attributes: make them the lower's.
        let root_md = std::fs::metadata(&lower).map_err(io_err(&lower))?;
        let upper = snap.upper().to_path_buf();
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).map_err(io_err(&upper))?;
        if self.privileged {
            std::os::unix::fs::chown(&upper, Some(root_md.uid()), Some(root_md.gid())).map_err(io_err(&upper))?;
        }
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(root_md.mode() & 0o7777))
            .map_err(io_err(&upper))?;
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
                lower: vec![lower.clone()],
                upper: upper.clone(),
                work: dir.join("work"),
                target: dir.join("rootfs"),
            },
            hosts,
            resolv_conf: resolv,
            hostname_file: hostname,
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let code = executor.run(&spec, &mut |line| {
            log.line(line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        })?;
        if code != 0 {
            return Err(WorkerError::RunFailed {
                code,
                tail: tail.into_iter().collect(),
            });
        }
        remove_mount_points(&upper, &lower, &missing);
        snap.overlay_upper = true;
        let layer = snap.commit(&self.root.content(), None, self.compression)?;
        drop(run);
        let mut layers = parent;
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
fn remove_mount_points(upper: &Path, lower: &Path, missing: &[&str]) {
    for rel in missing {
        let p: PathBuf = upper.join(rel);
        let Ok(md) = p.symlink_metadata() else { continue };
        let parent_mtime = p.parent().and_then(|d| d.symlink_metadata().ok()).map(|m| m.mtime());
        let removed = if md.is_dir() {
            std::fs::remove_dir(&p).is_ok()
        } else if md.is_file() && md.len() == 0 {
            std::fs::remove_file(&p).is_ok()
        } else {
            false
        };
        if removed {
            if let (Some(parent), Some(t)) = (p.parent(), parent_mtime) {
                let _ = kiln_snapshotter::set_mtime(parent, t);
            }
        }
    }
    // A directory copied up only to hold a mount point carries nothing of its own.
    for rel in missing {
        if let Some(parent) = Path::new(rel).parent().filter(|p| !p.as_os_str().is_empty()) {
            let (up, low) = (upper.join(parent), lower.join(parent));
            if let (Ok(u), Ok(l)) = (up.symlink_metadata(), low.symlink_metadata()) {
                let empty = std::fs::read_dir(&up).map(|mut d| d.next().is_none()).unwrap_or(false);
                if empty && u.mode() == l.mode() && u.uid() == l.uid() && u.gid() == l.gid() {
                    let _ = std::fs::remove_dir(&up);
                }
            }
        }
    }
}
