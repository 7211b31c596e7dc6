//! ADD's sources: telling a git repository, an HTTP(S) URL and a local path apart, and
//! lowering the remote ones to source ops.
//!
//! BuildKit semantics kept here (`dockerfile2llb/convert_copy.go`,
//! `dfgitutil.ParseGitRef`, `gitutil.ParseURL`, `sshutil.ParseSCPStyleURL`):
//! - a git source is `git://…`, `ssh://…`, an `http(s)://…` URL whose path ends in
//!   `.git`, or an SCP-like `[user@]host:path`; `./…`, `../…` and `github.com/…` are
//!   local paths; an `http(s)://` URL otherwise is a download; anything else is local;
//! - a git URL's fragment is `#ref:subdir` or the CSV form `##ref=…,commit=…,subdir=…`;
//!   its query may hold `ref`, `tag`, `branch`, `subdir`, `checksum`/`commit`,
//!   `keep-git-dir` and `submodules`;
//! - a download is named after the last segment of the URL's path (`__unnamed__` when
//!   there is none); `Content-Disposition` is not used, because the frontend names it;
//! - `--checksum` needs exactly one source, a download (`sha256:…`) or a git
//!   repository (a commit); `--keep-git-dir` applies to git sources only;
//! - `--unpack` defaults to true for local sources and false for downloads; git trees
//!   are never unpacked.

use kiln_graph::{Input, Op, OpMeta, SourceOp};

use crate::error::ErrorKind;
use crate::syntax::flags::AddFlags;
use crate::syntax::Instruction;

use super::state::StageState;
use super::Converter;

/// What an ADD (or COPY) source names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AddSource {
    /// A path in the build context (or the `--from` source).
    Local,
    /// A file to download; `filename` is what it is called in the destination.
    Http { url: String, filename: String },
    /// A git repository.
    Git(GitRef),
}

/// GitRef is a parsed git source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct GitRef {
    /// What `git` is given: the URL without fragment and query.
    pub remote: String,
    /// A branch, tag or commit (`refs/heads/…` and `refs/tags/…` accepted).
    pub reference: String,
    pub subdir: String,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub submodules: Option<bool>,
}

impl AddSource {
    pub(super) fn is_local(&self) -> bool {
        matches!(self, AddSource::Local)
    }
}

/// Classifies a (expanded) source as BuildKit does.
pub(super) fn classify(src: &str) -> Result<AddSource, ErrorKind> {
    if let Some(g) = parse_git(src)? {
        return Ok(AddSource::Git(g));
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        let path = split_url(src).map(|u| percent_decode(u.path)).unwrap_or_default();
        let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let filename = match base {
            "" | "." | ".." => "__unnamed__".to_string(),
            b if b.contains('\0') => "__unnamed__".to_string(),
            b => b.to_string(),
        };
        return Ok(AddSource::Http {
            url: src.to_string(),
            filename,
        });
    }
    Ok(AddSource::Local)
}

/// The parts of `scheme://authority/path?query#fragment`.
struct UrlParts<'a> {
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn split_url(s: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Some(UrlParts {
        scheme,
        authority,
        path,
        query,
        fragment,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn invalid(src: &str, reason: impl Into<String>) -> ErrorKind {
    ErrorKind::InvalidGitSource {
        source_url: src.to_string(),
        reason: reason.into(),
    }
}

/// `Some` when `src` is a git source (BuildKit's `ParseGitRef` with `isGit`).
fn parse_git(src: &str) -> Result<Option<GitRef>, ErrorKind> {
    if src.starts_with("./") || src.starts_with("../") || src.starts_with("github.com/") {
        return Ok(None);
    }
    let has_scheme = src
        .split_once("://")
        .is_some_and(|(s, _)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    let (mut git, fragment) = if has_scheme {
        let Some(u) = split_url(src) else { return Ok(None) };
        let scheme = u.scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "http" | "https" => {
                if !u.path.ends_with(".git") {
                    return Ok(None);
                }
            }
            "git" | "ssh" => {}
            _ => return Ok(None),
        }
        let mut remote = format!("{}://{}{}", u.scheme, u.authority, u.path);
        // Scheme names are case-insensitive; git wants them lower-case.
        remote.replace_range(..u.scheme.len(), &scheme);
        let mut g = GitRef {
            remote,
            ..GitRef::default()
        };
        if let Some(q) = u.query {
            load_query(&mut g, q).map_err(|r| invalid(src, r))?;
        }
        (g, u.fragment)
    } else {
        match scp_like(src) {
            Some((remote, fragment)) => (
                GitRef {
                    remote: remote.to_string(),
                    ..GitRef::default()
                },
                fragment,
            ),
            None => return Ok(None),
        }
    };
    if let Some(f) = fragment {
        apply_fragment(&mut git, f).map_err(|r| invalid(src, r))?;
    }
    Ok(Some(git))
}

/// Matches `^(?:([a-zA-Z0-9-_]+)@)?([a-zA-Z0-9-.]+):(.*?)(?:#(.*))?$` and returns the
/// remote (without fragment) and the fragment.
fn scp_like(src: &str) -> Option<(&str, Option<&str>)> {
    let (head, fragment) = match src.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (src, None),
    };
    let (userhost, _path) = head.split_once(':')?;
    let host = match userhost.split_once('@') {
        Some((user, host)) => {
            if user.is_empty()
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return None;
            }
            host
        }
        None => userhost,
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some((head, fragment))
}

/// `#ref:subdir`, or `##ref=…,commit=…,subdir=…`.
fn apply_fragment(g: &mut GitRef, fragment: &str) -> Result<(), String> {
    let (mut reference, mut subdir, mut commit) = (String::new(), String::new(), String::new());
    if let Some(csv) = fragment.strip_prefix('#') {
        for field in crate::csv::fields(csv).map_err(|e| e.to_string())? {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("invalid field `{field}`: must be a key=value pair"))?;
            match k.to_ascii_lowercase().as_str() {
                "ref" => reference = v.to_string(),
                "commit" => commit = v.to_string(),
                "subdir" => subdir = v.to_string(),
                other => {
                    return Err(format!(
                        "unexpected key `{other}` in `{field}` (supported keys: ref, commit, subdir)"
                    ))
                }
            }
        }
    } else if !fragment.is_empty() {
        let (r, s) = fragment.split_once(':').unwrap_or((fragment, ""));
        reference = r.to_string();
        subdir = s.to_string();
    }
    if reference.is_empty() {
        reference = commit.clone();
    }
    if !reference.is_empty() {
        if !g.reference.is_empty() && g.reference != reference {
            return Err(format!("ref conflicts: `{}` vs `{reference}`", g.reference));
        }
        g.reference = reference;
    }
    if !subdir.is_empty() {
        if !g.subdir.is_empty() && g.subdir != subdir {
            return Err(format!("subdir conflicts: `{}` vs `{subdir}`", g.subdir));
        }
        g.subdir = subdir;
    }
    if !commit.is_empty() {
        g.checksum = Some(commit);
    }
    Ok(())
}

/// The query parameters of a git URL (BuildKit's `GitRef.loadQuery`).
fn load_query(g: &mut GitRef, query: &str) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let (mut tag, mut branch) = (String::new(), String::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        if !seen.insert(k.clone()) {
            return Err(format!("query `{k}` has multiple values"));
        }
        let flag = |v: &str, what: &str| -> Result<bool, String> {
            if v.is_empty() {
                return Ok(true);
            }
            parse_go_bool(v).ok_or_else(|| format!("invalid {what} value: `{v}`"))
        };
        if v.is_empty() && k != "submodules" && k != "keep-git-dir" {
            return Err(format!("query `{k}` has no value"));
        }
        match k.as_str() {
            "ref" => g.reference = v,
            "tag" => tag = v,
            "branch" => branch = v,
            "subdir" => g.subdir = v,
            "checksum" | "commit" => g.checksum = Some(v),
            "keep-git-dir" => g.keep_git_dir = Some(flag(&v, "keep-git-dir")?),
            "submodules" => g.submodules = Some(flag(&v, "submodules")?),
            other => return Err(format!("unexpected query `{other}`")),
        }
    }
    if !tag.is_empty() {
        if !branch.is_empty() {
            return Err("branch conflicts with tag".to_string());
        }
        let tag = if tag.starts_with("refs/tags/") {
            tag
        } else {
            format!("refs/tags/{tag}")
        };
        if !g.reference.is_empty() && g.reference != tag {
            return Err(format!("ref conflicts: `{}` vs `{tag}`", g.reference));
        }
        g.reference = tag;
    }
    if !branch.is_empty() {
        let branch = if branch.starts_with("refs/heads/") {
            branch
        } else {
            format!("refs/heads/{branch}")
        };
        if !g.reference.is_empty() && g.reference != branch {
            return Err(format!("ref conflicts: `{}` vs `{branch}`", g.reference));
        }
        g.reference = branch;
    }
    if let (Some(c), true) = (&g.checksum, g.reference.is_empty()) {
        g.reference = c.clone();
    }
    Ok(())
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Checks `--checksum` against the sources (after expansion), as BuildKit does.
pub(super) fn check_checksum(checksum: Option<&str>, sources: &[(String, AddSource)]) -> Result<(), ErrorKind> {
    let Some(c) = checksum else { return Ok(()) };
    if sources.len() != 1 {
        return Err(ErrorKind::ChecksumSeveralSources);
    }
    let bad = |reason: &str| ErrorKind::FlagValue {
        flag: "checksum".to_string(),
        value: c.to_string(),
        reason: reason.to_string(),
    };
    match &sources[0].1 {
        AddSource::Local => Err(ErrorKind::ChecksumNeedsRemote),
        AddSource::Http { .. } => {
            let (algo, hex) = c
                .split_once(':')
                .ok_or_else(|| bad("expected `sha256:<64 hex digits>`"))?;
            if algo != "sha256" {
                return Err(bad("only `sha256` digests are supported"));
            }
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(bad("expected `sha256:` and 64 lower-case hex digits"));
            }
            Ok(())
        }
        AddSource::Git(_) => {
            if !(4..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("expected a commit hash"));
            }
            Ok(())
        }
    }
}

impl Converter<'_> {
    /// For a remote ADD source: adds its source op and returns it with the path to
    /// copy from it and whether the copy unpacks archives; `None` for local sources.
    pub(super) fn add_remote_source(
        &mut self,
        st: &StageState,
        i: &Instruction,
        source: &AddSource,
        flags: &AddFlags,
        checksum: Option<&str>,
    ) -> Result<Option<(Input, String, bool)>, ErrorKind> {
        let (op, src, unpack) = match source {
            AddSource::Local => return Ok(None),
            AddSource::Http { url, filename } => (
                SourceOp::Http {
                    url: url.clone(),
                    filename: filename.clone(),
                    checksum: checksum.map(str::to_string),
                },
                format!("/{filename}"),
                // Downloads are extracted only when asked to.
                flags.unpack.unwrap_or(false),
            ),
            AddSource::Git(g) => {
                let keep = match (flags.keep_git_dir, g.keep_git_dir) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(invalid(&g.remote, "inconsistent keep-git-dir configuration"))
                    }
                    (a, b) => b.or(a).unwrap_or(false),
                };
                let checksum = match (checksum, &g.checksum) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(invalid(&g.remote, format!("checksum mismatch `{a}` != `{b}`")))
                    }
                    (a, b) => b.clone().or(a.map(str::to_string)),
                };
                (
                    SourceOp::Git {
                        remote: g.remote.clone(),
                        reference: g.reference.clone(),
                        subdir: g.subdir.clone(),
                        keep_git_dir: keep,
                        checksum,
                        skip_submodules: g.submodules == Some(false),
                    },
                    "/".to_string(),
                    false,
                )
            }
        };
        // The source op is named like the step (errors from it name the step); the
        // step's counter is advanced only by the file op, so preview it on a copy.
        let description = {
            let mut preview = st.clone();
            self.describe(&mut preview, i)
        };
        let input = self.def.add(
            Op::Source(op),
            Vec::new(),
            OpMeta {
                description,
                span: self.span(i),
                hidden: true,
                stage: st.name.clone(),
                vars: Vec::new(),
            },
        );
        Ok(Some((input, src, unpack)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(s: &str) -> GitRef {
        match classify(s).unwrap() {
            AddSource::Git(g) => g,
            other => panic!("{s}: not git: {other:?}"),
        }
    }

    #[test]
    fn kinds_as_buildkit_tells_them() {
        assert_eq!(classify("a.txt").unwrap(), AddSource::Local);
        assert_eq!(classify("./x:y").unwrap(), AddSource::Local);
        assert_eq!(classify("github.com/moby/buildkit").unwrap(), AddSource::Local);
        assert_eq!(classify("ftp://example.com/a").unwrap(), AddSource::Local);
        assert_eq!(
            classify("https://example.com/dl/app.tar.gz?x=1#frag").unwrap(),
            AddSource::Http {
                url: "https://example.com/dl/app.tar.gz?x=1#frag".into(),
                filename: "app.tar.gz".into()
            }
        );
        let unnamed = |u: &str| match classify(u).unwrap() {
            AddSource::Http { filename, .. } => filename,
            other => panic!("{other:?}"),
        };
        assert_eq!(unnamed("https://example.com"), "__unnamed__");
        assert_eq!(unnamed("https://example.com/"), "__unnamed__");
        assert_eq!(unnamed("http://h/a%20b.txt"), "a b.txt");
        assert_eq!(unnamed("http://h/dir/"), "dir");
        assert!(matches!(
            classify("https://example.com/foo").unwrap(),
            AddSource::Http { .. }
        ));
    }

    #[test]
    fn git_forms() {
        let g = git("https://github.com/foo/bar.git#baz/qux:quux/quuz");
        assert_eq!(
            (g.remote.as_str(), g.reference.as_str(), g.subdir.as_str()),
            ("https://github.com/foo/bar.git", "baz/qux", "quux/quuz")
        );
        let g = git("git@github.com:moby/buildkit.git#v1.0.0:hack");
        assert_eq!(
            (g.remote.as_str(), g.reference.as_str(), g.subdir.as_str()),
            ("git@github.com:moby/buildkit.git", "v1.0.0", "hack")
        );
        assert_eq!(
            git("git://host.xz:1234/path/to/repo.git").remote,
            "git://host.xz:1234/path/to/repo.git"
        );
        assert_eq!(
            git("ssh://git@github.com:22/moby/buildkit.git").remote,
            "ssh://git@github.com:22/moby/buildkit.git"
        );
        assert_eq!(git("HTTPS://h/r.git").remote, "https://h/r.git");
        let g = git("https://h/r.git##ref=v1.0.0,subdir=/sub");
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("v1.0.0", "/sub"));
        let g = git("https://h/r.git##\"ref=a,b\",commit=deadbeef");
        assert_eq!((g.reference.as_str(), g.checksum.as_deref()), ("a,b", Some("deadbeef")));
        let g = git("https://h/r.git?tag=v1&subdir=docs&keep-git-dir");
        assert_eq!(
            (g.reference.as_str(), g.subdir.as_str(), g.keep_git_dir),
            ("refs/tags/v1", "docs", Some(true))
        );
        let g = git("https://h/r.git?branch=main&submodules=false");
        assert_eq!((g.reference.as_str(), g.submodules), ("refs/heads/main", Some(false)));
        assert!(classify("https://h/r.git?tag=a&branch=b").is_err());
        assert!(classify("https://h/r.git?bogus=1").is_err());
        assert!(classify("https://h/r.git##color=red").is_err());
        assert!(classify("https://h/r.git?ref=a#b").is_err());
    }

    #[test]
    fn git_fragment_fields_are_split_as_go_encoding_csv_splits_them() {
        // A quote quotes a whole field only; inside one it is an error, as in BuildKit's
        // csvvalue.Fields (`parse error on line 1, column 8: bare " in non-quoted-field`).
        let e = classify("https://h/r.git##subdir=\"a,b\"").unwrap_err().to_string();
        assert!(e.contains("column 8: bare \" in non-quoted field"), "{e}");
        let e = classify("https://h/r.git##\"ref=a\"b").unwrap_err().to_string();
        assert!(e.contains("column 7: extraneous or missing \" in quoted field"), "{e}");
        let g = git("https://h/r.git##\"ref=a\"\"b\",subdir=s");
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("a\"b", "s"));
    }

    #[test]
    fn checksums() {
        let http = vec![(
            "https://h/a".to_string(),
            AddSource::Http {
                url: "https://h/a".into(),
                filename: "a".into(),
            },
        )];
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(check_checksum(Some(&ok), &http).is_ok());
        assert!(check_checksum(Some("sha256:abc"), &http).is_err());
        assert!(check_checksum(Some(&format!("md5:{}", "a".repeat(64))), &http).is_err());
        let local = vec![("a".to_string(), AddSource::Local)];
        assert!(matches!(
            check_checksum(Some(&ok), &local),
            Err(ErrorKind::ChecksumNeedsRemote)
        ));
        let two = vec![http[0].clone(), http[0].clone()];
        assert!(matches!(
            check_checksum(Some(&ok), &two),
            Err(ErrorKind::ChecksumSeveralSources)
        ));
    }
}
