//! Resolving user and group names against an image's own `/etc/passwd` and `/etc/group`.

use std::path::Path;

/// Looks up `name` in a passwd/group style file (name:x:id:...); returns the id.
fn lookup(file: &Path, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let n = f.next()?;
        if n != name {
            return None;
        }
        let _pw = f.next()?;
        let id = f.next()?.trim().parse().ok()?;
        let gid = f.next().and_then(|g| g.trim().parse().ok()).unwrap_or(id);
        Some((id, gid))
    })
}

/// Resolves a user (name or id) to (uid, primary gid) via `etc/passwd` under `root`.
pub fn user(root: Option<&Path>, spec: &str) -> Option<(u32, u32)> {
    if let Ok(id) = spec.parse::<u32>() {
        let gid = root.and_then(|r| {
            let text = std::fs::read_to_string(r.join("etc/passwd")).ok()?;
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[2] == spec).then(|| f[3].parse().ok()).flatten()
            })
        });
        return Some((id, gid.unwrap_or(id)));
    }
    lookup(&root?.join("etc/passwd"), spec)
}

/// Resolves a group (name or id) via `etc/group` under `root`.
pub fn group(root: Option<&Path>, spec: &str) -> Option<u32> {
    if let Ok(id) = spec.parse::<u32>() {
        return Some(id);
    }
    lookup(&root?.join("etc/group"), spec).map(|(id, _)| id)
}
