//! Deterministic tar writing: sorted entries, numeric ids only, no atime/ctime, PAX
//! records only where USTAR cannot hold a value (long or non-ASCII names, big ids or
//! sizes, xattrs), hard links for files seen twice.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

/// Ownership says which uid/gid a path gets in the tar when it differs from disk
/// (rootless builds cannot chown, so they record the wanted owner here).
pub type OwnerOverrides = BTreeMap<PathBuf, (u32, u32)>;

/// TarOptions tunes how a directory becomes a tar stream.
#[derive(Debug, Default, Clone)]
pub struct TarOptions {
    /// Clamp every mtime to at most this many seconds since the epoch (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<i64>,
    /// Owners to write instead of what is on disk, by path relative to the root.
    pub owners: OwnerOverrides,
    /// The tree is an overlayfs upper directory: 0/0 character devices are whiteouts
    /// (`.wh.<name>`) and directories marked opaque get `.wh..wh..opq`.
    pub overlay_upper: bool,
}

/// DropBehind reads a file and tells the kernel, behind each read, that the pages read
/// are not needed again (`POSIX_FADV_DONTNEED`): a stream that copies a file once (a
/// blob into an archive) then lets the copy reuse those pages instead of growing the
/// page cache by the file's size. Clean pages go at once; dirty ones are left alone.
pub struct DropBehind<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> DropBehind<'a> {
    /// Reads `file` from its current position, which must be the start.
    pub fn new(file: &'a File) -> Self {
        DropBehind { file, offset: 0 }
    }
}

impl Read for DropBehind<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).read(buf)?;
        if let Some(len) = std::num::NonZeroU64::new(n as u64) {
            // Only advice: a failure costs nothing but the pages.
            let _ = rustix::fs::fadvise(self.file, self.offset, Some(len), rustix::fs::Advice::DontNeed);
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Entry metadata as it goes into a header.
pub(crate) struct EntryMeta {
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub link: Option<Vec<u8>>,
    pub dev: Option<(u32, u32)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// TarWriter writes entries with USTAR headers and PAX extensions where needed.
pub struct TarWriter<W: Write> {
    out: W,
    /// File contents pass through here, in pieces of up to [`COPY_BUF`] bytes.
    buf: Vec<u8>,
}

/// Largest piece of file contents read and written at once: big pieces mean few
/// system calls for big files (and big writes let the page cache use large folios).
const COPY_BUF: usize = 1 << 20;

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, buf: Vec::new() }
    }

    pub(crate) fn append(&mut self, name: &[u8], meta: &EntryMeta, data: Option<&mut dyn Read>) -> io::Result<()> {
        let mut pax: Vec<(&[u8], Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        h.set_entry_type(meta.kind);
        h.set_mode(meta.mode & 0o7777);
        h.set_mtime(meta.mtime.max(0) as u64);
        let ascii = name.iter().all(|b| b.is_ascii() && *b != 0);
        if !ascii || h.set_path(OsStr::from_bytes(name)).is_err() {
            pax.push((b"path", name.to_vec()));
            h.set_path(OsStr::from_bytes(&truncate_name(name)))?;
        }
        const MAX_OCTAL7: u64 = 0o7777777;
        if meta.uid > MAX_OCTAL7 {
            pax.push((b"uid", meta.uid.to_string().into_bytes()));
            h.set_uid(0);
        } else {
            h.set_uid(meta.uid);
        }
        if meta.gid > MAX_OCTAL7 {
            pax.push((b"gid", meta.gid.to_string().into_bytes()));
            h.set_gid(0);
        } else {
            h.set_gid(meta.gid);
        }
        if meta.size > 0o77777777777 {
            pax.push((b"size", meta.size.to_string().into_bytes()));
            h.set_size(0);
        } else {
            h.set_size(meta.size);
        }
        if let Some(link) = &meta.link {
            let ok = link.len() <= 100 && link.iter().all(|b| b.is_ascii() && *b != 0);
            if ok {
                h.set_link_name(OsStr::from_bytes(link))?;
            } else {
                pax.push((b"linkpath", link.clone()));
                h.set_link_name(OsStr::from_bytes(&truncate_name(link)))?;
            }
        }
        if let Some((major, minor)) = meta.dev {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        let mut xattr_keys: Vec<Vec<u8>> = Vec::new();
        for (k, _) in &meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            xattr_keys.push(key);
        }
        for (key, (_, v)) in xattr_keys.iter().zip(&meta.xattrs) {
            pax.push((key.as_slice(), v.clone()));
        }
        if !pax.is_empty() {
            pax.sort_by(|a, b| a.0.cmp(b.0));
            let mut body = Vec::new();
            for (k, v) in &pax {
                body.extend_from_slice(&pax_record(k, v));
            }
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_mtime(0);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_size(body.len() as u64);
            ph.set_path(OsStr::from_bytes(&pax_name(name)))?;
            ph.set_cksum();
            self.out.write_all(ph.as_bytes())?;
            self.out.write_all(&body)?;
            pad(&mut self.out, body.len() as u64)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        if let Some(data) = data {
            let n = self.copy_contents(data, meta.size)?;
            if n != meta.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file `{}` changed size while archived", String::from_utf8_lossy(name)),
                ));
            }
            pad(&mut self.out, meta.size)?;
        }
        Ok(())
    }

    /// Copies at most `size` bytes of `data` to the output; returns how many there were.
    fn copy_contents(&mut self, data: &mut dyn Read, size: u64) -> io::Result<u64> {
        let want = size.min(COPY_BUF as u64) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let mut done = 0u64;
        while done < size {
            let piece = (size - done).min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..piece]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..n])?;
            done += n as u64;
        }
        Ok(done)
    }

    /// Appends a regular file of `size` bytes read from `data`, owned by 0:0.
    pub fn append_file(&mut self, name: &str, mode: u32, mtime: i64, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let meta = EntryMeta {
            kind: EntryType::Regular,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            size,
            link: None,
            dev: None,
            xattrs: Vec::new(),
        };
        self.append(name.as_bytes(), &meta, Some(data))
    }

    /// Appends a directory entry (`name` should end in `/`), owned by 0:0.
    pub fn append_dir(&mut self, name: &str, mode: u32, mtime: i64) -> io::Result<()> {
        let meta = EntryMeta {
            kind: EntryType::Directory,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            link: None,
            dev: None,
            xattrs: Vec::new(),
        };
        self.append(name.as_bytes(), &meta, None)
    }

    /// Writes the two zero blocks that end an archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

fn pad(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let rem = (512 - (size % 512) as usize) % 512;
    out.write_all(&[0u8; 512][..rem])
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "%d %s=%s\n" where %d counts the whole record including itself.
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() != base.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn truncate_name(name: &[u8]) -> Vec<u8> {
    name.iter()
        .copied()
        .filter(|b| b.is_ascii() && *b != 0)
        .take(99)
        .collect()
}

fn pax_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let base = trimmed.rsplit(|b| *b == b'/').next().unwrap_or(trimmed);
    let mut n = b"PaxHeaders.0/".to_vec();
    n.extend(base.iter().copied().filter(|b| b.is_ascii() && *b != 0).take(80));
    n
}

/// Writes the tree under `root` as a deterministic tar stream (the root itself is not an
/// entry). Entries are sorted by name bytes; directories end in `/`.
pub fn write_dir_tar<W: Write>(root: &Path, out: W, opts: &TarOptions) -> io::Result<W> {
    let mut tw = TarWriter::new(out);
    append_dir_tree(&mut tw, root, opts)?;
    tw.finish()
}

/// Appends the tree under `root` to `tw` as [`write_dir_tar`] writes it, without
/// ending the archive.
pub fn append_dir_tree<W: Write>(tw: &mut TarWriter<W>, root: &Path, opts: &TarOptions) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut ahead = ReadAhead::default();
    // By descriptor: O(1) calls per entry at any depth, and paths past PATH_MAX work.
    crate::cursor::walk_sorted(root, |dirfd, rel, st| {
        let name = rel.file_name().unwrap_or_default();
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
            // Most entries: opened by descriptor, stat and xattrs from the open file
            // (a path through /proc/self/fd costs three lookups more per call).
            let f = rustix::fs::openat(dirfd, name, READ_FILE, rustix::fs::Mode::empty())
                .map(File::from)
                .map_err(|e| io::Error::other(format!("cannot open `{}`: {e}", root.join(rel).display())))?;
            let md = f
                .metadata()
                .map_err(|e| io::Error::other(format!("cannot stat `{}`: {e}", root.join(rel).display())))?;
            if md.is_file() {
                ahead.before_reading(dirfd, rel, &f);
                let xattrs = read_xattrs_fd(&f);
                let path = crate::cursor::proc_path(&dirfd, name, || root.join(rel));
                return append_entry(tw, &path, rel, &md, opts, &mut links, xattrs, Some(f));
            }
        }
        let path = crate::cursor::proc_path(&dirfd, name, || root.join(rel));
        let md = std::fs::symlink_metadata(&path)
            .map_err(|e| io::Error::other(format!("cannot stat `{}`: {e}", root.join(rel).display())))?;
        append_path(tw, &path, rel, &md, opts, &mut links)
    })
}

/// How the layer tar opens a regular file: never through a symlink, never waiting on a
/// FIFO that replaced it.
const READ_FILE: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::NONBLOCK)
    .union(rustix::fs::OFlags::NOCTTY)
    .union(rustix::fs::OFlags::CLOEXEC);

/// Read-ahead for the layer tar's walk, once a file it read was not in the page cache
/// (a layer directory whose pages were dropped since it was written: an incremental
/// COPY's shared files): the next regular files of the same directory are asked of the
/// kernel (`posix_fadvise(WILLNEED)`), at most [`ReadAhead::FILES`] files and
/// [`ReadAhead::BYTES`] past the one being read, instead of one read at a time.
#[derive(Default)]
struct ReadAhead {
    /// A read went to the disk: from then on, read ahead.
    on_disk: bool,
    /// The directory whose names are below, and them.
    dir: PathBuf,
    names: Vec<std::ffi::OsString>,
    /// Files asked for and not yet read: (index in `names`, bytes).
    asked: std::collections::VecDeque<(usize, u64)>,
    /// The next index to look at.
    next: usize,
}

impl ReadAhead {
    const FILES: usize = 64;
    const BYTES: u64 = 32 << 20;

    /// Called before the file `rel` (open: `f`, in the directory `dirfd`) is read.
    fn before_reading(&mut self, dirfd: std::os::fd::BorrowedFd<'_>, rel: &Path, f: &File) {
        if !self.on_disk {
            let mut probe = [0u8; 1];
            let cached = rustix::io::preadv2(
                f,
                &mut [io::IoSliceMut::new(&mut probe)],
                0,
                rustix::io::ReadWriteFlags::NOWAIT,
            );
            if cached != Err(rustix::io::Errno::AGAIN) {
                return;
            }
            self.on_disk = true;
        }
        let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) else {
            return;
        };
        if self.dir != dir || self.names.is_empty() {
            self.dir = dir.to_path_buf();
            self.names = crate::cursor::read_names(dirfd, std::ffi::OsStr::new(".")).unwrap_or_default();
            self.asked.clear();
            self.next = 0;
        }
        let Ok(at) = self.names.binary_search_by(|n| n.as_bytes().cmp(name.as_bytes())) else {
            return;
        };
        while self.asked.front().is_some_and(|(i, _)| *i <= at) {
            self.asked.pop_front();
        }
        self.next = self.next.max(at + 1);
        let mut bytes: u64 = self.asked.iter().map(|(_, n)| n).sum();
        while self.asked.len() < Self::FILES && bytes < Self::BYTES && self.next < self.names.len() {
            let i = self.next;
            self.next += 1;
            // Only regular files are opened (a device node a step made is never opened).
            let regular = |st: &rustix::fs::Stat| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            };
            match rustix::fs::statat(dirfd, &self.names[i], rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if regular(&st) => {}
                _ => continue,
            }
            let Ok(fd) = rustix::fs::openat(dirfd, &self.names[i], READ_FILE, rustix::fs::Mode::empty()) else {
                continue;
            };
            let Ok(st) = rustix::fs::fstat(&fd) else { continue };
            if !regular(&st) {
                continue;
            }
            let size = u64::try_from(st.st_size).unwrap_or(0).min(Self::BYTES);
            if let Some(len) = std::num::NonZeroU64::new(size) {
                let _ = rustix::fs::fadvise(&fd, 0, Some(len), rustix::fs::Advice::WillNeed);
                self.asked.push_back((i, size));
                bytes += size;
            }
        }
    }
}

/// Appends one file system object at `path`, named `rel` in the archive.
pub(crate) fn append_path<W: Write>(
    tw: &mut TarWriter<W>,
    path: &Path,
    rel: &Path,
    md: &std::fs::Metadata,
    opts: &TarOptions,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    append_entry(tw, path, rel, md, opts, links, read_xattrs(path), None)
}

/// As [`append_path`], with the entry's extended attributes given, and for a regular
/// file, the file already open (`file`) when it is.
#[allow(
    clippy::too_many_arguments,
    reason = "append_path's, plus what its callers already have"
)]
fn append_entry<W: Write>(
    tw: &mut TarWriter<W>,
    path: &Path,
    rel: &Path,
    md: &std::fs::Metadata,
    opts: &TarOptions,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    file: Option<File>,
) -> io::Result<()> {
    let ft = md.file_type();
    let mut name = rel.as_os_str().as_bytes().to_vec();
    let (uid, gid) = opts.owners.get(rel).copied().unwrap_or((md.uid(), md.gid()));
    let mut mtime = md.mtime();
    if let Some(c) = opts.clamp_mtime {
        mtime = mtime.min(c);
    }
    let mut meta = EntryMeta {
        kind: EntryType::Regular,
        mode: md.mode(),
        uid: uid.into(),
        gid: gid.into(),
        mtime,
        size: 0,
        link: None,
        dev: None,
        xattrs,
    };
    if ft.is_dir() {
        meta.kind = EntryType::Directory;
        name.push(b'/');
        tw.append(&name, &meta, None)?;
        if opts.overlay_upper && is_opaque(path) {
            name.extend_from_slice(b".wh..wh..opq");
            tw.append(&name, &whiteout_meta(mtime), None)?;
        }
        return Ok(());
    }
    if ft.is_symlink() {
        meta.kind = EntryType::Symlink;
        meta.link = Some(std::fs::read_link(path)?.into_os_string().into_vec());
        return tw.append(&name, &meta, None);
    }
    if ft.is_file() {
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = links.get(&key) {
                meta.kind = EntryType::Link;
                meta.link = Some(first.clone());
                return tw.append(&name, &meta, None);
            }
            links.insert(key, name.clone());
        }
        meta.size = md.len();
        let mut f = match file {
            Some(f) => f,
            None => File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open `{}`: {e}", rel.display())))?,
        };
        return tw.append(&name, &meta, Some(&mut f));
    }
    let rdev = md.rdev();
    let dev = (major(rdev), minor(rdev));
    if opts.overlay_upper && ft.is_char_device() && rdev == 0 {
        let mut wh = match name.iter().rposition(|b| *b == b'/') {
            Some(i) => name[..=i].to_vec(),
            None => Vec::new(),
        };
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(rel.file_name().map(|n| n.as_bytes()).unwrap_or_default());
        return tw.append(&wh, &whiteout_meta(mtime), None);
    }
    if ft.is_char_device() {
        meta.kind = EntryType::Char;
        meta.dev = Some(dev);
    } else if ft.is_block_device() {
        meta.kind = EntryType::Block;
        meta.dev = Some(dev);
    } else if ft.is_fifo() {
        meta.kind = EntryType::Fifo;
    } else {
        // Sockets have no place in a layer; skip them as Docker does.
        return Ok(());
    }
    tw.append(&name, &meta, None)
}

/// Header of a whiteout marker: an empty regular file owned by root.
pub(crate) fn whiteout_meta(mtime: i64) -> EntryMeta {
    EntryMeta {
        kind: EntryType::Regular,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime,
        size: 0,
        link: None,
        dev: None,
        xattrs: Vec::new(),
    }
}

/// Whether overlayfs marked the directory opaque (it hides the lower directory).
pub(crate) fn is_opaque(path: &Path) -> bool {
    let mut val = [0u8; 4];
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        .any(|k| matches!(rustix::fs::lgetxattr(path, *k, &mut val), Ok(1) if val[0] == b'y'))
}

fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

/// Extended attributes worth keeping in a layer, sorted; overlay's private ones dropped.
pub(crate) fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    xattrs_with(
        |names| rustix::fs::llistxattr(path, names),
        |key, val| rustix::fs::lgetxattr(path, key, val),
    )
}

/// [`read_xattrs`] of an open file.
fn read_xattrs_fd(f: &File) -> Vec<(Vec<u8>, Vec<u8>)> {
    xattrs_with(
        |names| rustix::fs::flistxattr(f, names),
        |key, val| rustix::fs::fgetxattr(f, key, val),
    )
}

fn xattrs_with(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&std::ffi::CStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut names = vec![0u8; 4096];
    let n = match list(&mut names) {
        Ok(n) => n,
        Err(_) => return out,
    };
    for key in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        if key.starts_with(b"trusted.overlay.")
            || key.starts_with(b"user.overlay.")
            || key.starts_with(b"user.kiln.")
            || key == b"security.selinux"
        {
            continue;
        }
        let Ok(ckey) = std::ffi::CString::new(key) else {
            continue;
        };
        let mut val = vec![0u8; 65536];
        if let Ok(len) = get(ckey.as_c_str(), &mut val) {
            val.truncate(len);
            out.push((key.to_vec(), val));
        }
    }
    out.sort();
    out
}

use std::os::unix::ffi::OsStringExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_counts_itself() {
        let r = pax_record(b"path", b"a");
        assert_eq!(r, b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = pax_record(b"path", &long);
        assert_eq!(
            r.len().to_string(),
            String::from_utf8_lossy(&r[..r.iter().position(|b| *b == b' ').unwrap()])
        );
    }

    #[test]
    fn same_tree_same_bytes_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        std::fs::write(root.join("b/c/file"), b"x").unwrap();
        let long = "n".repeat(150);
        std::fs::write(root.join(&long), b"long").unwrap();
        std::fs::hard_link(root.join("a.txt"), root.join("z-link")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("sym")).unwrap();
        let one = write_dir_tar(root, Vec::new(), &TarOptions::default()).unwrap();
        let two = write_dir_tar(root, Vec::new(), &TarOptions::default()).unwrap();
        assert_eq!(one, two);
        let mut ar = tar::Archive::new(&one[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["a.txt", "b/", "b/c/", "b/c/file", long.as_str(), "sym", "z-link"]
        );
    }

    /// Extended attributes of files (read from the open file), directories and
    /// symlinks (read by path) go into the tar; overlay's and kiln's own do not.
    #[test]
    fn extended_attributes_of_every_kind_of_entry_are_written() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::fs::write(root.join("dir/file"), b"x").unwrap();
        std::fs::write(root.join("plain"), b"y").unwrap();
        let set = |p: &str, k: &str, v: &str| {
            let c = std::ffi::CString::new(k).unwrap();
            rustix::fs::setxattr(
                root.join(p),
                c.as_c_str(),
                v.as_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
        };
        let supported = set("dir/file", "user.test", "on-a-file").is_ok();
        if !kiln_testkit::require(supported, "user xattrs unsupported on the temp dir's file system") {
            return;
        }
        set("dir/file", "user.overlay.origin", "dropped").unwrap();
        set("dir/file", "user.kiln.no-opaque", "dropped").unwrap();
        set("dir", "user.test", "on-a-dir").unwrap();
        let bytes = write_dir_tar(root, Vec::new(), &TarOptions::default()).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut got = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            for x in e.pax_extensions().unwrap().into_iter().flatten() {
                let x = x.unwrap();
                if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    got.push((
                        path.clone(),
                        k.to_string(),
                        String::from_utf8_lossy(x.value_bytes()).into_owned(),
                    ));
                }
            }
        }
        let want = [
            ("dir/", "user.test", "on-a-dir"),
            ("dir/file", "user.test", "on-a-file"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    /// Files not in the page cache make the walk read the next files of their
    /// directory ahead (at most `FILES` of them, regular files only); files in the page
    /// cache do not; the tar is the same either way.
    #[test]
    fn files_on_the_disk_are_read_ahead_and_the_tar_is_the_same() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("many");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..200 {
            let body: Vec<u8> = (0..32 * 1024).map(|j| (i * 7 + j * 13) as u8).collect();
            std::fs::write(dir.join(format!("f{i:03}")), body).unwrap();
        }
        std::os::unix::fs::symlink("f150", dir.join("f005-link")).unwrap();
        let warm = write_dir_tar(d.path(), Vec::new(), &TarOptions::default()).unwrap();
        let files: Vec<_> = (0..200).map(|i| dir.join(format!("f{i:03}"))).collect();
        let evict = || kiln_testkit::evict_from_page_cache(&files);
        let ahead_after_first = || {
            let mut ahead = ReadAhead::default();
            let dirfd = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            let f = File::open(dir.join("f000")).unwrap();
            ahead.before_reading(std::os::fd::AsFd::as_fd(&dirfd), Path::new("many/f000"), &f);
            (ahead.on_disk, ahead.asked.iter().map(|(i, _)| *i).collect::<Vec<_>>())
        };
        assert_eq!(
            ahead_after_first(),
            (false, vec![]),
            "files in memory are not read ahead"
        );
        if !kiln_testkit::require(evict(), "the temp dir's file system keeps files in memory (tmpfs?)") {
            return;
        }
        // Names sorted: f000, f001, ..., f005, f005-link (a symlink: not asked), f006, ...
        let (on_disk, asked) = ahead_after_first();
        assert!(on_disk);
        let names: Vec<usize> = (1..=ReadAhead::FILES + 1).filter(|&i| i != 6).collect();
        assert_eq!(asked, names);
        evict();
        let cold = write_dir_tar(d.path(), Vec::new(), &TarOptions::default()).unwrap();
        assert!(cold == warm, "the tar differs when read ahead");
    }

    #[test]
    fn trees_deeper_than_path_max_are_written() {
        let t = tempfile::tempdir().unwrap();
        let rel = crate::cursor::tests::deep_chain(t.path(), "dddd", 1000);
        let bytes = write_dir_tar(t.path(), Vec::new(), &TarOptions::default()).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().into_owned());
        }
        assert_eq!(names.len(), 1001);
        assert_eq!(names[999], rel);
        assert_eq!(names[1000], rel.join("leaf"));
    }
}
