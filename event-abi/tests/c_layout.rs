//! Keeps `kmod-c/ksight_abi.h` equal to event-abi, and `kmod-c/ksight_dev.h` (the
//! `/dev/ksight` interface: info page, ioctl structs and numbers) equal to its Rust mirror
//! `backend-kmod/src/uapi.rs`.
//!
//! The Rust side is an explicit table of every record, field and constant. From it the
//! test writes a C program that includes the header and prints, one `name value` line
//! each, the size and alignment of every struct; the offset, size and type of every
//! field; and the value of every constant. It compiles that program with `cc` (or `$CC`)
//! twice, once as user space and once with `__KERNEL__` against a stand-in
//! `<linux/types.h>`, runs both, and compares every line with the values Rust computes
//! with `size_of`, `align_of` and `offset_of!`. Every mismatch is listed.
//!
//! The table is kept honest three ways: each row's type must be the field's real type
//! (a typed closure), each table must name every field of its struct (an exhaustive
//! struct pattern), and each struct's fields, laid end to end by offset, must cover the
//! struct exactly (padding is explicit in this ABI). The header is scanned too: every
//! `KSIGHT_*` constant and `struct ksight_*` it defines must be in the table.
//!
//! A missing C compiler fails the test: the check is required, not optional.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use event_abi::{
    ABI_VERSION, ABI_VERSION_MAJOR, ABI_VERSION_MINOR, AF_INET, AF_INET6, BlockEvent, COMM_LEN,
    DEFAULT_SNAPLEN, EventHeader, ExecEvent, ExitEvent, FILENAME_LEN, ForkEvent, MAX_MMSG,
    MAX_RECORD_SIZE, MAX_SNAPLEN, SockIoEvent, TcpEvent, TcpStateEvent, TcpTuple, block_op,
    counter, kind, sock_call, sock_dir, sock_flags, sock_io_size, tcp_state, tcp_stats,
};

/// The device interface of /dev/ksight: its Rust mirror lives in backend-kmod (the
/// reader), its C side in kmod-c/ksight_dev.h; checked here the same way as the records.
#[path = "../../backend-kmod/src/uapi.rs"]
mod uapi;
use uapi::{Geometry, IgnoredCgroups, RingInfo, Stats, Version};

/// How a field's type is spelled on the C side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Desc {
    Int { signed: bool, bits: u32 },
    IntArray { signed: bool, bits: u32, len: usize },
    Struct(&'static str),
}

impl Desc {
    fn render(self) -> String {
        match self {
            Desc::Int { signed, bits } => format!("{}{bits}", if signed { 'i' } else { 'u' }),
            Desc::IntArray { signed, bits, len } => {
                format!("{}{bits}[{len}]", if signed { 'i' } else { 'u' })
            }
            Desc::Struct(name) => format!("struct {name}"),
        }
    }
}

trait CType {
    const DESC: Desc;
}

macro_rules! c_int {
    ($($t:ty => $signed:expr),* $(,)?) => {
        $(impl CType for $t {
            const DESC: Desc = Desc::Int { signed: $signed, bits: <$t>::BITS };
        })*
    };
}
c_int!(u8 => false, u16 => false, u32 => false, u64 => false,
       i8 => true, i16 => true, i32 => true, i64 => true);

impl<T: CType, const N: usize> CType for [T; N] {
    const DESC: Desc = match T::DESC {
        Desc::Int { signed, bits } => Desc::IntArray {
            signed,
            bits,
            len: N,
        },
        _ => panic!("the ABI only has arrays of integers"),
    };
}

macro_rules! c_struct {
    ($($t:ty => $c:literal),* $(,)?) => {
        $(impl CType for $t {
            const DESC: Desc = Desc::Struct($c);
        })*
    };
}
c_struct!(
    EventHeader => "ksight_event_header",
    ExecEvent => "ksight_exec_event",
    ForkEvent => "ksight_fork_event",
    ExitEvent => "ksight_exit_event",
    TcpTuple => "ksight_tcp_tuple",
    TcpStateEvent => "ksight_tcp_state_event",
    TcpEvent => "ksight_tcp_event",
    BlockEvent => "ksight_block_event",
    SockIoEvent => "ksight_sock_io_event",
    RingInfo => "ksight_ring_info",
    Version => "ksight_version",
    Geometry => "ksight_geometry",
    Stats => "ksight_stats",
    IgnoredCgroups => "ksight_ignored_cgroups",
);

struct Field {
    name: &'static str,
    offset: usize,
    size: usize,
    desc: Desc,
}

struct Record {
    rust_name: &'static str,
    c_name: &'static str,
    size: usize,
    align: usize,
    fields: Vec<Field>,
}

/// One table row per field, with the field's type as written in event-abi.
macro_rules! record {
    ($ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {{
        // Compile-time: the table names every field of the struct (no `..`).
        let _exhaustive = |r: &$ty| {
            let $ty { $($field: _),* } = *r;
        };
        Record {
            rust_name: stringify!($ty),
            c_name: match <$ty as CType>::DESC {
                Desc::Struct(name) => name,
                _ => unreachable!(),
            },
            size: size_of::<$ty>(),
            align: align_of::<$ty>(),
            fields: vec![$({
                // Compile-time: the type in the table is the field's type.
                let _typed: fn(&$ty) -> &$fty = |r| &r.$field;
                Field {
                    name: stringify!($field),
                    offset: offset_of!($ty, $field),
                    size: size_of::<$fty>(),
                    desc: <$fty as CType>::DESC,
                }
            }),*],
        }
    }};
}

fn records() -> Vec<Record> {
    vec![
        record!(EventHeader {
            ts_ns: u64,
            cgroup_id: u64,
            pid: u32,
            tid: u32,
            cpu: u32,
            kind: u16,
            size: u16,
        }),
        record!(ExecEvent {
            header: EventHeader,
            ppid: u32,
            filename_len: u32,
            comm: [u8; COMM_LEN],
            filename: [u8; FILENAME_LEN],
        }),
        record!(ForkEvent {
            header: EventHeader,
            parent_pid: u32,
            parent_tgid: u32,
            child_pid: u32,
            child_tgid: u32,
        }),
        record!(ExitEvent {
            header: EventHeader,
            exit_status: u32,
            group_dead: u32,
            comm: [u8; COMM_LEN],
        }),
        record!(TcpTuple {
            family: u16,
            sport: u16,
            dport: u16,
            _pad: u16,
            saddr: [u8; 16],
            daddr: [u8; 16],
        }),
        record!(TcpStateEvent {
            header: EventHeader,
            sock_id: u64,
            sock_cgroup_id: u64,
            tuple: TcpTuple,
            old_state: u32,
            new_state: u32,
            stats_valid: u32,
            _pad: u32,
            bytes_acked: u64,
            bytes_received: u64,
            segs_in: u32,
            segs_out: u32,
            total_retrans: u32,
            srtt_us: u32,
        }),
        record!(TcpEvent {
            header: EventHeader,
            sock_id: u64,
            sock_cgroup_id: u64,
            tuple: TcpTuple,
            state: u32,
            _pad: u32,
        }),
        record!(BlockEvent {
            header: EventHeader,
            sector: u64,
            dev: u32,
            bytes: u32,
            op: u32,
            error: i32,
        }),
        record!(SockIoEvent {
            header: EventHeader,
            sock_id: u64,
            bytes: u64,
            duration_ns: u64,
            tuple: TcpTuple,
            fd: u32,
            call: u16,
            direction: u8,
            protocol: u8,
            flags: u16,
            payload_len: u16,
            msg_index: u16,
            _pad: u16,
            unreported_msgs: u32,
            _pad2: u32,
        }),
        record!(RingInfo {
            head: u64,
            lost: u64,
            emitted: u64,
            filtered: u64,
            _pad0: [u64; 4],
            tail: u64,
            _pad1: [u64; 7],
        }),
        record!(Version {
            abi_version: u32,
            dev_version: u32,
        }),
        record!(Geometry {
            nr_rings: u32,
            ring_bytes: u32,
            page_size: u32,
            _pad: u32,
            ring_stride: u64,
            data_offset: u64,
        }),
        record!(Stats {
            emitted: [u64; uapi::STATS_SLOTS],
            lost: [u64; uapi::STATS_SLOTS],
            timed_runs: [u64; uapi::STATS_SLOTS],
            timed_ns: [u64; uapi::STATS_SLOTS],
            attached: u32,
            available: u32,
            enabled: u32,
            capturing: u32,
            nested: u64,
            bad_tail: u64,
            filtered: [u64; uapi::STATS_SLOTS],
        }),
        record!(IgnoredCgroups {
            count: u32,
            _pad: u32,
            ids_ptr: u64,
        }),
    ]
}

/// Every constant of event-abi, by its C name.
fn constants() -> Vec<(&'static str, i128)> {
    vec![
        ("KSIGHT_ABI_VERSION_MAJOR", ABI_VERSION_MAJOR.into()),
        ("KSIGHT_ABI_VERSION_MINOR", ABI_VERSION_MINOR.into()),
        ("KSIGHT_ABI_VERSION", ABI_VERSION.into()),
        ("KSIGHT_KIND_EXEC", kind::EXEC.into()),
        ("KSIGHT_KIND_FORK", kind::FORK.into()),
        ("KSIGHT_KIND_EXIT", kind::EXIT.into()),
        ("KSIGHT_KIND_TCP_STATE", kind::TCP_STATE.into()),
        ("KSIGHT_KIND_TCP_RETRANSMIT", kind::TCP_RETRANSMIT.into()),
        ("KSIGHT_KIND_TCP_RESET_SENT", kind::TCP_RESET_SENT.into()),
        (
            "KSIGHT_KIND_TCP_RESET_RECEIVED",
            kind::TCP_RESET_RECEIVED.into(),
        ),
        ("KSIGHT_KIND_BLOCK_QUEUE", kind::BLOCK_QUEUE.into()),
        ("KSIGHT_KIND_BLOCK_ISSUE", kind::BLOCK_ISSUE.into()),
        ("KSIGHT_KIND_BLOCK_COMPLETE", kind::BLOCK_COMPLETE.into()),
        ("KSIGHT_KIND_SOCK_IO", kind::SOCK_IO.into()),
        ("KSIGHT_KIND_END", kind::END.into()),
        ("KSIGHT_COMM_LEN", COMM_LEN as i128),
        ("KSIGHT_FILENAME_LEN", FILENAME_LEN as i128),
        ("KSIGHT_AF_INET", AF_INET.into()),
        ("KSIGHT_AF_INET6", AF_INET6.into()),
        (
            "KSIGHT_TCP_STATE_ESTABLISHED",
            tcp_state::ESTABLISHED.into(),
        ),
        ("KSIGHT_TCP_STATE_SYN_SENT", tcp_state::SYN_SENT.into()),
        ("KSIGHT_TCP_STATE_SYN_RECV", tcp_state::SYN_RECV.into()),
        ("KSIGHT_TCP_STATE_FIN_WAIT1", tcp_state::FIN_WAIT1.into()),
        ("KSIGHT_TCP_STATE_FIN_WAIT2", tcp_state::FIN_WAIT2.into()),
        ("KSIGHT_TCP_STATE_TIME_WAIT", tcp_state::TIME_WAIT.into()),
        ("KSIGHT_TCP_STATE_CLOSE", tcp_state::CLOSE.into()),
        ("KSIGHT_TCP_STATE_CLOSE_WAIT", tcp_state::CLOSE_WAIT.into()),
        ("KSIGHT_TCP_STATE_LAST_ACK", tcp_state::LAST_ACK.into()),
        ("KSIGHT_TCP_STATE_LISTEN", tcp_state::LISTEN.into()),
        ("KSIGHT_TCP_STATE_CLOSING", tcp_state::CLOSING.into()),
        (
            "KSIGHT_TCP_STATE_NEW_SYN_RECV",
            tcp_state::NEW_SYN_RECV.into(),
        ),
        (
            "KSIGHT_TCP_STATS_BYTES_ACKED",
            tcp_stats::BYTES_ACKED.into(),
        ),
        (
            "KSIGHT_TCP_STATS_BYTES_RECEIVED",
            tcp_stats::BYTES_RECEIVED.into(),
        ),
        ("KSIGHT_TCP_STATS_SEGS_IN", tcp_stats::SEGS_IN.into()),
        ("KSIGHT_TCP_STATS_SEGS_OUT", tcp_stats::SEGS_OUT.into()),
        (
            "KSIGHT_TCP_STATS_TOTAL_RETRANS",
            tcp_stats::TOTAL_RETRANS.into(),
        ),
        ("KSIGHT_TCP_STATS_SRTT", tcp_stats::SRTT.into()),
        ("KSIGHT_TCP_STATS_ALL", tcp_stats::ALL.into()),
        ("KSIGHT_BLOCK_OP_OTHER", block_op::OTHER.into()),
        ("KSIGHT_BLOCK_OP_READ", block_op::READ.into()),
        ("KSIGHT_BLOCK_OP_WRITE", block_op::WRITE.into()),
        ("KSIGHT_BLOCK_OP_FLUSH", block_op::FLUSH.into()),
        ("KSIGHT_BLOCK_OP_DISCARD", block_op::DISCARD.into()),
        ("KSIGHT_SOCK_DIR_SEND", sock_dir::SEND.into()),
        ("KSIGHT_SOCK_DIR_RECV", sock_dir::RECV.into()),
        ("KSIGHT_SOCK_CALL_READ", sock_call::READ.into()),
        ("KSIGHT_SOCK_CALL_WRITE", sock_call::WRITE.into()),
        ("KSIGHT_SOCK_CALL_READV", sock_call::READV.into()),
        ("KSIGHT_SOCK_CALL_WRITEV", sock_call::WRITEV.into()),
        ("KSIGHT_SOCK_CALL_SENDTO", sock_call::SENDTO.into()),
        ("KSIGHT_SOCK_CALL_RECVFROM", sock_call::RECVFROM.into()),
        ("KSIGHT_SOCK_CALL_SENDMSG", sock_call::SENDMSG.into()),
        ("KSIGHT_SOCK_CALL_RECVMSG", sock_call::RECVMSG.into()),
        ("KSIGHT_SOCK_CALL_SENDMMSG", sock_call::SENDMMSG.into()),
        ("KSIGHT_SOCK_CALL_RECVMMSG", sock_call::RECVMMSG.into()),
        ("KSIGHT_SOCK_CALL_SENDFILE", sock_call::SENDFILE.into()),
        ("KSIGHT_SOCK_CALL_SPLICE", sock_call::SPLICE.into()),
        (
            "KSIGHT_SOCK_FLAG_PEER_FROM_CALL",
            sock_flags::PEER_FROM_CALL.into(),
        ),
        ("KSIGHT_SOCK_FLAG_NO_ENTRY", sock_flags::NO_ENTRY.into()),
        (
            "KSIGHT_SOCK_FLAG_PAYLOAD_FAULT",
            sock_flags::PAYLOAD_FAULT.into(),
        ),
        ("KSIGHT_MAX_SNAPLEN", MAX_SNAPLEN as i128),
        ("KSIGHT_DEFAULT_SNAPLEN", DEFAULT_SNAPLEN as i128),
        ("KSIGHT_MAX_MMSG", MAX_MMSG as i128),
        ("KSIGHT_MAX_IOV", event_abi::MAX_IOV as i128),
        // A function-like macro: checked at payload lengths around the 8-byte rounding.
        ("KSIGHT_SOCK_IO_SIZE(0)", sock_io_size(0) as i128),
        ("KSIGHT_SOCK_IO_SIZE(1)", sock_io_size(1) as i128),
        ("KSIGHT_SOCK_IO_SIZE(7)", sock_io_size(7) as i128),
        ("KSIGHT_SOCK_IO_SIZE(8)", sock_io_size(8) as i128),
        ("KSIGHT_SOCK_IO_SIZE(9)", sock_io_size(9) as i128),
        (
            "KSIGHT_SOCK_IO_SIZE(KSIGHT_MAX_SNAPLEN)",
            sock_io_size(MAX_SNAPLEN) as i128,
        ),
        ("KSIGHT_MAX_RECORD_SIZE", MAX_RECORD_SIZE as i128),
        ("KSIGHT_COUNTER_LOST", counter::LOST.into()),
        ("KSIGHT_COUNTER_EMITTED", counter::EMITTED.into()),
        ("KSIGHT_COUNTER_READ_ERRORS", counter::READ_ERRORS.into()),
        ("KSIGHT_COUNTER_FILTERED", counter::FILTERED.into()),
        ("KSIGHT_COUNTER_COUNT", counter::COUNT.into()),
        // kmod-c/ksight_dev.h
        ("KSIGHT_DEV_VERSION_MAJOR", uapi::DEV_VERSION_MAJOR.into()),
        ("KSIGHT_DEV_VERSION_MINOR", uapi::DEV_VERSION_MINOR.into()),
        ("KSIGHT_DEV_VERSION", uapi::DEV_VERSION.into()),
        ("KSIGHT_STATS_SLOTS", uapi::STATS_SLOTS as i128),
        ("KSIGHT_RING_BYTES_MIN", uapi::RING_BYTES_MIN.into()),
        ("KSIGHT_RING_BYTES_MAX", uapi::RING_BYTES_MAX.into()),
        ("KSIGHT_RING_BYTES_DEFAULT", uapi::RING_BYTES_DEFAULT.into()),
        ("KSIGHT_IOC_MAGIC", uapi::IOC_MAGIC.into()),
        ("KSIGHT_IOC_VERSION", uapi::IOC_VERSION.into()),
        ("KSIGHT_IOC_GEOMETRY", uapi::IOC_GEOMETRY.into()),
        ("KSIGHT_IOC_SET_KINDS", uapi::IOC_SET_KINDS.into()),
        ("KSIGHT_IOC_START", uapi::IOC_START.into()),
        ("KSIGHT_IOC_STOP", uapi::IOC_STOP.into()),
        ("KSIGHT_IOC_STATS", uapi::IOC_STATS.into()),
        ("KSIGHT_IOC_SET_WATERMARK", uapi::IOC_SET_WATERMARK.into()),
        (
            "KSIGHT_IOC_SET_IGNORED_CGROUPS",
            uapi::IOC_SET_IGNORED_CGROUPS.into(),
        ),
        ("KSIGHT_STATS_V1_SIZE", uapi::STATS_V1_SIZE as i128),
        ("KSIGHT_IOC_STATS_V1", uapi::IOC_STATS_V1.into()),
        ("KSIGHT_IOC_SET_SNAPLEN", uapi::IOC_SET_SNAPLEN.into()),
        (
            "KSIGHT_IGNORED_CGROUPS_MAX",
            uapi::IGNORED_CGROUPS_MAX.into(),
        ),
    ]
}

/// Macros in the header that are not ABI constants.
const NOT_CONSTANTS: &[&str] = &["KSIGHT_ABI_H", "KSIGHT_DEV_H"];

/// The device interface header (it includes ksight_abi.h).
fn dev_header_path() -> PathBuf {
    header_path().with_file_name("ksight_dev.h")
}

fn header_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmod-c/ksight_abi.h")
}

/// The values Rust computes, as `name -> value` lines.
fn rust_lines(records: &[Record], constants: &[(&str, i128)]) -> BTreeMap<String, String> {
    let mut lines = BTreeMap::new();
    for r in records {
        lines.insert(format!("{}.size", r.c_name), r.size.to_string());
        lines.insert(format!("{}.align", r.c_name), r.align.to_string());
        for f in &r.fields {
            let p = format!("{}.{}", r.c_name, f.name);
            lines.insert(format!("{p}.offset"), f.offset.to_string());
            lines.insert(format!("{p}.size"), f.size.to_string());
            lines.insert(format!("{p}.type"), f.desc.render());
        }
    }
    for (name, value) in constants {
        lines.insert(name.to_string(), value.to_string());
    }
    lines
}

/// The C program printing the same lines, generated from the same table.
fn c_program(records: &[Record], constants: &[(&str, i128)]) -> String {
    let mut c = String::from(
        "#include <stddef.h>\n\
         #include <stdio.h>\n\
         #include \"ksight_abi.h\"\n\
         #include \"ksight_dev.h\"\n\
         \n\
         /* 'u' or 'i' for an integer type, '?' for anything else (plain char included). */\n\
         #define KS_SIGN(x) _Generic((x), \\\n\
         \tunsigned char: 'u', unsigned short: 'u', unsigned int: 'u', \\\n\
         \tunsigned long: 'u', unsigned long long: 'u', \\\n\
         \tsigned char: 'i', short: 'i', int: 'i', long: 'i', long long: 'i', \\\n\
         \tdefault: '?')\n\
         \n\
         int main(void)\n\
         {\n",
    );
    for r in records {
        let s = format!("struct {}", r.c_name);
        writeln!(
            c,
            "\tprintf(\"%s %zu\\n\", \"{0}.size\", sizeof({s}));",
            r.c_name
        )
        .unwrap();
        writeln!(
            c,
            "\tprintf(\"%s %zu\\n\", \"{0}.align\", _Alignof({s}));",
            r.c_name
        )
        .unwrap();
        for f in &r.fields {
            let p = format!("{}.{}", r.c_name, f.name);
            let e = format!("((({s} *)0)->{})", f.name);
            writeln!(
                c,
                "\tprintf(\"%s %zu\\n\", \"{p}.offset\", offsetof({s}, {}));",
                f.name
            )
            .unwrap();
            writeln!(c, "\tprintf(\"%s %zu\\n\", \"{p}.size\", sizeof{e});").unwrap();
            match f.desc {
                Desc::Int { .. } => writeln!(
                    c,
                    "\tprintf(\"%s %c%zu\\n\", \"{p}.type\", KS_SIGN({e}), 8 * sizeof{e});"
                ),
                Desc::IntArray { .. } => writeln!(
                    c,
                    "\tprintf(\"%s %c%zu[%zu]\\n\", \"{p}.type\", KS_SIGN({e}[0]), \
                     8 * sizeof({e}[0]), sizeof{e} / sizeof({e}[0]));"
                ),
                Desc::Struct(name) => writeln!(
                    c,
                    "\tprintf(\"%s %s\\n\", \"{p}.type\", \
                     _Generic({e}, struct {name}: \"struct {name}\", default: \"(another type)\"));"
                ),
            }
            .unwrap();
        }
    }
    for (name, _) in constants {
        writeln!(
            c,
            "\tprintf(\"%s %lld\\n\", \"{name}\", (long long)({name}));"
        )
        .unwrap();
    }
    c.push_str("\treturn fflush(stdout) != 0 || ferror(stdout);\n}\n");
    c
}

/// Checks the table against itself: fields laid end to end cover each struct exactly.
fn table_problems(records: &[Record]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in records {
        let mut fields: Vec<&Field> = r.fields.iter().collect();
        fields.sort_by_key(|f| f.offset);
        let mut end = 0;
        for f in &fields {
            if f.offset != end {
                problems.push(format!(
                    "{}: field `{}` starts at {} but the previous field ends at {} \
                     (implicit padding or a field missing from the table)",
                    r.rust_name, f.name, f.offset, end
                ));
            }
            end = f.offset + f.size;
        }
        let sum: usize = r.fields.iter().map(|f| f.size).sum();
        if sum != r.size || end != r.size {
            problems.push(format!(
                "{}: field sizes (padding fields included) add up to {sum} and end at {end}, \
                 but size_of is {}",
                r.rust_name, r.size
            ));
        }
        if r.size % 8 != 0 {
            problems.push(format!(
                "{}: size {} is not a multiple of 8",
                r.rust_name, r.size
            ));
        }
    }
    problems
}

/// Checks that everything the header defines is in the table.
fn header_coverage_problems(
    header: &str,
    records: &[Record],
    constants: &[(&str, i128)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for line in header.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#define ") {
            let name = rest
                .split(|c: char| c.is_whitespace() || c == '(')
                .next()
                .unwrap_or("");
            // A function-like macro is checked as calls: `NAME(args)` rows.
            if name.starts_with("KSIGHT_")
                && !NOT_CONSTANTS.contains(&name)
                && !constants
                    .iter()
                    .any(|(n, _)| n.split('(').next() == Some(name))
            {
                problems.push(format!(
                    "the header defines `{name}`, which this test's constant table does not check"
                ));
            }
        }
        if let Some(rest) = line.strip_prefix("struct ")
            && rest.trim_end().ends_with('{')
        {
            let name = rest.trim_end_matches('{').trim();
            if !records.iter().any(|r| r.c_name == name) {
                problems.push(format!(
                    "the header defines `struct {name}`, which this test's record table does not check"
                ));
            }
        }
    }
    problems
}

/// A fresh directory under the system temp dir, removed unless the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("ksight-c-layout-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("c_layout: kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A stand-in for the kernel's `<linux/types.h>` (x86_64/arm64 kernel types), so the
/// header's `__KERNEL__` branch is compiled and checked as well.
const KERNEL_TYPES_SHIM: &str = "\
#ifndef KSIGHT_TEST_LINUX_TYPES_H
#define KSIGHT_TEST_LINUX_TYPES_H
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;
#endif
";

/// Compiles and runs the program; returns its `name -> value` lines.
fn compile_and_run(dir: &Path, source: &Path, kernel: bool) -> BTreeMap<String, String> {
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let exe = dir.join(if kernel {
        "layout-kernel"
    } else {
        "layout-user"
    });
    let include = header_path().parent().unwrap().to_path_buf();
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-std=c11",
        "-pedantic",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O0",
    ])
    .arg("-I")
    .arg(&include);
    if kernel {
        let shim = dir.join("kernel-include");
        std::fs::create_dir_all(shim.join("linux")).unwrap();
        std::fs::write(shim.join("linux/types.h"), KERNEL_TYPES_SHIM).unwrap();
        cmd.arg("-D__KERNEL__").arg("-I").arg(&shim);
    }
    cmd.arg(source).arg("-o").arg(&exe);
    let mode = if kernel { "__KERNEL__" } else { "user space" };
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run the C compiler {:?}: {e}. This test needs one to check \
             kmod-c/ksight_abi.h against event-abi: install gcc (or set CC).",
            cc
        )
    });
    assert!(
        out.status.success(),
        "compiling the layout program ({mode}) against {} failed ({}); a field or constant \
         the Rust table names is probably missing or misspelled in the header:\n{}",
        header_path().display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    assert!(
        run.status.success(),
        "{} ({mode}) failed: {}\n{}",
        exe.display(),
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8(run.stdout).expect("layout program printed non-UTF-8");
    let mut lines = BTreeMap::new();
    for line in text.lines() {
        let (name, value) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("malformed line from the layout program: {line:?}"));
        let old = lines.insert(name.to_string(), value.to_string());
        assert!(old.is_none(), "the layout program printed `{name}` twice");
    }
    lines
}

fn mismatches(c: &BTreeMap<String, String>, rust: &BTreeMap<String, String>) -> Vec<String> {
    let missing = "<not printed>".to_string();
    let mut names: Vec<&String> = c.keys().chain(rust.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let cv = c.get(name).unwrap_or(&missing);
            let rv = rust.get(name).unwrap_or(&missing);
            (cv != rv).then(|| format!("{name}: C {cv}, Rust {rv}"))
        })
        .collect()
}

#[test]
fn c_header_matches_event_abi() {
    let records = records();
    let constants = constants();

    let mut problems = table_problems(&records);
    let mut header = String::new();
    for path in [header_path(), dev_header_path()] {
        header += &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    }
    problems.extend(header_coverage_problems(&header, &records, &constants));

    let dir = TempDir::new();
    let source = dir.0.join("layout.c");
    std::fs::write(&source, c_program(&records, &constants)).unwrap();
    let rust = rust_lines(&records, &constants);
    for kernel in [false, true] {
        let c = compile_and_run(&dir.0, &source, kernel);
        let mode = if kernel { "__KERNEL__" } else { "user space" };
        problems.extend(
            mismatches(&c, &rust)
                .into_iter()
                .map(|m| format!("[{mode}] {m}")),
        );
    }

    assert!(
        problems.is_empty(),
        "kmod-c/ksight_abi.h or ksight_dev.h and their Rust side (event-abi, backend-kmod/src/uapi.rs) disagree ({} problem(s)):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The comparison itself must notice a difference, or the test above proves nothing.
#[test]
fn mismatches_are_reported_with_both_values() {
    let c = BTreeMap::from([
        ("a.size".to_string(), "8".to_string()),
        ("only_c".to_string(), "1".to_string()),
    ]);
    let rust = BTreeMap::from([
        ("a.size".to_string(), "16".to_string()),
        ("only_rust".to_string(), "2".to_string()),
    ]);
    assert_eq!(
        mismatches(&c, &rust),
        [
            "a.size: C 8, Rust 16",
            "only_c: C 1, Rust <not printed>",
            "only_rust: C <not printed>, Rust 2",
        ]
    );
}

#[test]
fn coverage_scan_finds_unchecked_definitions() {
    let header =
        "#define KSIGHT_NEW_THING 3\nstruct ksight_new_event {\n};\n#define KSIGHT_ABI_H\n";
    let problems = header_coverage_problems(header, &records(), &constants());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("KSIGHT_NEW_THING"));
    assert!(problems[1].contains("struct ksight_new_event"));
}
