//! Capture files: what `ksight record -o FILE` writes and `ksight replay FILE` reads.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  0  8 bytes   magic "KSIGHTCP"
//! offset  8  u32       file-format version (FORMAT_VERSION)
//! offset 12  u32       length L of the capture header
//! offset 16  L bytes   bincode CaptureHeader
//! then frames, to the end of the file:
//!            u32       length N of the frame
//!            N bytes   bincode Frame (records of one batch, the source's counters,
//!                      or a completeness mark)
//! ```
//!
//! Versions: 1 counters {lost_per_cpu, malformed}; 2 the same, followed by `filtered`
//! when it was not 0; 3 counters always with `filtered`, and `Complete` frames (the
//! source's completeness marks, so a replay releases events exactly when the recording
//! run did). Every earlier version still reads; each version's frames have a type here.
//!
//! bincode is version 1.3 with its default wire format (fixed-width little-endian
//! integers, u64 lengths), so `bincode::serialize`/`deserialize` read and write the same
//! bytes. bincode is not self-describing: any change to [`CaptureHeader`], [`Frame`] or
//! [`SourceCounters`] bumps [`FORMAT_VERSION`].
//!
//! Reading never trusts the file: every problem is a [`CaptureError`] that names the file
//! and the byte offset where the problem starts (for the header and frames, the offset of
//! their length prefix), lengths are bounded before anything is allocated, and no input
//! makes the reader panic. A file cut exactly between two frames reads as a shorter
//! capture; a cut anywhere else is an error.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bincode::Options as _;
use serde::{Deserialize, Serialize};

use crate::source::{EventSource, Poll, RawBatch, SourceCounters, SourceError};

/// The first bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"KSIGHTCP";
/// The file-format version this code writes (see the module's notes for each version).
pub const FORMAT_VERSION: u32 = 3;
/// The file-format versions this code reads.
pub const SUPPORTED_FORMAT_VERSIONS: &[u32] = &[1, 2, 3];
/// Largest frame accepted (and written); a longer length prefix is corruption.
pub const MAX_FRAME_LEN: u32 = 64 << 20;
/// Largest capture header accepted (and written).
pub const MAX_HEADER_LEN: u32 = 1 << 20;

/// Offset of the format version.
const VERSION_OFFSET: u64 = 8;
/// Offset of the capture header's length prefix.
const HEADER_OFFSET: u64 = 12;
/// Offsets of fields inside the encoded header (bincode: fields in order, fixed width).
const HEADER_FORMAT_VERSION_OFFSET: u64 = HEADER_OFFSET + 4;
const HEADER_ABI_MAJOR_OFFSET: u64 = HEADER_FORMAT_VERSION_OFFSET + 4;

/// Describes the capture: who recorded it, where and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// The file-format version; the writer always writes [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The event ABI of the recorded records.
    pub abi_major: u16,
    pub abi_minor: u16,
    /// The backend that produced the records ("ebpf", "kmod", ...).
    pub backend: String,
    pub hostname: String,
    /// `uname -r` of the recorded kernel.
    pub kernel_release: String,
    /// Wall-clock start of the recording, ns since the Unix epoch.
    pub started_unix_ns: u64,
    /// CLOCK_MONOTONIC at the same instant, the clock of the records' timestamps.
    pub started_monotonic_ns: u64,
}

impl CaptureHeader {
    /// A header for a recording starting now on this host, with this build's event ABI.
    /// Unreadable host facts are left empty rather than failing the recording.
    pub fn for_this_host(backend: impl Into<String>) -> Self {
        let (hostname, kernel_release) = uname().unwrap_or_default();
        let started_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            format_version: FORMAT_VERSION,
            abi_major: event_abi::ABI_VERSION_MAJOR,
            abi_minor: event_abi::ABI_VERSION_MINOR,
            backend: backend.into(),
            hostname,
            kernel_release,
            started_unix_ns,
            started_monotonic_ns: crate::engine::monotonic_ns(),
        }
    }
}

/// (nodename, release) from uname(2).
fn uname() -> Option<(String, String)> {
    // SAFETY: utsname is plain old data, so all-zero is a valid value; uname(2) only
    // writes into the struct we pass.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let field = |chars: &[libc::c_char]| {
        let bytes: Vec<u8> = chars
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Some((field(&uts.nodename), field(&uts.release)))
}

/// One frame of a capture file (what follows its length prefix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The records of one batch, in the shape of [`RawBatch::into_parts`].
    Records {
        #[serde(with = "byte_buf")]
        bytes: Vec<u8>,
        ends: Vec<u32>,
    },
    /// The source's cumulative counters at this point of the recording.
    Counters(SourceCounters),
    /// The source's completeness mark ([`RawBatch::mark_complete`]) for the records
    /// before it.
    Complete(u64),
}

/// A frame as format versions 1 and 2 wrote it.
#[derive(Deserialize)]
enum FrameV1 {
    Records {
        #[serde(with = "byte_buf")]
        bytes: Vec<u8>,
        ends: Vec<u32>,
    },
    Counters(CountersV1),
}

/// Counters before `filtered` existed (version 1; version 2 with nothing filtered).
#[derive(Deserialize)]
struct CountersV1 {
    lost_per_cpu: Vec<u64>,
    malformed: u64,
}

impl From<FrameV1> for Frame {
    fn from(frame: FrameV1) -> Self {
        match frame {
            FrameV1::Records { bytes, ends } => Frame::Records { bytes, ends },
            FrameV1::Counters(c) => Frame::Counters(SourceCounters {
                lost_per_cpu: c.lost_per_cpu,
                malformed: c.malformed,
                filtered: 0,
            }),
        }
    }
}

/// Decodes one frame of a file of `version`.
fn decode_frame(version: u32, bytes: &[u8]) -> bincode::Result<Frame> {
    let wire = wire().with_limit(MAX_FRAME_LEN.into());
    match version {
        1 => wire.deserialize::<FrameV1>(bytes).map(Frame::from),
        // Version 2 wrote `filtered` only when it was not 0: with it, the frame reads as
        // today's (it has no `Complete`); without it, as version 1's.
        2 => wire
            .deserialize::<Frame>(bytes)
            .and_then(|f| match f {
                Frame::Complete(_) => Err(Box::new(bincode::ErrorKind::Custom(
                    "a completeness mark in a version 2 file".into(),
                ))),
                f => Ok(f),
            })
            .or_else(|_| wire.deserialize::<FrameV1>(bytes).map(Frame::from)),
        _ => wire.deserialize::<Frame>(bytes),
    }
}

/// `Vec<u8>` read in one piece rather than byte by byte (same bytes on the wire as a
/// sequence of u8 in bincode: a u64 length, then the bytes).
mod byte_buf {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("record bytes")
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// What the writer encodes: [`Frame`] borrowed from a batch, same bytes on the wire.
#[derive(Serialize)]
enum FrameRef<'a> {
    Records {
        bytes: BatchBytes<'a>,
        ends: BatchEnds<'a>,
    },
    Counters(&'a SourceCounters),
    Complete(u64),
}

/// A batch's record bytes, end to end.
struct BatchBytes<'a>(&'a RawBatch, usize);

impl Serialize for BatchBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.1))?;
        for record in self.0.iter() {
            for byte in record {
                seq.serialize_element(byte)?;
            }
        }
        seq.end()
    }
}

/// A batch's record ends, relative to the bytes [`BatchBytes`] writes.
struct BatchEnds<'a>(&'a RawBatch);

impl Serialize for BatchEnds<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut end = 0u32;
        for record in self.0.iter() {
            // Cannot overflow: the caller checked that the bytes fit in a frame.
            end = end.saturating_add(record.len() as u32);
            seq.serialize_element(&end)?;
        }
        seq.end()
    }
}

fn wire() -> impl bincode::Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Errors reading or writing a capture file. Each names the file and, where there is one,
/// the byte offset where the problem starts.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{}: cannot open capture file: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: I/O error at byte {offset}: {source}", path.display())]
    Io {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: not a ksight capture file: bad magic at byte {offset} (found {}, expected \"KSIGHTCP\")",
        path.display(), escape(found)
    )]
    BadMagic {
        path: PathBuf,
        offset: u64,
        found: Vec<u8>,
    },
    #[error(
        "{}: unsupported capture format version {found} at byte {offset}; this ksight reads version(s) {}",
        path.display(), list(supported)
    )]
    UnsupportedVersion {
        path: PathBuf,
        offset: u64,
        found: u32,
        supported: &'static [u32],
    },
    #[error(
        "{}: recorded with event ABI {found_major}.{found_minor} (byte {offset}), but this ksight \
         reads event ABI {expected_major}.x",
        path.display()
    )]
    AbiMismatch {
        path: PathBuf,
        offset: u64,
        found_major: u16,
        found_minor: u16,
        expected_major: u16,
    },
    #[error(
        "{}: truncated {what} at byte {offset}: it needs {expected} bytes from there, the file has {available}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        expected: u64,
        available: u64,
    },
    #[error(
        "{}: {what} at byte {offset} is {len} bytes long, more than the limit of {max}",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("{}: undecodable {what} at byte {offset}: {source}", path.display())]
    Undecodable {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("{}: capture header at byte {offset} is inconsistent: {detail}", path.display())]
    InconsistentHeader {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{}: frame at byte {offset} has inconsistent record ends: {detail}", path.display())]
    InconsistentEnds {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("{}: cannot encode {what} at byte {offset}: {source}", path.display())]
    Encode {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        #[source]
        source: bincode::Error,
    },
}

impl CaptureError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::Io { path, .. }
            | Self::BadMagic { path, .. }
            | Self::UnsupportedVersion { path, .. }
            | Self::AbiMismatch { path, .. }
            | Self::Truncated { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Undecodable { path, .. }
            | Self::InconsistentHeader { path, .. }
            | Self::InconsistentEnds { path, .. }
            | Self::Encode { path, .. } => path,
        }
    }

    /// The byte offset where the problem starts (`None` when the file could not be opened).
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Open { .. } => None,
            Self::Io { offset, .. }
            | Self::BadMagic { offset, .. }
            | Self::UnsupportedVersion { offset, .. }
            | Self::AbiMismatch { offset, .. }
            | Self::Truncated { offset, .. }
            | Self::TooLarge { offset, .. }
            | Self::Undecodable { offset, .. }
            | Self::InconsistentHeader { offset, .. }
            | Self::InconsistentEnds { offset, .. }
            | Self::Encode { offset, .. } => Some(*offset),
        }
    }
}

fn escape(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn list(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes a capture file: the preamble at creation, then one frame per call.
pub struct CaptureWriter<W: Write> {
    inner: W,
    path: PathBuf,
    /// Bytes written so far: the offset of the next frame.
    offset: u64,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
}

impl CaptureWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the preamble.
    pub fn create(path: impl AsRef<Path>, header: CaptureHeader) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| CaptureError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufWriter::new(file), path, header)
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the preamble to `inner`; `path` names the destination in errors. The header's
    /// `format_version` is written as [`FORMAT_VERSION`] whatever it holds.
    pub fn new(
        inner: W,
        path: impl Into<PathBuf>,
        header: CaptureHeader,
    ) -> Result<Self, CaptureError> {
        let mut writer = Self {
            inner,
            path: path.into(),
            offset: 0,
            scratch: Vec::new(),
        };
        let header = CaptureHeader {
            format_version: FORMAT_VERSION,
            ..header
        };
        let mut preamble = Vec::with_capacity(16);
        preamble.extend_from_slice(&MAGIC);
        preamble.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        writer.put(&preamble)?;
        writer.put_frame("capture header", MAX_HEADER_LEN, &header)?;
        Ok(writer)
    }

    /// Writes one frame with the batch's records (none for an empty batch), then one
    /// with its completeness mark if it has one.
    pub fn write_batch(&mut self, batch: &RawBatch) -> Result<(), CaptureError> {
        if !batch.is_empty() {
            self.write_records(batch)?;
        }
        match batch.complete_before() {
            Some(ts) => self.put_frame("frame", MAX_FRAME_LEN, &FrameRef::Complete(ts)),
            None => Ok(()),
        }
    }

    fn write_records(&mut self, batch: &RawBatch) -> Result<(), CaptureError> {
        let total: usize = batch.iter().map(<[u8]>::len).sum();
        if total > MAX_FRAME_LEN as usize {
            return Err(CaptureError::TooLarge {
                path: self.path.clone(),
                offset: self.offset,
                what: "frame",
                len: total as u64,
                max: MAX_FRAME_LEN.into(),
            });
        }
        let frame = FrameRef::Records {
            bytes: BatchBytes(batch, total),
            ends: BatchEnds(batch),
        };
        self.put_frame("frame", MAX_FRAME_LEN, &frame)
    }

    /// Writes one frame with the source's cumulative counters.
    pub fn write_counters(&mut self, counters: &SourceCounters) -> Result<(), CaptureError> {
        self.put_frame("frame", MAX_FRAME_LEN, &FrameRef::Counters(counters))
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CaptureError> {
        let offset = self.offset;
        self.inner.flush().map_err(|source| CaptureError::Io {
            path: self.path.clone(),
            offset,
            source,
        })?;
        Ok(self.inner)
    }

    /// Bytes written so far (the offset of the next frame).
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn put_frame<T: Serialize>(
        &mut self,
        what: &'static str,
        max: u32,
        value: &T,
    ) -> Result<(), CaptureError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&[0; 4]);
        let result = wire()
            .serialize_into(&mut scratch, value)
            .map_err(|source| CaptureError::Encode {
                path: self.path.clone(),
                offset: self.offset,
                what,
                source,
            })
            .and_then(|()| {
                let len = scratch.len() - 4;
                match u32::try_from(len) {
                    Ok(len) if len <= max => {
                        scratch[..4].copy_from_slice(&len.to_le_bytes());
                        self.put(&scratch)
                    }
                    _ => Err(CaptureError::TooLarge {
                        path: self.path.clone(),
                        offset: self.offset,
                        what,
                        len: len as u64,
                        max: max.into(),
                    }),
                }
            });
        self.scratch = scratch;
        result
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        self.inner
            .write_all(bytes)
            .map_err(|source| CaptureError::Io {
                path: self.path.clone(),
                offset: self.offset,
                source,
            })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

enum ReplayState {
    Reading,
    Finished,
    /// The error already reported; every later poll reports it again.
    Failed(String),
}

/// An [`EventSource`] replaying a capture file, as fast as it is polled.
pub struct ReplaySource {
    path: PathBuf,
    reader: BufReader<File>,
    header: CaptureHeader,
    /// Offset of the next frame's length prefix.
    offset: u64,
    counters: SourceCounters,
    state: ReplayState,
    buf: Vec<u8>,
}

impl ReplaySource {
    /// Opens a capture file and checks its preamble: magic, format version, header, and
    /// that its event ABI major version is this build's.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|source| CaptureError::Open {
            path: path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);

        let mut magic = [0u8; 8];
        let n = read_up_to(&mut reader, &mut magic, &path, 0)?;
        if magic[..n] != MAGIC[..n] {
            return Err(CaptureError::BadMagic {
                path,
                offset: 0,
                found: magic[..n].to_vec(),
            });
        }
        if n < MAGIC.len() {
            return Err(CaptureError::Truncated {
                path,
                offset: 0,
                what: "magic",
                expected: MAGIC.len() as u64,
                available: n as u64,
            });
        }

        let mut version = [0u8; 4];
        let n = read_up_to(&mut reader, &mut version, &path, VERSION_OFFSET)?;
        if n < 4 {
            return Err(CaptureError::Truncated {
                path,
                offset: VERSION_OFFSET,
                what: "format version",
                expected: 4,
                available: n as u64,
            });
        }
        let version = u32::from_le_bytes(version);
        if !SUPPORTED_FORMAT_VERSIONS.contains(&version) {
            return Err(CaptureError::UnsupportedVersion {
                path,
                offset: VERSION_OFFSET,
                found: version,
                supported: SUPPORTED_FORMAT_VERSIONS,
            });
        }

        let mut buf = Vec::new();
        let len = match read_frame(
            &mut reader,
            &mut buf,
            &path,
            HEADER_OFFSET,
            "capture header",
            MAX_HEADER_LEN,
        )? {
            Some(len) => len,
            None => {
                return Err(CaptureError::Truncated {
                    path,
                    offset: HEADER_OFFSET,
                    what: "capture header",
                    expected: 4,
                    available: 0,
                });
            }
        };
        let header: CaptureHeader = wire()
            .with_limit(MAX_HEADER_LEN.into())
            .deserialize(&buf)
            .map_err(|source| CaptureError::Undecodable {
                path: path.clone(),
                offset: HEADER_OFFSET,
                what: "capture header",
                source,
            })?;
        if header.format_version != version {
            return Err(CaptureError::InconsistentHeader {
                path,
                offset: HEADER_FORMAT_VERSION_OFFSET,
                detail: format!(
                    "it says format version {}, the file says {version}",
                    header.format_version
                ),
            });
        }
        if header.abi_major != event_abi::ABI_VERSION_MAJOR {
            return Err(CaptureError::AbiMismatch {
                path,
                offset: HEADER_ABI_MAJOR_OFFSET,
                found_major: header.abi_major,
                found_minor: header.abi_minor,
                expected_major: event_abi::ABI_VERSION_MAJOR,
            });
        }

        Ok(Self {
            path,
            reader,
            header,
            offset: HEADER_OFFSET + 4 + u64::from(len),
            counters: SourceCounters::default(),
            state: ReplayState::Reading,
            buf,
        })
    }

    /// The recording's header (the recorded backend is `header().backend`).
    pub fn header(&self) -> &CaptureHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next frame to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next frame; `None` at a clean end of file (between frames). A `Records`
    /// frame is returned only with consistent `ends` (non-decreasing, the last one equal
    /// to the byte count). Does not touch the source's counters.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let offset = self.offset;
        let Some(len) = read_frame(
            &mut self.reader,
            &mut self.buf,
            &self.path,
            offset,
            "frame",
            MAX_FRAME_LEN,
        )?
        else {
            return Ok(None);
        };
        let frame = decode_frame(self.header.format_version, &self.buf).map_err(|source| {
            CaptureError::Undecodable {
                path: self.path.clone(),
                offset,
                what: "frame",
                source,
            }
        })?;
        if let Frame::Records { bytes, ends } = &frame
            && let Some(detail) = ends_problem(bytes.len(), ends)
        {
            return Err(CaptureError::InconsistentEnds {
                path: self.path.clone(),
                offset,
                detail,
            });
        }
        self.offset = offset + 4 + u64::from(len);
        Ok(Some(frame))
    }

    fn source_error(&self, message: String, cause: Option<CaptureError>) -> SourceError {
        SourceError {
            source_name: self.name().to_owned(),
            message,
            cause: cause.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
        }
    }
}

/// What is wrong with a frame's record ends, if anything.
fn ends_problem(len: usize, ends: &[u32]) -> Option<String> {
    let mut prev = 0u32;
    for (i, &end) in ends.iter().enumerate() {
        if end < prev {
            return Some(format!(
                "end #{i} ({end}) is before the previous end ({prev})"
            ));
        }
        if end as usize > len {
            return Some(format!(
                "end #{i} ({end}) is past the frame's {len} record bytes"
            ));
        }
        prev = end;
    }
    (prev as usize != len)
        .then(|| format!("the records end at byte {prev} of the frame's {len} record bytes"))
}

impl EventSource for ReplaySource {
    fn name(&self) -> &str {
        "replay"
    }

    /// Appends the next recorded batch to `out`, applying the counters frames met on the
    /// way; never waits. `Finished` at the end of the file.
    fn poll(&mut self, out: &mut RawBatch, _timeout: Duration) -> Result<Poll, SourceError> {
        match &self.state {
            ReplayState::Reading => {}
            ReplayState::Finished => return Ok(Poll::Finished),
            ReplayState::Failed(message) => return Err(self.source_error(message.clone(), None)),
        }
        loop {
            match self.next_frame() {
                Ok(None) => {
                    self.state = ReplayState::Finished;
                    return Ok(Poll::Finished);
                }
                Ok(Some(Frame::Counters(counters))) => self.counters = counters,
                Ok(Some(Frame::Complete(ts))) => {
                    out.mark_complete(ts);
                    return Ok(Poll::Ready);
                }
                Ok(Some(Frame::Records { bytes, ends })) => {
                    if ends.is_empty() {
                        continue;
                    }
                    let Some(batch) = RawBatch::from_parts(bytes, ends) else {
                        // next_frame checked the ends; kept as an error, not a panic.
                        let message = format!(
                            "{}: frame before byte {} has inconsistent record ends",
                            self.path.display(),
                            self.offset
                        );
                        self.state = ReplayState::Failed(message.clone());
                        return Err(self.source_error(message, None));
                    };
                    if out.is_empty() {
                        *out = batch;
                    } else {
                        for record in batch.iter() {
                            out.push(record);
                        }
                    }
                    return Ok(Poll::Ready);
                }
                Err(e) => {
                    let message = e.to_string();
                    self.state = ReplayState::Failed(message.clone());
                    return Err(self.source_error(message, Some(e)));
                }
            }
        }
    }

    /// The latest counters recorded before the current position.
    fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(
    reader: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    offset: u64,
) -> Result<usize, CaptureError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(CaptureError::Io {
                    path: path.to_owned(),
                    offset: offset + filled as u64,
                    source,
                });
            }
        }
    }
    Ok(filled)
}

/// Reads a length-prefixed frame at `offset` into `buf`; returns its length, or `None`
/// when the file ends exactly at `offset`.
fn read_frame(
    reader: &mut impl Read,
    buf: &mut Vec<u8>,
    path: &Path,
    offset: u64,
    what: &'static str,
    max: u32,
) -> Result<Option<u32>, CaptureError> {
    let mut prefix = [0u8; 4];
    let n = read_up_to(reader, &mut prefix, path, offset)?;
    if n == 0 {
        return Ok(None);
    }
    if n < 4 {
        return Err(CaptureError::Truncated {
            path: path.to_owned(),
            offset,
            what,
            expected: 4,
            available: n as u64,
        });
    }
    let len = u32::from_le_bytes(prefix);
    if len > max {
        return Err(CaptureError::TooLarge {
            path: path.to_owned(),
            offset,
            what,
            len: len.into(),
            max: max.into(),
        });
    }
    buf.clear();
    // Grows with the data actually there: a lying length allocates nothing extra.
    let n = reader
        .by_ref()
        .take(len.into())
        .read_to_end(buf)
        .map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            offset: offset + 4 + buf.len() as u64,
            source,
        })?;
    if n < len as usize {
        return Err(CaptureError::Truncated {
            path: path.to_owned(),
            offset,
            what,
            expected: 4 + u64::from(len),
            available: 4 + n as u64,
        });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A unique file under the system temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            TempFile(std::env::temp_dir().join(format!(
                "ksight-capture-test-{}-{nanos}-{n}-{name}.ksc",
                std::process::id()
            )))
        }

        fn write(&self, bytes: &[u8]) {
            std::fs::write(&self.0, bytes).unwrap();
        }

        fn shown(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn header() -> CaptureHeader {
        CaptureHeader {
            format_version: FORMAT_VERSION,
            abi_major: event_abi::ABI_VERSION_MAJOR,
            abi_minor: event_abi::ABI_VERSION_MINOR,
            backend: "ebpf".into(),
            hostname: "node-1".into(),
            kernel_release: "6.18.0-test".into(),
            started_unix_ns: 1_763_000_000_123_456_789,
            started_monotonic_ns: 98_765_432_100,
        }
    }

    /// `n` records of different lengths, their bytes derived from `seed`.
    fn batch(seed: u8, n: usize) -> RawBatch {
        let mut b = RawBatch::new();
        for i in 0..n {
            let len = 8 + (i * 24) % 320;
            let record: Vec<u8> = (0..len).map(|j| seed ^ (i * 7 + j) as u8).collect();
            b.push(&record);
        }
        b
    }

    fn records(b: &RawBatch) -> Vec<Vec<u8>> {
        b.iter().map(<[u8]>::to_vec).collect()
    }

    fn counters(lost: &[u64]) -> SourceCounters {
        SourceCounters {
            lost_per_cpu: lost.to_vec(),
            malformed: 0,
            filtered: 0,
        }
    }

    enum Written {
        Records(Vec<Vec<u8>>),
        Counters(SourceCounters),
    }

    /// A capture in memory: its bytes, the offset where the frames start, and each frame
    /// with the offset it ends at.
    struct Sample {
        bytes: Vec<u8>,
        frames_start: u64,
        frames: Vec<(u64, Written)>,
    }

    impl Sample {
        fn new() -> Self {
            let mut w = CaptureWriter::new(Vec::new(), "memory", header()).unwrap();
            let frames_start = w.bytes_written();
            let mut frames = Vec::new();
            for (i, n) in [3usize, 5, 0, 1].into_iter().enumerate() {
                let b = batch(i as u8 * 40, n);
                w.write_batch(&b).unwrap();
                if n > 0 {
                    frames.push((w.bytes_written(), Written::Records(records(&b))));
                }
                if i == 0 || i == 3 {
                    let c = counters(&[i as u64, 2 * i as u64 + 1]);
                    w.write_counters(&c).unwrap();
                    frames.push((w.bytes_written(), Written::Counters(c)));
                }
            }
            let bytes = w.finish().unwrap();
            Sample {
                bytes,
                frames_start,
                frames,
            }
        }

        /// What a clean read of the first `len` bytes yields, if `len` is a frame boundary.
        fn expected_at(&self, len: u64) -> Option<(Vec<Vec<u8>>, SourceCounters)> {
            if len != self.frames_start && !self.frames.iter().any(|(end, _)| *end == len) {
                return None;
            }
            let mut recs = Vec::new();
            let mut last = SourceCounters::default();
            for (end, frame) in &self.frames {
                if *end > len {
                    break;
                }
                match frame {
                    Written::Records(r) => recs.extend(r.iter().cloned()),
                    Written::Counters(c) => last = c.clone(),
                }
            }
            Some((recs, last))
        }

        /// The offset of the frame (or preamble part) containing byte `cut - 1`.
        fn start_of_cut(&self, cut: u64) -> u64 {
            if cut < VERSION_OFFSET {
                return 0;
            }
            if cut < HEADER_OFFSET {
                return VERSION_OFFSET;
            }
            if cut < self.frames_start {
                return HEADER_OFFSET;
            }
            let mut start = self.frames_start;
            for (end, _) in &self.frames {
                if *end >= cut {
                    break;
                }
                start = *end;
            }
            start
        }
    }

    /// Opens and replays a file to the end: all records and the final counters, or the
    /// first error's message.
    fn drain(path: &Path) -> Result<(Vec<Vec<u8>>, SourceCounters), String> {
        let mut source = ReplaySource::open(path).map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        let mut out = RawBatch::new();
        for _ in 0..10_000 {
            out.clear();
            let poll = source
                .poll(&mut out, Duration::ZERO)
                .map_err(|e| e.to_string())?;
            all.extend(records(&out));
            if poll == Poll::Finished {
                return Ok((all, source.counters()));
            }
        }
        panic!("replay of {} did not finish", path.display());
    }

    fn frame_bytes(frame: &Frame) -> Vec<u8> {
        let body = wire().serialize(frame).unwrap();
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend(body);
        out
    }

    #[test]
    fn round_trip() {
        let file = TempFile::new("round-trip");
        let batches = [batch(1, 3), batch(2, 40), batch(3, 1)];
        let mut w = CaptureWriter::create(&file.0, header()).unwrap();
        w.write_batch(&batches[0]).unwrap();
        w.write_counters(&counters(&[1, 2])).unwrap();
        w.write_batch(&batches[1]).unwrap();
        w.write_batch(&RawBatch::new()).unwrap();
        w.write_batch(&batches[2]).unwrap();
        w.write_counters(&counters(&[3, 4, 5])).unwrap();
        assert_eq!(w.path(), file.0);
        w.finish().unwrap();

        let mut source = ReplaySource::open(&file.0).unwrap();
        assert_eq!(source.name(), "replay");
        assert_eq!(source.header(), &header());
        assert_eq!(source.header().backend, "ebpf");
        assert_eq!(source.counters(), SourceCounters::default());

        // One recorded batch per poll; counters as recorded up to that point.
        let mut out = RawBatch::new();
        assert_eq!(source.poll(&mut out, Duration::ZERO).unwrap(), Poll::Ready);
        assert_eq!(records(&out), records(&batches[0]));
        assert_eq!(source.counters(), SourceCounters::default());
        out.clear();
        assert_eq!(source.poll(&mut out, Duration::ZERO).unwrap(), Poll::Ready);
        assert_eq!(records(&out), records(&batches[1]));
        assert_eq!(source.counters(), counters(&[1, 2]));
        // Appends to what `out` already holds.
        assert_eq!(source.poll(&mut out, Duration::ZERO).unwrap(), Poll::Ready);
        let mut expected = records(&batches[1]);
        expected.extend(records(&batches[2]));
        assert_eq!(records(&out), expected);
        out.clear();
        assert_eq!(
            source.poll(&mut out, Duration::ZERO).unwrap(),
            Poll::Finished
        );
        assert!(out.is_empty());
        assert_eq!(source.counters(), counters(&[3, 4, 5]));
        assert_eq!(
            source.poll(&mut out, Duration::ZERO).unwrap(),
            Poll::Finished
        );
        assert_eq!(source.offset(), std::fs::metadata(&file.0).unwrap().len());
    }

    #[test]
    fn variable_size_socket_records_replay_to_the_same_aggregates() {
        use crate::Engine;
        use crate::names::NoNames;
        let file = TempFile::new("socket-io");
        let recorded = crate::synthetic::Synth::socket_mix(50);
        let mut w = CaptureWriter::create(&file.0, header()).unwrap();
        w.write_batch(&recorded).unwrap();
        w.finish().unwrap();
        let (replayed, _) = drain(&file.0).unwrap();
        assert_eq!(replayed, records(&recorded));
        let sizes: std::collections::BTreeSet<usize> = replayed.iter().map(Vec::len).collect();
        assert!(
            sizes.contains(&(120 + 200)) && sizes.contains(&(120 + 512)),
            "{sizes:?}"
        );
        let snapshot = |b: &RawBatch| {
            let mut e = Engine::new("x", None);
            e.ingest(b);
            e.flush();
            assert_eq!(e.malformed, 0);
            serde_json::to_value(e.snapshot(&NoNames)).unwrap()
        };
        let mut again = RawBatch::new();
        for r in &replayed {
            again.push(r);
        }
        assert_eq!(snapshot(&recorded), snapshot(&again));
    }

    #[test]
    fn the_wire_format_is_plain_bincode() {
        let sample = Sample::new();
        let b = &sample.bytes;
        assert_eq!(&b[..8], b"KSIGHTCP");
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3);
        let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        let h: CaptureHeader = bincode::deserialize(&b[16..16 + len]).unwrap();
        assert_eq!(h, header());
        let at = HEADER_ABI_MAJOR_OFFSET as usize;
        assert_eq!(&b[at..at + 2], &h.abi_major.to_le_bytes());
        let at = HEADER_FORMAT_VERSION_OFFSET as usize;
        assert_eq!(&b[at..at + 4], &FORMAT_VERSION.to_le_bytes());

        // The borrowed encoding the writer uses is byte for byte the owned Frame's.
        let rb = batch(9, 4);
        let (bytes, ends) = rb.clone().into_parts();
        let owned = wire().serialize(&Frame::Records { bytes, ends }).unwrap();
        let total = rb.iter().map(<[u8]>::len).sum();
        let borrowed = wire()
            .serialize(&FrameRef::Records {
                bytes: BatchBytes(&rb, total),
                ends: BatchEnds(&rb),
            })
            .unwrap();
        assert_eq!(owned, borrowed);
        let plain: Frame = bincode::deserialize(&owned).unwrap();
        assert!(matches!(plain, Frame::Records { ref ends, .. } if ends.len() == 4));
    }

    #[test]
    fn truncation_at_every_byte_is_an_error_or_a_frame_boundary() {
        let sample = Sample::new();
        let file = TempFile::new("truncated");
        for cut in 0..=sample.bytes.len() as u64 {
            file.write(&sample.bytes[..cut as usize]);
            let result = drain(&file.0);
            match sample.expected_at(cut) {
                Some(expected) => {
                    assert_eq!(result, Ok(expected), "cut at {cut} (a frame boundary)")
                }
                None => {
                    let message = result.expect_err(&format!("cut at {cut} read cleanly"));
                    let start = sample.start_of_cut(cut);
                    assert!(message.contains(&file.shown()), "cut at {cut}: {message}");
                    assert!(
                        message.contains("truncated")
                            && message.contains(&format!("at byte {start}:")),
                        "cut at {cut}, expected a truncation at byte {start}: {message}"
                    );
                }
            }
        }
        assert_eq!(drain(&file.0).map(|(r, _)| r.len()), Ok(9));
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let sample = Sample::new();
        let file = TempFile::new("flipped");
        for i in 0..sample.bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bytes = sample.bytes.clone();
                bytes[i] ^= mask;
                file.write(&bytes);
                let result = drain(&file.0);
                let i = i as u64;
                let expect = if i < VERSION_OFFSET {
                    Some("bad magic at byte 0")
                } else if i == VERSION_OFFSET && mask == 0x01 {
                    // 3 ^ 1 = 2, a version this reads: the header's own version disagrees.
                    Some("capture header at byte 16 is inconsistent")
                } else if i < HEADER_OFFSET {
                    Some("unsupported capture format version")
                } else if (HEADER_FORMAT_VERSION_OFFSET..HEADER_ABI_MAJOR_OFFSET).contains(&i) {
                    Some("capture header at byte 16 is inconsistent")
                } else if (HEADER_ABI_MAJOR_OFFSET..HEADER_ABI_MAJOR_OFFSET + 2).contains(&i) {
                    Some("(byte 20), but this ksight reads event ABI 1.x")
                } else {
                    None
                };
                match (expect, result) {
                    (Some(text), Err(message)) => assert!(
                        message.contains(text) && message.contains(&file.shown()),
                        "byte {i} ^ {mask:#x}: {message}"
                    ),
                    (Some(text), Ok(_)) => panic!("byte {i} ^ {mask:#x}: read cleanly, not {text}"),
                    (None, Err(message)) => {
                        assert!(message.contains(&file.shown()), "byte {i}: {message}");
                        assert!(message.contains(" at byte "), "byte {i}: {message}");
                    }
                    (None, Ok(_)) => {}
                }
            }
        }
    }

    #[test]
    fn wrong_magic() {
        let file = TempFile::new("magic");
        let mut bytes = Sample::new().bytes;
        bytes[..8].copy_from_slice(b"KSIGHTXX");
        file.write(&bytes);
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(matches!(e, CaptureError::BadMagic { offset: 0, .. }), "{e}");
        assert_eq!(e.path(), file.0);
        let message = e.to_string();
        assert!(
            message.contains(&file.shown()) && message.contains("\"KSIGHTXX\""),
            "{message}"
        );

        file.write(b"hello\n");
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(matches!(e, CaptureError::BadMagic { offset: 0, .. }), "{e}");
        file.write(b"");
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(
            matches!(
                e,
                CaptureError::Truncated {
                    offset: 0,
                    available: 0,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let file = TempFile::new("missing");
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(matches!(e, CaptureError::Open { .. }));
        assert!(e.to_string().contains(&file.shown()), "{e}");
        assert_eq!(e.offset(), None);
    }

    #[test]
    fn unsupported_format_version() {
        let file = TempFile::new("version");
        let mut bytes = Sample::new().bytes;
        bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
        file.write(&bytes);
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(matches!(
            e,
            CaptureError::UnsupportedVersion {
                found: 4,
                offset: 8,
                ..
            }
        ));
        let message = e.to_string();
        assert!(
            message.contains("version 4 at byte 8; this ksight reads version(s) 1, 2, 3"),
            "{message}"
        );
    }

    #[test]
    fn abi_major_mismatch() {
        let file = TempFile::new("abi");
        let h = CaptureHeader {
            abi_major: event_abi::ABI_VERSION_MAJOR + 1,
            abi_minor: 7,
            ..header()
        };
        let w = CaptureWriter::create(&file.0, h.clone()).unwrap();
        w.finish().unwrap();
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(
            matches!(
                e,
                CaptureError::AbiMismatch {
                    offset: 20,
                    found_minor: 7,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("event ABI {}.7", event_abi::ABI_VERSION_MAJOR + 1))
        );

        // A newer minor version is readable.
        let h = CaptureHeader {
            abi_minor: event_abi::ABI_VERSION_MINOR + 1,
            ..header()
        };
        CaptureWriter::create(&file.0, h.clone())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(
            ReplaySource::open(&file.0).unwrap().header().abi_minor,
            h.abi_minor
        );
    }

    #[test]
    fn huge_length_prefixes_are_errors_not_allocations() {
        let sample = Sample::new();
        let prelude = &sample.bytes[..sample.frames_start as usize];
        let file = TempFile::new("huge");
        for len in [u32::MAX, MAX_FRAME_LEN + 1] {
            let mut bytes = prelude.to_vec();
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&[0; 64]);
            file.write(&bytes);
            let mut source = ReplaySource::open(&file.0).unwrap();
            let e = source.next_frame().err().unwrap();
            assert!(
                matches!(e, CaptureError::TooLarge { offset, .. } if offset == sample.frames_start),
                "{e}"
            );
            let message = e.to_string();
            assert!(
                message.contains(&file.shown()) && message.contains(&format!("{len} bytes long"))
            );
        }
        // Within the limit but not there: truncated, after reading only what exists.
        let mut bytes = prelude.to_vec();
        bytes.extend_from_slice(&MAX_FRAME_LEN.to_le_bytes());
        bytes.extend_from_slice(&[0; 10]);
        file.write(&bytes);
        let mut source = ReplaySource::open(&file.0).unwrap();
        let e = source.next_frame().err().unwrap();
        assert!(
            matches!(e, CaptureError::Truncated { available: 14, .. }),
            "{e}"
        );

        // The capture header's length too.
        let mut bytes = sample.bytes[..12].to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        file.write(&bytes);
        let e = ReplaySource::open(&file.0).err().unwrap();
        assert!(
            matches!(e, CaptureError::TooLarge { offset: 12, .. }),
            "{e}"
        );
    }

    #[test]
    fn bad_frames_are_errors_that_stick() {
        let sample = Sample::new();
        let prelude = &sample.bytes[..sample.frames_start as usize];
        let at = sample.frames_start;
        let file = TempFile::new("bad-frames");
        let good = frame_bytes(&Frame::Counters(counters(&[5])));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                frame_bytes(&Frame::Records {
                    bytes: vec![1; 10],
                    ends: vec![6, 3],
                }),
                "inconsistent record ends: end #1 (3) is before",
            ),
            (
                frame_bytes(&Frame::Records {
                    bytes: vec![1; 10],
                    ends: vec![6, 11],
                }),
                "inconsistent record ends: end #1 (11) is past",
            ),
            (
                frame_bytes(&Frame::Records {
                    bytes: vec![1; 10],
                    ends: vec![6],
                }),
                "inconsistent record ends: the records end at byte 6",
            ),
            (vec![4, 0, 0, 0, 9, 0, 0, 0], "undecodable frame"),
            (vec![0, 0, 0, 0], "undecodable frame"),
            (vec![7], "truncated frame"),
            (vec![20, 0, 0, 0, 1, 2], "truncated frame"),
        ];
        for (frame, text) in cases {
            let mut bytes = prelude.to_vec();
            bytes.extend_from_slice(&good);
            bytes.extend_from_slice(&frame);
            file.write(&bytes);
            let bad_at = at + good.len() as u64;
            let mut source = ReplaySource::open(&file.0).unwrap();
            let mut out = RawBatch::new();
            let e = source.poll(&mut out, Duration::ZERO).err().unwrap();
            assert_eq!(e.source_name, "replay");
            let message = e.to_string();
            assert!(
                message.contains(text)
                    && message.contains(&file.shown())
                    && message.contains(&format!("at byte {bad_at}")),
                "expected {text:?} at byte {bad_at}: {message}"
            );
            assert!(out.is_empty());
            // The counters read before the bad frame stay; the error repeats.
            assert_eq!(source.counters(), counters(&[5]));
            let again = source.poll(&mut out, Duration::ZERO).err().unwrap();
            assert_eq!(again.to_string(), message);
        }
    }

    #[test]
    fn oversized_batches_are_refused_when_writing() {
        let mut w = CaptureWriter::new(Vec::new(), "memory", header()).unwrap();
        let before = w.bytes_written();
        let mut b = RawBatch::new();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..65 {
            b.push(&chunk);
        }
        let e = w.write_batch(&b).err().unwrap();
        assert!(
            matches!(e, CaptureError::TooLarge { offset, .. } if offset == before),
            "{e}"
        );
        assert_eq!(w.bytes_written(), before);
        let h = CaptureHeader {
            hostname: "x".repeat(MAX_HEADER_LEN as usize),
            ..header()
        };
        let e = CaptureWriter::new(Vec::new(), "memory", h).err().unwrap();
        assert!(
            matches!(e, CaptureError::TooLarge { offset: 12, .. }),
            "{e}"
        );
    }

    #[test]
    fn header_for_this_host() {
        let h = CaptureHeader::for_this_host("kmod");
        assert_eq!(h.backend, "kmod");
        assert_eq!(h.format_version, FORMAT_VERSION);
        assert_eq!(
            (h.abi_major, h.abi_minor),
            (event_abi::ABI_VERSION_MAJOR, event_abi::ABI_VERSION_MINOR)
        );
        assert!(!h.kernel_release.is_empty());
        assert!(h.started_monotonic_ns > 0 && h.started_unix_ns > 0);
    }

    /// Counters frames as each format version wrote them.
    #[derive(Serialize)]
    enum OldFrame {
        #[allow(dead_code)]
        Records {
            bytes: Vec<u8>,
            ends: Vec<u32>,
        },
        Counters(OldCounters),
    }
    #[derive(Serialize)]
    struct OldCounters {
        lost_per_cpu: Vec<u64>,
        malformed: u64,
    }
    #[derive(Serialize)]
    enum V2Frame {
        #[allow(dead_code)]
        Records {
            bytes: Vec<u8>,
            ends: Vec<u32>,
        },
        Counters(OldCounters, u64),
    }

    #[test]
    fn every_format_version_reads_its_counters() {
        let v1 = wire()
            .serialize(&OldFrame::Counters(OldCounters {
                lost_per_cpu: vec![1, 2],
                malformed: 3,
            }))
            .unwrap();
        let want = |filtered| {
            Frame::Counters(SourceCounters {
                lost_per_cpu: vec![1, 2],
                malformed: 3,
                filtered,
            })
        };
        assert_eq!(decode_frame(1, &v1).unwrap(), want(0));
        // Version 2: the same bytes when nothing was filtered, else `filtered` after them.
        assert_eq!(decode_frame(2, &v1).unwrap(), want(0));
        let v2 = wire()
            .serialize(&V2Frame::Counters(
                OldCounters {
                    lost_per_cpu: vec![1, 2],
                    malformed: 3,
                },
                77,
            ))
            .unwrap();
        assert_eq!(decode_frame(2, &v2).unwrap(), want(77));
        // Version 1 has no `filtered`: the bytes after its counters are corruption.
        assert!(decode_frame(1, &v2).is_err());
        // Version 3 always writes it: a frame without it is cut short.
        assert!(decode_frame(3, &v1).is_err());
        assert_eq!(decode_frame(3, &v2).unwrap(), want(77));
        let mark = wire().serialize(&Frame::Complete(5)).unwrap();
        assert_eq!(decode_frame(3, &mark).unwrap(), Frame::Complete(5));
        assert!(decode_frame(2, &mark).is_err() && decode_frame(1, &mark).is_err());
    }

    #[test]
    fn completeness_marks_replay_where_they_were_recorded() {
        let file = TempFile::new("marks");
        let mut w = CaptureWriter::create(&file.0, header()).unwrap();
        let mut first = batch(1, 2);
        first.mark_complete(1_000);
        w.write_batch(&first).unwrap();
        let mut idle = RawBatch::new();
        idle.mark_complete(2_000);
        w.write_batch(&idle).unwrap();
        w.write_batch(&batch(2, 1)).unwrap();
        w.finish().unwrap();

        let mut source = ReplaySource::open(&file.0).unwrap();
        let mut seen = vec![];
        loop {
            let mut out = RawBatch::new();
            let poll = source.poll(&mut out, Duration::ZERO).unwrap();
            seen.push((out.len(), out.complete_before()));
            if poll == Poll::Finished {
                break;
            }
        }
        assert_eq!(
            seen,
            [
                (2, None),
                (0, Some(1_000)),
                (0, Some(2_000)),
                (1, None),
                (0, None)
            ]
        );
    }
}
