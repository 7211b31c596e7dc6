//! Compression, in one place for every layer and archive kiln reads or writes:
//! - [`Compression`]: what new layer blobs are written in (`-o compression=…`), and
//!   [`compressor`], the writer for it: gzip on all cores ([`pgzip`], with its fast
//!   [`deflate`] encoder), multithreaded zstd, or none;
//! - [`Codec`] and [`sniff`]: the compressions BuildKit's `DecompressStream` tells by
//!   their magic bytes (gzip, bzip2, xz, zstd), for `ADD`'s archives; a layer's codec
//!   comes from its media type ([`kiln_image::LayerCodec`], converted with `From`);
//! - [`decompressor`] (a reader) and [`DecodingWriter`] (a writer, for blobs checked
//!   as they download) for any of them.
//!
//! The layer writer and converter (`layer.rs`), the blob checks (`verify.rs`), the
//! exporter's recompression and `ADD`'s unpack all go through here.

use std::io::{self, BufRead, Read, Write};

use kiln_image::{media_types, LayerCodec};

mod deflate;
mod memo;
pub mod pgzip;

use std::sync::Arc;

pub use memo::{ChunkMemo, Placed};
use pgzip::ParGzWriter;

/// Compression of new layer blobs, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip at this level (0–9; Go's and BuildKit's default is 6), on all cores.
    Gzip(u32),
    /// zstd at this level (1–22; BuildKit's default is 3), on all cores.
    Zstd(i32),
    Uncompressed,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(6)
    }
}

impl Compression {
    /// `compression=NAME` with an optional `compression-level=N`, as buildx takes them.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Self, String> {
        let check = |lo: i32, hi: i32, default: i32| -> Result<i32, String> {
            match level {
                None => Ok(default),
                Some(l) if (lo..=hi).contains(&l) => Ok(l),
                Some(l) => Err(format!("compression-level {l} is out of range for {name} ({lo}-{hi})")),
            }
        };
        Ok(match name {
            "gzip" => Compression::Gzip(check(0, 9, 6)? as u32),
            "zstd" => Compression::Zstd(check(1, 22, 3)?),
            "uncompressed" => {
                if level.is_some() {
                    return Err("compression-level makes no sense with compression=uncompressed".to_string());
                }
                Compression::Uncompressed
            }
            other => {
                return Err(format!(
                    "unknown compression `{other}` (expected gzip, zstd or uncompressed)"
                ))
            }
        })
    }

    /// The OCI layer media type of blobs in this compression.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Gzip(_) => media_types::OCI_LAYER_GZIP,
            Compression::Zstd(_) => media_types::OCI_LAYER_ZSTD,
            Compression::Uncompressed => media_types::OCI_LAYER_TAR,
        }
    }

    /// The kind without the level, for comparing with a blob's media type.
    pub fn matches(&self, media_type: &str) -> bool {
        match self {
            Compression::Gzip(_) => {
                media_type == media_types::OCI_LAYER_GZIP || media_type == media_types::DOCKER_LAYER_GZIP
            }
            Compression::Zstd(_) => media_type == media_types::OCI_LAYER_ZSTD,
            Compression::Uncompressed => {
                media_type == media_types::OCI_LAYER_TAR || media_type == media_types::DOCKER_LAYER_TAR
            }
        }
    }

    /// Kind and level as one short word (`gzip-6`, `zstd-3`, `tar`): what tells two
    /// conversions of a blob apart.
    pub fn tag(&self) -> String {
        match self {
            Compression::Gzip(l) => format!("gzip-{l}"),
            Compression::Zstd(l) => format!("zstd-{l}"),
            Compression::Uncompressed => "tar".to_string(),
        }
    }
}

/// Compressor is a writer that compresses into `W`; [`Compressor::finish`] ends the
/// stream and gives `W` back.
pub enum Compressor<W: Write + Send + 'static> {
    Gzip(ParGzWriter<W>),
    /// With the CPUs its extra workers run on (its first runs on the caller's).
    Zstd(zstd::Encoder<'static, W>, Vec<kiln_cpu::Permit<'static>>),
    Plain(W),
}

/// A writer compressing into `out` as `compression` says. Both compressed outputs
/// depend only on the input and the level, never on the number of cores: gzip is
/// cut into fixed 1 MiB chunks, and zstd's multithreaded output is the same for any
/// number of workers, so layers stay reproducible across machines.
pub fn compressor<W: Write + Send + 'static>(compression: Compression, out: W) -> io::Result<Compressor<W>> {
    compressor_with_memo(compression, out, None)
}

/// As [`compressor`]; gzip takes the chunks `memo` already holds from it rather than
/// compressing them again (byte for byte the same output).
pub fn compressor_with_memo<W: Write + Send + 'static>(
    compression: Compression,
    out: W,
    memo: Option<Arc<ChunkMemo>>,
) -> io::Result<Compressor<W>> {
    Ok(match compression {
        Compression::Gzip(level) => {
            let threads = kiln_cpu::global().size();
            Compressor::Gzip(ParGzWriter::with_memo(out, level, threads, memo)?)
        }
        Compression::Zstd(level) => {
            // One worker on the caller's CPU (the caller only hands it input), one more
            // for each CPU of the budget free now. zstd's output is the same for any
            // number of workers from one up (never zero: single-threaded mode frames
            // differently).
            let budget = kiln_cpu::global();
            let extra: Vec<_> = (1..budget.size()).map_while(|_| budget.try_acquire()).collect();
            let mut z = zstd::Encoder::new(out, level)?;
            z.multithread(1 + extra.len() as u32)?;
            Compressor::Zstd(z, extra)
        }
        Compression::Uncompressed => Compressor::Plain(out),
    })
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Ends the compressed stream and returns the writer it went to (not flushed).
    pub fn finish(self) -> io::Result<W> {
        self.finish_placed().map(|(w, _)| w)
    }

    /// As [`Compressor::finish`], with where each gzip chunk went (for the memo).
    pub fn finish_placed(self) -> io::Result<(W, Vec<Placed>)> {
        match self {
            Compressor::Gzip(gz) => gz.finish_placed(),
            Compressor::Zstd(z, _cpus) => Ok((z.finish()?, Vec::new())),
            Compressor::Plain(w) => Ok((w, Vec::new())),
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w, _) => w.write(buf),
            Compressor::Plain(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::Gzip(w) => w.write_all(buf),
            Compressor::Zstd(w, _) => w.write_all(buf),
            Compressor::Plain(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w, _) => w.flush(),
            Compressor::Plain(w) => w.flush(),
        }
    }
}

/// Codec is a stream's compression as its content shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl From<LayerCodec> for Codec {
    fn from(c: LayerCodec) -> Self {
        match c {
            LayerCodec::Uncompressed => Codec::None,
            LayerCodec::Gzip => Codec::Gzip,
            LayerCodec::Zstd => Codec::Zstd,
        }
    }
}

/// The compression whose magic number `head` starts with, as BuildKit's
/// `DecompressStream` tells them (anything else is uncompressed).
pub fn sniff(head: &[u8]) -> Codec {
    if head.starts_with(&[0x42, 0x5a, 0x68]) {
        Codec::Bzip2
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Codec::Xz
    } else if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Codec::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        // A zstd skippable frame (0x184D2A50..5F) may come first.
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
    {
        Codec::Zstd
    } else {
        Codec::None
    }
}

/// The decompressed content of `input`, compressed with `codec`. Concatenated
/// streams (multi-member gzip, bzip2 and xz) are read to the end, as Go reads them.
pub fn decompressor<'a, R: BufRead + 'a>(codec: Codec, input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match codec {
        Codec::None => Box::new(input),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Codec::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Codec::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

/// What a layer blob's first bytes say it is, to hold against its media type: gzip
/// (`1f 8b`), zstd (`28 b5 2f fd`, or a skippable frame `5? 2a 4d 18`), else
/// uncompressed. `head` holds at least four bytes unless the blob is shorter.
pub fn sniff_layer(head: &[u8]) -> LayerCodec {
    if head.starts_with(&[0x1f, 0x8b]) {
        LayerCodec::Gzip
    } else if sniff(head) == Codec::Zstd {
        LayerCodec::Zstd
    } else {
        LayerCodec::Uncompressed
    }
}

/// [`decompressor`] for whatever compression `input`'s first bytes show.
pub fn sniffing_decompressor<'a, R: BufRead + 'a>(mut input: R) -> io::Result<Box<dyn Read + 'a>> {
    let codec = sniff(input.fill_buf()?);
    decompressor(codec, input)
}

/// DecodingWriter takes compressed bytes and writes them decompressed into `W`
/// (for a blob checked while it streams past); layer codecs only.
pub enum DecodingWriter<W: Write> {
    Plain(W),
    Gzip(Box<flate2::write::MultiGzDecoder<W>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, W>>),
}

impl<W: Write> DecodingWriter<W> {
    pub fn new(codec: LayerCodec, out: W) -> io::Result<Self> {
        Ok(match codec {
            LayerCodec::Uncompressed => DecodingWriter::Plain(out),
            LayerCodec::Gzip => DecodingWriter::Gzip(Box::new(flate2::write::MultiGzDecoder::new(out))),
            LayerCodec::Zstd => DecodingWriter::Zstd(Box::new(zstd::stream::write::Decoder::new(out)?)),
        })
    }

    /// Ends the stream (an error when it is cut short) and returns `W`.
    pub fn finish(self) -> io::Result<W> {
        match self {
            DecodingWriter::Plain(w) => Ok(w),
            DecodingWriter::Gzip(gz) => gz.finish(),
            DecodingWriter::Zstd(mut z) => {
                z.flush()?;
                Ok(z.into_inner())
            }
        }
    }
}

impl<W: Write> Write for DecodingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DecodingWriter::Plain(w) => w.write(buf),
            DecodingWriter::Gzip(w) => w.write(buf),
            DecodingWriter::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            DecodingWriter::Plain(w) => w.flush(),
            DecodingWriter::Gzip(w) => w.flush(),
            DecodingWriter::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressed(codec: Codec, data: &[u8]) -> Vec<u8> {
        match codec {
            Codec::None => data.to_vec(),
            Codec::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(data).unwrap();
                gz.finish().unwrap()
            }
            Codec::Bzip2 => {
                let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                bz.write_all(data).unwrap();
                bz.finish().unwrap()
            }
            Codec::Xz => {
                let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
                xz.write_all(data).unwrap();
                xz.finish().unwrap()
            }
            Codec::Zstd => zstd::encode_all(data, 3).unwrap(),
        }
    }

    #[test]
    fn every_codec_is_sniffed_and_read_back() {
        let data = b"some bytes, some bytes, some bytes\n".repeat(100);
        for codec in [Codec::None, Codec::Gzip, Codec::Bzip2, Codec::Xz, Codec::Zstd] {
            let blob = compressed(codec, &data);
            assert_eq!(sniff(&blob), codec);
            let mut out = Vec::new();
            sniffing_decompressor(&blob[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{codec:?}");
        }
        // Two concatenated members read as one stream.
        let mut two = compressed(Codec::Gzip, b"a");
        two.extend(compressed(Codec::Gzip, b"b"));
        let mut out = Vec::new();
        decompressor(Codec::Gzip, &two[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
        assert_eq!(sniff(&[0x5e, 0x2a, 0x4d, 0x18]), Codec::Zstd);
        // A layer's check: any gzip member header, not only deflate's.
        assert_eq!(sniff_layer(&[0x1f, 0x8b, 8, 0]), LayerCodec::Gzip);
        assert_eq!(sniff_layer(&[0x1f, 0x8b, 0, 0]), LayerCodec::Gzip);
        assert_eq!(sniff_layer(&[0x28, 0xb5, 0x2f, 0xfd]), LayerCodec::Zstd);
        assert_eq!(sniff_layer(&[0x5e, 0x2a, 0x4d, 0x18]), LayerCodec::Zstd);
        assert_eq!(sniff_layer(&[0x42, 0x5a, 0x68]), LayerCodec::Uncompressed);
        assert_eq!(sniff_layer(b"etc/"), LayerCodec::Uncompressed);
        assert_eq!(sniff_layer(b""), LayerCodec::Uncompressed);
        assert_eq!(sniff(b"\x1f\x8b"), Codec::None);
        assert_eq!(sniff(b""), Codec::None);
    }

    #[test]
    fn what_a_compressor_writes_the_decoders_read() {
        let data = b"layer bytes ".repeat(50_000);
        for c in [Compression::Gzip(6), Compression::Zstd(3), Compression::Uncompressed] {
            let mut w = compressor(c, Vec::new()).unwrap();
            w.write_all(&data).unwrap();
            let blob = w.finish().unwrap();
            let codec = LayerCodec::of_media_type(c.media_type()).unwrap();
            let mut out = Vec::new();
            decompressor(codec.into(), &blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == data, "{c:?}");
            let mut dw = DecodingWriter::new(codec, Vec::new()).unwrap();
            dw.write_all(&blob).unwrap();
            assert!(dw.finish().unwrap() == data, "{c:?}");
        }
        assert_eq!(Compression::Gzip(9).tag(), "gzip-9");
        assert_eq!(Compression::Uncompressed.tag(), "tar");
    }
}
