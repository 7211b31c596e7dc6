//! Parallel gzip, the way pigz does it: the stream is cut into fixed 1 MiB chunks, each
//! compressed on its own thread with the previous chunk's last 32 KiB as its dictionary
//! and ended on a byte boundary (a sync flush), so the concatenation is one deflate
//! stream inside one gzip member. The bytes depend only on the input and the level
//! (chunk size and every choice below are fixed, and each choice looks at nothing but
//! the chunk's own bytes), never on how many threads ran: layers stay reproducible.
//!
//! A chunk on which string matching pays little (compressed or random data, base64 or
//! hex text, such text with tar headers between files) is not run through zlib, whose
//! lazy match search would spend most of the time finding next to nothing: one greedy
//! LZ77 pass both decides that and parses the chunk, and the parse is written as
//! dynamic-Huffman deflate blocks, or stored blocks where those are smaller. Ordinary
//! data goes through zlib at the requested level. All of it is plain deflate that any
//! inflater reads.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use kiln_cpu::Budget;

use super::deflate::{parse_poorly_compressible, write_parse, Scratch, WINDOW};
use super::memo::{chunk_key, ChunkKey, ChunkMemo, Placed};

/// Bytes per independently compressed chunk.
pub(super) const CHUNK: usize = 1 << 20;

/// Slot is the memory one chunk in flight uses, reused from chunk to chunk so that
/// each does not fault in fresh pages.
#[derive(Default)]
struct Slot {
    input: Vec<u8>,
    out: Vec<u8>,
    scratch: Scratch,
    /// The chunk's memo key, when there is a memo.
    key: Option<ChunkKey>,
}

/// A compressed chunk: its slot (`out` holds the deflate bytes) and its input's CRC.
type Compressed = io::Result<(Slot, Crc)>;

/// What the writer thread gives back: the inner writer, the stream's CRC and where
/// each chunk went.
type Written<W> = (W, Crc, Vec<Placed>);

/// A chunk on its way to the writer thread: compressed on a helper thread (which had a
/// free CPU of the budget) or already on the caller's.
enum Pending {
    Thread(JoinHandle<Compressed>),
    Done(Compressed),
}

/// ParGzWriter gzip-compresses what is written to it on the CPUs kiln's budget
/// ([`kiln_cpu`]) has free. The caller's thread gathers the input; each full chunk is
/// compressed on a helper thread when the budget has a CPU free right now, else on the
/// caller's thread (under its CPU); chunks are written to `W`, in order, by a writer
/// thread, so the writing (hashing, the file system's work) overlaps with both.
pub struct ParGzWriter<W: Write + Send + 'static> {
    level: u32,
    /// The chunk being filled.
    slot: Slot,
    dict: Vec<u8>,
    /// Chunks in flight, in stream order, to the writer thread.
    chunks: Option<mpsc::Sender<Pending>>,
    budget: &'static Budget,
    writer: Option<JoinHandle<io::Result<Written<W>>>>,
    /// Where compressed chunks are looked up before they are compressed.
    memo: Option<Arc<ChunkMemo>>,
    /// Slots back from the writer thread.
    free: mpsc::Receiver<Slot>,
    failed: Arc<AtomicBool>,
    /// Slots made so far, at most `slots`.
    made: usize,
    slots: usize,
}

impl<W: Write + Send + 'static> ParGzWriter<W> {
    pub fn new(inner: W, level: u32) -> io::Result<Self> {
        let threads = kiln_cpu::global().size();
        Self::with_threads(inner, level, threads)
    }

    /// As [`ParGzWriter::new`] with about `threads` chunks compressed at once (the
    /// output is the same for any number).
    pub fn with_threads(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        Self::with_memo(inner, level, threads, None)
    }

    /// As [`ParGzWriter::with_threads`], taking chunks `memo` knows from it instead of
    /// compressing them (the same bytes either way); [`ParGzWriter::finish_placed`]
    /// then says where each chunk went.
    pub fn with_memo(inner: W, level: u32, threads: usize, memo: Option<Arc<ChunkMemo>>) -> io::Result<Self> {
        Self::with_budget(inner, level, threads, memo, kiln_cpu::global())
    }

    /// As [`ParGzWriter::with_memo`], with CPUs from `budget`.
    pub fn with_budget(
        mut inner: W,
        level: u32,
        threads: usize,
        memo: Option<Arc<ChunkMemo>>,
        budget: &'static Budget,
    ) -> io::Result<Self> {
        // flate2's default header: no name, no mtime, OS unknown.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        let (chunks, rx) = mpsc::channel::<Pending>();
        let (free_tx, free) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let writer_failed = failed.clone();
        let writer = std::thread::spawn(move || {
            let mut crc = Crc::new();
            let mut error = None;
            // The gzip header is 10 bytes.
            let mut offset = 10u64;
            let mut placed = Vec::new();
            for pending in rx {
                let done = match pending {
                    Pending::Thread(h) => h
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("compression thread panicked"))),
                    Pending::Done(done) => done,
                };
                let slot = match done {
                    Ok((mut slot, chunk_crc)) => {
                        if error.is_none() {
                            crc.combine(&chunk_crc);
                            if let Some(key) = slot.key.take() {
                                let mut c = Crc::new();
                                c.update(&slot.out);
                                placed.push(Placed {
                                    key,
                                    offset,
                                    len: slot.out.len() as u64,
                                    crc: c.sum(),
                                });
                            }
                            offset += slot.out.len() as u64;
                            if let Err(e) = inner.write_all(&slot.out) {
                                error = Some(e);
                            }
                        }
                        slot.out.clear();
                        slot
                    }
                    Err(e) => {
                        error.get_or_insert(e);
                        Slot::default()
                    }
                };
                if error.is_some() {
                    writer_failed.store(true, Ordering::Relaxed);
                }
                // Every chunk gives its slot back (a new one if it was lost), so the
                // caller never waits for a slot that will not come.
                let _ = free_tx.send(slot);
            }
            match error {
                Some(e) => Err(e),
                None => Ok((inner, crc, placed)),
            }
        });
        let mut slot = Slot::default();
        slot.input.reserve_exact(CHUNK);
        Ok(ParGzWriter {
            level,
            slot,
            dict: Vec::with_capacity(WINDOW),
            chunks: Some(chunks),
            writer: Some(writer),
            free,
            failed,
            memo,
            budget,
            made: 1,
            // The chunk being filled, `threads` compressing, one being written.
            slots: threads.max(1) + 2,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let next = if self.made < self.slots {
            self.made += 1;
            let mut s = Slot::default();
            s.input.reserve_exact(CHUNK);
            s
        } else {
            match self.free.recv() {
                Ok(slot) => slot,
                // The writer thread stopped: its error (a full disk, say) is the cause.
                Err(_) => return Err(self.writer_error()),
            }
        };
        if self.failed.load(Ordering::Relaxed) {
            return Err(self.writer_error());
        }
        let mut slot = std::mem::replace(&mut self.slot, next);
        let dict = std::mem::take(&mut self.dict);
        self.dict
            .extend_from_slice(&slot.input[slot.input.len().saturating_sub(WINDOW)..]);
        let level = self.level;
        let memo = self.memo.clone();
        let budget = self.budget;
        let work = move || -> Compressed {
            budget.working();
            let mut crc = Crc::new();
            crc.update(&slot.input);
            let Slot {
                input,
                out,
                scratch,
                key,
            } = &mut slot;
            *key = memo.as_ref().map(|_| chunk_key(level, last, &dict, input));
            match memo.as_ref().zip(key.as_ref()).and_then(|(m, k)| m.get(k)) {
                Some(known) => *out = known,
                None => compress_chunk(input, &dict, level, last, out, scratch)?,
            }
            input.clear();
            Ok((slot, crc))
        };
        let pending = match budget.try_acquire() {
            Some(cpu) => Pending::Thread(std::thread::spawn(move || {
                let _cpu = cpu.adopt();
                work()
            })),
            None => {
                let _cpu = budget.acquire();
                Pending::Done(work())
            }
        };
        self.chunks
            .as_ref()
            .expect("not finished")
            .send(pending)
            .map_err(|_| self.writer_error())
    }

    /// The writer thread's error, once it has failed.
    fn writer_error(&mut self) -> io::Error {
        self.chunks = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("compression writer thread failed"),
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.finish_placed().map(|(w, _)| w)
    }

    /// As [`ParGzWriter::finish`], with where each chunk's bytes went (when there is a
    /// memo), for [`ChunkMemo::put`] once the blob is stored.
    pub fn finish_placed(mut self) -> io::Result<(W, Vec<Placed>)> {
        self.submit(true)?;
        self.chunks = None;
        let (mut inner, crc, placed) = self
            .writer
            .take()
            .expect("not finished")
            .join()
            .map_err(|_| io::Error::other("compression writer thread panicked"))??;
        inner.write_all(&crc.sum().to_le_bytes())?;
        inner.write_all(&crc.amount().to_le_bytes())?;
        Ok((inner, placed))
    }
}

impl<W: Write + Send + 'static> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.slot.input.len());
        self.slot.input.extend_from_slice(&data[..n]);
        if self.slot.input.len() == CHUNK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Below this size a chunk (only ever the last) simply goes through zlib.
const MIN_FAST: usize = 64 << 10;

/// Raw deflate of one chunk into `out`: primed with `dict`, ended on a byte boundary
/// (or with the final block for the last chunk).
pub(super) fn compress_chunk(
    data: &[u8],
    dict: &[u8],
    level: u32,
    last: bool,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> io::Result<()> {
    out.clear();
    if level > 0 && data.len() >= MIN_FAST && parse_poorly_compressible(data, scratch) {
        write_parse(data, scratch, last, out);
        return Ok(());
    }
    deflate_chunk(data, dict, level, last, out)
}

/// zlib's deflate of one chunk: primed with `dict`, ended with a sync flush (or the
/// final block for the last chunk).
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, last: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.reserve(data.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete when everything is in and output did not fill up.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn xorshift(x: &mut u32) -> u8 {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *x as u8
    }

    fn sample() -> Vec<u8> {
        // Text, incompressible bytes and base64-like text, across chunk boundaries.
        let mut v = Vec::new();
        let mut x: u32 = 12345;
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for i in 0..(5 * CHUNK + 777) {
            match (i / 1_100_000) % 3 {
                0 => v.push(b"kiln layer text "[i % 16]),
                1 => v.push(xorshift(&mut x)),
                _ if i % 77 == 76 => v.push(b'\n'),
                _ => v.push(B64[(xorshift(&mut x) & 63) as usize]),
            }
        }
        v
    }

    fn gz_with(data: &[u8], write_size: usize, threads: usize, level: u32) -> Vec<u8> {
        let mut w = ParGzWriter::with_threads(Vec::new(), level, threads).unwrap();
        for part in data.chunks(write_size.max(1)) {
            w.write_all(part).unwrap();
        }
        w.finish().unwrap()
    }

    fn gz(data: &[u8], write_size: usize) -> Vec<u8> {
        gz_with(data, write_size, 2, 6)
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let data = sample();
        let a = gz(&data, 4096);
        let b = gz(&data, 1 << 20);
        assert_eq!(a, b, "the same bytes whatever the write sizes");
        for threads in [1, 3, 8] {
            assert_eq!(
                a,
                gz_with(&data, 100_000, threads, 6),
                "the same bytes with {threads} threads"
            );
        }
        assert_eq!(gunzip(&a), data);
        // Exactly one chunk, and nothing at all.
        for n in [CHUNK, 0, 1, MIN_FAST, CHUNK + MIN_FAST + 3] {
            let d = &data[..n];
            assert_eq!(gunzip(&gz(d, 7777)), d);
        }
        assert!(a.len() < data.len() * 3 / 4, "text compresses");
    }

    #[test]
    fn many_writers_at_once_stay_within_the_cpu_budget() {
        // Six layers written at once (as by six solver jobs) with a budget of two CPUs:
        // never more than two compress at a time, none without a CPU, same bytes.
        let budget: &'static kiln_cpu::Budget = Box::leak(Box::new(kiln_cpu::Budget::new(2)));
        let data = sample();
        let want = gz(&data, 65536);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    let mut w = ParGzWriter::with_budget(Vec::new(), 6, 4, None, budget).unwrap();
                    for part in data.chunks(65536) {
                        w.write_all(part).unwrap();
                    }
                    assert_eq!(w.finish().unwrap(), want);
                });
            }
        });
        assert!(budget.peak() <= 2, "{} CPUs in use at once", budget.peak());
        assert_eq!(
            budget.unpermitted(),
            0,
            "a chunk was compressed without a CPU of the budget"
        );
    }

    #[test]
    fn every_level_round_trips() {
        let data = sample();
        for level in 0..=9 {
            let z = gz_with(&data[..2 * CHUNK + 99], 65536, 2, level);
            assert_eq!(gunzip(&z), &data[..2 * CHUNK + 99], "level {level}");
        }
    }

    fn fast_path(data: &[u8]) -> bool {
        parse_poorly_compressible(data, &mut Scratch::default())
    }

    #[test]
    fn poorly_compressible_chunks_take_the_fast_path() {
        let mut x = 99u32;
        let noise: Vec<u8> = (0..CHUNK).map(|_| xorshift(&mut x)).collect();
        assert!(fast_path(&noise));
        let z = gz(&noise, CHUNK);
        // Stored blocks: 5 bytes per 65535, plus header and trailer.
        assert!(z.len() <= CHUNK + (CHUNK / 65535 + 1) * 5 + 20, "{}", z.len());
        assert_eq!(gunzip(&z), noise);

        let hex: Vec<u8> = noise.iter().map(|b| b"0123456789abcdef"[(b & 15) as usize]).collect();
        assert!(fast_path(&hex));
        let z = gz(&hex, CHUNK);
        assert!(
            z.len() < CHUNK * 51 / 100,
            "hex text is Huffman coded to 4 bits a byte: {}",
            z.len()
        );
        assert_eq!(gunzip(&z), hex);

        // Like a tar of small base64 files: a repetitive header every 9 KiB.
        let mut tarlike = Vec::new();
        let mut n = 0;
        while tarlike.len() < 3 * CHUNK {
            let mut header = format!("d{:03}/f{:03}.txt", n / 100, n % 100).into_bytes();
            header.resize(100, 0);
            header.extend_from_slice(b"0000644\x000000000\x000000000\x0000000020464\x0014712345670\x00");
            header.resize(512, 0);
            tarlike.extend_from_slice(&header);
            tarlike.extend(hex.iter().skip(n * 8500 % CHUNK).take(8500).map(|b| b ^ (n as u8 & 1)));
            tarlike.resize(tarlike.len().next_multiple_of(512), 0);
            n += 1;
        }
        assert!(fast_path(&tarlike[..CHUNK]));
        let fast = gz(&tarlike, 65536);
        assert_eq!(gunzip(&fast), tarlike);
        let mut zlib = Vec::new();
        let mut scratch = Scratch::default();
        for (i, c) in tarlike.chunks(CHUNK).enumerate() {
            let mut out = Vec::new();
            deflate_chunk(c, &[], 6, i == 2, &mut out).unwrap();
            zlib.extend(out);
            assert!(parse_poorly_compressible(c, &mut scratch));
        }
        assert!(
            fast.len() < zlib.len() * 101 / 100,
            "fast {} vs zlib {}",
            fast.len(),
            zlib.len()
        );

        let text: Vec<u8> = (0..CHUNK).map(|i| b"the quick brown fox "[i % 20]).collect();
        assert!(!fast_path(&text));
    }
}
