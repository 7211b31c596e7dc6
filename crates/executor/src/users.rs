//! Resolving a step's `USER` against the image's own `/etc/passwd` and `/etc/group`, as
//! Docker does: names must exist there, numeric ids need not.
//!
//! Files are opened with `RESOLVE_IN_ROOT`, so an image whose `/etc/passwd` is a symlink
//! cannot make kiln read a host file.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]

use std::io::Read;
use std::path::Path;

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};

/// The step's user: ids, supplementary groups and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// The text of `rel` under `root`, resolved inside it; empty when missing.
fn read_in_root(root: &Path, rel: &str) -> String {
    let Ok(dir) = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) else {
        return String::new();
    };
    let Ok(fd) = openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = std::fs::File::from(fd).take(16 << 20).read_to_string(&mut s);
    s
}

fn passwd(root: &Path) -> Vec<PasswdEntry> {
    read_in_root(root, "etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) of every group.
fn groups(root: &Path) -> Vec<(String, u32, Vec<String>)> {
    read_in_root(root, "etc/group")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            Some((f[0].to_string(), f[2].trim().parse().ok()?, members))
        })
        .collect()
}

/// Resolves `user[:group]` in the tree at `root`.
pub fn resolve(root: &Path, spec: &str) -> Result<User, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(root);
    let entry = match u.parse::<u32>() {
        Ok(id) => users.iter().find(|e| e.uid == id),
        Err(_) => Some(
            users
                .iter()
                .find(|e| e.name == u)
                .ok_or_else(|| format!("unable to find user {u}: no matching entries in passwd file"))?,
        ),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => u.parse().unwrap_or(0),
    };
    let all_groups = groups(root);
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => all_groups
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?,
        },
        None => entry.map_or(0, |e| e.gid),
    };
    let mut groups = Vec::new();
    if g.is_none() {
        if let Some(e) = entry {
            for (_, id, members) in &all_groups {
                if members.contains(&e.name) && !groups.contains(id) {
                    groups.push(*id);
                }
            }
        }
    }
    let home = match entry {
        Some(e) if !e.home.is_empty() => e.home.clone(),
        _ if uid == 0 => "/root".to_string(),
        _ => "/".to_string(),
    };
    Ok(User { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.path().join("etc/group"), group).unwrap();
        d
    }

    #[test]
    fn names_ids_groups_and_home() {
        let d = root_with(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n",
            "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:app\n",
        );
        let r = d.path();
        assert_eq!(
            resolve(r, "app").unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                groups: vec![10, 29],
                home: "/home/app".into()
            }
        );
        assert_eq!(resolve(r, "1000").unwrap().home, "/home/app");
        // An id not in passwd: gid 0, home /.
        assert_eq!(
            resolve(r, "4242").unwrap(),
            User {
                uid: 4242,
                gid: 0,
                groups: vec![],
                home: "/".into()
            }
        );
        // An explicit group drops the supplementary ones.
        assert_eq!(
            resolve(r, "app:wheel").unwrap(),
            User {
                uid: 1000,
                gid: 10,
                groups: vec![],
                home: "/home/app".into()
            }
        );
        assert_eq!(resolve(r, "0:7").unwrap().gid, 7);
        assert!(resolve(r, "ghost").unwrap_err().contains("unable to find user ghost"));
        assert!(resolve(r, "app:ghosts")
            .unwrap_err()
            .contains("unable to find group ghosts"));
    }

    #[test]
    fn symlinked_passwd_stays_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/evil:/bin/sh\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("etc/passwd")).unwrap();
        assert!(resolve(d.path(), "evil").is_err());
    }
}
