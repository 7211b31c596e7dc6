//! COPY/ADD, WORKDIR's mkdir and heredoc files, written into a step's upper directory.
//!
//! Semantics follow BuildKit: sources are resolved inside their root (symlinks followed,
//! never out of it); a directory source copies its contents; several sources or a
//! trailing `/` make the destination a directory; files from the build context are
//! owned by 0:0 unless `--chown`, files from a stage keep their owners; `--chmod`
//! applies to everything copied; source mtimes are kept. Directories kiln creates on
//! the way get mode 0755 and the build's fixed timestamp, so layers are reproducible.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_frontend::dockerignore::PatternMatcher;
use kiln_graph::{ChownOpt, CopyAction, UserSpec};
use kiln_snapshotter::{resolve_in_root, set_mtime, ActiveSnapshot};

use crate::{users, WorkerError};
use kiln_frontend::pathmatch as glob;

/// SourceTree is where a COPY reads from.
pub struct SourceTree<'a> {
    pub root: &'a Path,
    /// .dockerignore of the build context; `None` for stage sources.
    pub ignore: Option<&'a PatternMatcher>,
    /// How errors name the source, e.g. `build context` or `stage builder`.
    pub label: String,
    /// Keep the source's owners (stages) instead of 0:0 (context).
    pub keep_owner: bool,
}

/// FileWriter applies file actions to one active snapshot.
pub struct FileWriter<'a> {
    pub snap: &'a mut ActiveSnapshot,
    pub privileged: bool,
    /// mtime for directories kiln creates.
    pub epoch: i64,
    /// Upper directories whose mtime must be (re)set once all writes are done.
    dir_times: Vec<(PathBuf, i64)>,
    hardlinks: HashMap<(u64, u64), PathBuf>,
    /// Regular files to copy, then hard links to make, on all cores (see [`Self::flush`]).
    files: Vec<FileJob>,
    links: Vec<(PathBuf, PathBuf)>,
}

/// FileJob is one regular file to copy into the upper directory with its metadata.
struct FileJob {
    from: PathBuf,
    to: PathBuf,
    mode: u32,
    /// Owner to set (privileged builds only; rootless ones record it for the layer).
    owner: Option<Owner>,
    mtime: i64,
    size: u64,
}

type Owner = (u32, u32);

impl<'a> FileWriter<'a> {
    pub fn new(snap: &'a mut ActiveSnapshot, privileged: bool, epoch: i64) -> Self {
        FileWriter {
            snap,
            privileged,
            epoch,
            dir_times: Vec::new(),
            hardlinks: HashMap::new(),
            files: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Resolves `--chown` against the image's passwd/group files.
    pub fn resolve_owner(&self, chown: &Option<ChownOpt>) -> Result<Option<Owner>, WorkerError> {
        let Some(c) = chown else { return Ok(None) };
        let root = self.snap.lower();
        let spec = |u: &UserSpec| match u {
            UserSpec::Id(i) => i.to_string(),
            UserSpec::Name(n) => n.clone(),
        };
        let uspec = spec(&c.user);
        let (uid, primary) =
            users::user(root, &uspec).ok_or_else(|| WorkerError::UnknownUser { user: uspec.clone() })?;
        let gid = match &c.group {
            Some(g) => {
                let gspec = spec(g);
                users::group(root, &gspec).ok_or(WorkerError::UnknownGroup { group: gspec })?
            }
            // `--chown=name` takes the user's primary group; `--chown=1000` uses 1000.
            None => primary,
        };
        Ok(Some((uid, gid)))
    }

    /// Runs one COPY action from `src`.
    pub fn copy(&mut self, action: &CopyAction, src: &SourceTree<'_>) -> Result<(), WorkerError> {
        let owner = self.resolve_owner(&action.chown)?;
        let matches = matching(action, src)?;
        let dest = clean_abs(&action.dest);
        let dest_is_dir = action.dest_is_dir || matches.len() > 1;
        for rel in matches {
            let from = src.root.join(&rel);
            let md = std::fs::metadata(&from).map_err(io_err(&from))?;
            let target = if md.is_dir() {
                dest.clone()
            } else if dest_is_dir || self.is_dir_in_view(&dest) {
                dest.join(rel.file_name().unwrap_or_default())
            } else {
                dest.clone()
            };
            let target = self.prepare_target(&target, owner)?;
            self.copy_entry(src, &from, &rel, &target, owner, action.chmod, true)?;
            // One source's walk never names a target twice; the next source may.
            self.flush()?;
        }
        Ok(())
    }

    /// Copies the files queued by the walk, on all cores, then makes the hard links to
    /// them. Each file is copied with `copy_file_range` and gets its mode, owner and
    /// time through the open descriptor. Threads take batches of files of one
    /// directory, so that they seldom wait for each other on a directory's lock.
    fn flush(&mut self) -> Result<(), WorkerError> {
        let files = std::mem::take(&mut self.files);
        let mut batches = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, f) in files.iter().enumerate() {
            if i > start && (f.to.parent() != files[start].to.parent() || i - start >= 128 || bytes >= 16 << 20) {
                batches.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += f.size;
        }
        if start < files.len() {
            batches.push(start..files.len());
        }
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(batches.len());
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<WorkerError>> = Mutex::new(None);
        let privileged = self.privileged;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = batches.get(b) else { break };
                    if let Err(e) = files[batch.clone()]
                        .iter()
                        .try_for_each(|job| copy_file(job, privileged))
                    {
                        failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        // Make the other threads stop too.
                        next.store(batches.len(), Ordering::Relaxed);
                        break;
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        for (first, link) in std::mem::take(&mut self.links) {
            std::fs::hard_link(&first, &link).map_err(io_err(&link))?;
        }
        Ok(())
    }

    /// Creates a directory and its parents (WORKDIR).
    pub fn mkdir(&mut self, path: &str, mode: u32, chown: &Option<ChownOpt>) -> Result<(), WorkerError> {
        let owner = self.resolve_owner(chown)?;
        let rel = clean_abs(path);
        if rel.as_os_str().is_empty() || self.is_dir_in_view(&rel) {
            return Ok(());
        }
        let target = self.prepare_target(&rel, owner)?;
        let up = self.snap.upper().join(&target);
        if up.symlink_metadata().is_err() {
            std::fs::create_dir(&up).map_err(io_err(&up))?;
            self.finish_entry(&up, mode, owner.unwrap_or((0, 0)), self.epoch, true)?;
        }
        Ok(())
    }

    /// Writes a file with the given contents (COPY heredoc).
    pub fn mkfile(&mut self, path: &str, mode: u32, data: &[u8], chown: &Option<ChownOpt>) -> Result<(), WorkerError> {
        let owner = self.resolve_owner(chown)?;
        let rel = clean_abs(path);
        let target = self.prepare_target(&rel, owner)?;
        let up = self.snap.upper().join(&target);
        remove_existing(&up)?;
        std::fs::write(&up, data).map_err(io_err(&up))?;
        self.finish_entry(&up, mode, owner.unwrap_or((0, 0)), self.epoch, false)
    }

    /// Sets directory times last, after every child has been written.
    pub fn finish(mut self) -> Result<(), WorkerError> {
        self.flush()?;
        for (dir, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            set_mtime(&dir, mtime).map_err(io_err(&dir))?;
        }
        Ok(())
    }

    fn is_dir_in_view(&self, rel: &Path) -> bool {
        let resolved = self.resolve_view(rel, true);
        self.snap
            .lookup(&resolved)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_dir())
    }

    /// Resolves `rel` through the merged view (upper over lower), following symlinks
    /// inside the root; with `follow_last` false the final component is kept as is.
    fn resolve_view(&self, rel: &Path, follow_last: bool) -> PathBuf {
        let mut out = PathBuf::new();
        let mut pending: Vec<std::ffi::OsString> = rel.iter().rev().map(|c| c.to_os_string()).collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                out.pop();
                continue;
            }
            let cand = out.join(&part);
            let last = pending.is_empty();
            match self.snap.lookup(&cand) {
                Some(p)
                    if (follow_last || !last)
                        && hops < 40
                        && p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) =>
                {
                    hops += 1;
                    if let Ok(t) = std::fs::read_link(&p) {
                        if t.is_absolute() {
                            out = PathBuf::new();
                        }
                        for c in t.components().rev() {
                            match c {
                                Component::Normal(n) => pending.push(n.to_os_string()),
                                Component::ParentDir => pending.push("..".into()),
                                _ => {}
                            }
                        }
                    }
                }
                _ => out = cand,
            }
        }
        out
    }

    /// Resolves the destination's parent through the view and makes every ancestor
    /// exist in the upper directory; returns the resolved relative target.
    fn prepare_target(&mut self, rel: &Path, owner: Option<Owner>) -> Result<PathBuf, WorkerError> {
        let parent = rel.parent().map(|p| self.resolve_view(p, true)).unwrap_or_default();
        let mut cur = PathBuf::new();
        for comp in parent.iter() {
            cur.push(comp);
            let up = self.snap.upper().join(&cur);
            match up.symlink_metadata() {
                Ok(md) if md.is_dir() => continue,
                Ok(_) => remove_existing(&up)?,
                Err(_) => {}
            }
            std::fs::create_dir(&up).map_err(io_err(&up))?;
            let lower = self
                .snap
                .lower()
                .map(|l| l.join(&cur))
                .and_then(|p| p.symlink_metadata().ok())
                .filter(|m| m.is_dir());
            match lower {
                // Mirror the existing directory so the layer carries it unchanged.
                Some(md) => self.finish_entry(&up, md.mode() & 0o7777, (md.uid(), md.gid()), md.mtime(), true)?,
                None => self.finish_entry(&up, 0o755, owner.unwrap_or((0, 0)), self.epoch, true)?,
            }
        }
        Ok(match rel.file_name() {
            Some(name) => parent.join(name),
            None => parent,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_entry(
        &mut self,
        src: &SourceTree<'_>,
        from: &Path,
        rel: &Path,
        target: &Path,
        owner: Option<Owner>,
        chmod: Option<u32>,
        top: bool,
    ) -> Result<(), WorkerError> {
        // The top-level source is followed if it is a symlink; entries inside are not.
        let md = if top {
            std::fs::metadata(from)
        } else {
            std::fs::symlink_metadata(from)
        }
        .map_err(io_err(from))?;
        let up = self.snap.upper().join(target);
        let own = owner.unwrap_or(if src.keep_owner { (md.uid(), md.gid()) } else { (0, 0) });
        let mode = chmod.unwrap_or(md.mode() & 0o7777);
        let ft = md.file_type();
        if ft.is_dir() {
            let exists_in_upper = up.symlink_metadata().is_ok_and(|m| m.is_dir());
            if !exists_in_upper {
                remove_existing(&up)?;
                std::fs::create_dir(&up).map_err(io_err(&up))?;
            }
            let lower_dir = self
                .snap
                .lower()
                .map(|l| l.join(target))
                .and_then(|p| p.symlink_metadata().ok())
                .filter(|m| m.is_dir());
            if top && !target.as_os_str().is_empty() && (exists_in_upper || lower_dir.is_some()) {
                // Copying contents into an existing directory keeps its metadata.
                if let (false, Some(l)) = (exists_in_upper, lower_dir) {
                    self.finish_entry(&up, l.mode() & 0o7777, (l.uid(), l.gid()), l.mtime(), true)?;
                }
            } else if !target.as_os_str().is_empty() {
                self.finish_entry(&up, mode, own, md.mtime(), true)?;
            }
            let mut names: Vec<_> = std::fs::read_dir(from)
                .map_err(io_err(from))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_err(from))?;
            names.sort_by_key(|e| e.file_name());
            for e in names {
                let child_rel = rel.join(e.file_name());
                // An ignored file is skipped; an ignored directory only when no `!`
                // pattern can re-include something below it.
                if is_ignored(src, &child_rel)
                    && (src.ignore.is_some_and(|m| m.can_skip_dir(&slash(&child_rel)))
                        || !e.file_type().is_ok_and(|t| t.is_dir()))
                {
                    continue;
                }
                self.copy_entry(
                    src,
                    &e.path(),
                    &child_rel,
                    &target.join(e.file_name()),
                    owner,
                    chmod,
                    false,
                )?;
            }
            return Ok(());
        }
        remove_existing(&up)?;
        if ft.is_symlink() {
            let link = std::fs::read_link(from).map_err(io_err(from))?;
            std::os::unix::fs::symlink(&link, &up).map_err(io_err(&up))?;
            return self.finish_entry(&up, 0o777, own, md.mtime(), false);
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.hardlinks.get(&(md.dev(), md.ino())) {
                    self.links.push((first.clone(), up));
                    return Ok(());
                }
                self.hardlinks.insert((md.dev(), md.ino()), up.clone());
            }
            if !self.privileged {
                self.record_owner(&up, own);
            }
            self.files.push(FileJob {
                from: from.to_path_buf(),
                to: up,
                mode,
                owner: self.privileged.then_some(own),
                mtime: md.mtime(),
                size: md.len(),
            });
            return Ok(());
        }
        // Sockets, fifos and devices are not copied, as with BuildKit's context transfer.
        Ok(())
    }

    /// Applies mode, owner and time to a path just written in the upper directory.
    fn finish_entry(
        &mut self,
        path: &Path,
        mode: u32,
        owner: Owner,
        mtime: i64,
        is_dir: bool,
    ) -> Result<(), WorkerError> {
        let is_link = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
        }
        if self.privileged {
            std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(io_err(path))?;
            if !is_link && mode & 0o6000 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
            }
        } else {
            self.record_owner(path, owner);
        }
        if is_dir {
            self.dir_times.push((path.to_path_buf(), mtime));
        } else {
            set_mtime(path, mtime).map_err(io_err(path))?;
        }
        Ok(())
    }
}

impl FileWriter<'_> {
    /// Records the owner the layer must give `path` (rootless builds cannot chown).
    fn record_owner(&mut self, path: &Path, owner: Owner) {
        if let Ok(rel) = path.strip_prefix(self.snap.upper()) {
            let rel = rel.to_path_buf();
            self.snap.owners.insert(rel, owner);
        }
    }
}

/// Copies one regular file (in-kernel, `copy_file_range`) to a new file and sets its
/// mode, owner and mtime (atime too, as [`set_mtime`]) through the descriptor.
fn copy_file(job: &FileJob, privileged: bool) -> Result<(), WorkerError> {
    let mut from = File::open(&job.from).map_err(io_err(&job.from))?;
    let err = io_err(&job.to);
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&job.to)
        .map_err(io_err(&job.to))?;
    let result = (|| {
        io::copy(&mut from, &mut to)?;
        let mode = std::fs::Permissions::from_mode(job.mode);
        to.set_permissions(mode.clone())?;
        if let (true, Some((uid, gid))) = (privileged, job.owner) {
            std::os::unix::fs::fchown(&to, Some(uid), Some(gid))?;
            // chown clears set-id bits.
            if job.mode & 0o6000 != 0 {
                to.set_permissions(mode)?;
            }
        }
        let t = rustix::fs::Timespec {
            tv_sec: job.mtime,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            &to,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
        Ok(())
    })();
    result.map_err(err)
}

fn is_ignored(src: &SourceTree<'_>, rel: &Path) -> bool {
    !rel.as_os_str().is_empty() && src.ignore.is_some_and(|m| m.is_excluded(&slash(rel)))
}

fn slash(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Expands a glob source component by component (`*` never crosses `/`), sorted.
fn expand_glob(src: &SourceTree<'_>, pattern: &Path) -> Result<Vec<PathBuf>, WorkerError> {
    let mut current = vec![PathBuf::new()];
    for comp in pattern.iter() {
        let comp_s = comp.to_string_lossy();
        let mut next = Vec::new();
        for base in &current {
            if !glob::has_meta(&comp_s) {
                let p = base.join(comp);
                if src.root.join(&p).symlink_metadata().is_ok() {
                    next.push(p);
                }
                continue;
            }
            let dir = src.root.join(base);
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            names.sort();
            for n in names {
                match glob::matches(&comp_s, &n.to_string_lossy()) {
                    Some(true) => next.push(base.join(&n)),
                    Some(false) => {}
                    None => {
                        return Err(WorkerError::BadSource {
                            path: pattern.display().to_string(),
                            reason: "malformed glob pattern".into(),
                        })
                    }
                }
            }
        }
        current = next;
    }
    Ok(current.into_iter().filter(|p| !is_ignored(src, p)).collect())
}

/// The sources `action` names in `src` (globs expanded), relative to its root.
fn matching(action: &CopyAction, src: &SourceTree<'_>) -> Result<Vec<PathBuf>, WorkerError> {
    let pattern = clean_abs(&action.src);
    if action.allow_wildcard && glob::has_meta(&pattern.to_string_lossy()) {
        let found = expand_glob(src, &pattern)?;
        if found.is_empty() && !action.allow_empty_wildcard {
            return Err(WorkerError::SourceNotFound {
                path: action.src.clone(),
                source_label: src.label.clone(),
            });
        }
        return Ok(found);
    }
    let resolved = resolve_in_root(src.root, &pattern, true).map_err(|reason| WorkerError::BadSource {
        path: action.src.clone(),
        reason,
    })?;
    let rel = resolved.strip_prefix(src.root).unwrap_or(Path::new("")).to_path_buf();
    if resolved.symlink_metadata().is_err() || is_ignored(src, &rel) {
        return Err(WorkerError::SourceNotFound {
            path: action.src.clone(),
            source_label: src.label.clone(),
        });
    }
    Ok(vec![rel])
}

/// One file system object a COPY from the build context would read.
pub struct Selected {
    /// Path relative to the source root.
    pub rel: PathBuf,
    pub md: std::fs::Metadata,
    /// Symlink target, for symlinks.
    pub link: Option<PathBuf>,
}

/// Everything `action` would copy from `src`, in copy order: the same matching,
/// ignore rules and walk as [`FileWriter::copy`], without writing anything.
pub fn select(action: &CopyAction, src: &SourceTree<'_>) -> Result<Vec<Selected>, WorkerError> {
    let matches = matching(action, src)?;
    let mut out = Vec::new();
    for rel in matches {
        select_entry(src, &rel, true, &mut out)?;
    }
    Ok(out)
}

fn select_entry(src: &SourceTree<'_>, rel: &Path, top: bool, out: &mut Vec<Selected>) -> Result<(), WorkerError> {
    let from = src.root.join(rel);
    let md = if top {
        std::fs::metadata(&from)
    } else {
        std::fs::symlink_metadata(&from)
    }
    .map_err(io_err(&from))?;
    let ft = md.file_type();
    let link = if ft.is_symlink() {
        Some(std::fs::read_link(&from).map_err(io_err(&from))?)
    } else {
        None
    };
    let is_dir = ft.is_dir();
    if is_dir || ft.is_file() || ft.is_symlink() {
        out.push(Selected {
            rel: rel.to_path_buf(),
            md,
            link,
        });
    }
    if is_dir {
        let mut names: Vec<_> = std::fs::read_dir(&from)
            .map_err(io_err(&from))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err(&from))?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let child_rel = rel.join(e.file_name());
            if is_ignored(src, &child_rel)
                && (src.ignore.is_some_and(|m| m.can_skip_dir(&slash(&child_rel)))
                    || !e.file_type().is_ok_and(|t| t.is_dir()))
            {
                continue;
            }
            select_entry(src, &child_rel, false, out)?;
        }
    }
    Ok(())
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

fn remove_existing(p: &Path) -> Result<(), WorkerError> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(io_err(p)),
        Ok(_) => std::fs::remove_file(p).map_err(io_err(p)),
        Err(_) => Ok(()),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WorkerError {
    let path = path.to_path_buf();
    move |source| WorkerError::Io { path, source }
}
