//! Draining the ring buffer or the per-CPU perf buffers into a [`RawBatch`].

use std::{
    io,
    mem::offset_of,
    os::fd::{AsRawFd as _, RawFd},
    time::{Duration, Instant},
};

use aya::maps::{
    MapData, RingBuf,
    perf::{PerfEvent, PerfEventArrayBuffer},
};
use event_abi::EventHeader;
use ksight_source::RawBatch;

/// How many ring buffer records to take between two looks at the clock.
const RING_CHUNK: usize = 512;

pub(crate) enum Reader {
    Ring(RingBuf<MapData>),
    Perf(PerfReader),
}

pub(crate) struct PerfReader {
    /// (CPU id, its buffer).
    pub bufs: Vec<(u32, PerfEventArrayBuffer<MapData>)>,
    /// Samples the kernel reported lost, indexed by CPU id.
    pub lost: Vec<u64>,
    /// Reassembly space for samples that wrap around the end of a buffer.
    pub wrapped: Vec<u8>,
}

impl Reader {
    /// Appends every record available now, stopping early (with records left for the
    /// next call) only when the ring buffer is being refilled as fast as it is read and
    /// `deadline` has passed. Returns how many records were appended.
    ///
    /// A drain that empties every buffer marks the batch complete up to the moment it
    /// started ([`RawBatch::mark_complete`]): a record stamped before then was in a
    /// buffer before the drain looked, unless a program was still writing it.
    pub fn drain(&mut self, out: &mut RawBatch, deadline: Instant) -> usize {
        let started = ksight_source::monotonic_ns();
        match self {
            Reader::Ring(ring) => {
                let mut n = 0;
                let mut emptied = true;
                while let Some(item) = ring.next() {
                    out.push(&item[..record_len(&item)]);
                    n += 1;
                    if n % RING_CHUNK == 0 && Instant::now() >= deadline {
                        emptied = false;
                        break;
                    }
                }
                if emptied {
                    out.mark_complete(started);
                }
                n
            }
            Reader::Perf(p) => {
                // A perf buffer is drained in one pass up to where the kernel had written
                // when the pass started, so this is bounded by the buffers' size.
                let mut n = 0;
                for (cpu, buf) in &mut p.bufs {
                    if !buf.readable() {
                        continue;
                    }
                    let lost = &mut p.lost;
                    let wrapped = &mut p.wrapped;
                    buf.for_each(|event| match event {
                        PerfEvent::Sample { head, tail } => {
                            n += 1;
                            if tail.is_empty() {
                                out.push(&head[..record_len(head)]);
                            } else {
                                wrapped.clear();
                                wrapped.extend_from_slice(head);
                                wrapped.extend_from_slice(tail);
                                out.push(&wrapped[..record_len(wrapped)]);
                            }
                        }
                        PerfEvent::Lost { count } => {
                            if let Some(slot) = lost.get_mut(*cpu as usize) {
                                *slot = slot.saturating_add(count);
                            }
                        }
                    });
                }
                out.mark_complete(started);
                n
            }
        }
    }

    /// Waits until a buffer has data or `timeout` passes. EINTR counts as a wake-up.
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds; `ts` outlives the call.
        // ppoll rather than poll: nanosecond timeouts, so a sub-millisecond timeout is
        // not rounded up past what the caller asked for.
        let rc = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(())
    }

    fn fds(&self) -> Vec<RawFd> {
        match self {
            Reader::Ring(ring) => vec![ring.as_raw_fd()],
            Reader::Perf(p) => p.bufs.iter().map(|(_, b)| b.as_raw_fd()).collect(),
        }
    }

    /// Perf samples lost per CPU (empty for the ring buffer, whose losses the programs
    /// count themselves).
    pub fn perf_lost(&self) -> &[u64] {
        match self {
            Reader::Ring(_) => &[],
            Reader::Perf(p) => &p.lost,
        }
    }
}

/// The record's own length from its header, so that padding the transport appends (perf
/// samples are padded to 8 bytes plus a 4-byte size prefix) is not passed on. A header
/// claiming more than is there is left for the engine to reject.
fn record_len(data: &[u8]) -> usize {
    let at = offset_of!(EventHeader, size);
    match data.get(at..at + 2) {
        Some(b) => {
            let size = usize::from(u16::from_ne_bytes([b[0], b[1]]));
            if size > 0 && size <= data.len() {
                size
            } else {
                data.len()
            }
        }
        None => data.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_len_trims_padding_only() {
        let mut rec = vec![0u8; 52];
        let at = offset_of!(EventHeader, size);
        rec[at..at + 2].copy_from_slice(&48u16.to_ne_bytes());
        assert_eq!(record_len(&rec), 48);
        rec[at..at + 2].copy_from_slice(&60u16.to_ne_bytes());
        assert_eq!(record_len(&rec), 52);
        assert_eq!(record_len(&rec[..10]), 10);
    }
}
