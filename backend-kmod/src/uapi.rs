//! The device interface of `/dev/ksight`: the Rust mirror of `kmod-c/ksight_dev.h`.
//!
//! `event-abi/tests/c_layout.rs` includes this file and checks every struct, field and
//! constant against the C header, so keep it self-contained (no `crate::` paths).
//! The protocol (offsets, head/tail, ordering) is described in the header.

#![allow(
    dead_code,
    reason = "the layout test includes this file without using all of it"
)]

use core::mem::size_of;

pub const DEV_VERSION_MAJOR: u16 = 1;
pub const DEV_VERSION_MINOR: u16 = 2;
/// The first minor version with `KSIGHT_IOC_SET_IGNORED_CGROUPS`, `filtered` counters and
/// the longer `KSIGHT_IOC_STATS`.
pub const DEV_VERSION_MINOR_FILTER: u16 = 1;
/// The first minor version with `KSIGHT_IOC_SET_SNAPLEN` (and socket I/O records).
pub const DEV_VERSION_MINOR_SNAPLEN: u16 = 2;
/// `major << 16 | minor`, as `KSIGHT_IOC_VERSION` reports it.
pub const DEV_VERSION: u32 = ((DEV_VERSION_MAJOR as u32) << 16) | DEV_VERSION_MINOR as u32;

/// Per-kind statistics slots (indexed by `event_abi::kind`).
pub const STATS_SLOTS: usize = 32;

/// Most cgroup ids `KSIGHT_IOC_SET_IGNORED_CGROUPS` accepts.
pub const IGNORED_CGROUPS_MAX: u32 = 16384;

pub const RING_BYTES_MIN: u32 = 4096;
pub const RING_BYTES_MAX: u32 = 1 << 28;
pub const RING_BYTES_DEFAULT: u32 = 1 << 20;

/// The first page of each ring's mapping (`struct ksight_ring_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RingInfo {
    /// Bytes ever published; the kernel stores it with release.
    pub head: u64,
    /// Records dropped because the ring was full.
    pub lost: u64,
    /// Records written into the ring.
    pub emitted: u64,
    /// Records dropped because their cgroup is ignored (interface 1.1; 0 before).
    pub filtered: u64,
    pub _pad0: [u64; 4],
    /// Bytes ever consumed; the reader stores it with release.
    pub tail: u64,
    pub _pad1: [u64; 7],
}

/// `KSIGHT_IOC_VERSION` (`struct ksight_version`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Version {
    pub abi_version: u32,
    pub dev_version: u32,
}

/// `KSIGHT_IOC_GEOMETRY` (`struct ksight_geometry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    pub nr_rings: u32,
    pub ring_bytes: u32,
    pub page_size: u32,
    pub _pad: u32,
    pub ring_stride: u64,
    pub data_offset: u64,
}

/// `KSIGHT_IOC_STATS` (`struct ksight_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub emitted: [u64; STATS_SLOTS],
    pub lost: [u64; STATS_SLOTS],
    pub timed_runs: [u64; STATS_SLOTS],
    pub timed_ns: [u64; STATS_SLOTS],
    pub attached: u32,
    pub available: u32,
    pub enabled: u32,
    pub capturing: u32,
    pub nested: u64,
    pub bad_tail: u64,
    /// Interface 1.1: records dropped because their cgroup is ignored, per kind.
    pub filtered: [u64; STATS_SLOTS],
}

/// `KSIGHT_IOC_SET_IGNORED_CGROUPS` (`struct ksight_ignored_cgroups`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredCgroups {
    /// Number of ids at `ids_ptr`.
    pub count: u32,
    pub _pad: u32,
    /// User address of `count` u64 cgroup ids.
    pub ids_ptr: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            emitted: [0; STATS_SLOTS],
            lost: [0; STATS_SLOTS],
            timed_runs: [0; STATS_SLOTS],
            timed_ns: [0; STATS_SLOTS],
            attached: 0,
            available: 0,
            enabled: 0,
            capturing: 0,
            nested: 0,
            bad_tail: 0,
            filtered: [0; STATS_SLOTS],
        }
    }
}

const _: () = assert!(size_of::<RingInfo>() == 128);
const _: () = assert!(size_of::<Version>() == 8);
const _: () = assert!(size_of::<Geometry>() == 32);
const _: () = assert!(size_of::<Stats>() == 1312);
const _: () = assert!(core::mem::offset_of!(Stats, filtered) == STATS_V1_SIZE);
const _: () = assert!(size_of::<IgnoredCgroups>() == 16);

/// Size of `struct ksight_stats` in interface 1.0 (before `filtered`).
pub const STATS_V1_SIZE: usize = 1056;

// Linux's generic ioctl encoding (x86, arm64, riscv: asm-generic/ioctl.h).
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((IOC_MAGIC as u32) << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

pub const IOC_MAGIC: u8 = 0xB7;
pub const IOC_VERSION: u32 = ioc(IOC_READ, 1, size_of::<Version>());
pub const IOC_GEOMETRY: u32 = ioc(IOC_READ, 2, size_of::<Geometry>());
pub const IOC_SET_KINDS: u32 = ioc(IOC_WRITE, 3, size_of::<u32>());
pub const IOC_START: u32 = ioc(IOC_NONE, 4, 0);
pub const IOC_STOP: u32 = ioc(IOC_NONE, 5, 0);
pub const IOC_STATS: u32 = ioc(IOC_READ, 6, size_of::<Stats>());
pub const IOC_SET_WATERMARK: u32 = ioc(IOC_WRITE, 7, size_of::<u32>());
pub const IOC_SET_IGNORED_CGROUPS: u32 = ioc(IOC_WRITE, 8, size_of::<IgnoredCgroups>());
/// `KSIGHT_IOC_STATS` of interface 1.0: the first [`STATS_V1_SIZE`] bytes of [`Stats`].
pub const IOC_STATS_V1: u32 = ioc(IOC_READ, 6, STATS_V1_SIZE);
/// Interface 1.2: payload bytes per socket I/O record, a u32 up to `MAX_SNAPLEN`.
pub const IOC_SET_SNAPLEN: u32 = ioc(IOC_WRITE, 9, size_of::<u32>());
