//! The consumer side of one per-CPU ring (protocol in `kmod-c/ksight_dev.h`).
//!
//! Kept apart from the device so that it runs on memory the tests own: a fake ring is
//! just an info struct and a buffer holding the data twice.

use crate::uapi::RingInfo;
use event_abi::{EventHeader, MAX_RECORD_SIZE, size_ok};
use ksight_source::RawBatch;
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a ring lives: its info struct and its data, mapped twice back to back.
#[derive(Clone, Copy, Debug)]
pub struct RingMemory {
    pub info: *mut RingInfo,
    /// `2 * ring_bytes` readable bytes: bytes `ring_bytes..` repeat bytes `..ring_bytes`.
    pub data: *const u8,
    /// A power of two.
    pub ring_bytes: u64,
}

// SAFETY: the pointers are to shared mappings that stay valid while the owner keeps them
// mapped; all cross-thread access goes through atomics.
unsafe impl Send for RingMemory {}

/// What one drain of a ring did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub records: u64,
    pub bytes: u64,
    /// Stretches of the ring that failed validation and were skipped (each becomes one
    /// undecodable frame in the batch, so the engine counts it as malformed too).
    pub malformed: u64,
    /// The ring was drained up to the head read at the start (not cut short by the
    /// byte budget).
    pub complete: bool,
}

/// A reader's view of one ring.
#[derive(Debug)]
pub struct Ring {
    mem: RingMemory,
    /// Our copy of the tail: we are the only writer of the shared one.
    tail: u64,
    pub delivered: u64,
    pub malformed: u64,
}

const HEADER: usize = size_of::<EventHeader>();

impl Ring {
    /// # Safety
    /// `mem` must describe valid mappings (see [`RingMemory`]) for the life of the ring.
    pub unsafe fn new(mem: RingMemory) -> Self {
        let mut ring = Self {
            mem,
            tail: 0,
            delivered: 0,
            malformed: 0,
        };
        ring.tail = ring
            .shared(offset_of!(RingInfo, tail))
            .load(Ordering::Acquire);
        ring
    }

    fn shared(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `info` is valid (constructor contract); the fields are u64s at 8-aligned
        // offsets of a page-aligned struct, shared with the kernel, so accessed atomically.
        unsafe { &*self.mem.info.cast::<u8>().add(offset).cast::<AtomicU64>() }
    }

    /// Bytes published by the writer (acquire: the records before it are complete).
    pub fn head(&self) -> u64 {
        self.shared(offset_of!(RingInfo, head))
            .load(Ordering::Acquire)
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Records the kernel could not write because this ring was full.
    pub fn lost(&self) -> u64 {
        self.shared(offset_of!(RingInfo, lost))
            .load(Ordering::Relaxed)
    }

    /// Records the kernel dropped on this ring's CPU because their cgroup is ignored
    /// (always 0 from a module older than device interface 1.1: padding then).
    pub fn filtered(&self) -> u64 {
        self.shared(offset_of!(RingInfo, filtered))
            .load(Ordering::Relaxed)
    }

    /// Records the kernel wrote into this ring.
    pub fn emitted(&self) -> u64 {
        self.shared(offset_of!(RingInfo, emitted))
            .load(Ordering::Relaxed)
    }

    fn release(&mut self, tail: u64) {
        self.tail = tail;
        // Release: we are done reading the bytes before it; the writer may reuse them.
        self.shared(offset_of!(RingInfo, tail))
            .store(tail, Ordering::Release);
    }

    fn bytes(&self, pos: u64, len: usize) -> &[u8] {
        debug_assert!(pos < self.mem.ring_bytes && len as u64 <= self.mem.ring_bytes);
        // SAFETY: pos < ring_bytes and len <= ring_bytes, inside the 2 * ring_bytes mapping.
        // Bytes between tail and head are not written until we release them.
        unsafe { std::slice::from_raw_parts(self.mem.data.add(pos as usize), len) }
    }

    /// Moves every published record (at most about `max_bytes`) into `out`, validating
    /// each; a record that fails validation is handed on as one undecodable frame and the
    /// ring is resynchronised at the writer's head (the writer publishes whole records, so
    /// head is always a record boundary).
    pub fn drain(&mut self, out: &mut RawBatch, max_bytes: u64) -> Drained {
        let mut done = Drained::default();
        let head = self.head();
        let mut tail = self.tail;
        let ring = self.mem.ring_bytes;
        if head.wrapping_sub(tail) > ring {
            // head behind tail, or further ahead than the ring holds: nothing in between
            // can be trusted.
            out.push(&[]);
            done.malformed += 1;
            self.malformed += 1;
            self.release(head);
            done.complete = true;
            return done;
        }
        while tail != head && done.bytes < max_bytes {
            let avail = head - tail;
            let pos = tail & (ring - 1);
            let size = if avail < HEADER as u64 || !tail.is_multiple_of(8) {
                None
            } else {
                let header = self.bytes(pos, HEADER);
                let kind = u16::from_ne_bytes([
                    header[offset_of!(EventHeader, kind)],
                    header[offset_of!(EventHeader, kind) + 1],
                ]);
                let size = u16::from_ne_bytes([
                    header[offset_of!(EventHeader, size)],
                    header[offset_of!(EventHeader, size) + 1],
                ]) as usize;
                (size_ok(kind, size) && size as u64 <= avail).then_some(size)
            };
            match size {
                Some(size) => {
                    out.push(self.bytes(pos, size));
                    tail += size as u64;
                    done.records += 1;
                    done.bytes += size as u64;
                }
                None => {
                    let frame = avail.min(MAX_RECORD_SIZE as u64) as usize;
                    out.push(self.bytes(pos, frame));
                    done.malformed += 1;
                    tail = head;
                }
            }
        }
        self.delivered += done.records;
        self.malformed += done.malformed;
        if tail != self.tail {
            self.release(tail);
        }
        done.complete = tail == head;
        done
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use event_abi::zerocopy::{Immutable, IntoBytes};
    use event_abi::{
        BlockEvent, ExecEvent, ForkEvent, SockIoEvent, kind, record_size, sock_io_size,
    };
    use ksight_engine::decode::decode;

    /// A ring in ordinary memory, written the way the module writes.
    pub(crate) struct FakeRing {
        pub info: Box<RingInfo>,
        /// The data twice, as the double mapping shows it.
        pub data: Vec<u8>,
        pub ring_bytes: u64,
        pub head: u64,
    }

    impl FakeRing {
        pub fn new(ring_bytes: u64) -> Self {
            assert!(ring_bytes.is_power_of_two());
            Self {
                info: Box::default(),
                data: vec![0; 2 * ring_bytes as usize],
                ring_bytes,
                head: 0,
            }
        }

        pub fn memory(&mut self) -> RingMemory {
            RingMemory {
                info: &mut *self.info,
                data: self.data.as_ptr(),
                ring_bytes: self.ring_bytes,
            }
        }

        fn tail(&self) -> u64 {
            // SAFETY: the reader stores it atomically; we are on the same thread here.
            unsafe { std::ptr::read_volatile(&self.info.tail) }
        }

        /// Writes raw bytes at head (both copies) and publishes them, or counts a loss.
        pub fn write(&mut self, bytes: &[u8]) -> bool {
            let used = self.head - self.tail();
            if self.ring_bytes - used < bytes.len() as u64 {
                self.info.lost += 1;
                return false;
            }
            for (i, b) in bytes.iter().enumerate() {
                let pos = ((self.head + i as u64) & (self.ring_bytes - 1)) as usize;
                self.data[pos] = *b;
                self.data[pos + self.ring_bytes as usize] = *b;
            }
            self.head += bytes.len() as u64;
            self.info.head = self.head;
            self.info.emitted += 1;
            true
        }
    }

    pub(crate) fn record<T: IntoBytes + Immutable>(r: &T) -> Vec<u8> {
        r.as_bytes().to_vec()
    }

    pub(crate) fn fork(n: u32) -> Vec<u8> {
        let mut e = ForkEvent::default();
        e.header.kind = kind::FORK;
        e.header.size = size_of::<ForkEvent>() as u16;
        e.header.ts_ns = u64::from(n);
        e.child_pid = n;
        record(&e)
    }

    fn block(n: u32) -> Vec<u8> {
        let mut e = BlockEvent::default();
        e.header.kind = kind::BLOCK_COMPLETE;
        e.header.size = size_of::<BlockEvent>() as u16;
        e.sector = u64::from(n);
        record(&e)
    }

    fn exec() -> Vec<u8> {
        // SAFETY: all-zero is a valid ExecEvent.
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.header.kind = kind::EXEC;
        e.header.size = size_of::<ExecEvent>() as u16;
        e.filename[..4].copy_from_slice(b"/bin");
        e.filename_len = 4;
        record(&e)
    }

    fn decoded(batch: &RawBatch) -> (usize, usize) {
        let ok = batch.iter().filter(|r| decode(r).is_ok()).count();
        (ok, batch.len() - ok)
    }

    #[test]
    fn delivers_records_in_order_and_releases_the_tail() {
        let mut fake = FakeRing::new(4096);
        for n in 0..10 {
            assert!(fake.write(&fork(n)));
        }
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let mut batch = RawBatch::new();
        let d = ring.drain(&mut batch, u64::MAX);
        assert_eq!(
            d,
            Drained {
                records: 10,
                bytes: 480,
                malformed: 0,
                complete: true,
            }
        );
        assert_eq!(fake.tail(), 480);
        let pids: Vec<u32> = batch
            .iter()
            .map(|r| match decode(r).unwrap() {
                ksight_engine::decode::Event::Fork(f) => f.child_pid,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pids, (0..10).collect::<Vec<_>>());
        // Nothing new: nothing delivered, tail unchanged, the ring empty up to its head.
        batch.clear();
        assert_eq!(
            ring.drain(&mut batch, u64::MAX),
            Drained {
                complete: true,
                ..Drained::default()
            }
        );
    }

    #[test]
    fn records_that_cross_the_end_arrive_whole() {
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let mut batch = RawBatch::new();
        // Exec records (312 bytes) do not divide 4096: they straddle the end again and again.
        let mut written = 0;
        for _ in 0..200 {
            for _ in 0..5 {
                assert!(fake.write(&exec()));
                written += 1;
            }
            ring.drain(&mut batch, u64::MAX);
        }
        let (ok, bad) = decoded(&batch);
        assert_eq!((ok, bad), (written, 0));
        assert!(batch.iter().all(|r| &r[56..60] == b"/bin"));
        assert_eq!(ring.delivered, fake.info.emitted);
    }

    #[test]
    fn a_full_ring_counts_losses_and_recovers() {
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let (mut written, mut lost) = (0u64, 0u64);
        for n in 0..200 {
            if fake.write(&block(n)) {
                written += 1;
            } else {
                lost += 1;
            }
        }
        // 4096 / 56 = 73 records fit.
        assert_eq!(written, 73);
        assert_eq!(ring.lost(), lost);
        let mut batch = RawBatch::new();
        ring.drain(&mut batch, u64::MAX);
        assert_eq!(batch.len(), 73);
        assert!(
            fake.write(&block(999)),
            "space is free again after the drain"
        );
        ring.drain(&mut batch, u64::MAX);
        assert_eq!(ring.delivered + ring.lost(), 201);
        assert_eq!(ring.delivered, ring.emitted());
    }

    #[test]
    fn a_record_with_a_bad_kind_is_counted_and_the_ring_resynchronised() {
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        fake.write(&fork(1));
        let mut bad = fork(2);
        bad[offset_of!(EventHeader, kind)] = 0xee; // unknown kind
        fake.write(&bad);
        fake.write(&fork(3)); // swallowed by the resynchronisation
        let mut batch = RawBatch::new();
        let d = ring.drain(&mut batch, u64::MAX);
        assert_eq!((d.records, d.malformed), (1, 1));
        assert_eq!(decoded(&batch), (1, 1));
        assert_eq!(ring.tail(), fake.head, "resynchronised at head");
        // Later records are read normally.
        fake.write(&fork(4));
        batch.clear();
        assert_eq!(ring.drain(&mut batch, u64::MAX).records, 1);
        assert_eq!(decoded(&batch), (1, 0));
    }

    #[test]
    fn a_record_whose_size_lies_is_never_read_past_head() {
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        // A fork header claiming exec's size: the size does not fit the kind.
        let mut lie = fork(1);
        lie[offset_of!(EventHeader, size)..offset_of!(EventHeader, size) + 2]
            .copy_from_slice(&312u16.to_ne_bytes());
        fake.write(&lie);
        // An exec header whose record is cut short by head.
        let mut short = exec();
        short.truncate(200);
        fake.write(&short);
        let mut batch = RawBatch::new();
        let d = ring.drain(&mut batch, u64::MAX);
        assert_eq!((d.records, d.malformed), (0, 1));
        fake.write(&short);
        let d = ring.drain(&mut batch, u64::MAX);
        assert_eq!((d.records, d.malformed), (0, 1));
        assert_eq!(decoded(&batch), (0, 2));
        // A header cut short.
        fake.write(&fork(9)[..16]);
        assert_eq!(ring.drain(&mut batch, u64::MAX).malformed, 1);
        assert_eq!(ring.malformed, 3);
        assert_eq!(ring.tail(), fake.head);
    }

    #[test]
    fn an_impossible_head_is_malformed_not_a_crash() {
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        fake.info.head = 1 << 40; // far beyond what the ring can hold
        let mut batch = RawBatch::new();
        assert_eq!(ring.drain(&mut batch, u64::MAX).malformed, 1);
        assert_eq!(ring.tail(), 1 << 40);
        fake.head = 1 << 40;
        fake.write(&fork(5));
        batch.clear();
        assert_eq!(ring.drain(&mut batch, u64::MAX).records, 1);
        // And a head that went backwards.
        fake.info.head = 8;
        batch.clear();
        assert_eq!(ring.drain(&mut batch, u64::MAX).malformed, 1);
        assert_eq!(decoded(&batch), (0, 1));
    }

    #[test]
    fn random_garbage_never_panics_and_never_yields_a_bad_record() {
        // A xorshift stream of bytes and heads: whatever the ring holds, every frame the
        // reader delivers is either a valid record or counted malformed.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let mut batch = RawBatch::new();
        for round in 0..2000 {
            let len = (next() % 400) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 && len >= HEADER {
                // Sometimes a plausible header.
                let k = (next() % 12) as u16;
                junk[24..26].copy_from_slice(&k.to_ne_bytes());
                let s = record_size(k).unwrap_or(48) as u16;
                junk[26..28].copy_from_slice(&s.to_ne_bytes());
            }
            fake.write(&junk);
            let before = batch.len();
            let d = ring.drain(&mut batch, u64::MAX);
            assert_eq!(batch.len() - before, (d.records + d.malformed) as usize);
            for r in batch.iter().skip(before).take(d.records as usize) {
                assert!(decode(r).is_ok());
            }
            assert_eq!(ring.tail(), fake.head);
        }
    }

    /// A socket I/O record with `payload` bytes after the fixed part, padded to 8.
    fn sock_io(payload: &[u8]) -> Vec<u8> {
        let mut e = SockIoEvent::default();
        e.header.kind = kind::SOCK_IO;
        e.header.size = sock_io_size(payload.len()) as u16;
        e.bytes = payload.len() as u64;
        e.payload_len = payload.len() as u16;
        let mut r = record(&e);
        r.extend_from_slice(payload);
        r.resize(sock_io_size(payload.len()), 0);
        r
    }

    #[test]
    fn variable_size_records_arrive_whole_at_their_own_size() {
        let mut fake = FakeRing::new(16384);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let big: Vec<u8> = (0..event_abi::MAX_SNAPLEN).map(|i| i as u8).collect();
        let payloads: [&[u8]; 5] = [b"", b"x", b"GET / HTTP/1.1\r\n", &big[..4000], &big];
        let mut batch = RawBatch::new();
        // Around the ring's end several times: sizes that do not divide it.
        for _ in 0..6 {
            for p in payloads {
                assert!(fake.write(&sock_io(p)));
                assert!(fake.write(&fork(7)));
            }
            ring.drain(&mut batch, u64::MAX);
        }
        assert_eq!((ring.delivered, ring.malformed), (60, 0));
        let got: Vec<&[u8]> = batch.iter().collect();
        for (i, r) in got.iter().enumerate() {
            if i % 2 == 1 {
                assert_eq!(*r, &fork(7)[..]);
                continue;
            }
            let p = payloads[(i / 2) % payloads.len()];
            assert_eq!(r.len(), sock_io_size(p.len()));
            assert_eq!(*r, &sock_io(p)[..], "record {i}");
        }
    }

    #[test]
    fn a_variable_size_record_of_an_impossible_size_is_malformed() {
        let fixed = size_of::<SockIoEvent>();
        for bad in [
            fixed - 8,
            fixed + 4,
            sock_io_size(event_abi::MAX_SNAPLEN) + 8,
        ] {
            let mut fake = FakeRing::new(16384);
            let mut ring = unsafe { Ring::new(fake.memory()) };
            let mut r = sock_io(b"");
            r[offset_of!(EventHeader, size)..offset_of!(EventHeader, size) + 2]
                .copy_from_slice(&(bad as u16).to_ne_bytes());
            r.resize(bad.max(fixed), 0);
            fake.write(&r);
            let mut batch = RawBatch::new();
            let d = ring.drain(&mut batch, u64::MAX);
            assert_eq!((d.records, d.malformed), (0, 1), "size {bad}");
        }
        // A socket I/O size on a fixed-size kind.
        let mut fake = FakeRing::new(4096);
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let mut lie = sock_io(b"12345678");
        lie[offset_of!(EventHeader, kind)..offset_of!(EventHeader, kind) + 2]
            .copy_from_slice(&kind::TCP_STATE.to_ne_bytes());
        fake.write(&lie);
        let mut batch = RawBatch::new();
        assert_eq!(ring.drain(&mut batch, u64::MAX).malformed, 1);
    }

    #[test]
    fn a_drain_stops_near_its_byte_budget() {
        let mut fake = FakeRing::new(8192);
        for n in 0..100 {
            fake.write(&fork(n));
        }
        let mut ring = unsafe { Ring::new(fake.memory()) };
        let mut batch = RawBatch::new();
        let cut = ring.drain(&mut batch, 480);
        // Cut short: not a drain the engine may take as proof of an empty ring.
        assert_eq!((cut.records, cut.complete), (10, false));
        let rest = ring.drain(&mut batch, u64::MAX);
        assert_eq!((rest.records, rest.complete), (90, true));
    }
}
