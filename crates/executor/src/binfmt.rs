//! Foreign platforms: RUN steps of a platform the host cannot run natively go through
//! the kernel's binfmt_misc, which hands a foreign ELF binary to a user-mode emulator
//! (QEMU, Debian's `qemu-user-static`).
//!
//! The trap: binfmt_misc opens the emulator by path when a binary starts, unless the
//! handler was registered with the `F` (fix-binary) flag, in which case the kernel
//! opened it once at registration. A step runs after `pivot_root` into the image, where
//! `/usr/libexec/qemu-binfmt/…` does not exist, so only `F` handlers work. kiln
//! therefore (as root, in the initial user namespace) registers the handler itself with
//! `F` when none is registered, from Debian's own definition in
//! `/usr/share/binfmts/qemu-ARCH` (magic, mask, interpreter), and never changes a
//! handler someone else registered. Putting the emulator into the step's root instead
//! would need a mount inside every image (and in its layer's way) and would not work
//! under `--runtime runc` without changing the bundle; `F` is what Docker's and
//! BuildKit's `tonistiigi/binfmt` installer use too. Rootless kiln cannot register: it
//! uses what is registered and says which package to install when nothing is.
//!
//! Every foreign platform of a build is checked before the first step starts.

use std::path::{Path, PathBuf};

use kiln_image::Platform;

/// Where the kernel's binfmt_misc file system is normally mounted.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's `binfmt-support` definitions live (`qemu-user-static` ships them).
const DEFINITIONS: &str = "/usr/share/binfmts";

/// BinfmtError is a foreign platform whose binaries cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error(
        "cannot run RUN steps for platform `{platform}`: no binfmt_misc handler for `{arch}` binaries is \
         registered ({why}); install an emulator, on Debian `apt-get install qemu-user-static`{hint}"
    )]
    Missing {
        platform: String,
        arch: String,
        why: String,
        hint: &'static str,
    },
    #[error(
        "cannot run RUN steps for platform `{platform}`: the binfmt_misc handler `{name}` is registered \
         without the F (fix-binary) flag, so its emulator `{interpreter}` cannot be found inside a build's \
         root; register it again with F (Debian's qemu-user-static does: `update-binfmts --disable {name} && \
         update-binfmts --enable {name}`)"
    )]
    NotFixed {
        platform: String,
        name: String,
        interpreter: String,
    },
    #[error("cannot run RUN steps for platform `{platform}`: kiln has no emulator name for architecture `{arch}`")]
    Unknown { platform: String, arch: String },
}

/// Whether the host runs `platform`'s binaries itself.
pub fn native(platform: &Platform) -> bool {
    let p = platform.normalized();
    let host = Platform::host();
    p.os == host.os
        && (p.architecture == host.architecture || (host.architecture == "amd64" && p.architecture == "386"))
}

/// QEMU's name for a GOARCH architecture (`qemu-aarch64`, `/usr/share/binfmts/qemu-aarch64`).
fn qemu_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "mipsle" => "mipsel",
        "mips" => "mips",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Binfmt finds (and as root registers) the handlers of foreign platforms.
#[derive(Debug, Clone)]
pub struct Binfmt {
    dir: PathBuf,
    definitions: PathBuf,
    may_register: bool,
}

impl Binfmt {
    /// The host's binfmt_misc. `KILN_BINFMT_MISC` names another directory to read
    /// handlers from instead (kiln then registers nothing): tests use it to see a
    /// machine with no handlers.
    pub fn from_env() -> Self {
        match std::env::var_os("KILN_BINFMT_MISC") {
            Some(d) if !d.is_empty() => Binfmt {
                dir: PathBuf::from(d),
                definitions: PathBuf::from(DEFINITIONS),
                may_register: false,
            },
            _ => Binfmt {
                dir: PathBuf::from(BINFMT_MISC),
                definitions: PathBuf::from(DEFINITIONS),
                may_register: rustix::process::geteuid().is_root() && kiln_snapshotter::ids::initial_userns(),
            },
        }
    }

    /// Makes sure binaries of `platform` can run in a step: native, or a handler with
    /// the F flag is registered (registering Debian's when root and none is).
    pub fn ensure(&self, platform: &Platform) -> Result<(), BinfmtError> {
        if native(platform) {
            return Ok(());
        }
        let p = platform.normalized();
        let Some(arch) = qemu_arch(&p.architecture) else {
            return Err(BinfmtError::Unknown {
                platform: p.to_string(),
                arch: p.architecture.clone(),
            });
        };
        let missing = |why: String| BinfmtError::Missing {
            platform: p.to_string(),
            arch: arch.to_string(),
            why,
            hint: if self.may_register {
                ""
            } else {
                " and have root register it (`update-binfmts --enable`, or run one kiln build as root)"
            },
        };
        if !self.dir.join("status").exists() && self.may_register {
            // binfmt_misc is not mounted (a fresh VM or container): mount it.
            let _ = rustix::mount::mount(
                "binfmt_misc",
                &self.dir,
                "binfmt_misc",
                rustix::mount::MountFlags::empty(),
                None,
            );
        }
        if let Some(h) = self.find(arch) {
            return self.usable(&p, h);
        }
        if !self.dir.join("register").exists() {
            return Err(missing(format!("`{}` is not mounted", self.dir.display())));
        }
        if !self.may_register {
            return Err(missing("kiln registers handlers only as root".to_string()));
        }
        let name = format!("qemu-{arch}");
        let def_path = self.definitions.join(&name);
        let def = fs_err::read_to_string(&def_path).map_err(|e| missing(format!("cannot read it: {e}")))?;
        let line = registration(&name, &def).ok_or_else(|| {
            missing(format!(
                "`{}` is not a binfmt definition kiln reads",
                def_path.display()
            ))
        })?;
        if let Err(e) = fs_err::write(self.dir.join("register"), line.as_bytes()) {
            // Another build registered it meanwhile: fine when it is there now.
            if self.find(arch).is_none() {
                return Err(missing(format!("registering `{name}` failed: {e}")));
            }
        }
        match self.find(arch) {
            Some(h) => self.usable(&p, h),
            None => Err(missing(format!("registering `{name}` did not take"))),
        }
    }

    fn usable(&self, p: &Platform, h: Handler) -> Result<(), BinfmtError> {
        if h.flags.contains('F') {
            return Ok(());
        }
        Err(BinfmtError::NotFixed {
            platform: p.to_string(),
            name: h.name,
            interpreter: h.interpreter,
        })
    }

    /// The enabled handler for `arch` (QEMU's name): `qemu-ARCH` as Debian and
    /// tonistiigi/binfmt name it, else any whose interpreter is that QEMU.
    fn find(&self, arch: &str) -> Option<Handler> {
        let by_name = self.dir.join(format!("qemu-{arch}"));
        if let Some(h) = Handler::read(&by_name) {
            return Some(h);
        }
        let entries = fs_err::read_dir(&self.dir).ok()?;
        for e in entries.flatten() {
            let n = e.file_name();
            if n == "register" || n == "status" {
                continue;
            }
            if let Some(h) = Handler::read(&e.path()) {
                let file = Path::new(&h.interpreter)
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or("");
                if file == format!("qemu-{arch}-static")
                    || file == format!("qemu-{arch}")
                    || file.starts_with(&format!("{arch}-binfmt"))
                {
                    return Some(h);
                }
            }
        }
        None
    }
}

/// Handler is one enabled binfmt_misc entry.
#[derive(Debug)]
struct Handler {
    name: String,
    interpreter: String,
    flags: String,
}

impl Handler {
    fn read(path: &Path) -> Option<Handler> {
        let text = fs_err::read_to_string(path).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "enabled" {
            return None;
        }
        let mut h = Handler {
            name: path.file_name()?.to_string_lossy().into_owned(),
            interpreter: String::new(),
            flags: String::new(),
        };
        for l in lines {
            if let Some(i) = l.strip_prefix("interpreter ") {
                h.interpreter = i.to_string();
            } else if let Some(f) = l.strip_prefix("flags: ") {
                h.flags = f.to_string();
            }
        }
        Some(h)
    }
}

/// The `register` line for a Debian binfmt-support definition (`package`,
/// `interpreter`, `magic`, `offset`, `mask`, `credentials`, `preserve` lines), always
/// with F: `:NAME:M:OFFSET:MAGIC:MASK:INTERPRETER:FLAGS`.
fn registration(name: &str, def: &str) -> Option<String> {
    let field = |k: &str| {
        def.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(' ')))
            .map(str::trim)
    };
    let interpreter = field("interpreter")?;
    let magic = field("magic")?;
    let mask = field("mask").unwrap_or("");
    let offset = field("offset").unwrap_or("0");
    // The register line is split at ':'; a definition that needs one is not ours to write.
    if [interpreter, magic, mask, offset]
        .iter()
        .any(|v| v.contains(':') || v.contains('\n'))
    {
        return None;
    }
    let mut flags = String::from("F");
    if field("preserve") == Some("yes") {
        flags.push('P');
    }
    if field("credentials") == Some("yes") {
        flags.push('C');
    }
    Some(format!(":{name}:M:{offset}:{magic}:{mask}:{interpreter}:{flags}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_AARCH64: &str = "package qemu-user-static\n\
        interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        magic \\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\n\
        offset 0\n\
        mask \\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\n\
        credentials no\n\
        fix_binary yes\n\
        preserve yes\n";

    #[test]
    fn debian_definitions_register_with_fix_binary() {
        assert_eq!(
            registration("qemu-aarch64", DEBIAN_AARCH64).unwrap(),
            ":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:FP"
        );
        assert!(registration("x", "interpreter /a:b\nmagic \\x7f\n").is_none());
    }

    fn fake(entries: &[(&str, &str)]) -> (tempfile::TempDir, Binfmt) {
        let d = tempfile::tempdir().unwrap();
        for (n, text) in entries {
            fs_err::write(d.path().join(n), text).unwrap();
        }
        let b = Binfmt {
            dir: d.path().to_path_buf(),
            definitions: d.path().join("none"),
            may_register: false,
        };
        (d, b)
    }

    #[test]
    fn a_registered_f_handler_is_used_and_one_without_f_is_named() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let (_d, b) = fake(&[
            ("status", "enabled"),
            ("register", ""),
            (
                "qemu-aarch64",
                "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\n",
            ),
            (
                "qemu-riscv64",
                "enabled\ninterpreter /usr/bin/qemu-riscv64-static\nflags: OC\n",
            ),
            (
                "qemu-s390x",
                "disabled\ninterpreter /usr/bin/qemu-s390x-static\nflags: F\n",
            ),
        ]);
        assert!(b.ensure(&arm64).is_ok());
        let e = b
            .ensure(&Platform::parse("linux/riscv64").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("without the F (fix-binary) flag") && e.contains("/usr/bin/qemu-riscv64-static"),
            "{e}"
        );
        let e = b
            .ensure(&Platform::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("platform `linux/s390x`") && e.contains("apt-get install qemu-user-static"),
            "{e}"
        );
    }

    #[test]
    fn the_host_platform_needs_no_handler() {
        let (_d, b) = fake(&[]);
        assert!(b.ensure(&Platform::host()).is_ok());
        let e = b
            .ensure(&Platform::parse("linux/ia64").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no emulator name for architecture `ia64`"), "{e}");
    }
}
