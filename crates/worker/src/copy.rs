//! COPY/ADD, WORKDIR's mkdir and heredoc files, written into a step's upper directory.
//!
//! Semantics follow BuildKit: sources are resolved inside their root (symlinks followed,
//! never out of it; a followed symlink is copied under its own name, and files are
//! opened inside the root, see [`kiln_snapshotter::RootDir`]); symlinks below a
//! copied directory stay symlinks; FIFOs, sockets and devices as in `copy/special.rs`;
//! a directory source copies its contents; several sources or a
//! trailing `/` make the destination a directory; files from the build context are
//! owned by 0:0 unless `--chown`, files from a stage keep their owners; source mtimes
//! are kept.
//!
//! `--chmod` (fsutil's copier): an octal mode replaces the mode of everything copied;
//! a symbolic one is applied to each entry's own mode. Directories created for the
//! destination (its missing parents, and the destination itself when a directory's
//! contents are copied into a new one) get mode 0755 — or the octal `--chmod` less its
//! special bits, as BuildKit does since v0.21 — never a symbolic one, owner 0:0 or
//! `--chown`; missing parents get the build's fixed timestamp, so layers are
//! reproducible.
//!
//! `--exclude` patterns, and a `COPY --parents` pattern, are matched against paths
//! relative to each matched source. A directory that is not itself selected is walked,
//! and created (from its source, as any copied directory) only when something below
//! it is copied.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_context::dockerignore::PatternMatcher;
use kiln_graph::{Chmod, ChownOpt, CopyAction};
use kiln_snapshotter::{ActiveSnapshot, RootDir};

use crate::{users, WorkerError};

pub mod reuse;
mod special;
mod view;
pub use kiln_context::select::clean_abs;
use kiln_context::select::{is_ignored, matching, skip_ignored, sorted_entries, CopySources, Decision, Filter};

/// The selecting part of `action`, as `kiln_context::select` takes it.
pub(crate) fn sources(action: &CopyAction) -> CopySources<'_> {
    CopySources {
        src: &action.src,
        allow_wildcard: action.allow_wildcard,
        allow_empty_wildcard: action.allow_empty_wildcard,
        exclude: &action.exclude,
        parents: action.parents.as_deref(),
    }
}

/// Everything `action` would copy from `src`, in copy order (for the cache key).
pub fn select(action: &CopyAction, src: &SourceTree<'_>) -> Result<Vec<kiln_context::select::Selected>, WorkerError> {
    Ok(kiln_context::select::select(&sources(action), src)?)
}

/// SourceTree is where a COPY reads from.
pub struct SourceTree<'a> {
    pub root: &'a Path,
    /// .dockerignore of the build context; `None` for stage sources.
    pub ignore: Option<&'a PatternMatcher>,
    /// How errors name the source, e.g. `build context` or `stage builder`.
    pub label: String,
    /// Keep the source's owners (stages) instead of 0:0 (context).
    pub keep_owner: bool,
    /// The build context's checksum memo, which knows each source file's digest (a
    /// context source of an incremental COPY: see [`reuse`]).
    pub memo: Option<&'a kiln_context::memo::ContextMemo>,
}

impl kiln_context::select::SourceTree for SourceTree<'_> {
    fn root(&self) -> &Path {
        self.root
    }
    fn ignore(&self) -> Option<&PatternMatcher> {
        self.ignore
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn resolve_in_root(&self, rel: &Path, follow_last: bool) -> Result<PathBuf, String> {
        kiln_snapshotter::resolve_in_root(self.root, rel, follow_last)
    }
}

/// FileWriter applies file actions to one active snapshot.
pub struct FileWriter<'a> {
    pub snap: &'a mut ActiveSnapshot,
    pub privileged: bool,
    /// mtime for directories kiln creates.
    pub epoch: i64,
    /// Upper directories whose mtime must be (re)set once all writes are done.
    /// Their final modes are set then too: a directory being filled stays writable and
    /// searchable by its owner (`--chmod=644` on a tree must not lock a rootless build
    /// out of it).
    dir_times: Vec<(PathBuf, i64, u32)>,
    hardlinks: HashMap<(u64, u64), PathBuf>,
    /// Regular files to copy, then hard links to make, on all cores (see [`Self::flush`]).
    files: Vec<FileJob>,
    links: Vec<(PathBuf, PathBuf)>,
    /// What the actions left out or changed (see [`Self::finish`]).
    warnings: Vec<String>,
    /// Cursors of the upper and lower trees (see `copy/view.rs`).
    view: std::cell::RefCell<view::View>,
    /// The step's previous result, to share unchanged files with (see [`reuse`]).
    previous: Option<reuse::Previous>,
    /// The regular files written whose contents' digest is known: path in the layer,
    /// digest, inode (see [`Self::finish`]).
    written: Vec<(PathBuf, String, u64)>,
    /// How many files were shared with the previous result.
    shared: usize,
}

/// What a file step wrote, for its incremental runs (see [`reuse`]).
pub struct Written {
    /// Each regular file still in the upper as written: path in the layer, digest.
    pub files: Vec<(String, String)>,
    /// How many of them are shared with the previous result.
    pub shared: usize,
}

/// FileJob is one regular file to copy into the upper directory with its metadata.
struct FileJob {
    /// The source root and the file below it (opened inside the root).
    root: Arc<RootDir>,
    from: PathBuf,
    to: PathBuf,
    mode: u32,
    /// Owner to set (privileged builds only; rootless ones record it for the layer).
    owner: Option<Owner>,
    mtime: i64,
    size: u64,
    /// The contents' digest, when the source's checksum memo knows it.
    digest: Option<String>,
    /// The previous result's file this one may share (see [`reuse`]).
    previous: Option<PathBuf>,
}

type Owner = (u32, u32);

/// Walk is the state of copying one matched source of a COPY action.
struct Walk<'w, 's> {
    src: &'w SourceTree<'s>,
    /// The source root, open: files are read from it without leaving it.
    root_dir: &'w Arc<RootDir>,
    owner: Option<Owner>,
    chmod: Option<&'w Chmod>,
    /// Mode of the directories created for the destination.
    dir_mode: u32,
    filter: &'w Filter,
    /// The matched source, relative to the source root: `--exclude` and `--parents`
    /// patterns are relative to it.
    base: PathBuf,
    /// Directories walked through but not yet made (see [`FileWriter::create_pending`]).
    pending: Vec<Pending>,
}

impl Walk<'_, '_> {
    fn below_base(&self, rel: &Path) -> String {
        rel.strip_prefix(&self.base)
            .unwrap_or(rel)
            .to_string_lossy()
            .into_owned()
    }
}

/// A source directory a walk passed through without selecting it.
struct Pending {
    target: PathBuf,
    md: std::fs::Metadata,
    created: bool,
    /// An ignored directory with re-included entries: BuildKit's context has it as a
    /// plain directory, so it is copied as one once something below it is.
    as_copy: bool,
}

/// The mode of directories a COPY creates for its destination: 0755, or an octal
/// `--chmod` without its special bits (fsutil's `MkdirAll(dst, *Mode)`); a symbolic
/// `--chmod` does not apply to them.
fn created_dir_mode(chmod: Option<&Chmod>) -> u32 {
    match chmod {
        Some(Chmod::Octal(m)) => m & 0o777,
        _ => 0o755,
    }
}

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
            warnings: Vec::new(),
            view: Default::default(),
            previous: None,
            written: Vec::new(),
            shared: 0,
        }
    }

    /// Shares unchanged files with the step's previous result (see [`reuse`]).
    pub fn share_with(&mut self, previous: reuse::Previous) {
        self.previous = Some(previous);
    }

    /// Resolves `--chown` against the image's passwd/group files (read inside its root).
    pub fn resolve_owner(&self, chown: &Option<ChownOpt>) -> Result<Option<Owner>, WorkerError> {
        let Some(c) = chown else { return Ok(None) };
        // Names are looked up in the parent's files, as one tree; ids need none.
        let named = |u: &kiln_graph::UserSpec| matches!(u, kiln_graph::UserSpec::Name(_));
        let tree = if named(&c.user) || c.group.as_ref().is_some_and(named) {
            self.snap.merged_parent()?
        } else {
            None
        };
        let owner = users::chown_ids(tree.as_deref(), &c.user, c.group.as_ref())?;
        Ok(Some(owner))
    }

    /// Runs one COPY action from `src`.
    pub fn copy(&mut self, action: &CopyAction, src: &SourceTree<'_>) -> Result<(), WorkerError> {
        let owner = self.resolve_owner(&action.chown)?;
        let filter = Filter::new(&sources(action))?;
        let matches = matching(&sources(action), src)?;
        let dest = clean_abs(&action.dest);
        let dest_is_dir = action.dest_is_dir || matches.len() > 1;
        let dir_mode = created_dir_mode(action.chmod.as_ref());
        let root_dir = Arc::new(RootDir::open(src.root).map_err(io_err(src.root))?);
        for m in matches {
            let rel = m.real;
            // ADD: an archive is extracted into `dest` instead (see `unpack.rs`).
            if action.unpack && self.try_unpack(src.root, &rel, &dest, owner)? {
                continue;
            }
            let from = src.root.join(&rel);
            // Resolved inside the root already: nothing here follows a link.
            let md = std::fs::symlink_metadata(&from).map_err(io_err(&from))?;
            let target = if md.is_dir() {
                dest.clone()
            } else if dest_is_dir || self.is_dir_in_view(&dest) {
                // Named as matched: `COPY link /d/` makes `/d/link`, as BuildKit.
                dest.join(m.name.file_name().unwrap_or_default())
            } else {
                dest.clone()
            };
            let target = self.prepare_target(&target, owner, dir_mode)?;
            let mut walk = Walk {
                src,
                root_dir: &root_dir,
                owner,
                chmod: action.chmod.as_ref(),
                dir_mode,
                filter: &filter,
                base: rel.clone(),
                pending: Vec::new(),
            };
            self.copy_entry(&mut walk, &from, &rel, &target, true)?;
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
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<WorkerError>> = Mutex::new(None);
        let privileged = self.privileged;
        let previous = self.previous.as_ref();
        // This thread and one helper for each CPU of kiln's budget free now; each
        // returns the inode of every file it wrote (and whether it was shared).
        let budget = kiln_cpu::global();
        let done: Vec<Vec<(usize, u64, bool)>> = budget.workers(batches.len(), || {
            budget.working();
            let mut done = Vec::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(b) else { break };
                for i in batch.clone() {
                    match copy_file(&files[i], privileged, previous) {
                        Ok((ino, shared)) => done.push((i, ino, shared)),
                        Err(e) => {
                            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            // Make the other threads stop too.
                            next.store(batches.len(), Ordering::Relaxed);
                            return done;
                        }
                    }
                }
            }
            done
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let mut files = files;
        for (i, ino, shared) in done.into_iter().flatten() {
            self.shared += usize::from(shared);
            let job = &mut files[i];
            if let (Some(digest), Ok(rel)) = (job.digest.take(), job.to.strip_prefix(self.snap.upper())) {
                self.written.push((rel.to_path_buf(), digest, ino));
            }
        }
        for (first, link) in std::mem::take(&mut self.links) {
            std::fs::hard_link(&first, &link).map_err(io_err(&link))?;
        }
        Ok(())
    }

    /// Creates a directory and its parents (WORKDIR).
    pub fn mkdir(&mut self, path: &str, mode: u32, chown: &Option<ChownOpt>) -> Result<(), WorkerError> {
        let owner = self.resolve_owner(chown)?;
        // As BuildKit's mkdir (`fs.RootPath`): symlinks on the way, the last one too, are
        // followed inside the root, so a dangling link keeps and gets its target made.
        // A loop fails as BuildKit's does (`too many links` from continuity's walkLinks).
        let (rel, looped) = self.resolve_view_links(&clean_abs(path), true);
        if looped {
            return Err(io_err(Path::new(path))(io::Error::from(rustix::io::Errno::LOOP)));
        }
        if rel.as_os_str().is_empty() || self.is_dir_in_view(&rel) {
            return Ok(());
        }
        let target = self.prepare_target(&rel, owner, 0o755)?;
        if !self.in_upper(&target) {
            self.mkdir_in_upper(&target)?;
            let up = self.snap.upper().join(&target);
            self.finish_entry(&up, mode, owner.unwrap_or((0, 0)), self.epoch, true)?;
        }
        Ok(())
    }

    /// Writes a file with the given contents (COPY heredoc).
    pub fn mkfile(&mut self, path: &str, mode: u32, data: &[u8], chown: &Option<ChownOpt>) -> Result<(), WorkerError> {
        let owner = self.resolve_owner(chown)?;
        let rel = clean_abs(path);
        let target = self.prepare_target(&rel, owner, 0o755)?;
        let up = self.snap.upper().join(&target);
        remove_existing(&up)?;
        std::fs::write(&up, data).map_err(io_err(&up))?;
        self.finish_entry(&up, mode, owner.unwrap_or((0, 0)), self.epoch, false)
    }

    /// Sets directory times last, after every child has been written; returns the
    /// warnings of the actions (what was left out or changed, by name).
    /// Also returns what the step wrote, for its next incremental run: only the files
    /// still in the upper as written (a later action of the step may have replaced one).
    pub fn finish(mut self) -> Result<(Vec<String>, Written), WorkerError> {
        self.flush()?;
        self.apply_dir_times()?;
        let upper = self.snap.upper().to_path_buf();
        let mut files = Vec::with_capacity(self.written.len());
        for (rel, digest, ino) in std::mem::take(&mut self.written) {
            let same = upper
                .join(&rel)
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.ino() == ino);
            if let (true, Some(name)) = (same, rel.to_str()) {
                files.push((name.to_string(), digest));
            }
        }
        let shared = self.shared;
        Ok((self.warnings, Written { files, shared }))
    }

    /// Copies one entry of a source walk: `rel` is its path below the source root,
    /// `target` below the destination root; `top` marks the matched source itself.
    fn copy_entry(
        &mut self,
        walk: &mut Walk<'_, '_>,
        from: &Path,
        rel: &Path,
        target: &Path,
        top: bool,
    ) -> Result<(), WorkerError> {
        // The matched source was followed inside the root already; entries inside are
        // copied as they are, symlinks as symlinks.
        let md = std::fs::symlink_metadata(from).map_err(io_err(from))?;
        let ft = md.file_type();
        if !top {
            let decision = walk.filter.decide(&walk.below_base(rel), ft.is_dir());
            // skip_ignored left in only the ignored directories a `!` pattern may reach into.
            let ignored_dir = decision == Decision::Copy && ft.is_dir() && is_ignored(walk.src, rel);
            if decision == Decision::Skip {
                return Ok(());
            }
            if decision == Decision::Descend || ignored_dir {
                walk.pending.push(Pending {
                    target: target.to_path_buf(),
                    md,
                    created: false,
                    as_copy: ignored_dir,
                });
                let done = self.copy_children(walk, from, rel, target);
                walk.pending.pop();
                return done;
            }
            self.create_pending(walk)?;
        }
        let up = self.snap.upper().join(target);
        let own = walk.owner.unwrap_or(if walk.src.keep_owner {
            (md.uid(), md.gid())
        } else {
            (0, 0)
        });
        let mode = match walk.chmod {
            Some(c) => c.apply(md.mode(), ft.is_dir()),
            None => md.mode() & 0o7777,
        };
        if ft.is_dir() {
            let exists_in_upper = up.symlink_metadata().is_ok_and(|m| m.is_dir());
            if !exists_in_upper {
                remove_existing(&up)?;
                std::fs::create_dir(&up).map_err(io_err(&up))?;
            }
            let lower_dir = self.lower_dir_stat(target);
            if top && !target.as_os_str().is_empty() {
                match (exists_in_upper, lower_dir) {
                    // Copying contents into an existing directory keeps its metadata.
                    (true, _) => {}
                    (false, Some(l)) => {
                        self.finish_entry(&up, l.st_mode & 0o7777, (l.st_uid, l.st_gid), l.st_mtime, true)?
                    }
                    // A new destination directory is made before the copy, as BuildKit's
                    // MkdirAll does: mode 0755 (or octal `--chmod`), owner 0:0 (or
                    // `--chown`); it takes the source directory's time.
                    (false, None) => {
                        self.finish_entry(&up, walk.dir_mode, walk.owner.unwrap_or((0, 0)), md.mtime(), true)?
                    }
                }
            } else if !target.as_os_str().is_empty() {
                self.finish_entry(&up, mode, own, md.mtime(), true)?;
            }
            return self.copy_children(walk, from, rel, target);
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
            let digest = walk.src.memo.and_then(|m| m.known_digest(rel, &md)).map(hex::encode);
            let previous = match (&self.previous, &digest) {
                (Some(p), Some(d)) => p.candidate(target, d),
                _ => None,
            };
            self.files.push(FileJob {
                root: walk.root_dir.clone(),
                from: rel.to_path_buf(),
                to: up,
                mode,
                owner: self.privileged.then_some(own),
                mtime: md.mtime(),
                size: md.len(),
                digest,
                previous,
            });
            return Ok(());
        }
        self.copy_special(walk.src, rel, &up, &md, mode, own)
    }

    /// Walks a source directory's entries in name order, leaving out what
    /// .dockerignore excludes.
    fn copy_children(
        &mut self,
        walk: &mut Walk<'_, '_>,
        from: &Path,
        rel: &Path,
        target: &Path,
    ) -> Result<(), WorkerError> {
        for e in sorted_entries(from)? {
            let child_rel = rel.join(e.file_name());
            if skip_ignored(walk.src, &child_rel, &e) {
                continue;
            }
            self.copy_entry(walk, &e.path(), &child_rel, &target.join(e.file_name()), false)?;
        }
        Ok(())
    }

    /// Makes the directories a walk passed through without selecting them, now that
    /// something below them is copied (fsutil's `createParentDirs`): a new one is a
    /// copy of its source directory; an existing one keeps its owner and time and
    /// takes the source directory's mode.
    fn create_pending(&mut self, walk: &mut Walk<'_, '_>) -> Result<(), WorkerError> {
        for i in 0..walk.pending.len() {
            if walk.pending[i].created {
                continue;
            }
            walk.pending[i].created = true;
            let p = &walk.pending[i];
            let (target, md) = (p.target.clone(), p.md.clone());
            let up = self.snap.upper().join(&target);
            let src_mode = md.mode() & 0o7777;
            let own = walk.owner.unwrap_or(if walk.src.keep_owner {
                (md.uid(), md.gid())
            } else {
                (0, 0)
            });
            let mode = walk.chmod.map_or(src_mode, |c| c.apply(md.mode(), true));
            if p.as_copy {
                // As copy_entry copies a directory below the matched source.
                if !up.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    remove_existing(&up)?;
                    std::fs::create_dir(&up).map_err(io_err(&up))?;
                }
                self.finish_entry(&up, mode, own, md.mtime(), true)?;
                continue;
            }
            if up.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                // Made earlier in this step, so its final mode is still pending.
                match self.dir_times.iter_mut().find(|(d, _, _)| *d == up) {
                    Some(entry) => entry.2 = src_mode,
                    None => {
                        std::fs::set_permissions(&up, std::fs::Permissions::from_mode(src_mode)).map_err(io_err(&up))?
                    }
                }
                continue;
            }
            remove_existing(&up)?;
            std::fs::create_dir(&up).map_err(io_err(&up))?;
            match self.lower_dir_stat(&target) {
                Some(l) => self.finish_entry(&up, src_mode, (l.st_uid, l.st_gid), l.st_mtime, true)?,
                None => self.finish_entry(&up, mode, own, md.mtime(), true)?,
            }
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
/// mode, owner and mtime (atime too, as [`kiln_snapshotter::set_mtime`]) through the
/// descriptor — or links it to the previous result's identical file (see [`reuse`]).
/// Returns the new file's inode and whether it is shared.
fn copy_file(job: &FileJob, privileged: bool, previous: Option<&reuse::Previous>) -> Result<(u64, bool), WorkerError> {
    if let (Some(prev), Some(p)) = (&job.previous, previous) {
        let want = reuse::Wanted {
            mode: job.mode,
            owner: job.owner,
            mtime: job.mtime,
            size: job.size,
        };
        if let Some(ino) = p.share(prev, &job.to, &want) {
            return Ok((ino, true));
        }
    }
    let mut from = job
        .root
        .open_file(&job.from)
        .map_err(io_err(&job.root.path().join(&job.from)))?;
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
        Ok(to.metadata()?.ino())
    })();
    result.map(|ino| (ino, false)).map_err(err)
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
