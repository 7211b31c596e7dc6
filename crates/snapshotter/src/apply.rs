//! Applying a layer tar onto a directory without ever writing outside it.
//!
//! Every entry's parent is resolved inside the root the way `openat2(RESOLVE_IN_ROOT)`
//! would: `..` cannot climb above the root and symlinks (absolute or relative) are
//! followed as if the root were `/`. The final component is never followed: it is
//! replaced. Hard link targets are resolved the same way. The root is private to the
//! applier while it runs, so nothing races these checks.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use tar::EntryType;

use crate::extract::{clean_path, is_metadata, EntryFault, ExtractPolicy, TarEntry};
use crate::SnapshotError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const MAX_SYMLINKS: usize = 40;

/// ApplyOptions says what the applier may do.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// chown entries to the ids the layer records (root, or rootless with every id
    /// mapped); otherwise files belong to whoever runs kiln.
    pub privileged: bool,
    /// Create character and block devices (only real root can).
    pub devices: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            privileged: crate::ids::can_chown(),
            devices: crate::ids::can_mknod(),
        }
    }
}

/// ApplyReport lists what was skipped.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub warnings: Vec<String>,
}

/// Applies the uncompressed tar stream `layer` onto `root`, honouring whiteouts.
pub fn apply_tar(root: &Path, layer: impl Read, opts: &ApplyOptions) -> Result<ApplyReport, SnapshotError> {
    let mut report = ApplyReport::default();
    let mut ar = tar::Archive::new(layer);
    let bad = |name: &str, reason: String| SnapshotError::BadLayer {
        entry: name.to_string(),
        reason,
    };
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| SnapshotError::Io {
            op: "cannot apply layer entry",
            path,
            source,
        }
    };
    // Paths this layer created, so an opaque marker met later keeps them.
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut dir_times: Vec<(PathBuf, (i64, u32))> = Vec::new();
    let policy = ExtractPolicy::Layer;
    let entries = ar.entries().map_err(io_err(root))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(root))?;
        if is_metadata(entry.header().entry_type()) {
            continue;
        }
        let e = TarEntry::read(&mut entry).map_err(|(name, fault)| match fault {
            EntryFault::Outside => bad(&name, policy.outside_reason(&name)),
            EntryFault::Header(reason) => bad(&name, reason),
        })?;
        let name = e.name.as_str();
        let Some(file_name) = e.path.file_name().map(|f| f.to_os_string()) else {
            continue; // the root itself
        };
        let parent_rel = e.path.parent().unwrap_or(Path::new(""));
        let parent = resolve_in_root(root, parent_rel, true).map_err(|r| bad(name, r))?;
        let fname = file_name.to_string_lossy();
        if policy.whiteouts() && fname == OPAQUE {
            clear_dir_except(&parent, &created).map_err(io_err(&parent))?;
            continue;
        }
        if let Some(hidden) = fname.strip_prefix(WHITEOUT_PREFIX).filter(|_| policy.whiteouts()) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(bad(name, "invalid whiteout".into()));
            }
            remove_all(&parent.join(hidden)).map_err(io_err(&parent))?;
            continue;
        }
        ensure_dir(&parent, root).map_err(|r| bad(name, r))?;
        let target = parent.join(&file_name);
        let kind = e.kind;
        let (mode, uid, gid, mtime) = (e.mode, e.uid, e.gid, e.mtime);
        // An existing directory stays when a directory replaces it (merging); anything
        // else at the target is removed first.
        let existing = std::fs::symlink_metadata(&target).ok();
        if let Some(md) = &existing {
            if !(md.is_dir() && kind == EntryType::Directory) {
                remove_all(&target).map_err(io_err(&target))?;
            }
        }
        match kind {
            EntryType::Directory => {
                if existing.as_ref().map(|m| m.is_dir()) != Some(true) {
                    std::fs::create_dir(&target).map_err(io_err(&target))?;
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(io_err(&target))?;
                dir_times.push((target.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = std::fs::File::create(&target).map_err(io_err(&target))?;
                io::copy(&mut entry, &mut f).map_err(io_err(&target))?;
                drop(f);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(io_err(&target))?;
            }
            EntryType::Symlink => {
                let link = e
                    .link
                    .as_deref()
                    .ok_or_else(|| bad(name, "symlink without target".into()))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(link), &target).map_err(io_err(&target))?;
            }
            EntryType::Link => {
                let link = e
                    .link
                    .as_deref()
                    .ok_or_else(|| bad(name, "hard link without target".into()))?;
                let link_rel = clean_path(link).ok_or_else(|| bad(name, policy.outside_reason(name)))?;
                let src = resolve_in_root(root, &link_rel, false).map_err(|r| bad(name, r))?;
                let md = std::fs::symlink_metadata(&src).map_err(|_| {
                    bad(
                        name,
                        format!("hard link target `{}` does not exist", link_rel.display()),
                    )
                })?;
                if md.is_dir() {
                    return Err(bad(name, "hard link to a directory".into()));
                }
                std::fs::hard_link(&src, &target).map_err(io_err(&target))?;
                created.insert(target);
                continue; // a hard link shares the target's metadata
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo if policy.special_files() => {
                let (dev_major, dev_minor) = e.device;
                let file_type = match kind {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                if kind != EntryType::Fifo && !opts.devices {
                    report
                        .warnings
                        .push(format!("skipped device node `{name}`: creating devices needs root"));
                    continue;
                }
                let dev = rustix::fs::makedev(dev_major, dev_minor);
                rustix::fs::mknodat(CWD, &target, file_type, rustix::fs::Mode::from_raw_mode(mode), dev)
                    .map_err(|e| io_err(&target)(e.into()))?;
                // mknod applies the umask; the layer's mode is the mode.
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(io_err(&target))?;
            }
            other => {
                report
                    .warnings
                    .push(format!("skipped `{name}`: unsupported entry type {other:?}"));
                continue;
            }
        }
        if opts.privileged {
            match rustix::fs::chownat(
                CWD,
                &target,
                Some(rustix::fs::Uid::from_raw(uid as u32)),
                Some(rustix::fs::Gid::from_raw(gid as u32)),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(()) => {}
                // An id outside a rootless user namespace's range: the file stays root's.
                Err(rustix::io::Errno::INVAL) => {
                    report
                        .warnings
                        .push(format!("`{name}` kept by root: id {uid}:{gid} is not mapped"));
                }
                Err(e) => return Err(io_err(&target)(e.into())),
            }
            if kind != EntryType::Symlink {
                // chown clears set-id bits; put them back.
                if mode & 0o7000 != 0 {
                    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                        .map_err(io_err(&target))?;
                }
            }
        }
        // Extended attributes after the owner: chown drops `security.capability`.
        for (key, value) in e.xattrs.iter().filter(|_| policy.xattrs()) {
            if reserved_xattr(key) {
                // The snapshot may be an overlay lower and a copy-snapshotter source:
                // their private attributes would change what a step sees.
                report.warnings.push(format!(
                    "skipped xattr `{}` on `{name}`: reserved for overlayfs and kiln",
                    String::from_utf8_lossy(key)
                ));
                continue;
            }
            let Ok(ckey) = std::ffi::CString::new(key.as_slice()) else {
                continue;
            };
            if let Err(e) = rustix::fs::lsetxattr(&target, ckey.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                report.warnings.push(format!(
                    "cannot set xattr `{}` on `{name}`: {e}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        if kind != EntryType::Directory {
            set_mtime_ns(&target, mtime).map_err(io_err(&target))?;
        }
        created.insert(target);
    }
    // Directory times last: writing children changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime_ns(dir, *mtime).map_err(io_err(dir))?;
    }
    Ok(report)
}

/// Sets atime and mtime of `path` (not following symlinks).
pub fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    set_mtime_ns(path, (mtime, 0))
}

/// Sets atime and mtime of `path` to (seconds, nanoseconds), not following symlinks.
pub fn set_mtime_ns(path: &Path, (sec, nsec): (i64, u32)) -> io::Result<()> {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// Resolves `rel` inside `root`, following symlinks as if `root` were `/` (so neither
/// absolute links nor `..` leave it). With `follow_last` false the last component is
/// taken as is. Missing components are allowed (they will be created).
pub fn resolve_in_root(root: &Path, rel: &Path, follow_last: bool) -> Result<PathBuf, String> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let is_last = pending.is_empty();
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() && (follow_last || !is_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err("too many levels of symbolic links".into());
                }
                let target = std::fs::read_link(&full).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Makes sure `dir` (already resolved inside `root`) exists as a directory.
fn ensure_dir(dir: &Path, root: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "parent `{}` is not a directory",
            dir.strip_prefix(root).unwrap_or(dir).display()
        )),
        Err(_) => {
            let parent = dir.parent().ok_or("no parent")?;
            if parent != root && !parent.starts_with(root) {
                return Err("parent outside root".into());
            }
            if parent != root {
                ensure_dir(parent, root)?;
            }
            std::fs::create_dir(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))
        }
    }
}

fn remove_all(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn clear_dir_except(dir: &Path, keep: &HashSet<PathBuf>) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let p = e?.path();
        if !keep.contains(&p) {
            remove_all(&p)?;
        }
    }
    Ok(())
}

/// Attributes a layer may not set: overlayfs's private ones and kiln's own marks (the
/// tar writer never writes them either).
fn reserved_xattr(key: &[u8]) -> bool {
    key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") || key.starts_with(b"user.kiln.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            // set_path refuses `..`; write the raw name to craft hostile entries.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn dotdot_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let t = tar_of(&[("../escape", EntryType::Regular, b"x", None)]);
        assert!(apply_tar(
            &root,
            &t[..],
            &ApplyOptions {
                privileged: false,
                devices: false
            }
        )
        .is_err());
        assert!(!d.path().join("escape").exists());
    }

    #[test]
    fn writes_through_symlinks_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let t = tar_of(&[
            ("abs", EntryType::Symlink, b"", Some(outside.to_str().unwrap())),
            ("abs/file", EntryType::Regular, b"x", None),
            ("rel", EntryType::Symlink, b"", Some("../../../../outside")),
            ("rel/file2", EntryType::Regular, b"y", None),
            ("hl", EntryType::Link, b"", Some("../../etc/passwd")),
        ]);
        let r = apply_tar(
            &root,
            &t[..],
            &ApplyOptions {
                privileged: false,
                devices: false,
            },
        );
        assert!(r.is_err(), "hard link to outside must fail");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    fn unprivileged() -> ApplyOptions {
        ApplyOptions {
            privileged: false,
            devices: false,
        }
    }

    #[test]
    fn hard_link_to_a_symlink_links_the_symlink_not_what_it_points_at() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, b"host").unwrap();
        let t = tar_of(&[
            ("sym", EntryType::Symlink, b"", Some(secret.to_str().unwrap())),
            ("hl", EntryType::Link, b"", Some("sym")),
            ("out", EntryType::Symlink, b"", Some(d.path().to_str().unwrap())),
        ]);
        apply_tar(&root, &t[..], &unprivileged()).unwrap();
        assert_eq!(std::fs::read_link(root.join("hl")).unwrap(), secret);
        assert_eq!(
            std::fs::metadata(&secret).unwrap().nlink(),
            1,
            "the host file gained a link"
        );
        // A hard link to an absolute path outside, or through a symlink leading out,
        // resolves inside the root, where there is no such file.
        for link in [secret.to_str().unwrap(), "out/secret"] {
            let t = tar_of(&[("hl2", EntryType::Link, b"", Some(link))]);
            let err = apply_tar(&root, &t[..], &unprivileged()).unwrap_err().to_string();
            assert!(err.contains("does not exist"), "{err}");
        }
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
    }

    #[test]
    fn pax_mtime_and_xattrs_apply_and_reserved_xattrs_are_refused() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("mtime", &b"1234567890.25"[..]),
            ("SCHILY.xattr.user.kiln-test", &b"hello"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.user.kiln.cloned", &b"1"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(2);
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let rep = apply_tar(d.path(), &t[..], &unprivileged()).unwrap();
        let md = std::fs::metadata(d.path().join("f")).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (1234567890, 250_000_000));
        let mut v = [0u8; 16];
        let n = rustix::fs::lgetxattr(d.path().join("f"), c"user.kiln-test", &mut v).unwrap();
        assert_eq!(&v[..n], b"hello");
        assert!(rustix::fs::lgetxattr(d.path().join("f"), c"user.kiln.cloned", &mut v).is_err());
        let reserved: Vec<&String> = rep.warnings.iter().filter(|w| w.contains("reserved")).collect();
        assert_eq!(reserved.len(), 2, "{:?}", rep.warnings);
    }

    /// `cap_net_raw+ep` as a version 2 `security.capability` value.
    const CAP_NET_RAW_EP: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn file_capabilities_survive_the_chown() {
        use std::os::unix::fs::MetadataExt;
        // Regression: xattrs were set before the chown, which drops file capabilities.
        if !crate::ids::can_chown() {
            eprintln!("SKIPPED: setting owners and file capabilities needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW_EP[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("ping").unwrap();
        h.set_mode(0o4755);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let opts = ApplyOptions {
            privileged: true,
            devices: false,
        };
        let rep = apply_tar(d.path(), &t[..], &opts).unwrap();
        assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
        let p = d.path().join("ping");
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (1000, 1000, 0o4755));
        let mut v = [0u8; 64];
        let n = rustix::fs::lgetxattr(&p, c"security.capability", &mut v).expect("capability kept");
        assert_eq!(&v[..n], &CAP_NET_RAW_EP[..]);
    }

    #[test]
    fn fifos_and_devices_keep_their_mode_whatever_the_umask() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        // Regression: mknod applied the umask (0666 came out 0644).
        let d = tempfile::tempdir().unwrap();
        let devices = crate::ids::can_mknod();
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in [("fifo", EntryType::Fifo), ("null", EntryType::Char)] {
            if kind == EntryType::Char && !devices {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o666);
            h.set_size(0);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        }
        let t = b.into_inner().unwrap();
        let opts = ApplyOptions {
            privileged: false,
            devices,
        };
        apply_tar(d.path(), &t[..], &opts).unwrap();
        let md = std::fs::symlink_metadata(d.path().join("fifo")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!(md.mode() & 0o7777, 0o666);
        if devices {
            let md = std::fs::symlink_metadata(d.path().join("null")).unwrap();
            assert!(md.file_type().is_char_device());
            assert_eq!(md.mode() & 0o7777, 0o666);
        }
    }

    /// A tar of empty files, each with its own PAX `mtime` record, header mtime 0.
    pub(crate) fn pax_time_tar(times: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, mtime) in times {
            b.append_pax_extensions([("mtime", mtime.as_bytes())]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn pax_times_apply_as_containerd_bounds_them() {
        use std::os::unix::fs::MetadataExt;
        // containerd's `archive.Apply` (BuildKit's layer applier): Go's `parsePAXTime`,
        // then `boundTime`: before 1970 or past 2262 (what `UnixNano` can hold) is
        // the epoch; nanoseconds are kept.
        let d = tempfile::tempdir().unwrap();
        let t = pax_time_tar(&[
            ("frac", "1700000000.123456789"),
            ("trunc", "1.1234567899"),
            ("neg", "-1.5"),
            ("plus", "+7"),
            ("far", "9300000000"),
        ]);
        apply_tar(d.path(), &t[..], &unprivileged()).unwrap();
        let got = |n: &str| {
            let md = std::fs::symlink_metadata(d.path().join(n)).unwrap();
            (md.mtime(), md.mtime_nsec())
        };
        assert_eq!(got("frac"), (1700000000, 123456789));
        assert_eq!(got("trunc"), (1, 123456789));
        assert_eq!(got("neg"), (0, 0));
        assert_eq!(got("plus"), (7, 0));
        assert_eq!(got("far"), (0, 0));
    }

    #[test]
    fn whiteouts_and_opaque() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("dir/sub")).unwrap();
        std::fs::write(root.join("dir/old"), b"1").unwrap();
        std::fs::write(root.join("gone"), b"1").unwrap();
        let t = tar_of(&[
            (".wh.gone", EntryType::Regular, b"", None),
            ("dir/", EntryType::Directory, b"", None),
            ("dir/-new", EntryType::Regular, b"n", None),
            ("dir/.wh..wh..opq", EntryType::Regular, b"", None),
        ]);
        apply_tar(
            root,
            &t[..],
            &ApplyOptions {
                privileged: false,
                devices: false,
            },
        )
        .unwrap();
        assert!(!root.join("gone").exists());
        assert!(!root.join("dir/old").exists());
        assert!(!root.join("dir/sub").exists());
        assert!(root.join("dir/-new").exists());
    }
}
