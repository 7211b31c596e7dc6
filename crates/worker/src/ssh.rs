//! `RUN --mount=type=ssh`: a socket of the step's own that forwards the SSH agent
//! protocol to the agent given with `--ssh`, as BuildKit's ssh forwarding does.
//!
//! The step never sees the user's agent socket itself: kiln listens on a new socket
//! (with the mount's uid, gid and mode), and for each connection relays requests to
//! the agent. Like BuildKit's read-only agent, only listing keys and signing are
//! relayed; adding, removing and locking keys, and extensions, are refused.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// SSH_AGENTC_REQUEST_IDENTITIES and SSH_AGENTC_SIGN_REQUEST: what is relayed.
const RELAYED: [u8; 2] = [11, 13];
/// SSH_AGENT_FAILURE.
const FAILURE: u8 = 5;
/// The longest message relayed (OpenSSH's agent limit).
const MAX_MESSAGE: usize = 256 * 1024;
/// A socket path longer than this is bound through `/proc/self/fd` (sun_path is 108).
const MAX_SOCKET_PATH: usize = 100;

/// SshForward is a listening socket relaying to an SSH agent; dropping it stops it.
pub(crate) struct SshForward {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl SshForward {
    /// Listens at `path` (owned by `uid`:`gid`, mode `mode`) and relays each
    /// connection to the agent at `agent`.
    pub(crate) fn start(path: &Path, agent: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<Self> {
        let listener = bind(path)?;
        // Polled, so that dropping the forward stops it without a connection.
        listener.set_nonblocking(true)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, agent) = (stop.clone(), agent.to_path_buf());
        let accept = std::thread::Builder::new()
            .name("kiln-ssh-forward".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    let conn = match listener.accept() {
                        Ok((c, _)) => c,
                        // Nothing waiting (or out of descriptors): look again shortly.
                        Err(_) => {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            continue;
                        }
                    };
                    if conn.set_nonblocking(false).is_err() {
                        continue;
                    }
                    let agent = agent.clone();
                    // A connection lives as long as the step's client keeps it open; the
                    // step's processes all die with the step.
                    let _ = std::thread::Builder::new()
                        .name("kiln-ssh-conn".into())
                        .spawn(move || relay(conn, &agent));
                }
            })?;
        Ok(SshForward {
            path: path.to_path_buf(),
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `f` on `path`, going through `/proc/self/fd/N/` when the path is too long
/// for a socket address.
fn short_path<T>(path: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let d = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&d).to_string())
        .join(name);
    f(&short)
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    short_path(path, |p| UnixListener::bind(p))
}

fn connect(path: &Path) -> std::io::Result<UnixStream> {
    short_path(path, |p| UnixStream::connect(p))
}

/// Reads one agent message (length-prefixed); None at a clean end of the stream.
fn read_message(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("agent message of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_message(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(body.len() + 4);
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    msg.extend_from_slice(body);
    w.write_all(&msg)
}

/// Serves one client of the step: relays what may be relayed, refuses the rest.
fn relay(mut client: UnixStream, agent: &Path) {
    let mut upstream: Option<UnixStream> = None;
    while let Ok(Some(request)) = read_message(&mut client) {
        let reply = if RELAYED.contains(&request[0]) {
            forward(&mut upstream, agent, &request).ok()
        } else {
            None
        };
        let ok = match reply {
            Some(body) => write_message(&mut client, &body),
            None => write_message(&mut client, &[FAILURE]),
        };
        if ok.is_err() {
            return;
        }
    }
}

/// Sends `request` to the agent (connecting on first use) and returns its answer.
fn forward(upstream: &mut Option<UnixStream>, agent: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    if upstream.is_none() {
        *upstream = Some(connect(agent)?);
    }
    let Some(conn) = upstream.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    let answer = write_message(conn, request).and_then(|()| read_message(conn));
    match answer {
        Ok(Some(body)) => Ok(body),
        Ok(None) => {
            *upstream = None;
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
        Err(e) => {
            *upstream = None;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent: answers REQUEST_IDENTITIES with an empty list, counts requests.
    fn fake_agent(path: &Path) -> std::thread::JoinHandle<Vec<u8>> {
        let l = bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            while let Ok(Some(m)) = read_message(&mut c) {
                seen.push(m[0]);
                // SSH_AGENT_IDENTITIES_ANSWER with zero keys.
                write_message(&mut c, &[12, 0, 0, 0, 0]).unwrap();
            }
            seen
        })
    }

    #[test]
    fn relays_listing_and_refuses_changes() {
        let d = tempfile::tempdir().unwrap();
        let agent = d.path().join("agent.sock");
        let seen = fake_agent(&agent);
        let me = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let fwd = SshForward::start(&d.path().join("fwd.sock"), &agent, me, gid, 0o600).unwrap();
        let md = std::fs::metadata(d.path().join("fwd.sock")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let mut c = UnixStream::connect(d.path().join("fwd.sock")).unwrap();
        write_message(&mut c, &[11]).unwrap();
        assert_eq!(read_message(&mut c).unwrap().unwrap(), vec![12, 0, 0, 0, 0]);
        // SSH_AGENTC_REMOVE_ALL_IDENTITIES is refused without reaching the agent.
        write_message(&mut c, &[19]).unwrap();
        assert_eq!(read_message(&mut c).unwrap().unwrap(), vec![FAILURE]);
        drop(c);
        drop(fwd);
        assert_eq!(seen.join().unwrap(), vec![11]);
        assert!(!d.path().join("fwd.sock").exists());
    }

    #[test]
    fn long_socket_paths_are_bound_through_proc() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let agent = deep.join("agent.sock");
        let seen = fake_agent(&agent);
        let me = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let fwd = SshForward::start(&deep.join("fwd.sock"), &agent, me, gid, 0o660).unwrap();
        let mut c = connect(&deep.join("fwd.sock")).unwrap();
        write_message(&mut c, &[11]).unwrap();
        assert_eq!(read_message(&mut c).unwrap().unwrap()[0], 12);
        drop(c);
        drop(fwd);
        assert_eq!(seen.join().unwrap(), vec![11]);
    }
}
