//! Parallel gzip, the way pigz does it: the stream is cut into fixed 1 MiB chunks, each
//! deflated on its own thread with the previous chunk's last 32 KiB as its dictionary
//! and ended with a sync flush, so the concatenation is one deflate stream inside one
//! gzip member. The bytes depend only on the input (chunk size and level are fixed),
//! never on how many threads ran: layers stay reproducible.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Bytes per independently compressed chunk.
const CHUNK: usize = 1 << 20;
/// Deflate's window: how much of the previous chunk primes the next.
const WINDOW: usize = 32 << 10;

/// ParGzWriter gzip-compresses what is written to it on all cores.
pub struct ParGzWriter<W: Write> {
    inner: Option<W>,
    level: u32,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: Crc,
    pending: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    threads: usize,
}

impl<W: Write> ParGzWriter<W> {
    pub fn new(mut inner: W, level: u32) -> io::Result<Self> {
        // flate2's default header: no name, no mtime, OS unknown.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        Ok(ParGzWriter {
            inner: Some(inner),
            level,
            buf: Vec::with_capacity(CHUNK),
            dict: Vec::new(),
            crc: Crc::new(),
            pending: VecDeque::new(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.crc.update(&data);
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let level = self.level;
        self.pending
            .push_back(std::thread::spawn(move || deflate_chunk(&data, &dict, level, last)));
        while self.pending.len() > self.threads || (last && !self.pending.is_empty()) {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(h) = self.pending.pop_front() else {
            return Ok(());
        };
        let out = h
            .join()
            .map_err(|_| io::Error::other("compression thread panicked"))??;
        self.inner.as_mut().expect("not finished").write_all(&out)
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        let mut inner = self.inner.take().expect("not finished");
        inner.write_all(&self.crc.sum().to_le_bytes())?;
        inner.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw deflate of one chunk: primed with `dict`, ended with a sync flush (or the final
/// block for the last chunk).
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete when everything is in and output did not fill up.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        // Text and incompressible bytes, across several chunk boundaries.
        let mut v = Vec::new();
        let mut x: u32 = 12345;
        for i in 0..(3 * CHUNK + 777) {
            if (i / 100_000) % 2 == 0 {
                v.push(b"kiln layer text "[i % 16]);
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push(x as u8);
            }
        }
        v
    }

    fn gz(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6).unwrap();
        for part in data.chunks(write_size) {
            w.write_all(part).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let data = sample();
        let a = gz(&data, 4096);
        let b = gz(&data, 1 << 20);
        assert_eq!(a, b, "the same bytes whatever the write sizes");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(a.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Exactly one chunk, and nothing at all.
        for n in [CHUNK, 0, 1] {
            let d = &data[..n];
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(gz(d, 7777).as_slice())
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, d);
        }
        assert!(a.len() < data.len() * 3 / 4, "text compresses");
    }
}
