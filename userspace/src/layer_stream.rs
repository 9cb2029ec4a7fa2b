//! Decoding a layer blob on a thread of its own, pipelined with the tar splitting.
//!
//! A pull is CPU-bound: hashing the compressed blob, decompressing it, hashing the
//! tar (its `diff_id`), splitting the tar into objects and writing them (and, without
//! kernel fs-verity, hashing each object again). composefs-oci's async chain does the
//! first four on one task, one core. [`spawn`] moves reading, hashing the blob,
//! decompressing and hashing the tar onto a blocking thread that hands the tar over in
//! chunks through a bounded channel ([`TarReader`]); the caller's task splits and
//! writes meanwhile, so both cores work.
//!
//! gzip is inflated with zlib-rs: flate2 (what composefs-oci's async-compression
//! uses) is built against the system's zlib here, which inflates markedly slower.
//!
//! The thread checks nothing itself: it reports what it saw ([`Decoded`]: the digest
//! and length of every blob byte read, the digest of the tar) and the caller compares.
//! The blob digest always covers everything the thread read, up to the limit, even
//! when decoding failed or the consumer stopped early: a blob that is not what it
//! claims is reported as such before whatever else went wrong.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{anyhow, bail, Result};
use composefs_oci::{ComponentId, ProgressEvent, SharedReporter};
use containers_image_proxy::oci_spec::image::MediaType;
use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Bytes of tar per chunk sent to the splitter.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight: with the one being filled and the one being read, the pipeline
/// holds at most `CHUNK * (DEPTH + 2)` bytes of tar (2.5 MiB).
const DEPTH: usize = 8;
/// Read size from the blob.
const INPUT_BUF: usize = 128 * 1024;
/// Progress is reported at most once per this many blob bytes (and at the end).
const PROGRESS_STEP: u64 = 1 << 20;
/// Tar bytes decoded between two kicks of the [`Writeback`] thread.
const WRITEBACK_STEP: usize = 32 << 20;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, one or more members.
    Gzip,
    /// zstd, one or more frames (skippable ones skipped).
    Zstd,
}

impl Compression {
    /// The compression of a tar layer media type; `None` for anything else.
    pub(crate) fn of(media_type: &MediaType) -> Option<Self> {
        use MediaType as M;
        match media_type {
            M::ImageLayer | M::ImageLayerNonDistributable => Some(Compression::None),
            M::ImageLayerGzip | M::ImageLayerNonDistributableGzip => Some(Compression::Gzip),
            M::ImageLayerZstd | M::ImageLayerNonDistributableZstd => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Where to report how many blob bytes were read.
pub(crate) struct Progress {
    pub(crate) reporter: SharedReporter,
    pub(crate) id: ComponentId,
    pub(crate) total: Option<u64>,
}

/// What the decoding thread saw.
pub(crate) struct Decoded {
    /// `sha256:<hex>` of every blob byte read (at most the limit).
    pub(crate) blob_digest: String,
    /// How many blob bytes were read.
    pub(crate) blob_len: u64,
    /// `sha256:<hex>` of the whole decompressed stream; meaningful only when `result`
    /// is `Ok` and the consumer read to the end.
    pub(crate) tar_digest: String,
    /// Why decoding stopped early: unreadable blob, corrupt compressed data.
    pub(crate) result: Result<()>,
}

/// Starts decoding `input` (read up to `limit` bytes) on a blocking thread. Returns
/// the tar stream and the thread's handle, which yields what it saw once the blob is
/// read to its end (or the limit). Dropping the reader stops the decoding; the blob
/// is still read to its end for its digest.
pub(crate) fn spawn(
    input: Box<dyn Read + Send>,
    limit: u64,
    compression: Compression,
    progress: Option<Progress>,
    writeback: Option<&Writeback>,
) -> (TarReader, tokio::task::JoinHandle<Decoded>) {
    let (tx, rx) = mpsc::channel(DEPTH);
    // Emptied chunks go back to the decoding thread: no fresh (page-faulting) buffer
    // per chunk.
    let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel(DEPTH + 2);
    let writeback = writeback.map(|w| w.tx.clone());
    let handle = tokio::task::spawn_blocking(move || {
        let mut blob = Counting {
            inner: input.take(limit),
            hasher: Sha256::new(),
            len: 0,
            progress,
            reported: 0,
        };
        let mut out = Sink::new(tx, spent_rx, writeback);
        let result = decode(&mut blob, compression, &mut out);
        // The consumer sees the end of the stream now.
        let Sink { tx, hasher, .. } = out;
        drop(tx);
        // The digest is over the whole blob, whatever happened.
        let drained = io::copy(&mut blob, &mut io::sink());
        let result = result.and_then(|()| drained.map(drop).map_err(anyhow::Error::from));
        blob.report();
        Decoded {
            blob_digest: crate::integrity::finish(blob.hasher),
            blob_len: blob.len,
            tar_digest: crate::integrity::finish(hasher),
            result,
        }
    });
    (
        TarReader {
            rx,
            current: Vec::new(),
            pos: 0,
            spent: spent_tx,
        },
        handle,
    )
}

/// Hashes, counts and reports what is read through it.
struct Counting<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
    progress: Option<Progress>,
    reported: u64,
}

impl<R> Counting<R> {
    fn report(&mut self) {
        if let Some(p) = &self.progress {
            if self.reported != self.len {
                self.reported = self.len;
                p.reporter.report(ProgressEvent::Progress {
                    id: p.id.clone(),
                    fetched: self.len,
                    total: p.total,
                });
            }
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        if self.len - self.reported >= PROGRESS_STEP {
            self.report();
        }
        Ok(n)
    }
}

/// Hands decoded chunks to the consumer, hashing them.
struct Sink {
    tx: mpsc::Sender<Vec<u8>>,
    hasher: Sha256,
    /// Chunks the consumer is done with.
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
    writeback: Option<std::sync::mpsc::SyncSender<()>>,
    /// Tar bytes sent since the last writeback kick.
    unsynced: usize,
}

impl Sink {
    fn new(
        tx: mpsc::Sender<Vec<u8>>,
        spent: std::sync::mpsc::Receiver<Vec<u8>>,
        writeback: Option<std::sync::mpsc::SyncSender<()>>,
    ) -> Sink {
        Sink {
            tx,
            hasher: Sha256::new(),
            spent,
            writeback,
            unsynced: 0,
        }
    }

    /// An empty chunk of `CHUNK` bytes to fill: a spent one when there is one.
    fn chunk(&mut self) -> Vec<u8> {
        match self.spent.try_recv() {
            Ok(mut c) => {
                c.resize(CHUNK, 0);
                c
            }
            Err(_) => vec![0u8; CHUNK],
        }
    }

    /// Sends `chunk`; `false` when the consumer is gone (it reports why).
    fn put(&mut self, chunk: Vec<u8>) -> bool {
        if chunk.is_empty() {
            return true;
        }
        self.hasher.update(&chunk);
        self.unsynced += chunk.len();
        if self.unsynced >= WRITEBACK_STEP {
            self.unsynced = 0;
            if let Some(w) = &self.writeback {
                // Busy: the running one will write this back too.
                let _ = w.try_send(());
            }
        }
        self.tx.blocking_send(chunk).is_ok()
    }
}

/// Writes the filesystem's dirty data back while a pull runs, on a thread of its own.
///
/// The objects a pull writes must be on disk before the pull names them (composefs
/// syncs the filesystem before a layer's stream is registered). Left to that one
/// sync, all of a layer's data waits in the page cache (far below the kernel's
/// dirty thresholds on a machine with memory) and is written out only once the
/// layer is decoded, while the CPU idles. Kicked every `WRITEBACK_STEP` bytes of
/// tar, this thread `syncfs`es meanwhile, so the disk works while the CPU decodes
/// and the final sync finds little left. It changes no durability guarantee: the
/// syncs that order the writes are the ones they were. Its own open file
/// description (not a `dup`) keeps a writeback error it sees from being consumed:
/// the later `syncfs` on the repository's descriptor still reports it.
pub(crate) struct Writeback {
    tx: std::sync::mpsc::SyncSender<()>,
}

impl Writeback {
    /// Starts the thread for the filesystem holding `dir`; `None` when `dir` cannot
    /// be opened again (the pull then simply runs without it).
    pub(crate) fn start(dir: impl AsFd) -> Option<Writeback> {
        let fd = rustix::fs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                // Ends when the pull drops its `Writeback` and every decoder is done.
                while rx.recv().is_ok() {
                    // An error here is the final sync's to report.
                    let _ = rustix::fs::syncfs(&fd);
                }
            })
            .ok()?;
        Some(Writeback { tx })
    }
}

/// `read`, retried on `Interrupted`.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Fills `chunk` from `r` as far as it goes; the number of bytes in it.
fn fill(r: &mut impl Read, chunk: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < chunk.len() {
        let n = read_some(r, &mut chunk[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Decodes `r` as `compression` into `out`, up to its end or until the consumer goes.
fn decode(r: &mut impl Read, compression: Compression, out: &mut Sink) -> Result<()> {
    match compression {
        Compression::None => copy_plain(r, out),
        Compression::Gzip => inflate_gzip(r, out),
        Compression::Zstd => decode_zstd(r, out),
    }
}

fn copy_plain(r: &mut impl Read, out: &mut Sink) -> Result<()> {
    loop {
        let mut chunk = out.chunk();
        let n = fill(r, &mut chunk)?;
        chunk.truncate(n);
        if n == 0 || !out.put(chunk) {
            return Ok(());
        }
    }
}

fn decode_zstd(r: &mut impl Read, out: &mut Sink) -> Result<()> {
    // Reads every frame, skipping skippable ones (zstd:chunked).
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(INPUT_BUF, r))
            .map_err(|e| anyhow!("zstd decompression error: {e}"))?;
    loop {
        let mut chunk = out.chunk();
        let n =
            fill(&mut decoder, &mut chunk).map_err(|e| anyhow!("zstd decompression error: {e}"))?;
        chunk.truncate(n);
        if n == 0 || !out.put(chunk) {
            return Ok(());
        }
    }
}

/// Inflates a gzip stream of one or more members (each one checked against its CRC
/// and length trailer), as `gzip -d` does.
fn inflate_gzip(r: &mut impl Read, out: &mut Sink) -> Result<()> {
    use zlib_rs::{Inflate, InflateFlush, Status};
    // 16 + 15: a gzip header, the largest window.
    const GZIP_WINDOW_BITS: u8 = 31;
    let mut input = vec![0u8; INPUT_BUF];
    let (mut pos, mut end) = (0, 0);
    let mut inflate = Inflate::new(true, GZIP_WINDOW_BITS);
    // Inside a member (an empty blob is not a gzip stream).
    let mut in_member = true;
    let mut chunk = out.chunk();
    let mut filled = 0;
    loop {
        if pos == end {
            pos = 0;
            end = read_some(r, &mut input)?;
            if end == 0 {
                if in_member {
                    bail!("deflate decompression error: unexpected end of the gzip stream");
                }
                break;
            }
        }
        if !in_member {
            // Another member follows.
            inflate = Inflate::new(true, GZIP_WINDOW_BITS);
            in_member = true;
        }
        let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(
                &input[pos..end],
                &mut chunk[filled..],
                InflateFlush::NoFlush,
            )
            .map_err(|e| {
                anyhow!(
                    "deflate decompression error: {}",
                    inflate.error_message().unwrap_or(e.as_str())
                )
            })?;
        let consumed = (inflate.total_in() - before_in) as usize;
        let produced = (inflate.total_out() - before_out) as usize;
        pos += consumed;
        filled += produced;
        if status == Status::StreamEnd {
            in_member = false;
        } else if consumed == 0 && produced == 0 && filled < chunk.len() {
            // Input and room were both offered: zlib makes progress or says why.
            bail!("deflate decompression error: no progress");
        }
        if filled == chunk.len() {
            let next = out.chunk();
            if !out.put(std::mem::replace(&mut chunk, next)) {
                return Ok(());
            }
            filled = 0;
        }
    }
    chunk.truncate(filled);
    out.put(chunk);
    Ok(())
}

/// Decodes all of `data` as `compression` on this thread, as the pull's decoding
/// thread does, and returns the decoded bytes and the decoding result (`Err`: corrupt
/// or truncated data, one line). For the `layer_decode` fuzz target: a blob from a
/// registry is decoded before its digest can be compared, so no input may panic it.
#[doc(hidden)]
pub fn decode_all(data: &[u8], compression: Compression) -> (Vec<u8>, Result<()>) {
    let (tx, mut rx) = mpsc::channel(DEPTH);
    let (_spent_tx, spent_rx) = std::sync::mpsc::sync_channel(DEPTH + 2);
    let input = data.to_vec();
    let decoder = std::thread::spawn(move || {
        let mut out = Sink::new(tx, spent_rx, None);
        decode(&mut input.as_slice(), compression, &mut out)
    });
    let mut got = vec![];
    while let Some(chunk) = rx.blocking_recv() {
        got.extend_from_slice(&chunk);
    }
    let result = decoder
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the decoder panicked")));
    (got, result)
}

/// The consumer's end: the decoded tar as an [`AsyncRead`]. End of stream when the
/// decoding thread is done (the caller tells a complete stream from a failed one by
/// [`Decoded::result`]).
pub(crate) struct TarReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    /// Bytes of `current` already read.
    pos: usize,
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl AsyncRead for TarReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pos == this.current.len() {
            match std::task::ready!(this.rx.poll_recv(cx)) {
                Some(chunk) => {
                    let spent = std::mem::replace(&mut this.current, chunk);
                    this.pos = 0;
                    // Full (cannot be: it holds as many as are in flight) or the
                    // decoder is gone: then it is simply freed.
                    let _ = this.spent.try_send(spent);
                }
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = (this.current.len() - this.pos).min(buf.remaining());
        buf.put_slice(&this.current[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn sha(data: &[u8]) -> String {
        crate::integrity::finish(Sha256::new_with_prefix(data))
    }

    /// Bytes that compress, but not to nothing: several chunks' worth.
    fn sample(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i / 7) as u8).wrapping_mul(31) ^ seed ^ (i % 251) as u8)
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `blob` (limit: its length + 1, as a pull reads), reading the tar to
    /// its end or, with `stop_after`, dropping the reader after that many bytes.
    async fn decode(
        blob: Vec<u8>,
        compression: Compression,
        stop_after: Option<usize>,
    ) -> (Vec<u8>, Decoded) {
        let limit = blob.len() as u64 + 1;
        let (mut tar, handle) = spawn(
            Box::new(io::Cursor::new(blob)),
            limit,
            compression,
            None,
            None,
        );
        let mut out = Vec::new();
        match stop_after {
            None => {
                tar.read_to_end(&mut out).await.unwrap();
            }
            Some(n) => {
                out.resize(n, 0);
                tar.read_exact(&mut out).await.unwrap();
                drop(tar);
            }
        }
        (out, handle.await.unwrap())
    }

    #[tokio::test]
    async fn gzip_members_decode_to_their_concatenation() {
        let (a, b) = (sample(3 * CHUNK + 17, 1), sample(CHUNK / 3, 2));
        let mut blob = gzip(&a);
        blob.extend(gzip(&b));
        let (out, d) = decode(blob.clone(), Compression::Gzip, None).await;
        d.result.unwrap();
        let whole = [a, b].concat();
        assert!(
            out == whole,
            "decoded {} bytes, expected {}",
            out.len(),
            whole.len()
        );
        assert_eq!(d.tar_digest, sha(&whole));
        assert_eq!((d.blob_digest, d.blob_len), (sha(&blob), blob.len() as u64));
    }

    #[tokio::test]
    async fn zstd_frames_and_skippable_frames_decode() {
        let (a, b) = (sample(2 * CHUNK + 5, 3), sample(1000, 4));
        let mut blob = zstd::encode_all(a.as_slice(), 3).unwrap();
        // A skippable frame (magic 0x184D2A50, length, payload), as zstd:chunked has.
        blob.extend(0x184D_2A50u32.to_le_bytes());
        blob.extend(4u32.to_le_bytes());
        blob.extend(b"skip");
        blob.extend(zstd::encode_all(b.as_slice(), 3).unwrap());
        let (out, d) = decode(blob.clone(), Compression::Zstd, None).await;
        d.result.unwrap();
        assert!(out == [a, b].concat());
        assert_eq!(d.tar_digest, sha(&out));
        assert_eq!(d.blob_digest, sha(&blob));
    }

    #[tokio::test]
    async fn plain_passes_through_and_the_limit_holds() {
        let data = sample(CHUNK + 3, 5);
        let (mut tar, handle) = spawn(
            Box::new(io::Cursor::new(data.clone())),
            1000,
            Compression::None,
            None,
            None,
        );
        let mut out = Vec::new();
        tar.read_to_end(&mut out).await.unwrap();
        let d = handle.await.unwrap();
        d.result.unwrap();
        assert!(out == data[..1000]);
        assert_eq!((d.blob_digest, d.blob_len), (sha(&data[..1000]), 1000));
    }

    #[tokio::test]
    async fn corrupt_gzip_fails_and_the_blob_is_still_digested_whole() {
        let mut blob = gzip(&sample(4 * CHUNK, 6));
        // Past the header: inside the deflate data.
        for i in (20..blob.len() - 8).step_by(97) {
            blob[i] ^= 0x55;
        }
        let (_, d) = decode(blob.clone(), Compression::Gzip, None).await;
        let e = format!("{:#}", d.result.unwrap_err());
        assert!(e.starts_with("deflate decompression error: "), "{e}");
        assert_eq!((d.blob_digest, d.blob_len), (sha(&blob), blob.len() as u64));
    }

    #[tokio::test]
    async fn truncated_gzip_and_empty_blobs_fail() {
        let blob = gzip(&sample(CHUNK, 7));
        for cut in [
            blob[..blob.len() / 2].to_vec(),
            blob[..blob.len() - 4].to_vec(),
            vec![],
        ] {
            let (_, d) = decode(cut.clone(), Compression::Gzip, None).await;
            let e = format!("{:#}", d.result.unwrap_err());
            assert!(
                e.starts_with("deflate decompression error: "),
                "{} bytes: {e}",
                cut.len()
            );
            assert_eq!(d.blob_len, cut.len() as u64);
        }
    }

    #[tokio::test]
    async fn a_consumer_that_stops_early_leaves_the_blob_digested_whole() {
        let data = sample(20 * CHUNK, 8);
        let blob = gzip(&data);
        let (out, d) = decode(blob.clone(), Compression::Gzip, Some(1000)).await;
        assert!(out == data[..1000]);
        assert_eq!((d.blob_digest, d.blob_len), (sha(&blob), blob.len() as u64));
        // Decoding stopped: the tar digest is not that of the whole tar.
        assert_ne!(d.tar_digest, sha(&data));
    }
}
