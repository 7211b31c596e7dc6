//! Secrets on a private tmpfs: the files of `RUN --mount=type=secret` (and the values
//! of `env=` secrets) are written, in the forked child that becomes the step's
//! sandbox or runtime, to a tmpfs mounted in a mount namespace of the step's own. They
//! never touch a disk, and they vanish with the namespace when the step ends.
//!
//! Everything [`SecretsSetup::apply`] does runs between fork and exec, so it is plain
//! system calls on memory prepared beforehand: no allocation, no locks.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::{ExecError, ExecSpec};

/// One file to make on the secrets tmpfs.
struct Prepared {
    path: CString,
    data: Vec<u8>,
    mode: libc::mode_t,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

/// SecretsSetup is a step's secrets, ready to be written in a forked child.
pub(crate) struct SecretsSetup {
    dir: CString,
    files: Vec<Prepared>,
}

/// The path of secret `index` on the tmpfs at `dir`.
pub(crate) fn secret_path(dir: &Path, index: usize) -> std::path::PathBuf {
    dir.join(index.to_string())
}

impl SecretsSetup {
    /// The setup for `spec`'s secrets, or None when it has none.
    pub(crate) fn new(spec: &ExecSpec) -> Result<Option<Self>, ExecError> {
        if spec.secrets.is_empty() {
            return Ok(None);
        }
        let dir = spec
            .secrets_dir
            .as_deref()
            .ok_or_else(|| ExecError::Setup("the step has secrets but no directory for them".into()))?;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| ExecError::Setup(format!("NUL in the path {}", p.display())))
        };
        let files = spec
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(Prepared {
                    path: c(&secret_path(dir, i))?,
                    data: s.data.clone(),
                    mode: s.mode & 0o7777,
                    uid: s.uid,
                    gid: s.gid,
                })
            })
            .collect::<Result<Vec<_>, ExecError>>()?;
        Ok(Some(SecretsSetup { dir: c(dir)?, files }))
    }

    /// Adds a file (uid 0, mode 0600) that is no mount's: the OCI runtime's config.json,
    /// which holds the values of `env=` secrets.
    pub(crate) fn add_private_file(&mut self, name: &str, data: Vec<u8>) -> Result<CString, ExecError> {
        let mut path = self.dir.as_bytes().to_vec();
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let path = CString::new(path).map_err(|_| ExecError::Setup("NUL in a path".into()))?;
        self.files.push(Prepared {
            path: path.clone(),
            data,
            mode: 0o600,
            uid: 0,
            gid: 0,
        });
        Ok(path)
    }

    /// The directory the tmpfs is mounted on.
    pub(crate) fn dir(&self) -> &CString {
        &self.dir
    }

    /// In a forked child: optionally enters a new private mount namespace, mounts the
    /// tmpfs and writes the files with their modes and owners.
    ///
    /// # Safety
    ///
    /// Only system calls on memory owned by `self`: safe to call between fork and exec.
    pub(crate) unsafe fn apply(&self, new_namespace: bool) -> io::Result<()> {
        let check = |r: libc::c_int| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) };
        // SAFETY: (for the whole block) every pointer is a valid NUL-terminated string or a
        // slice of `self`; no call allocates.
        unsafe {
            if new_namespace {
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0711".as_ptr().cast(),
            ))?;
            for f in &self.files {
                let fd = check(libc::open(
                    f.path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                ))?;
                let mut rest: &[u8] = &f.data;
                let mut result = Ok(());
                while !rest.is_empty() {
                    let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        result = Err(e);
                        break;
                    }
                    rest = &rest[n as usize..];
                }
                // Owner first: chown clears the set-id bits a mode may ask for.
                if result.is_ok() {
                    result = check(libc::fchown(fd, f.uid, f.gid)).map(drop);
                }
                if result.is_ok() {
                    result = check(libc::fchmod(fd, f.mode)).map(drop);
                }
                libc::close(fd);
                result?;
            }
        }
        Ok(())
    }
}
