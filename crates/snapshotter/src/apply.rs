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
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let entries = ar.entries().map_err(io_err(root))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(root))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = clean_rel(&raw).map_err(|r| bad(&name, r))?;
        let Some(file_name) = rel.file_name().map(|f| f.to_os_string()) else {
            continue; // the root itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = resolve_in_root(root, parent_rel, true).map_err(|r| bad(&name, r))?;
        let fname = file_name.to_string_lossy();
        if fname == OPAQUE {
            clear_dir_except(&parent, &created).map_err(io_err(&parent))?;
            continue;
        }
        if let Some(hidden) = fname.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(bad(&name, "invalid whiteout".into()));
            }
            remove_all(&parent.join(hidden)).map_err(io_err(&parent))?;
            continue;
        }
        ensure_dir(&parent, root).map_err(|r| bad(&name, r))?;
        let target = parent.join(&file_name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let old = header.as_old();
        let mode = numeric(header.mode().map(u64::from), &old.mode).map_err(io_err(&target))? as u32 & 0o7777;
        let uid = numeric(header.uid(), &old.uid).map_err(io_err(&target))?;
        let gid = numeric(header.gid(), &old.gid).map_err(io_err(&target))?;
        let mtime = numeric(header.mtime(), &old.mtime).map_err(io_err(&target))? as i64;
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
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(&name, "symlink without target".into()))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(io_err(&target))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(&name, "hard link without target".into()))?;
                let link_rel = clean_rel(&link).map_err(|r| bad(&name, r))?;
                let src = resolve_in_root(root, &link_rel, false).map_err(|r| bad(&name, r))?;
                let md = std::fs::symlink_metadata(&src).map_err(|_| {
                    bad(
                        &name,
                        format!("hard link target `{}` does not exist", link_rel.display()),
                    )
                })?;
                if md.is_dir() {
                    return Err(bad(&name, "hard link to a directory".into()));
                }
                std::fs::hard_link(&src, &target).map_err(io_err(&target))?;
                created.insert(target);
                continue; // a hard link shares the target's metadata
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let dev_major = header.device_major().ok().flatten().unwrap_or(0);
                let dev_minor = header.device_minor().ok().flatten().unwrap_or(0);
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
            }
            EntryType::XHeader | EntryType::XGlobalHeader | EntryType::GNULongName | EntryType::GNULongLink => continue,
            other => {
                report
                    .warnings
                    .push(format!("skipped `{name}`: unsupported entry type {other:?}"));
                continue;
            }
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    let Ok(ckey) = std::ffi::CString::new(key) else {
                        continue;
                    };
                    if let Err(e) = rustix::fs::lsetxattr(
                        &target,
                        ckey.as_c_str(),
                        ext.value_bytes(),
                        rustix::fs::XattrFlags::empty(),
                    ) {
                        report.warnings.push(format!(
                            "cannot set xattr `{}` on `{name}`: {e}",
                            String::from_utf8_lossy(key)
                        ));
                    }
                }
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
        if kind != EntryType::Directory {
            set_mtime(&target, mtime).map_err(io_err(&target))?;
        }
        created.insert(target);
    }
    // Directory times last: writing children changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime).map_err(io_err(dir))?;
    }
    Ok(report)
}

/// Sets atime and mtime of `path` (not following symlinks).
pub fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
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

/// Normalises an archive path to a relative path with no `.`/`..`, refusing to climb out.
pub(crate) fn clean_rel(raw: &[u8]) -> Result<PathBuf, String> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return Err("path climbs out of the layer root with `..`".into());
                }
            }
            Component::Prefix(_) => return Err("path has a prefix".into()),
        }
    }
    Ok(out)
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

/// A numeric header field; an empty one (all NULs or spaces, as some tar writers leave
/// unset fields) is 0, as Go's archive/tar — which Docker and BuildKit use — reads it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
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
