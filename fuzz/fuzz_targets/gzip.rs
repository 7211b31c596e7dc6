//! kiln's parallel gzip writer (and its own deflate encoder) on any bytes: decoding
//! the output gives the input back, and the output does not depend on the number of
//! threads. The first two bytes pick the level, the thread count, how the input is
//! cut into writes, and how often it is repeated (to cross the 1 MiB chunk boundary).
#![no_main]

use std::io::{Read, Write};

use kiln_snapshotter::pgzip::ParGzWriter;
use libfuzzer_sys::fuzz_target;

fn compress(input: &[u8], level: u32, threads: usize, piece: usize) -> Vec<u8> {
    let mut w = ParGzWriter::with_threads(Vec::new(), level, threads).expect("writer");
    for part in input.chunks(piece.max(1)) {
        w.write_all(part).expect("write");
    }
    w.finish().expect("finish")
}

fuzz_target!(|data: &[u8]| {
    let (head, rest) = match data {
        [a, b, rest @ ..] => ((*a, *b), rest),
        _ => return,
    };
    let level = u32::from(head.0 % 10);
    let threads = 1 + usize::from(head.0 / 10 % 4);
    let piece = 1 + usize::from(head.1) * 97;
    // With the top bit set, an input of over 1 KiB is repeated up to 505 times, so
    // inputs of up to ~2 MiB cross the 1 MiB chunk boundary; otherwise it is used once.
    let repeat = if head.1 & 0x80 != 0 && rest.len() > 1024 {
        1 + usize::from(head.1 & 0x3f) * 8
    } else {
        1
    };
    let input: Vec<u8> = rest.iter().copied().cycle().take(rest.len() * repeat).collect();
    let gz = compress(&input, level, threads, piece);
    let mut back = Vec::with_capacity(input.len());
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut back)
        .expect("the output decodes");
    assert!(back == input, "round trip changed the bytes (level {level}, {threads} threads)");
    let other = compress(&input, level, 1 + threads % 4, piece + 1);
    assert!(other == gz, "output depends on the thread count or the writes");
});
