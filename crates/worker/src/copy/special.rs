//! FIFOs, sockets and device nodes met by a COPY: recreated as BuildKit would have them,
//! never opened (a FIFO read would wait for a writer forever), and each one left out
//! named in a warning.
//!
//! BuildKit sends the build context with fsutil: its sender clears a socket's type bit
//! (`stat.go`), so a socket arrives as an empty regular file; FIFOs and devices arrive as
//! stat records that the receiver recreates with `mknod` (`diskwriter.go`). Its copier
//! (`copy/copy.go`, `copyDevice`, since fsutil 331e532, BuildKit v0.10) recreates FIFOs
//! and devices with `mknod` and makes a socket an empty regular file ("stub"), from
//! the context and from stages alike. (BuildKit v0.8, in dockerd 20.10, left FIFOs out.)
//! A device node kiln cannot create (rootless) or one that would read as an overlay
//! whiteout (0/0) is left out with a warning, where BuildKit would fail.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{FileType, Mode, CWD};

use super::{io_err, FileWriter, Owner, SourceTree};
use crate::WorkerError;

impl FileWriter<'_> {
    /// Copies the special file `md` (at `rel` in `src`) to `up` in the upper directory.
    pub(super) fn copy_special(
        &mut self,
        src: &SourceTree<'_>,
        rel: &Path,
        up: &Path,
        md: &Metadata,
        mode: u32,
        own: Owner,
    ) -> Result<(), WorkerError> {
        let ft = md.file_type();
        let shown = rel.display();
        if ft.is_socket() {
            self.warnings.push(format!(
                "socket `{shown}` in {} copied as an empty file, as BuildKit does",
                src.label
            ));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(up)
                .map_err(io_err(up))?;
            return self.finish_entry(up, mode, own, md.mtime(), false);
        }
        let kind = if ft.is_fifo() {
            FileType::Fifo
        } else if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else {
            self.warnings
                .push(format!("`{shown}` in {} left out: unknown file type", src.label));
            return Ok(());
        };
        if kind != FileType::Fifo {
            let why = if !kiln_snapshotter::ids::can_mknod() {
                Some("this build cannot create device nodes (rootless)")
            } else if kind == FileType::CharacterDevice && md.rdev() == 0 {
                Some("a 0/0 character device is an overlay whiteout")
            } else {
                None
            };
            if let Some(why) = why {
                self.warnings
                    .push(format!("device node `{shown}` in {} left out: {why}", src.label));
                return Ok(());
            }
        }
        rustix::fs::mknodat(CWD, up, kind, Mode::from_raw_mode(0o600), md.rdev()).map_err(|e| io_err(up)(e.into()))?;
        self.finish_entry(up, mode, own, md.mtime(), false)
    }
}
