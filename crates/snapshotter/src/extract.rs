//! One reading of tar entries for both of kiln's extractors: the layer applier
//! ([`crate::apply_tar`], BuildKit's containerd `archive.Apply`) and `ADD`'s archive
//! extraction (kiln-worker's `unpack`, BuildKit's `chrootarchive.Untar`).
//!
//! Both read an entry the same way — its path cleaned of `.`/`..` (never climbing
//! out), its numeric fields as Go's `archive/tar` reads them (an empty field is 0),
//! its PAX records (`mtime` with Go's `parsePAXTime`, `SCHILY.xattr.*`) — and
//! differ only where BuildKit's two code paths differ. [`ExtractPolicy`] names those
//! differences: the applier asks it where it branches (whiteouts, special files,
//! xattrs); `ADD`'s extraction has none of those branches and refuses what the policy
//! says it refuses. The last row is each writer's own path resolution (the applier's
//! `resolve_in_root` on a directory it owns, the worker's through the step's merged
//! view).
//!
//! | | [`ExtractPolicy::Layer`] | [`ExtractPolicy::AddArchive`] |
//! |---|---|---|
//! | whiteouts (`.wh.*`, `.wh..wh..opq`) | remove what they hide | ordinary files |
//! | fifos, devices | made (devices only by real root) | refused: an error names the entry |
//! | other entry types | skipped with a warning | refused |
//! | `SCHILY.xattr.*` | restored (kiln's and overlayfs's own refused) | not restored |
//! | owner | the archive's ids (when kiln can chown) | the archive's, or `--chown`'s for every entry |
//! | symlinks on the way | followed with the root as `/`; `..` stops at the root | followed with the destination as `/`; a relative link or `..` leaving it is an error |
//!
//! Times are the same for both: a PAX `mtime` to the nanosecond, and any time before
//! 1970 or past 2262 (what Go's `UnixNano` holds) the epoch — containerd's `boundTime`
//! for layers, docker's `system.Chtimes` for `ADD` (held to `docker build` by
//! `tests/it/bk_parity.rs`).

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// What kind of archive is being extracted, and so which of BuildKit's rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractPolicy {
    /// An image layer (or a layer kiln made) applied onto its parent's tree.
    Layer,
    /// A local archive `ADD` extracts into its destination directory.
    AddArchive,
}

/// The last time Go's `time.Time.UnixNano` can hold: 2262-04-11T23:47:16.854775807Z.
const MAX_UNIX_NANO: (i64, u32) = (9_223_372_036, 854_775_807);

impl ExtractPolicy {
    /// Whether `.wh.` entries are whiteouts (layers) or plain names (`ADD`).
    pub fn whiteouts(self) -> bool {
        self == ExtractPolicy::Layer
    }

    /// Whether fifos and device nodes are made (layers) or refused (`ADD`).
    pub fn special_files(self) -> bool {
        self == ExtractPolicy::Layer
    }

    /// Whether an entry of a type kiln does not extract is skipped with a warning
    /// (layers) or refused (`ADD`).
    pub fn skips_unknown_types(self) -> bool {
        self == ExtractPolicy::Layer
    }

    /// Whether `SCHILY.xattr.*` records are restored.
    pub fn xattrs(self) -> bool {
        self == ExtractPolicy::Layer
    }

    /// The error for an entry path (or hard-link target) that climbs out with `..`.
    pub fn outside_reason(self, name: &str) -> String {
        match self {
            ExtractPolicy::Layer => "path climbs out of the layer root with `..`".to_string(),
            ExtractPolicy::AddArchive => format!("archive path `{name}` is outside the extraction root"),
        }
    }
}

/// TarEntry is one archive entry's header, read once for either extractor.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// The entry's name as the archive spells it (for messages).
    pub name: String,
    /// The name cleaned: relative, no `.` or `..`; empty for the root itself.
    pub path: PathBuf,
    pub kind: EntryType,
    /// Permission and set-id bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds and nanoseconds, already bounded ([`bound_time`]).
    pub mtime: (i64, u32),
    /// Symlink or hard-link target, raw.
    pub link: Option<Vec<u8>>,
    /// Device numbers of a character or block device.
    pub device: (u32, u32),
    /// `SCHILY.xattr.` records: (attribute name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The time an entry gets for the archive time `t` (seconds, nanoseconds): the epoch
/// for a time before 1970 or past what Go's `UnixNano` holds, as both of BuildKit's
/// extractors bound it.
pub fn bound_time(t: (i64, u32)) -> (i64, u32) {
    if t.0 < 0 || t > MAX_UNIX_NANO {
        (0, 0)
    } else {
        t
    }
}

/// Why an entry's header cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryFault {
    /// The path climbs out of the extraction root.
    Outside,
    /// A header field or PAX record is invalid (the reason).
    Header(String),
}

/// Whether `kind` carries metadata for the next entry rather than a file.
pub fn is_metadata(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::XHeader | EntryType::XGlobalHeader | EntryType::GNULongName | EntryType::GNULongLink
    )
}

impl TarEntry {
    /// Reads `entry`'s header (and its PAX records); the same for either policy.
    pub fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<TarEntry, (String, EntryFault)> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Some(path) = clean_path(&raw) else {
            return Err((name, EntryFault::Outside));
        };
        let header = entry.header().clone();
        let old = header.as_old();
        let field =
            |parsed: io::Result<u64>, raw: &[u8]| numeric(parsed, raw).map_err(|e| EntryFault::Header(e.to_string()));
        let read = (|| {
            let mode = field(header.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
            let uid = field(header.uid(), &old.uid)?;
            let gid = field(header.gid(), &old.gid)?;
            // The tar crate puts PAX `uid`/`gid`/`size` into the header it hands out,
            // but not `mtime`: Go's archive/tar, which wrote most archives, records
            // sub-second and out-of-range times only there.
            let pax = pax_records(entry);
            let mtime = match pax.iter().find(|(k, _)| k == b"mtime") {
                Some((_, v)) => parse_pax_time(v).ok_or_else(|| {
                    EntryFault::Header(format!("invalid PAX `mtime` record `{}`", String::from_utf8_lossy(v)))
                })?,
                None => (field(header.mtime(), &old.mtime)? as i64, 0),
            };
            let xattrs = pax
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(b"SCHILY.xattr.").map(|k| (k.to_vec(), v)))
                .collect();
            Ok(TarEntry {
                name: name.clone(),
                path,
                kind: header.entry_type(),
                mode,
                uid,
                gid,
                mtime: bound_time(mtime),
                link: entry.link_name_bytes().map(|l| l.into_owned()),
                device: (
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                ),
                xattrs,
            })
        })();
        read.map_err(|f| (name.clone(), f))
    }
}

/// Normalises an archive path: leading `/` and `.` dropped, `..` applied; `None` when
/// it climbs out (BuildKit's `cleanRootTarPath`, containerd's `filepath.Clean` check).
pub fn clean_path(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
        }
    }
    Some(out)
}

/// A numeric header field; an empty one (all NULs or spaces, as some tar writers leave
/// unset fields) is 0, as Go's archive/tar — which Docker and BuildKit use — reads it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
}

/// The entry's own PAX records (key, value), if it has any.
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    match entry.pax_extensions() {
        Ok(Some(exts)) => exts
            .flatten()
            .map(|e| (e.key_bytes().to_vec(), e.value_bytes().to_vec()))
            .collect(),
        _ => Vec::new(),
    }
}

/// A PAX time, `[+-]SECONDS[.FRACTION]`, as (seconds, nanoseconds) with the
/// nanoseconds counted forward, as Go's `parsePAXTime` reads it: the seconds as
/// `strconv.ParseInt` (a sign allowed, 64 bits), the fraction digits only, cut to 9.
pub fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = whole.strip_prefix(['-', '+']).unwrap_or(whole);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sec: i64 = whole.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    let negative = whole.starts_with('-');
    Some(match (negative, nsec) {
        (false, _) | (true, 0) => (sec, nsec),
        // Go wraps here; any time this early is bounded to the epoch anyway.
        (true, n) => (sec.saturating_sub(1), 1_000_000_000 - n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_as_go_reads_them() {
        assert_eq!(parse_pax_time(b"1234567890"), Some((1234567890, 0)));
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.1234567899"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-0.5"), Some((-1, 500_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"+7"), Some((7, 0)));
        assert_eq!(parse_pax_time(b"7."), Some((7, 0)));
        assert_eq!(parse_pax_time(b"9223372036854775807"), Some((i64::MAX, 0)));
        assert_eq!(parse_pax_time(b"-9223372036854775808.5"), Some((i64::MIN, 500_000_000)));
        for bad in [
            &b""[..],
            b".5",
            b"-.5",
            b"+",
            b"1.x",
            b"1.-5",
            b"abc",
            b"1e9",
            b" 1",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_pax_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_are_bounded_as_buildkit_bounds_them() {
        assert_eq!(bound_time((0, 0)), (0, 0));
        assert_eq!(bound_time((1, 5)), (1, 5));
        assert_eq!(bound_time((-2, 500_000_000)), (0, 0));
        assert_eq!(bound_time(MAX_UNIX_NANO), MAX_UNIX_NANO);
        assert_eq!(bound_time((MAX_UNIX_NANO.0, MAX_UNIX_NANO.1 + 1)), (0, 0));
        assert_eq!(bound_time((9_300_000_000, 0)), (0, 0));
    }

    #[test]
    fn the_policies_differ_where_buildkit_does() {
        use ExtractPolicy::{AddArchive, Layer};
        assert!(Layer.whiteouts() && !AddArchive.whiteouts());
        assert!(Layer.special_files() && !AddArchive.special_files());
        assert!(Layer.skips_unknown_types() && !AddArchive.skips_unknown_types());
        assert!(Layer.xattrs() && !AddArchive.xattrs());
        assert_eq!(
            Layer.outside_reason("../x"),
            "path climbs out of the layer root with `..`"
        );
        assert_eq!(
            AddArchive.outside_reason("../x"),
            "archive path `../x` is outside the extraction root"
        );
    }

    #[test]
    fn paths_cannot_climb_out() {
        assert_eq!(clean_path(b"/a/./b/../c"), Some(PathBuf::from("a/c")));
        assert_eq!(clean_path(b"./"), Some(PathBuf::new()));
        assert_eq!(clean_path(b"../x"), None);
        assert_eq!(clean_path(b"a/../../x"), None);
    }

    #[test]
    fn one_reading_of_a_header() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("mtime", &b"-1.25"[..]),
            ("SCHILY.xattr.user.a", &b"v"[..]),
            ("comment", &b"ignored"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("./d/./f").unwrap();
        h.set_mode(0o104755);
        h.set_uid(7);
        h.set_gid(8);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
        let e = TarEntry::read(&mut entry).unwrap();
        assert_eq!(e.path, PathBuf::from("d/f"));
        assert_eq!((e.kind, e.mode, e.uid, e.gid), (EntryType::Regular, 0o4755, 7, 8));
        assert_eq!(e.mtime, (0, 0));
        assert_eq!(e.xattrs, vec![(b"user.a".to_vec(), b"v".to_vec())]);
    }
}
