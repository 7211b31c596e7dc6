//! Write-behind for files kiln fsyncs when they are complete (blobs, output archives):
//! the kernel is asked to start writing each [`WINDOW`] of bytes to the disk as soon as
//! it was written, so the disk works while the rest is computed, and the final `fsync`
//! waits for the last window only, not for the whole file.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};

/// How many written bytes make one write-behind request.
pub const WINDOW: u64 = 8 << 20;

/// WriteBehind writes through to `F` and starts the disk write of every [`WINDOW`]
/// bytes written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: started, not waited for).
/// The file must be written from offset `start` on, sequentially.
pub struct WriteBehind<F> {
    file: F,
    /// The file offset after the last byte written.
    pos: u64,
    /// Up to here, the disk write was asked for.
    started: u64,
}

impl<F: AsFd + Write> WriteBehind<F> {
    pub fn new(file: F) -> Self {
        Self::at(file, 0)
    }

    /// For a file written from `start` on.
    pub fn at(file: F, start: u64) -> Self {
        WriteBehind {
            file,
            pos: start,
            started: start,
        }
    }

    /// The next write goes to offset `pos` (the file already holds what is before it:
    /// a resumed download).
    pub fn resume_at(&mut self, pos: u64) {
        self.pos = pos;
        self.started = pos;
    }

    pub fn get_ref(&self) -> &F {
        &self.file
    }

    pub fn into_inner(self) -> F {
        self.file
    }

    fn wrote(&mut self, n: usize) {
        self.pos += n as u64;
        let len = self.pos - self.started;
        if len >= WINDOW {
            start_write(self.file.as_fd(), self.started, len);
            self.started = self.pos;
        }
    }
}

impl<F: AsFd + Write> Write for WriteBehind<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `fd` to the disk. Only a
/// request: a failure here (a file system without it, an I/O error) is what the
/// caller's final `fsync` reports, or costs nothing.
#[allow(
    unsafe_code,
    reason = "rustix has no sync_file_range; the call takes a descriptor and integers only"
)]
fn start_write(fd: std::os::fd::BorrowedFd<'_>, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads no memory of this process; `fd` is a valid open
    // descriptor for the duration of the call (borrowed).
    let _ = unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_methods,
        reason = "test code: a failing call fails the test at its line"
    )]

    use super::{WriteBehind, WINDOW};
    use std::io::Write;

    /// What goes through is what the file gets, in any write sizes, and the disk
    /// write of each window is asked for when it is full.
    #[test]
    fn the_file_gets_every_byte_and_full_windows_go_to_the_disk() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let mut w = WriteBehind::new(std::fs::File::create(&p).unwrap());
        let data: Vec<u8> = (0..(2 * WINDOW + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        for c in data.chunks(70_001) {
            w.write_all(c).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.pos, data.len() as u64);
        assert!(
            w.started >= 2 * WINDOW && w.pos - w.started < WINDOW,
            "{} of {}",
            w.started,
            w.pos
        );
        drop(w);
        assert_eq!(std::fs::read(&p).unwrap(), data);
    }
}
