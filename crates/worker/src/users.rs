//! `COPY --chown` ids, looked up in the image's own `/etc/passwd` and `/etc/group` with
//! the executor's lookup (the one RUN's `USER` uses), which opens them inside the image
//! root: an image whose `/etc/passwd` is a symlink cannot make kiln read a host file.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::path::Path;

use kiln_graph::UserSpec;

use crate::WorkerError;

/// The (uid, gid) of `--chown=user[:group]` in the tree at `root` (`None` for an empty
/// image), as BuildKit's `readUser`: a user name takes its passwd entry's ids, a
/// numeric user is `id:id`; a group (name or id) replaces the gid. Unknown names fail.
pub(crate) fn chown_ids(
    root: Option<&Path>,
    user: &UserSpec,
    group: Option<&UserSpec>,
) -> Result<(u32, u32), WorkerError> {
    // An empty image (no root) has no passwd file: every name is unknown.
    let lookup = |spec: &str| root.and_then(|r| kiln_executor::users::resolve(r, spec).ok());
    let (uid, mut gid) = match user {
        UserSpec::Id(id) => (*id, *id),
        UserSpec::Name(name) => {
            let u = lookup(name).ok_or_else(|| WorkerError::UnknownUser { user: name.clone() })?;
            (u.uid, u.gid)
        }
    };
    match group {
        Some(UserSpec::Id(id)) => gid = *id,
        Some(UserSpec::Name(name)) => {
            // The executor resolves `user:group`; uid 0 needs no passwd entry.
            gid = lookup(&format!("0:{name}"))
                .ok_or_else(|| WorkerError::UnknownGroup { group: name.clone() })?
                .gid;
        }
        None => {}
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> UserSpec {
        UserSpec::Name(n.to_string())
    }

    #[test]
    fn names_resolve_inside_the_image_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "hostuser:x:4242:4343::/:/bin/sh\n").unwrap();
        let image = tempfile::tempdir().unwrap();
        let root = image.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        // An absolute link means the same path inside the image, never the host's file.
        std::os::unix::fs::symlink(host.path().join("passwd"), root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/group"), "grp:x:1234:\n").unwrap();
        assert!(matches!(
            chown_ids(Some(root), &name("hostuser"), None),
            Err(WorkerError::UnknownUser { .. })
        ));
        assert_eq!(chown_ids(Some(root), &UserSpec::Id(9), None).unwrap(), (9, 9));
        assert_eq!(
            chown_ids(Some(root), &UserSpec::Id(9), Some(&name("grp"))).unwrap(),
            (9, 1234)
        );
        assert!(matches!(
            chown_ids(Some(root), &UserSpec::Id(9), Some(&name("nogroup"))),
            Err(WorkerError::UnknownGroup { .. })
        ));
        assert!(matches!(
            chown_ids(None, &name("root"), None),
            Err(WorkerError::UnknownUser { .. })
        ));
    }
}
