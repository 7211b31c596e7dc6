//! What a COPY or ADD reads: its sources (globs expanded) and, below each, the entries
//! .dockerignore, `--exclude` and a `--parents` pattern leave in. The worker describes
//! the action ([`CopySources`]) and the tree it reads from ([`SourceTree`]: the build
//! context, a stage or an image root, with the way a path resolves inside it), and
//! calls [`matching`], [`Filter`] and the walk helpers while it copies, or [`select`]
//! for the cache key.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here carry the path (`MemoError::Io`, `SelectError::Io`)"
)]

use std::path::{Component, Path, PathBuf};

use crate::dockerignore::PatternMatcher;
use crate::pathmatch as glob;

/// The part of a COPY/ADD action that selects what it reads.
#[derive(Debug, Clone, Copy)]
pub struct CopySources<'a> {
    /// The source as written (absolute or relative to the source root).
    pub src: &'a str,
    /// Whether `src` may be a glob.
    pub allow_wildcard: bool,
    /// Whether a glob may match nothing.
    pub allow_empty_wildcard: bool,
    /// `--exclude` patterns.
    pub exclude: &'a [String],
    /// `--parents`: the pattern below the pivot (`.` or empty: everything).
    pub parents: Option<&'a str>,
}

/// SourceTree is the tree a COPY reads from, as selection sees it (walked on several
/// threads: see [`select`]).
pub trait SourceTree: Sync {
    /// The tree's root directory.
    fn root(&self) -> &Path;
    /// `.dockerignore` of the build context; `None` for stage sources.
    fn ignore(&self) -> Option<&PatternMatcher>;
    /// How errors name the source, e.g. `build context` or `stage builder`.
    fn label(&self) -> &str;
    /// `rel` resolved inside the root (an absolute path below it): every symlink on
    /// the way followed, the last one only if `follow_last`, never out of the root.
    fn resolve_in_root(&self, rel: &Path, follow_last: bool) -> Result<PathBuf, String>;
}

/// Why a selection failed; the worker reports each as its own error of the same text.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("`{path}`: not found in {source_label}")]
    SourceNotFound { path: String, source_label: String },
    #[error("invalid source `{path}`: {reason}")]
    BadSource { path: String, reason: String },
    #[error("`{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SelectError {
    let path = path.to_path_buf();
    move |source| SelectError::Io { path, source }
}

/// Cleans a path as if absolute (`..` cannot climb above `/`) and returns it relative.
pub fn clean_abs(p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// What a walk does with one entry below a matched source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Copy it (and, for a directory, walk it).
    Copy,
    /// A directory not selected itself that something below may be: walk it, make it
    /// only when something below is copied.
    Descend,
    /// Leave it out, and everything below it.
    Skip,
}

/// Filter holds a COPY's `--exclude` patterns and its `--parents` pattern, both
/// matched (Docker patternmatcher rules: `*`, `?`, `[…]`, `**`, a match of a parent
/// counts) against paths relative to each matched source, as fsutil's copier does.
#[derive(Debug, Default)]
pub struct Filter {
    exclude: Option<PatternMatcher>,
    /// The `--parents` pattern and its leading components without wildcards, which
    /// every selected path must start with.
    include: Option<(PatternMatcher, Vec<String>)>,
}

impl Filter {
    pub fn new(action: &CopySources<'_>) -> Result<Filter, SelectError> {
        let compile = |patterns: &[String]| {
            PatternMatcher::new(patterns).map_err(|e| SelectError::BadSource {
                path: patterns.join(" "),
                reason: e.to_string(),
            })
        };
        let exclude = if action.exclude.is_empty() {
            None
        } else {
            Some(compile(action.exclude)?)
        };
        // `COPY --parents . /d/` has an empty pattern: BuildKit's matcher then selects
        // nothing at all; kiln copies everything, as `COPY . /d/` does.
        let include = match action.parents {
            Some(p) if !p.is_empty() && p != "." => {
                let prefix = p
                    .split('/')
                    .take_while(|c| !glob::has_meta(c) && !c.contains('\\'))
                    .map(str::to_string)
                    .collect();
                Some((compile(&[p.to_string()])?, prefix))
            }
            _ => None,
        };
        Ok(Filter { exclude, include })
    }

    /// Decides about the entry at `rel` (relative to the matched source).
    pub fn decide(&self, rel: &str, is_dir: bool) -> Decision {
        if self.exclude.is_none() && self.include.is_none() {
            return Decision::Copy;
        }
        let excluded = self.exclude.as_ref().is_some_and(|m| m.is_excluded(rel));
        let included = !excluded && self.include.as_ref().is_none_or(|(m, _)| m.is_excluded(rel));
        if included {
            return Decision::Copy;
        }
        if !is_dir {
            return Decision::Skip;
        }
        // Nothing below an excluded directory comes back without a `!` pattern.
        if excluded && self.exclude.as_ref().is_some_and(|m| m.can_skip_dir(rel)) {
            return Decision::Skip;
        }
        // Nothing below a directory off the pattern's literal prefix can match it.
        if let Some((_, prefix)) = &self.include {
            if !rel.split('/').zip(prefix).all(|(a, b)| a == b) {
                return Decision::Skip;
            }
        }
        Decision::Descend
    }
}

pub fn is_ignored(src: &dyn SourceTree, rel: &Path) -> bool {
    !rel.as_os_str().is_empty()
        && src
            .ignore()
            .is_some_and(|m| !m.is_empty() && m.is_excluded(&slash(rel)))
}

/// Whether `rel` is in the context BuildKit's walker (fsutil's `filterFS.Walk`) sends:
/// not ignored, or an ignored directory with something below it that a `!` pattern
/// re-includes (fsutil sends such a directory, with its own metadata, before the first
/// entry below it, and only then).
pub fn is_present(src: &dyn SourceTree, rel: &Path) -> bool {
    !is_ignored(src, rel) || reincludes_below(src, rel)
}

/// Whether the walk of the ignored directory `rel` would send anything below it.
fn reincludes_below(src: &dyn SourceTree, rel: &Path) -> bool {
    let dir = src.root().join(rel);
    if !dir.symlink_metadata().is_ok_and(|m| m.is_dir()) || src.ignore().is_some_and(|m| m.can_skip_dir(&slash(rel))) {
        return false;
    }
    let Ok(entries) = sorted_entries(&dir) else {
        return false;
    };
    entries.iter().any(|e| {
        let child = rel.join(e.file_name());
        !is_ignored(src, &child) || (e.file_type().is_ok_and(|t| t.is_dir()) && reincludes_below(src, &child))
    })
}

/// Whether a walk leaves `rel` out for .dockerignore: an ignored file always, an
/// ignored directory only when no `!` pattern can re-include something below it.
pub fn skip_ignored(src: &dyn SourceTree, rel: &Path, entry: &std::fs::DirEntry) -> bool {
    is_ignored(src, rel)
        && (src.ignore().is_some_and(|m| m.can_skip_dir(&slash(rel))) || !entry.file_type().is_ok_and(|t| t.is_dir()))
}

/// A directory's entries, sorted by name.
pub fn sorted_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, SelectError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_cached_key(|e| e.file_name());
    Ok(entries)
}

fn slash(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Matched is one source a COPY action names: the path it was named or matched as, and
/// where it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The path as named or matched, relative to the source root; its last component
    /// names the copy (`COPY link /d/` makes `/d/link`).
    pub name: PathBuf,
    /// The same path resolved inside the source root, relative to it: every symlink on
    /// the way, the last one included, is followed there, never out of it (BuildKit's
    /// `fs.RootPath`).
    pub real: PathBuf,
}

/// Expands a glob source component by component (`*` never crosses `/`), sorted. The
/// components before the first wildcard resolve inside the root; below them the walk
/// goes only through real directories, never through a symlink (fsutil's
/// `ResolveWildcards` walks with `lstat`). A match may itself be a symlink.
fn expand_glob(src: &dyn SourceTree, pattern: &Path) -> Result<Vec<(PathBuf, PathBuf)>, SelectError> {
    let comps: Vec<&std::ffi::OsStr> = pattern.iter().collect();
    let first_meta = comps
        .iter()
        .position(|c| glob::has_meta(&c.to_string_lossy()))
        .unwrap_or(comps.len());
    let prefix: PathBuf = comps[..first_meta].iter().collect();
    let base = in_root(src, &prefix, &pattern.display().to_string())?;
    // (as matched, below the resolved prefix)
    let mut current = vec![(prefix, base)];
    for comp in &comps[first_meta..] {
        let comp_s = comp.to_string_lossy();
        let mut next = Vec::new();
        for (named, real) in &current {
            let dir = src.root().join(real);
            if !dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if !glob::has_meta(&comp_s) {
                if dir.join(comp).symlink_metadata().is_ok() {
                    next.push((named.join(comp), real.join(comp)));
                }
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            names.sort();
            for n in names {
                match glob::matches(&comp_s, &n.to_string_lossy()) {
                    Some(true) => next.push((named.join(&n), real.join(&n))),
                    Some(false) => {}
                    None => {
                        return Err(SelectError::BadSource {
                            path: pattern.display().to_string(),
                            reason: "malformed glob pattern".into(),
                        })
                    }
                }
            }
        }
        current = next;
    }
    Ok(current.into_iter().filter(|(_, real)| is_present(src, real)).collect())
}

/// `rel` resolved inside the source root, relative to it.
fn in_root(src: &dyn SourceTree, rel: &Path, shown: &str) -> Result<PathBuf, SelectError> {
    let resolved = src
        .resolve_in_root(rel, true)
        .map_err(|reason| SelectError::BadSource {
            path: shown.to_string(),
            reason,
        })?;
    Ok(resolved.strip_prefix(src.root()).unwrap_or(Path::new("")).to_path_buf())
}

/// Follows a matched source inside the root: a symlink is read through (its target's
/// content, under the link's name); a link whose target is not in the root fails
/// naming both.
fn follow(src: &dyn SourceTree, named: PathBuf, found: &Path, shown: &str) -> Result<Matched, SelectError> {
    let real = in_root(src, found, shown)?;
    if src.root().join(&real).symlink_metadata().is_err() || !is_present(src, &real) {
        // The link itself, its parents resolved in the root too.
        let link = src
            .resolve_in_root(found, false)
            .ok()
            .and_then(|at| std::fs::read_link(at).ok());
        return Err(match link {
            Some(target) => SelectError::BadSource {
                path: shown.to_string(),
                reason: format!(
                    "it is a symbolic link to `{}`, which is not in {} (links resolve inside it)",
                    target.display(),
                    src.label()
                ),
            },
            None => SelectError::SourceNotFound {
                path: shown.to_string(),
                source_label: src.label().to_string(),
            },
        });
    }
    Ok(Matched { name: named, real })
}

/// The sources `action` names in `src` (globs expanded), each resolved inside its root.
pub fn matching(action: &CopySources<'_>, src: &dyn SourceTree) -> Result<Vec<Matched>, SelectError> {
    let pattern = clean_abs(action.src);
    if let Some(below) = action.parents {
        require_parents_path(action, below, src)?;
    }
    if action.allow_wildcard && glob::has_meta(&pattern.to_string_lossy()) {
        let found = expand_glob(src, &pattern)?;
        if found.is_empty() && !action.allow_empty_wildcard {
            return Err(SelectError::SourceNotFound {
                path: action.src.to_string(),
                source_label: src.label().to_string(),
            });
        }
        return found
            .into_iter()
            .map(|(named, real)| {
                let shown = format!("/{}", slash(&named));
                follow(src, named, &real, &shown)
            })
            .collect();
    }
    if !is_present(src, &pattern) {
        return Err(SelectError::SourceNotFound {
            path: action.src.to_string(),
            source_label: src.label().to_string(),
        });
    }
    Ok(vec![follow(src, pattern.clone(), &pattern, action.src)?])
}

/// `COPY --parents` without wildcards names one path, which must exist (BuildKit's
/// `RequiredPaths`); with wildcards, matching nothing copies nothing.
fn require_parents_path(action: &CopySources<'_>, below: &str, src: &dyn SourceTree) -> Result<(), SelectError> {
    if glob::has_meta(action.src) || glob::has_meta(below) || below.is_empty() || below == "." {
        return Ok(());
    }
    let full = clean_abs(action.src).join(below);
    let shown = format!("/{}", slash(&full));
    // The path below the pivot is walked, not followed: it must exist as an entry (a
    // symlink there is copied as one), its parents resolved inside the root.
    let resolved = src
        .resolve_in_root(&full, false)
        .map_err(|reason| SelectError::BadSource {
            path: shown.clone(),
            reason,
        })?;
    let rel = resolved.strip_prefix(src.root()).unwrap_or(Path::new(""));
    if resolved.symlink_metadata().is_err() || !is_present(src, rel) {
        return Err(SelectError::SourceNotFound {
            path: shown,
            source_label: src.label().to_string(),
        });
    }
    Ok(())
}

/// One file system object a COPY from the build context would read.
pub struct Selected {
    /// Path relative to the source root.
    pub rel: PathBuf,
    pub md: std::fs::Metadata,
    /// Symlink target, for symlinks.
    pub link: Option<PathBuf>,
    /// For a matched source whose name differs from `rel` (a symlink followed, or a
    /// parent resolved inside the root), the name it was matched as: it names the copy.
    pub named: Option<PathBuf>,
}

/// Everything `action` would copy from `src`, in copy order: the same matching,
/// ignore rules, filters and walk as the worker's copy (`FileWriter::copy`), without writing
/// anything.
pub fn select(action: &CopySources<'_>, src: &dyn SourceTree) -> Result<Vec<Selected>, SelectError> {
    let filter = Filter::new(action)?;
    let matches = matching(action, src)?;
    let mut out = Vec::new();
    for m in matches {
        let mut pending = Vec::new();
        let at = out.len();
        select_entry(src, &filter, &m.real, &m.real, None, true, &mut pending, &mut out)?;
        if m.name != m.real {
            if let Some(top) = out.get_mut(at) {
                top.named = Some(m.name);
            }
        }
    }
    Ok(out)
}

/// Selects `rel` (and what is below it): `entry` is its directory entry, or `None` for
/// the matched source itself (`top`). `parallel`: a big directory may be walked on
/// several threads (once per walk: not below a directory that was).
#[allow(clippy::too_many_arguments, reason = "the walk's state, passed down as it recurses")]
fn select_entry(
    src: &dyn SourceTree,
    filter: &Filter,
    base: &Path,
    rel: &Path,
    entry: Option<&std::fs::DirEntry>,
    parallel: bool,
    pending: &mut Vec<Option<Selected>>,
    out: &mut Vec<Selected>,
) -> Result<(), SelectError> {
    let top = entry.is_none();
    let from = src.root().join(rel);
    // A matched source is already resolved inside the root: nothing here follows a link.
    // An entry is asked through its directory's descriptor (no path walk per file).
    let md = match entry {
        Some(e) => e.metadata(),
        None => std::fs::symlink_metadata(&from),
    }
    .map_err(io_err(&from))?;
    let ft = md.file_type();
    let is_dir = ft.is_dir();
    let mut descend_only = false;
    if !top {
        let below = slash(rel.strip_prefix(base).unwrap_or(rel));
        match filter.decide(&below, is_dir) {
            Decision::Skip => return Ok(()),
            Decision::Descend => descend_only = true,
            // An ignored directory the walk goes into for what `!` patterns re-include.
            Decision::Copy if is_dir && is_ignored(src, rel) => descend_only = true,
            // The directories walked through are made before what is copied below them.
            Decision::Copy => out.extend(pending.iter_mut().filter_map(Option::take)),
        }
    }
    let link = if ft.is_symlink() {
        Some(std::fs::read_link(&from).map_err(io_err(&from))?)
    } else {
        None
    };
    let entry = Selected {
        rel: rel.to_path_buf(),
        md,
        link,
        named: None,
    };
    // FIFOs, sockets and devices are selected too: the copy recreates (or names in a
    // warning) each of them, so each is part of the cache key.
    if descend_only {
        pending.push(Some(entry));
    } else {
        out.push(entry);
    }
    if is_dir {
        let children = sorted_entries(&from)?;
        if parallel && children.len() >= PARALLEL_MIN_ENTRIES {
            select_children_in_parallel(src, filter, base, rel, &children, pending, out)?;
        } else {
            for e in &children {
                let child_rel = rel.join(e.file_name());
                if skip_ignored(src, &child_rel, e) {
                    continue;
                }
                select_entry(src, filter, base, &child_rel, Some(e), parallel, pending, out)?;
            }
        }
    }
    if descend_only {
        pending.pop();
    }
    Ok(())
}

/// A directory with at least this many entries has them walked on every CPU of kiln's
/// budget free now (a `stat` per file is most of a no-op rebuild's time).
const PARALLEL_MIN_ENTRIES: usize = 32;

/// [`select_entry`] of each of `children` (the entries of the directory `rel`), on this
/// thread and on a helper for each free CPU, each subtree into its own list; the lists
/// are joined in name order, so the result is the serial walk's. The directories walked
/// through above (`pending`) go out before the first subtree that selected something,
/// as the serial walk puts them before the first entry selected below them.
fn select_children_in_parallel(
    src: &dyn SourceTree,
    filter: &Filter,
    base: &Path,
    rel: &Path,
    children: &[std::fs::DirEntry],
    pending: &mut [Option<Selected>],
    out: &mut Vec<Selected>,
) -> Result<(), SelectError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let budget = kiln_cpu::global();
    type Walked = Result<Vec<Selected>, SelectError>;
    let parts: Vec<Vec<(usize, Walked)>> = budget.workers(children.len(), || {
        budget.working();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(e) = children.get(i) else { break };
            let child_rel = rel.join(e.file_name());
            let mut below = Vec::new();
            let walked = if skip_ignored(src, &child_rel, e) {
                Ok(())
            } else {
                select_entry(
                    src,
                    filter,
                    base,
                    &child_rel,
                    Some(e),
                    false,
                    &mut Vec::new(),
                    &mut below,
                )
            };
            let failed = walked.is_err();
            done.push((i, walked.map(|()| below)));
            if failed {
                // The first error in name order is reported; no need to walk on.
                next.store(children.len(), Ordering::Relaxed);
                break;
            }
        }
        done
    });
    let mut by_child: Vec<Option<Walked>> = (0..children.len()).map(|_| None).collect();
    for (i, r) in parts.into_iter().flatten() {
        by_child[i] = Some(r);
    }
    for r in by_child {
        // A child not walked: an error of an earlier one stopped the walk.
        let Some(below) = r else { break };
        let below = below?;
        if !below.is_empty() {
            out.extend(pending.iter_mut().filter_map(Option::take));
            out.extend(below);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);

    impl SourceTree for Tree {
        fn root(&self) -> &Path {
            &self.0
        }
        fn ignore(&self) -> Option<&PatternMatcher> {
            None
        }
        fn label(&self) -> &str {
            "test tree"
        }
        fn resolve_in_root(&self, rel: &Path, _follow_last: bool) -> Result<PathBuf, String> {
            Ok(self.0.join(rel))
        }
    }

    /// The walk of a big directory on several threads (each subtree into its own list,
    /// joined in name order, the directories walked through put before the first
    /// subtree that selects something) selects exactly what the one-thread walk does.
    #[test]
    fn a_big_directory_walked_in_parallel_selects_what_the_serial_walk_does() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        // The big directory is below the matched source, so that it can be one the walk
        // only passes through.
        let big = top.join("pkg");
        for i in 0..PARALLEL_MIN_ENTRIES + 8 {
            let d = big.join(format!("d{i:02}"));
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("a.txt"), "a").unwrap();
            std::fs::write(d.join("b.md"), "b").unwrap();
            std::fs::write(d.join("sub/c.txt"), "c").unwrap();
            std::fs::write(big.join(format!("f{i:02}.md")), "f").unwrap();
        }
        std::fs::write(top.join("z.md"), "z").unwrap();
        let tree = Tree(dir.path().to_path_buf());
        let walk = |f: &Filter, parallel: bool| {
            let (mut pending, mut out) = (Vec::new(), Vec::new());
            let rel = Path::new("top");
            select_entry(&tree, f, rel, rel, None, parallel, &mut pending, &mut out).unwrap();
            out.iter().map(|e| e.rel.display().to_string()).collect::<Vec<_>>()
        };
        let cases = [
            filter(&[], None),
            filter(&["**/*.md"], None),
            // Only some subtrees select something: the directories walked through
            // (`top/pkg`, `top/pkg/d1x`, `top/pkg/d1x/sub`) come out just before their
            // first file.
            filter(&[], Some("pkg/d1*/sub/*.txt")),
            filter(&["pkg", "!pkg/d0*/sub"], None),
        ];
        for f in &cases {
            let serial = walk(f, false);
            assert!(!serial.is_empty());
            assert_eq!(walk(f, true), serial, "{f:?}");
        }
        let some = walk(&cases[2], false);
        assert_eq!(&some[..4], ["top", "top/pkg", "top/pkg/d10", "top/pkg/d10/sub"]);
    }

    fn filter(exclude: &[&str], parents: Option<&str>) -> Filter {
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let action = CopySources {
            src: "/",
            allow_wildcard: true,
            allow_empty_wildcard: true,
            exclude: &exclude,
            parents,
        };
        Filter::new(&action).expect("patterns compile")
    }

    #[test]
    fn exclude_patterns_are_relative_to_the_source() {
        let f = filter(&["*.txt", "dir2"], None);
        assert_eq!(f.decide("a.txt", false), Decision::Skip);
        assert_eq!(f.decide("a.md", false), Decision::Copy);
        assert_eq!(f.decide("sub/a.txt", false), Decision::Copy);
        assert_eq!(f.decide("dir2", true), Decision::Skip);
        assert_eq!(f.decide("dir2/x", false), Decision::Skip);
        // A `!` pattern below an excluded directory makes the walk go in.
        let f = filter(&["dir", "!dir/keep"], None);
        assert_eq!(f.decide("dir", true), Decision::Descend);
        assert_eq!(f.decide("dir/keep", false), Decision::Copy);
        assert_eq!(f.decide("dir/other", false), Decision::Skip);
    }

    #[test]
    fn parents_pattern_selects_paths_and_what_is_below_them() {
        let f = filter(&[], Some("pkg/a.go"));
        assert_eq!(f.decide("pkg", true), Decision::Descend);
        assert_eq!(f.decide("pkg/a.go", false), Decision::Copy);
        assert_eq!(f.decide("pkg/b.go", false), Decision::Skip);
        assert_eq!(f.decide("vendor", true), Decision::Skip);
        let f = filter(&["**/skip"], Some("src/**/*.txt"));
        assert_eq!(f.decide("src", true), Decision::Descend);
        assert_eq!(f.decide("src/a.txt", false), Decision::Copy);
        assert_eq!(f.decide("src/x/y/c.txt", false), Decision::Copy);
        assert_eq!(f.decide("src/x/y/c.md", false), Decision::Skip);
        assert_eq!(f.decide("src/skip", true), Decision::Skip);
        assert_eq!(f.decide("docs", true), Decision::Skip);
        // A matched directory is copied whole.
        let f = filter(&[], Some("*/lib"));
        assert_eq!(f.decide("a", true), Decision::Descend);
        assert_eq!(f.decide("a/lib", true), Decision::Copy);
        assert_eq!(f.decide("a/lib/deep/file", false), Decision::Copy);
        assert_eq!(f.decide("a/bin", true), Decision::Descend);
    }

    #[test]
    fn no_filters_copy_everything() {
        let f = filter(&[], None);
        assert_eq!(f.decide("x", true), Decision::Copy);
        let f = filter(&[], Some("."));
        assert_eq!(f.decide("x/y", false), Decision::Copy);
    }
}
