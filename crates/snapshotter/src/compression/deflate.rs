//! The fast encoder behind [`crate::pgzip`] for chunks on which string matching pays
//! little: one greedy LZ77 pass decides that and parses the chunk, and the parse is
//! written as dynamic-Huffman deflate blocks (RFC 1951), or stored blocks where those
//! are smaller. Every choice looks only at the chunk's own bytes, so the output is the
//! same on every machine and for any number of threads.

/// Deflate's window: the farthest a match reaches back, and how much of the previous
/// chunk primes the next.
pub(crate) const WINDOW: usize = 32 << 10;

/// Scratch is the fast encoder's working memory.
#[derive(Default)]
pub(crate) struct Scratch {
    tokens: Vec<u32>,
    blocks: Vec<(usize, usize)>,
    table: Vec<u32>,
}

/// Bytes of input per block of the fast encoder (each block has its own codes).
const FAST_BLOCK: usize = 128 << 10;
/// A token of the fast encoder's parse is a match (this bit, with the length in bits
/// 16..25 and the distance minus one in bits 0..15) or a run of literals (LITERALS
/// with the run's length).
const MATCH: u32 = 1 << 31;
const LITERALS: u32 = 1 << 30;

/// Parses `data` into `scratch` (literals and matches by a greedy LZ77 pass: one hash
/// table entry per 4-byte prefix, LZ4's skipping over long runs of misses; in blocks of
/// [`FAST_BLOCK`] input bytes, `scratch.blocks` holding the end of each block's tokens
/// and input) if string matching pays little on it: the matches save less than 1/8 of
/// what the bytes cost as Huffman-coded literals (compressed, random or encoded data;
/// text with a few repeats such as tar headers). False for ordinary data, which zlib
/// compresses better at its level.
///
/// Each repeat of `len` bytes is counted as saving `len` literals at the chunk's
/// average literal cost, minus 24 bits for the length/distance pair; repeats that
/// save nothing stay literals. The pass gives up as soon as the savings pass 1/8 of
/// the chunk's cost, or a quarter of the cost of the part parsed so far (checked every
/// 16 KiB). Integer arithmetic only, on the chunk's own bytes, so the choice is the
/// same on every machine.
pub(crate) fn parse_poorly_compressible(data: &[u8], scratch: &mut Scratch) -> bool {
    let mut hist = [0u32; 256];
    for &b in data {
        hist[b as usize] += 1;
    }
    let n = data.len() as u64;
    let lens = code_lengths(&hist, 15);
    let literal_bits: u64 = hist.iter().zip(&lens).map(|(&f, &l)| f as u64 * l as u64).sum();
    // Savings are counted scaled by n: a match of `len` saves len * literal_bits - 24 * n.
    let limit = literal_bits * (n / 8);
    let match_cost = 24 * n;
    const HASH_BITS: u32 = 15;
    let hash = |i: usize| {
        let word = u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
        (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    };
    // Positions plus one, so that 0 is empty.
    let table = &mut scratch.table;
    table.clear();
    table.resize(1 << HASH_BITS, 0);
    let tokens = &mut scratch.tokens;
    tokens.clear();
    let blocks = &mut scratch.blocks;
    blocks.clear();
    let mut saved = 0u64;
    let mut misses = 0usize;
    let mut i = 0usize;
    // Ordinary data shows itself early: every 16 KiB, if the matches so far save more
    // than a quarter of what they cover costs as literals, zlib it is.
    let mut check = 16 << 10;
    while i < data.len() {
        let block_end = (i + FAST_BLOCK).min(data.len());
        // Start of the literals not yet in a token.
        let mut lits = i;
        while i + 4 <= block_end {
            if i >= check {
                if 4 * saved > literal_bits * i as u64 {
                    return false;
                }
                check += 16 << 10;
            }
            let h = hash(i);
            let cand = table[h] as usize;
            table[h] = (i + 1) as u32;
            let c = cand.wrapping_sub(1);
            if cand > 0 && i - c <= WINDOW && data[c..c + 4] == data[i..i + 4] {
                let max = (block_end - i).min(258);
                let mut len = 4;
                while len < max && data[c + len] == data[i + len] {
                    len += 1;
                }
                let gain = len as u64 * literal_bits;
                if gain > match_cost {
                    saved += gain - match_cost;
                    if saved > limit {
                        return false;
                    }
                    if lits < i {
                        tokens.push(LITERALS | (i - lits) as u32);
                    }
                    tokens.push(MATCH | (len as u32) << 16 | (i - c - 1) as u32);
                    for j in i + 1..(i + len).min(data.len() - 3) {
                        table[hash(j)] = (j + 1) as u32;
                    }
                    i += len;
                    lits = i;
                    misses = 0;
                    continue;
                }
            }
            // After a run of misses skip ahead, more the longer the run, up to 16
            // bytes: random data goes fast, and repeats are still found.
            misses += 1;
            i = (i + 1 + (misses >> 6).min(15)).min(block_end);
        }
        i = block_end;
        if lits < i {
            tokens.push(LITERALS | (i - lits) as u32);
        }
        blocks.push((tokens.len(), i));
    }
    true
}

/// Writes the parse in `scratch` as deflate blocks, each with dynamic Huffman codes or stored,
/// whichever is smaller; the last block is final if `last`, else the output ends
/// byte-aligned.
pub(crate) fn write_parse(data: &[u8], scratch: &Scratch, last: bool, out: &mut Vec<u8>) {
    out.reserve(data.len() + data.len() / 64 + 64);
    let mut bits = BitWriter::new(out);
    // Consecutive blocks that are better stored go out as one run of stored blocks.
    let mut stored_from: Option<usize> = None;
    let (mut tok_start, mut in_start) = (0, 0);
    for &(tok_end, in_end) in &scratch.blocks {
        let tokens = &scratch.tokens[tok_start..tok_end];
        let plan = BlockCodes::new(tokens, &data[in_start..in_end]);
        // A stored block costs its header (3 bits, padded to a byte) and 4 length
        // bytes per 65535 bytes.
        let raw = in_end - in_start;
        let stored_bits = (raw.div_ceil(65535).max(1) as u64) * (5 * 8) + 7 + 8 * raw as u64;
        if plan.bits < stored_bits {
            if let Some(from) = stored_from.take() {
                write_stored(&data[from..in_start], false, &mut bits);
            }
            plan.write(tokens, &data[in_start..in_end], last && in_end == data.len(), &mut bits);
        } else {
            stored_from.get_or_insert(in_start);
        }
        (tok_start, in_start) = (tok_end, in_end);
    }
    if let Some(from) = stored_from {
        write_stored(&data[from..], last, &mut bits);
    }
    if !last && bits.pending() > 0 {
        // Byte-align with an empty stored block, as zlib's sync flush does.
        write_stored(&[], false, &mut bits);
    }
    bits.align();
}

fn write_stored(data: &[u8], fin: bool, bits: &mut BitWriter<'_>) {
    let mut pieces: Vec<&[u8]> = data.chunks(65535).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let count = pieces.len();
    for (i, p) in pieces.into_iter().enumerate() {
        bits.put((fin && i + 1 == count) as u32, 1);
        bits.put(0, 2);
        bits.align();
        let len = p.len() as u16;
        bits.raw(&len.to_le_bytes());
        bits.raw(&(!len).to_le_bytes());
        bits.raw(p);
    }
}

/// Match lengths 3..=258: (code - 257, extra bits, base) per length code (RFC 1951, 3.2.5).
fn length_code(len: usize) -> (usize, u32, usize) {
    match len {
        258 => (28, 0, 258),
        3..=10 => (len - 3, 0, len),
        _ => {
            let l = len - 3;
            let k = usize::BITS - 1 - l.leading_zeros();
            let code = 4 * (k as usize - 1) + ((l >> (k - 2)) & 3);
            let extra = k - 2;
            (code, extra, len - (l & ((1 << extra) - 1)))
        }
    }
}

/// Distances 1..=32768: (code, extra bits, base).
fn distance_code(dist: usize) -> (usize, u32, usize) {
    let d = dist - 1;
    if d < 4 {
        return (d, 0, dist);
    }
    let l = usize::BITS - 1 - d.leading_zeros();
    let extra = l - 1;
    (
        2 * l as usize + ((d >> extra) & 1),
        extra,
        dist - (d & ((1 << extra) - 1)),
    )
}

/// The order in which code length code lengths are sent (RFC 1951, 3.2.7).
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// BlockCodes are the Huffman codes of one dynamic deflate block and its header: the
/// literal/length and distance code lengths, run-length coded.
struct BlockCodes {
    lit_lens: Vec<u8>,
    lit_codes: Vec<u16>,
    dist_lens: Vec<u8>,
    dist_codes: Vec<u16>,
    /// Codes sent of each (HLIT + 257, HDIST + 1).
    lit_count: usize,
    dist_count: usize,
    /// (code length symbol 0–18, extra bits value), literal/length code then distance code.
    runs: Vec<(u8, u8)>,
    cl_lens: Vec<u8>,
    cl_codes: Vec<u16>,
    /// Code length codes sent (HCLEN + 4).
    cl_count: usize,
    /// Size of the whole block in bits.
    bits: u64,
}

impl BlockCodes {
    /// The codes for `tokens`, the parse of `data`.
    fn new(tokens: &[u32], data: &[u8]) -> Self {
        let mut lit_freq = [0u32; 286];
        let mut dist_freq = [0u32; 30];
        let mut pos = 0;
        for &t in tokens {
            if t & MATCH == 0 {
                let run = (t & !LITERALS) as usize;
                for &b in &data[pos..pos + run] {
                    lit_freq[b as usize] += 1;
                }
                pos += run;
            } else {
                let len = (t >> 16 & 0x1ff) as usize;
                lit_freq[257 + length_code(len).0] += 1;
                dist_freq[distance_code((t & 0xffff) as usize + 1).0] += 1;
                pos += len;
            }
        }
        lit_freq[256] = 1;
        let lit_lens = code_lengths(&lit_freq, 15);
        let dist_lens = code_lengths(&dist_freq, 15);
        let lit_count = lit_lens.iter().rposition(|&l| l != 0).map_or(257, |p| (p + 1).max(257));
        let dist_count = dist_lens.iter().rposition(|&l| l != 0).map_or(1, |p| p + 1);
        let mut runs = Vec::new();
        run_lengths(&lit_lens[..lit_count], &mut runs);
        run_lengths(&dist_lens[..dist_count], &mut runs);
        let mut cl_freq = [0u32; 19];
        for &(sym, _) in &runs {
            cl_freq[sym as usize] += 1;
        }
        let cl_lens = code_lengths(&cl_freq, 7);
        let cl_count = CL_ORDER
            .iter()
            .rposition(|&s| cl_lens[s] != 0)
            .map_or(4, |p| (p + 1).max(4));
        let header = 3 + 5 + 5 + 4 + 3 * cl_count as u64;
        let runs_bits: u64 = runs
            .iter()
            .map(|&(s, _)| cl_lens[s as usize] as u64 + extra_bits(s) as u64)
            .sum();
        let lit_bits: u64 = (0..286)
            .map(|s| {
                let extra = if s > 256 { LENGTH_EXTRA[s - 257] } else { 0 };
                lit_freq[s] as u64 * (lit_lens[s] as u64 + extra as u64)
            })
            .sum();
        let dist_bits: u64 = (0..30)
            .map(|s| dist_freq[s] as u64 * (dist_lens[s] as u64 + s.saturating_sub(2) as u64 / 2))
            .sum();
        BlockCodes {
            lit_codes: canonical_codes(&lit_lens),
            dist_codes: canonical_codes(&dist_lens),
            cl_codes: canonical_codes(&cl_lens),
            lit_lens,
            dist_lens,
            lit_count,
            dist_count,
            runs,
            cl_lens,
            cl_count,
            bits: header + runs_bits + lit_bits + dist_bits,
        }
    }

    fn write(&self, tokens: &[u32], data: &[u8], fin: bool, bits: &mut BitWriter<'_>) {
        bits.put(fin as u32, 1);
        bits.put(2, 2);
        bits.put(self.lit_count as u32 - 257, 5);
        bits.put(self.dist_count as u32 - 1, 5);
        bits.put(self.cl_count as u32 - 4, 4);
        for &s in &CL_ORDER[..self.cl_count] {
            bits.put(self.cl_lens[s] as u32, 3);
        }
        for &(s, extra) in &self.runs {
            bits.put(self.cl_codes[s as usize] as u32, self.cl_lens[s as usize] as u32);
            bits.put(extra as u32, extra_bits(s));
        }
        // Code and length of each literal packed in one word for the hot loop.
        let lit: Vec<u32> = (0..256)
            .map(|b| self.lit_codes[b] as u32 | (self.lit_lens[b] as u32) << 16)
            .collect();
        let mut pos = 0;
        for &t in tokens {
            if t & MATCH == 0 {
                let run = (t & !LITERALS) as usize;
                let mut pairs = data[pos..pos + run].chunks_exact(2);
                for p in &mut pairs {
                    let (a, b) = (lit[p[0] as usize], lit[p[1] as usize]);
                    bits.put2(a & 0xffff, a >> 16, b & 0xffff, b >> 16);
                }
                for &b in pairs.remainder() {
                    let a = lit[b as usize];
                    bits.put(a & 0xffff, a >> 16);
                }
                pos += run;
                continue;
            }
            let len = (t >> 16 & 0x1ff) as usize;
            let (lc, lextra, lbase) = length_code(len);
            let sym = 257 + lc;
            bits.put(self.lit_codes[sym] as u32, self.lit_lens[sym] as u32);
            bits.put((len - lbase) as u32, lextra);
            let dist = (t & 0xffff) as usize + 1;
            let (dc, dextra, dbase) = distance_code(dist);
            bits.put(self.dist_codes[dc] as u32, self.dist_lens[dc] as u32);
            bits.put((dist - dbase) as u32, dextra);
            pos += len;
        }
        bits.put(self.lit_codes[256] as u32, self.lit_lens[256] as u32);
    }
}

/// Extra bits of length codes 257..=285.
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

fn extra_bits(sym: u8) -> u32 {
    match sym {
        16 => 2,
        17 => 3,
        18 => 7,
        _ => 0,
    }
}

/// Run-length codes a list of code lengths with symbols 0–18 (RFC 1951, 3.2.7).
fn run_lengths(lens: &[u8], out: &mut Vec<(u8, u8)>) {
    let mut i = 0;
    while i < lens.len() {
        let l = lens[i];
        let mut run = 1;
        while i + run < lens.len() && lens[i + run] == l {
            run += 1;
        }
        i += run;
        if l == 0 {
            while run >= 11 {
                let k = run.min(138);
                out.push((18, (k - 11) as u8));
                run -= k;
            }
            if run >= 3 {
                out.push((17, (run - 3) as u8));
                run = 0;
            }
        } else {
            out.push((l, 0));
            run -= 1;
            while run >= 3 {
                let k = run.min(6);
                out.push((16, (k - 3) as u8));
                run -= k;
            }
        }
        out.extend(std::iter::repeat_n((l, 0), run));
    }
}

/// Huffman code lengths for `freq` (0 for unused symbols), none longer than `limit`:
/// minimum-redundancy lengths (Moffat and Katajainen's in-place method), then, if
/// some are too long, the Kraft sum restored as miniz does. Ties go by symbol order,
/// so the result depends on the counts alone. The code is always complete: with
/// fewer than two symbols used, two get one bit.
fn code_lengths(freq: &[u32], limit: usize) -> Vec<u8> {
    let mut lens = vec![0u8; freq.len()];
    let mut syms: Vec<(u32, usize)> = freq
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0)
        .map(|(s, &f)| (f, s))
        .collect();
    if syms.len() < 2 {
        // Decoders want a complete code: two symbols of one bit, one of them unused.
        let used = syms.first().map_or(0, |&(_, s)| s);
        lens[used] = 1;
        lens[if used == 0 { 1 } else { 0 }] = 1;
        return lens;
    }
    syms.sort_unstable();
    let n = syms.len();
    let mut a: Vec<usize> = syms.iter().map(|&(f, _)| f as usize).collect();
    // First pass: combine, leaving parent pointers.
    a[0] += a[1];
    let (mut root, mut leaf) = (0usize, 2usize);
    for next in 1..n - 1 {
        if leaf >= n || a[root] < a[leaf] {
            a[next] = a[root];
            a[root] = next;
            root += 1;
        } else {
            a[next] = a[leaf];
            leaf += 1;
        }
        if leaf >= n || (root < next && a[root] < a[leaf]) {
            a[next] += a[root];
            a[root] = next;
            root += 1;
        } else {
            a[next] += a[leaf];
            leaf += 1;
        }
    }
    // Second pass: depths of internal nodes.
    a[n - 2] = 0;
    for next in (0..n.saturating_sub(2)).rev() {
        a[next] = a[a[next]] + 1;
    }
    // Third pass: depths of leaves.
    let (mut avail, mut used, mut depth) = (1usize, 0usize, 0usize);
    let mut root = n as isize - 2;
    let mut next = n as isize - 1;
    while avail > 0 {
        while root >= 0 && a[root as usize] == depth {
            used += 1;
            root -= 1;
        }
        while avail > used {
            a[next as usize] = depth;
            next -= 1;
            avail -= 1;
        }
        avail = 2 * used;
        depth += 1;
        used = 0;
    }
    // a[i] is now the length of the i-th least frequent symbol.
    let mut count = vec![0usize; limit.max(*a.iter().max().expect("n >= 2")) + 1];
    for &d in &a {
        count[d] += 1;
    }
    for d in limit + 1..count.len() {
        count[limit] += count[d];
        count[d] = 0;
    }
    let mut total: usize = (1..=limit).map(|d| count[d] << (limit - d)).sum();
    while total > 1 << limit {
        count[limit] -= 1;
        if let Some(d) = (1..limit).rev().find(|&d| count[d] > 0) {
            count[d] -= 1;
            count[d + 1] += 2;
        }
        total -= 1;
    }
    // Shortest lengths to the most frequent symbols.
    let mut j = n;
    for (d, &c) in count.iter().enumerate().take(limit + 1).skip(1) {
        for _ in 0..c {
            j -= 1;
            lens[syms[j].1] = d as u8;
        }
    }
    lens
}

/// Canonical Huffman codes for `lens` (RFC 1951, 3.2.2), bit-reversed for writing
/// least significant bit first.
fn canonical_codes(lens: &[u8]) -> Vec<u16> {
    let mut count = [0u16; 16];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for b in 1..16 {
        code = (code + count[b - 1]) << 1;
        next[b] = code;
    }
    lens.iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            c.reverse_bits() >> (16 - l as u32)
        })
        .collect()
}

/// BitWriter packs deflate's bit fields, least significant bit first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Appends the low `len` (at most 16) bits of `v`.
    #[inline]
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Appends two codes of at most 15 bits each.
    #[inline]
    fn put2(&mut self, v1: u32, len1: u32, v2: u32, len2: u32) {
        self.acc |= (v1 as u64) << self.n;
        self.n += len1;
        self.acc |= (v2 as u64) << self.n;
        self.n += len2;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Bits not yet in `out` (0 at a byte boundary).
    fn pending(&self) -> u32 {
        self.n
    }

    /// Pads with zero bits to a byte boundary and flushes.
    fn align(&mut self) {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.acc = 0;
    }

    /// Appends whole bytes; only at a byte boundary.
    fn raw(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.n, 0);
        self.out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_distance_codes_follow_rfc_1951() {
        assert_eq!(length_code(3), (0, 0, 3));
        assert_eq!(length_code(10), (7, 0, 10));
        assert_eq!(length_code(11), (8, 1, 11));
        assert_eq!(length_code(12), (8, 1, 11));
        assert_eq!(length_code(18), (11, 1, 17));
        assert_eq!(length_code(19), (12, 2, 19));
        assert_eq!(length_code(130), (23, 4, 115));
        assert_eq!(length_code(227), (27, 5, 227));
        assert_eq!(length_code(257), (27, 5, 227));
        assert_eq!(length_code(258), (28, 0, 258));
        for len in 3..=258 {
            let (c, extra, base) = length_code(len);
            assert!(len - base < 1 << extra && extra == LENGTH_EXTRA[c], "length {len}");
        }
        assert_eq!(distance_code(1), (0, 0, 1));
        assert_eq!(distance_code(4), (3, 0, 4));
        assert_eq!(distance_code(5), (4, 1, 5));
        assert_eq!(distance_code(6), (4, 1, 5));
        assert_eq!(distance_code(7), (5, 1, 7));
        assert_eq!(distance_code(24577), (29, 13, 24577));
        assert_eq!(distance_code(32768), (29, 13, 24577));
        for d in 1..=32768 {
            let (c, extra, base) = distance_code(d);
            assert!(
                d - base < 1 << extra && extra == (c as u32).saturating_sub(2) / 2,
                "distance {d}"
            );
        }
    }

    #[test]
    fn code_lengths_are_complete_and_limited() {
        // Fibonacci counts make the deepest unlimited tree.
        let mut freq = vec![0u32; 30];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut() {
            *f = a;
            (a, b) = (b, a.saturating_add(b));
        }
        for limit in [7, 15] {
            let lens = code_lengths(&freq, limit);
            assert!(lens.iter().all(|&l| (1..=limit as u8).contains(&l)));
            let kraft: u64 = lens.iter().map(|&l| 1u64 << (limit as u8 - l)).sum();
            assert_eq!(kraft, 1 << limit, "complete code for limit {limit}");
        }
        assert_eq!(code_lengths(&[0, 5, 0], 7), vec![1, 1, 0]);
        assert_eq!(code_lengths(&[5, 0, 0], 7), vec![1, 1, 0]);
        assert_eq!(code_lengths(&[0, 0, 0], 7), vec![1, 1, 0]);
        assert_eq!(code_lengths(&[3, 0, 3], 7), vec![1, 0, 1]);
    }
}
