//! Streaming, parallel, deterministic compression of layer blobs.
//!
//! Gzip is done the way pigz does it: the input is cut into fixed-size
//! blocks, each block is compressed as raw deflate on a worker thread with the
//! last 32 KiB of the previous block's input as its preset dictionary, every
//! block but the last ends with a sync flush (so the pieces are byte aligned
//! and simply concatenate), and an ordered writer thread writes a fixed gzip
//! header, the pieces in order, and the CRC-32/ISIZE trailer. Because block
//! boundaries are fixed byte offsets and each block is compressed by a fresh
//! deflate state from only its own input and dictionary, the bytes do not
//! depend on the thread count, on scheduling, or on how the input was split
//! across `write` calls.
//!
//! Zstd uses libzstd's own multithreaded streaming encoder, which is
//! deterministic for any `nbWorkers >= 1` (and differs from `nbWorkers == 0`,
//! so we never use 0).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use flate2::{Compress, FlushCompress, Status};

/// Bytes of input per gzip block; pigz's default. Part of the output:
/// changing it changes every gzip digest. Measured on a 264 MiB tar of
/// /usr/share and /usr/lib/python3.11: 256 KiB and 1 MiB blocks cost the same
/// CPU and came out slightly larger (+0.02%, +0.05%), so no reason to move.
pub const GZIP_BLOCK_SIZE: usize = 128 * 1024;

/// Default gzip level: pigz's and gzip's default. With zlib-rs it already
/// takes ~40% less CPU than pigz at -6 (on the tar above); level 5 would save
/// another ~15% CPU for +0.2% size, not worth leaving the familiar default.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Default zstd level: the zstd CLI's default.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Deflate's window: the most history a block can refer back to.
const DICT_SIZE: usize = 32 * 1024;

// A dictionary must come entirely from the previous block's input.
const _: () = assert!(GZIP_BLOCK_SIZE >= DICT_SIZE);

/// Layer compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// OCI media type of a tar layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The name used in configuration and by `FromStr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Default level for this algorithm.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => DEFAULT_GZIP_LEVEL as i32,
            Compression::Zstd => DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error from parsing an unknown compression name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?} (expected \"gzip\" or \"zstd\")")]
pub struct ParseCompressionError(pub String);

impl FromStr for Compression {
    type Err = ParseCompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(ParseCompressionError(s.to_owned())),
        }
    }
}

/// How a layer is compressed: the algorithm and its level. Written
/// `gzip`, `zstd` (their default levels, 6 and 3) or `ALGORITHM:LEVEL`
/// (`zstd:9`), on the command line and in images.yaml alike. Its text is
/// part of layer keys; at the default level it is the algorithm's name
/// alone, as keys had it before levels could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerCompression {
    pub algorithm: Compression,
    pub level: i32,
}

impl LayerCompression {
    pub const GZIP: LayerCompression = LayerCompression {
        algorithm: Compression::Gzip,
        level: DEFAULT_GZIP_LEVEL as i32,
    };

    /// OCI media type of a tar layer compressed this way.
    pub fn media_type(self) -> &'static str {
        self.algorithm.media_type()
    }

    /// The levels `algorithm` takes: gzip 1..=9, zstd 1..=19 (zstd's
    /// 20..=22 need more window memory than a decoder gives by default).
    pub fn levels(algorithm: Compression) -> std::ops::RangeInclusive<i32> {
        match algorithm {
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=19,
        }
    }
}

impl Default for LayerCompression {
    fn default() -> Self {
        LayerCompression::GZIP
    }
}

impl From<Compression> for LayerCompression {
    fn from(algorithm: Compression) -> Self {
        LayerCompression {
            algorithm,
            level: algorithm.default_level(),
        }
    }
}

impl fmt::Display for LayerCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.level == self.algorithm.default_level() {
            write!(f, "{}", self.algorithm)
        } else {
            write!(f, "{}:{}", self.algorithm, self.level)
        }
    }
}

/// Why a compression could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseLayerCompressionError {
    #[error(transparent)]
    Algorithm(#[from] ParseCompressionError),
    #[error("compression level {level:?} of {algorithm} is not a number from {} to {} (write e.g. \"{algorithm}:{}\")", range.start(), range.end(), range.end())]
    Level {
        algorithm: Compression,
        level: String,
        range: std::ops::RangeInclusive<i32>,
    },
}

impl FromStr for LayerCompression {
    type Err = ParseLayerCompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let algorithm: Compression = name.parse()?;
        let Some(level) = level else {
            return Ok(algorithm.into());
        };
        let range = LayerCompression::levels(algorithm);
        match level.parse::<i32>() {
            Ok(l) if range.contains(&l) => Ok(LayerCompression {
                algorithm,
                level: l,
            }),
            _ => Err(ParseLayerCompressionError::Level {
                algorithm,
                level: level.to_string(),
                range,
            }),
        }
    }
}

/// A media type that names no layer imgbuild can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read a layer of media type {media_type:?}")]
pub struct UnknownMediaType {
    pub media_type: String,
}

/// How a layer of `media_type` is compressed; `None` is a plain tar. Knows
/// OCI's `…layer.v1.tar`, `…tar+gzip`, `…tar+zstd` (and the nondistributable
/// forms) and Docker's `…rootfs.diff.tar`, `…tar.gzip`, `…tar.zstd`.
pub fn layer_compression(media_type: &str) -> Result<Option<Compression>, UnknownMediaType> {
    if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        Ok(Some(Compression::Gzip))
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Ok(Some(Compression::Zstd))
    } else if media_type.ends_with("tar") {
        Ok(None)
    } else {
        Err(UnknownMediaType {
            media_type: media_type.to_string(),
        })
    }
}

/// The tar stream inside `compressed`, a layer compressed as
/// [`layer_compression`] said.
pub fn decompress<'a>(
    compression: Option<Compression>,
    compressed: impl BufRead + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(compressed)?),
        None => Box::new(compressed),
    })
}

/// Writes the compressed form of everything written to it into `sink`, using
/// `threads` worker threads.
///
/// The output depends only on the input bytes, the algorithm and the level,
/// never on `threads` or on how the input is split across `write` calls.
/// `flush` is a no-op: forcing out a partial block would make the output
/// depend on when it was called. Call [`Compressor::finish`] to complete the
/// stream; dropping a `Compressor` instead stops and joins its threads
/// (waiting for a sink write already in progress) and leaves an incomplete
/// stream in the sink.
pub struct Compressor<W: Write + Send + 'static> {
    inner: Option<Inner<W>>,
    /// The first error; every later call reports it again, so a stream that
    /// lost data is never silently continued.
    failed: Option<(io::ErrorKind, String)>,
}

enum Inner<W: Write + Send + 'static> {
    Gzip(Gzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// A compressor at the algorithm's default level (gzip 6, zstd 3).
    pub fn new(sink: W, compression: Compression, threads: usize) -> Self {
        Self::with_level(sink, compression, threads, compression.default_level())
    }

    /// A compressor at `level`, clamped to the algorithm's range (gzip 0..=9,
    /// zstd 1..=22). `threads` below 1 counts as 1.
    pub fn with_level(sink: W, compression: Compression, threads: usize, level: i32) -> Self {
        let threads = threads.max(1);
        match compression {
            Compression::Gzip => {
                let level = level.clamp(0, 9) as u32;
                Self::from_inner(
                    Gzip::start(sink, threads, level, GZIP_BLOCK_SIZE).map(Inner::Gzip),
                )
            }
            Compression::Zstd => {
                Self::from_inner(zstd_encoder(sink, threads, level).map(Inner::Zstd))
            }
        }
    }

    fn from_inner(inner: io::Result<Inner<W>>) -> Self {
        match inner {
            Ok(inner) => Compressor {
                inner: Some(inner),
                failed: None,
            },
            Err(e) => Compressor {
                inner: None,
                failed: Some((e.kind(), e.to_string())),
            },
        }
    }

    /// Flush everything, join the threads, write the trailer and return the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        let inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("compressor already finished"))?;
        match inner {
            Inner::Gzip(gzip) => gzip.finish(),
            Inner::Zstd(encoder) => encoder.finish(),
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    /// Remembers `e` so later calls fail the same way, and returns it.
    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((e.kind(), e.to_string()));
        }
        e
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let result = match self.inner.as_mut() {
            Some(Inner::Gzip(gzip)) => gzip.write(buf).map(|()| buf.len()),
            Some(Inner::Zstd(encoder)) => encoder.write(buf),
            None => Err(io::Error::other("compressor already finished")),
        };
        result.map_err(|e| self.fail(e))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // The gzip path always consumes everything; this skips the retry loop.
        let mut buf = buf;
        while !buf.is_empty() {
            let n = self.write(buf)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Does nothing but report an earlier failure: a flush point would make
    /// the output depend on when flush was called.
    fn flush(&mut self) -> io::Result<()> {
        self.check()
    }
}

impl<W: Write + Send + 'static> Drop for Compressor<W> {
    fn drop(&mut self) {
        // Gzip's own Drop stops and joins its threads; zstd's joins its
        // workers when its context is freed.
        self.inner.take();
    }
}

fn zstd_encoder<W: Write>(
    sink: W,
    threads: usize,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    use zstd::stream::raw::CParameter;
    let range = zstd::compression_level_range();
    let level = level.clamp(*range.start().max(&1), *range.end());
    let mut raw = zstd::stream::raw::Encoder::new(level)?;
    // nbWorkers >= 1 always: libzstd's output is the same for every worker
    // count >= 1 but different with 0 (single-threaded mode).
    let workers = u32::try_from(threads).unwrap_or(u32::MAX).max(1);
    raw.set_parameter(CParameter::NbWorkers(workers))?;
    Ok(zstd::stream::write::Encoder::with_encoder(sink, raw))
}

/// A block of input on its way to a worker.
struct Job {
    seq: u64,
    /// `dict_len` bytes of dictionary, then the block's input.
    input: Vec<u8>,
    dict_len: usize,
    last: bool,
    /// Recycled buffer for the compressed block.
    output: Vec<u8>,
}

/// A compressed block on its way to the writer.
struct Done {
    seq: u64,
    last: bool,
    /// CRC-32 and length of the block's input, combined in order by the writer.
    result: io::Result<(crc32fast::Hasher, u64)>,
    input: Vec<u8>,
    output: Vec<u8>,
}

/// A pair of block buffers. The number of pairs in existence is fixed, and a
/// block can only be submitted with a pair in hand, so they double as the
/// credits that bound memory.
struct Buffers {
    input: Vec<u8>,
    output: Vec<u8>,
}

/// The pigz-style gzip pipeline: caller fills blocks, workers deflate them,
/// the writer thread puts them in order into the sink.
struct Gzip<W: Write + Send + 'static> {
    block_size: usize,
    /// Dictionary (`dict_len` bytes) followed by the current block's input.
    block: Vec<u8>,
    dict_len: usize,
    seq: u64,
    jobs: Option<SyncSender<Job>>,
    spare: Receiver<Buffers>,
    cancel: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> Gzip<W> {
    fn start(sink: W, threads: usize, level: u32, block_size: usize) -> io::Result<Self> {
        debug_assert!(block_size >= DICT_SIZE, "gzip block size below 32 KiB");
        // Two blocks per worker keeps every worker busy while the writer
        // catches up; one more is being filled by the caller.
        let credits = 2 * threads + 1;
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(credits);
        let (done_tx, done_rx) = mpsc::sync_channel::<Done>(credits);
        let (spare_tx, spare_rx) = mpsc::sync_channel::<Buffers>(credits);
        for _ in 1..credits {
            // Never blocks: the channel holds `credits`.
            let _ = spare_tx.send(Buffers {
                input: Vec::new(),
                output: Vec::new(),
            });
        }
        // Built first so that, if a spawn fails, Drop joins what was started.
        let mut gzip = Gzip {
            block_size,
            block: Vec::with_capacity(block_size),
            dict_len: 0,
            seq: 0,
            jobs: Some(job_tx),
            spare: spare_rx,
            cancel: Arc::new(AtomicBool::new(false)),
            workers: Vec::with_capacity(threads),
            writer: None,
        };
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..threads {
            let (jobs, done, cancel) = (job_rx.clone(), done_tx.clone(), gzip.cancel.clone());
            let worker = thread::Builder::new()
                .name(format!("gzip-deflate-{i}"))
                .spawn(move || deflate_worker(&jobs, &done, &cancel, level))?;
            gzip.workers.push(worker);
        }
        // Only workers hold result senders, so the writer sees the channel
        // close if they all stop before the last block.
        drop(done_tx);
        let header = gzip_header(level);
        gzip.writer = Some(
            thread::Builder::new()
                .name("gzip-writer".into())
                .spawn(move || write_in_order(sink, &header, &done_rx, &spare_tx))?,
        );
        Ok(gzip)
    }

    fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            // A full block is sent only once more input exists, so that the
            // final block (the one with the end-of-stream marker) is the same
            // whatever the write boundaries.
            if self.block.len() - self.dict_len == self.block_size {
                self.submit_full()?;
            }
            let room = self.block_size - (self.block.len() - self.dict_len);
            let n = room.min(buf.len());
            self.block.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends the full current block and starts the next one, primed with the
    /// last 32 KiB of this one's input.
    fn submit_full(&mut self) -> io::Result<()> {
        // Blocks while too many blocks are in flight: this is the backpressure.
        let Ok(Buffers { mut input, output }) = self.spare.recv() else {
            return Err(self.writer_error());
        };
        input.clear();
        input.reserve(DICT_SIZE + self.block_size);
        input.extend_from_slice(&self.block[self.block.len() - DICT_SIZE..]);
        let full = std::mem::replace(&mut self.block, input);
        let dict_len = std::mem::replace(&mut self.dict_len, DICT_SIZE);
        self.send(full, dict_len, false, output)
    }

    fn send(
        &mut self,
        input: Vec<u8>,
        dict_len: usize,
        last: bool,
        output: Vec<u8>,
    ) -> io::Result<()> {
        let job = Job {
            seq: self.seq,
            input,
            dict_len,
            last,
            output,
        };
        self.seq += 1;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.writer_error())
        }
    }

    fn finish(mut self) -> io::Result<W> {
        let block = std::mem::take(&mut self.block);
        let dict_len = self.dict_len;
        let sent = self.send(block, dict_len, true, Vec::new());
        // Closing the job channel lets the workers exit once it is drained.
        self.jobs = None;
        // A failed send has already joined the writer and holds its error.
        let written = sent.and_then(|()| self.join_writer());
        self.join_workers();
        written
    }

    /// The pipeline broke: the writer has exited (or is about to), and its
    /// result says why.
    fn writer_error(&mut self) -> io::Error {
        match self.join_writer() {
            Err(e) => e,
            Ok(_) => io::Error::other("gzip writer stopped early"),
        }
    }

    fn join_writer(&mut self) -> io::Result<W> {
        match self.writer.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("gzip writer thread panicked"))),
            None => Err(io::Error::other("gzip writer already stopped")),
        }
    }

    fn join_workers(&mut self) {
        for handle in self.workers.drain(..) {
            // Compression runs under catch_unwind and reports panics as
            // errors; nothing else in a worker can panic.
            let _ = handle.join();
        }
    }
}

impl<W: Write + Send + 'static> Drop for Gzip<W> {
    fn drop(&mut self) {
        // Unfinished (or after an error): tell workers to skip queued blocks,
        // close their queue, then join everything. The writer exits when the
        // last worker drops its result sender.
        self.cancel.store(true, Ordering::Relaxed);
        self.jobs = None;
        self.join_workers();
        let _ = self.join_writer();
    }
}

/// Fixed gzip header: no name, no extra fields, mtime 0, XFL as gzip/pigz
/// set it for the level, OS 255 ("unknown", as Go's compress/gzip writes),
/// since the bytes do not depend on the host OS.
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

fn deflate_worker(
    jobs: &Mutex<Receiver<Job>>,
    done: &SyncSender<Done>,
    cancel: &AtomicBool,
    level: u32,
) {
    loop {
        // The lock is held only while waiting, so a panic can't poison it
        // with a job half taken; recover from poisoning anyway.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job {
            seq,
            input,
            dict_len,
            last,
            mut output,
        }) = job
        else {
            return;
        };
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let (dict, data) = input.split_at(dict_len);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            deflate_block(level, dict, data, last, &mut output)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(data);
            Ok((crc, data.len() as u64))
        }))
        .unwrap_or_else(|_| Err(io::Error::other("deflate panicked")));
        if done
            .send(Done {
                seq,
                last,
                result,
                input,
                output,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Compresses one block as raw deflate into `out`: prime with `dict`, then
/// end with a sync flush (byte aligned, stream continues) or, for the last
/// block, with the final block marker.
///
/// Every block gets a fresh deflate state. A reused one is not equivalent:
/// zlib-rs's reset (like zlib's deflateReset) keeps the old window bytes,
/// and the match finder reads a little past the end of the input, so stale
/// bytes can pick a different (equally long) match near a block's end —
/// making the output depend on which worker had which block before. The
/// fresh state costs one ~400 KB zeroed allocation per block, about 1%.
fn deflate_block(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut compress = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        compress.set_dictionary(dict).map_err(io::Error::other)?;
    }
    out.clear();
    // Room for incompressible data (stored blocks cost 5 bytes per 64 KiB)
    // plus the flush marker, so one call normally suffices.
    out.reserve(data.len() + data.len() / 1024 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before = compress.total_in();
        let status = compress
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        input = &input[(compress.total_in() - before) as usize..];
        match status {
            Status::StreamEnd => return Ok(()),
            // A sync flush is complete once all input is taken and the
            // output buffer was not filled (zlib's contract).
            Status::Ok | Status::BufError
                if !last && input.is_empty() && out.len() < out.capacity() =>
            {
                return Ok(());
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

/// The writer thread: header, blocks in sequence order, trailer.
fn write_in_order<W: Write>(
    mut sink: W,
    header: &[u8],
    done: &Receiver<Done>,
    spare: &SyncSender<Buffers>,
) -> io::Result<W> {
    sink.write_all(header)?;
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    loop {
        let block = done
            .recv()
            .map_err(|_| io::Error::other("gzip stream ended before its last block"))?;
        pending.insert(block.seq, block);
        while let Some(block) = pending.remove(&next) {
            next += 1;
            let (block_crc, block_len) = block.result?;
            sink.write_all(&block.output)?;
            crc.combine(&block_crc);
            len += block_len;
            if block.last {
                sink.write_all(&crc.finalize().to_le_bytes())?;
                // ISIZE is the input length mod 2^32.
                sink.write_all(&(len as u32).to_le_bytes())?;
                sink.flush()?;
                return Ok(sink);
            }
            // Return the credit; the caller may already be gone.
            let _ = spare.send(Buffers {
                input: block.input,
                output: block.output,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::sync::Condvar;
    use std::time::Instant;

    #[test]
    fn layer_compression_reads_and_writes_algorithm_and_level() {
        let c: LayerCompression = "zstd:9".parse().unwrap();
        assert_eq!((c.algorithm, c.level), (Compression::Zstd, 9));
        assert_eq!(c.to_string(), "zstd:9");
        // The default level is written as the name alone (as keys were).
        assert_eq!(
            "gzip:6".parse::<LayerCompression>().unwrap().to_string(),
            "gzip"
        );
        assert_eq!("zstd".parse::<LayerCompression>().unwrap().level, 3);
        assert_eq!(LayerCompression::default(), LayerCompression::GZIP);
        for bad in [
            "zstd:0", "zstd:20", "gzip:10", "gzip:", "zstd:x", "lz4", "lz4:1",
        ] {
            let e = bad.parse::<LayerCompression>().unwrap_err().to_string();
            assert!(
                e.contains("level") || e.contains("unknown compression"),
                "{bad}: {e}"
            );
        }
    }

    /// Deterministic, text-like input with some incompressible stretches.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "layer", "image", "the", "of", "tar", "usr", "share", "lib", "config", "digest",
            "manifest", "/", "\n", " ", "=", "0x", "sha256", "build", "root", "etc",
        ];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            let r = next();
            if r % 97 == 0 {
                // A short run of noise.
                for _ in 0..(r >> 8) % 512 {
                    out.push(next() as u8);
                }
            } else {
                out.extend_from_slice(WORDS[(r >> 16) as usize % WORDS.len()].as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn compress_with(
        data: &[u8],
        compression: Compression,
        threads: usize,
        chunk: usize,
    ) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), compression, threads);
        for piece in data.chunks(chunk.max(1)) {
            c.write_all(piece).unwrap();
        }
        c.finish().unwrap()
    }

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        compress_with(data, Compression::Gzip, threads, usize::MAX)
    }

    /// Straightforward single-threaded pigz algorithm, written independently
    /// of the pipeline, with a fresh deflate state per block: what the
    /// pipeline must reproduce byte for byte.
    fn reference_gzip(data: &[u8], level: u32, block: usize) -> Vec<u8> {
        let mut out = gzip_header(level).to_vec();
        let n = data.len().div_ceil(block).max(1);
        for i in 0..n {
            let start = i * block;
            let end = (start + block).min(data.len());
            let mut c = Compress::new(flate2::Compression::new(level), false);
            if start > 0 {
                c.set_dictionary(&data[start - DICT_SIZE..start]).unwrap();
            }
            // Ample room, so one call completes the flush.
            let mut piece = Vec::with_capacity(2 * (end - start) + 1024);
            let flush = if i + 1 == n {
                FlushCompress::Finish
            } else {
                FlushCompress::Sync
            };
            c.compress_vec(&data[start..end], &mut piece, flush)
                .unwrap();
            assert_eq!(c.total_in() as usize, end - start);
            out.extend_from_slice(&piece);
        }
        out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(out, multi);
        out
    }

    /// Runs `cmd args` with `input` on stdin; None if the tool is missing.
    fn run_tool(cmd: &str, args: &[&str], input: &[u8]) -> Option<(bool, Vec<u8>)> {
        let mut child = match Command::new(cmd)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("{cmd} not installed; skipping that check");
                return None;
            }
            Err(e) => panic!("spawn {cmd}: {e}"),
        };
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        Some((out.status.success(), out.stdout))
    }

    #[test]
    fn names_and_media_types() {
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Compression>(&json).unwrap(), c);
        }
        assert!("GZIP".parse::<Compression>().is_err());
        assert_eq!(
            Compression::Gzip.media_type(),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            Compression::Zstd.media_type(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    #[test]
    fn layer_media_types() {
        for (media_type, want) in [
            ("application/vnd.oci.image.layer.v1.tar", None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", None),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Some(Compression::Zstd),
            ),
        ] {
            assert_eq!(layer_compression(media_type), Ok(want), "{media_type}");
        }
        assert_eq!(
            layer_compression("application/octet-stream"),
            Err(UnknownMediaType {
                media_type: "application/octet-stream".into()
            })
        );
    }

    #[test]
    fn gzip_empty_input_is_fixed_bytes() {
        let gz = gzip(b"", 2);
        let expected = [
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255, // header
            0x03, 0x00, // empty final fixed-Huffman block
            0, 0, 0, 0, 0, 0, 0, 0, // CRC-32, ISIZE
        ];
        assert_eq!(gz, expected);
        assert!(gunzip(&gz).is_empty());
    }

    #[test]
    fn gzip_matches_reference_at_block_edges() {
        let b = GZIP_BLOCK_SIZE;
        for len in [0, 1, 1000, b - 1, b, b + 1, 2 * b, 2 * b + 1, 5 * b + 12345] {
            let data = sample(len, len as u64);
            let gz = gzip(&data, 2);
            assert_eq!(
                gz,
                reference_gzip(&data, DEFAULT_GZIP_LEVEL, b),
                "len {len}"
            );
            assert_eq!(gunzip(&gz), data, "len {len}");
        }
    }

    #[test]
    fn gzip_is_deterministic_across_threads_and_chunking() {
        // With this seed, block 1 compresses differently if the deflate state
        // of block 0 is reused (see `deflate_block`), as one worker would.
        let data = sample(12 * GZIP_BLOCK_SIZE + 777, 52);
        let expected = reference_gzip(&data, DEFAULT_GZIP_LEVEL, GZIP_BLOCK_SIZE);
        for threads in [0, 1, 2, 4] {
            for chunk in [1, 4095, GZIP_BLOCK_SIZE, GZIP_BLOCK_SIZE + 1, usize::MAX] {
                if chunk == 1 && threads != 2 {
                    continue; // slow; once is enough
                }
                let gz = compress_with(&data, Compression::Gzip, threads, chunk);
                assert!(gz == expected, "threads {threads} chunk {chunk}");
            }
        }
        // Irregular chunks, with flushes in between that must not matter.
        let mut c = Compressor::new(Vec::new(), Compression::Gzip, 3);
        let (mut rest, mut step) = (&data[..], 1usize);
        while !rest.is_empty() {
            let n = step.min(rest.len());
            assert_eq!(c.write(&rest[..n]).unwrap(), n);
            c.flush().unwrap();
            rest = &rest[n..];
            step = (step * 7 + 13) % 300_000 + 1;
        }
        assert!(c.finish().unwrap() == expected);
    }

    #[test]
    fn gzip_levels_set_xfl_and_round_trip() {
        let data = sample(3 * GZIP_BLOCK_SIZE, 3);
        for (level, xfl) in [(0, 0), (1, 4), (6, 0), (9, 2), (42, 2)] {
            let mut c = Compressor::with_level(Vec::new(), Compression::Gzip, 2, level);
            c.write_all(&data).unwrap();
            let gz = c.finish().unwrap();
            assert_eq!(gz[8], xfl, "level {level}");
            assert_eq!(gunzip(&gz), data, "level {level}");
        }
    }

    #[test]
    fn gzip_is_valid_for_real_tools() {
        let data = sample(10 * GZIP_BLOCK_SIZE + 99, 11);
        let gz = gzip(&data, 2);
        if let Some((ok, out)) = run_tool("pigz", &["-dc"], &gz) {
            assert!(ok, "pigz -dc failed");
            assert!(out == data, "pigz -dc output differs");
        }
        if let Some((ok, _)) = run_tool("gzip", &["-t"], &gz) {
            assert!(ok, "gzip -t failed");
        }
        if let Some((ok, out)) = run_tool("gzip", &["-dc"], &gzip(b"", 1)) {
            assert!(ok && out.is_empty(), "gzip -dc of empty stream");
        }
    }

    #[test]
    fn zstd_round_trip_and_cli() {
        for len in [0, 1, 100_000, 3 * GZIP_BLOCK_SIZE + 5] {
            let data = sample(len, 5);
            let z = compress_with(&data, Compression::Zstd, 2, 10_000);
            assert_eq!(zstd::decode_all(&z[..]).unwrap(), data, "len {len}");
            if let Some((ok, out)) = run_tool("zstd", &["-dc"], &z) {
                assert!(ok && out == data, "zstd -dc, len {len}");
            }
        }
    }

    #[test]
    fn zstd_is_deterministic_across_workers_and_chunking() {
        // Three of libzstd's default jobs at level 3 (8 MiB each), so that
        // jobs really run in parallel.
        let data = sample(24 << 20, 13);
        let expected = compress_with(&data, Compression::Zstd, 1, usize::MAX);
        for (threads, chunk) in [
            (2, usize::MAX),
            (4, 1 << 20),
            (2, 4093),
            (1, 100_003),
            (0, 65536),
        ] {
            let z = compress_with(&data, Compression::Zstd, threads, chunk);
            assert!(z == expected, "threads {threads} chunk {chunk}");
        }
        assert_eq!(zstd::decode_all(&expected[..]).unwrap(), data);
    }

    /// Accepts `limit` bytes, then fails every write.
    #[derive(Debug)]
    struct FailingSink {
        limit: usize,
        written: usize,
    }

    impl Write for FailingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written >= self.limit {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "sink full"));
            }
            let n = buf.len().min(self.limit - self.written);
            self.written += n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sink_errors_surface_without_hanging() {
        let data = sample(40 * GZIP_BLOCK_SIZE, 17);
        for compression in [Compression::Gzip, Compression::Zstd] {
            for limit in [0, 5, 100_000, 100_000_000] {
                let sink = FailingSink { limit, written: 0 };
                let mut c = Compressor::new(sink, compression, 2);
                let mut first_err = None;
                for piece in data.chunks(50_000) {
                    if let Err(e) = c.write_all(piece) {
                        first_err = Some(e);
                        break;
                    }
                }
                let result = c.finish();
                if limit == 100_000_000 {
                    assert!(
                        first_err.is_none() && result.is_ok(),
                        "{compression} limit {limit}"
                    );
                    continue;
                }
                let e = result.err().or(first_err).expect("an error");
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::StorageFull,
                    "{compression} limit {limit}: {e}"
                );
            }
        }
    }

    #[test]
    fn write_after_error_keeps_failing() {
        let mut c = Compressor::new(
            FailingSink {
                limit: 0,
                written: 0,
            },
            Compression::Gzip,
            1,
        );
        let data = sample(50 * GZIP_BLOCK_SIZE, 1);
        assert!(c.write_all(&data).is_err());
        assert_eq!(
            c.write(b"x").unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert_eq!(c.flush().unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(c.finish().unwrap_err().kind(), io::ErrorKind::StorageFull);
    }

    struct PanickingSink;

    impl Write for PanickingSink {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            panic!("sink panicked (expected by the test)");
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sink_panic_becomes_an_error() {
        let mut c = Compressor::new(PanickingSink, Compression::Gzip, 2);
        let data = sample(30 * GZIP_BLOCK_SIZE, 2);
        let write = c.write_all(&data);
        let finish = c.finish();
        assert!(write.is_err() || finish.is_err());
        assert!(finish.is_err());
    }

    /// A sink that shares an `Arc` with the test: its strong count says
    /// whether the sink (owned by gzip's writer thread) still exists.
    struct TrackedSink {
        _alive: Arc<()>,
    }

    impl Write for TrackedSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drop_without_finish_joins_threads() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            let alive = Arc::new(());
            let mut c = Compressor::new(
                TrackedSink {
                    _alive: alive.clone(),
                },
                compression,
                2,
            );
            c.write_all(&sample(7 * GZIP_BLOCK_SIZE + 3, 4)).unwrap();
            if compression == Compression::Gzip {
                let Some(Inner::Gzip(g)) = &c.inner else {
                    panic!("a gzip compressor without its pipeline")
                };
                assert_eq!(g.workers.len(), 2);
                assert!(g.writer.is_some(), "the writer thread was started");
            }
            assert_eq!(
                Arc::strong_count(&alive),
                2,
                "{compression}: the sink is held"
            );
            drop(c);
            // The gzip writer thread owns the sink and returns it when it
            // exits, which it does only after every worker has dropped its
            // result sender: the sink gone means all threads have ended and
            // their results were collected. A thread left running would
            // still hold it.
            assert_eq!(
                Arc::strong_count(&alive),
                1,
                "{compression}: the sink outlived the dropped compressor"
            );
        }
    }

    /// A sink that blocks until the gate opens.
    #[derive(Clone)]
    struct GatedSink(Arc<(Mutex<bool>, Condvar)>);

    impl Write for GatedSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn memory_is_bounded_when_the_sink_stalls() {
        let threads = 2;
        let gate = GatedSink(Arc::new((Mutex::new(false), Condvar::new())));
        let mut c = Compressor::new(gate.clone(), Compression::Gzip, threads);
        let block = sample(GZIP_BLOCK_SIZE, 9);
        // The sink takes nothing, not even the header, so no buffer pair
        // ever comes back: two blocks per worker can be in flight and one
        // is being filled. Those writes cannot block; the next one must.
        let in_flight = 2 * threads;
        for _ in 0..=in_flight {
            c.write_all(&block).unwrap();
        }
        let Some(Inner::Gzip(g)) = &c.inner else {
            panic!("a gzip compressor without its pipeline")
        };
        // No buffer pair is left, so the next full block waits in
        // `submit_full` until the sink takes something: memory stays at
        // `in_flight + 1` blocks whatever the caller writes.
        assert!(
            matches!(g.spare.try_recv(), Err(mpsc::TryRecvError::Empty)),
            "a block buffer is still free with the sink stalled after {} blocks",
            in_flight + 1
        );
        let (open, cv) = &*gate.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
        // With the sink open the stream completes.
        for _ in 0..4 {
            c.write_all(&block).unwrap();
        }
        c.finish().unwrap();
    }

    /// Counts what it is given and drops it.
    struct CountingSink(u64);

    impl Write for CountingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Throughput on a real tarball, streamed from the file like pigz does.
    /// Release build; cases are `algo:level:block_KiB:threads`, e.g.
    /// `IMGBUILD_BENCH=/tmp/bench.tar IMGBUILD_BENCH_CASES=gzip:6:128:2,zstd:3:0:2
    /// cargo test --release --lib layer::compress::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench() {
        let path = std::env::var("IMGBUILD_BENCH").unwrap_or_else(|_| "/tmp/bench.tar".into());
        let cases = std::env::var("IMGBUILD_BENCH_CASES")
            .unwrap_or_else(|_| "gzip:6:128:1,gzip:6:128:2,zstd:3:0:1,zstd:3:0:2".into());
        for case in cases.split(',') {
            let f: Vec<&str> = case.split(':').collect();
            let (level, block, threads) = (
                f[1].parse().unwrap(),
                f[2].parse::<usize>().unwrap(),
                f[3].parse().unwrap(),
            );
            let mut file = std::fs::File::open(&path).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let t = Instant::now();
            let mut total = 0u64;
            let mut feed = |w: &mut dyn Write| loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
                w.write_all(&buf[..n]).unwrap();
            };
            let mut c = if f[0] == "gzip" {
                let gzip = Gzip::start(CountingSink(0), threads, level, block * 1024).unwrap();
                Compressor {
                    inner: Some(Inner::Gzip(gzip)),
                    failed: None,
                }
            } else {
                Compressor::with_level(CountingSink(0), Compression::Zstd, threads, level as i32)
            };
            feed(&mut c);
            let out = c.finish().unwrap().0;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "BENCH {case} {:.1} MB/s {out} bytes {secs:.3} s",
                total as f64 / 1e6 / secs
            );
        }
    }
}
