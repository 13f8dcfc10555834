//! Turns tracefs format files and kernel BTF into the offset globals the programs read,
//! and into notes on what each program will not be able to fill.

use std::{path::Path, sync::LazyLock};

use event_abi::{
    kind,
    kinds::{EntryHook, KINDS, KindDef, Tracepoint},
};

use crate::{
    btf::{Expect, KernelBtf},
    layout::{
        MISSING, RWBS_MAX, TP_COPY_LEN, btf, tp_block, tp_exec, tp_exit, tp_tcp, tuple_layout,
    },
    tracefs::{self, Format, FormatError},
};

pub(crate) use event_abi::kinds::Attach;

/// One program and the tracepoint it serves: a row of `event_abi::kinds::KINDS` (its
/// main hook, or with `entry` its entry hook) and the offsets global the loader fills for it.
#[derive(Debug)]
pub(crate) struct TpDef {
    /// The record kind's row: program name, tracepoint, attach type.
    pub row: &'static KindDef,
    /// The row's entry hook rather than its main one (which emits the records).
    pub entry: Option<&'static EntryHook>,
    /// Name of its offsets global and that global's length (0: none).
    pub global: &'static str,
    pub global_len: usize,
}

impl TpDef {
    /// Program (function) name in the object.
    pub fn program(&self) -> &'static str {
        self.entry.map_or(self.row.ebpf_program, |e| e.ebpf_program)
    }

    fn tracepoint(&self) -> Tracepoint {
        self.entry.map_or(self.row.tracepoint, |e| e.tracepoint)
    }

    pub fn category(&self) -> &'static str {
        self.tracepoint().category
    }

    pub fn name(&self) -> &'static str {
        self.tracepoint().name
    }

    pub fn attach(&self) -> Attach {
        self.entry.map_or(self.row.ebpf_attach, |e| e.ebpf_attach)
    }

    /// Record kind the program emits (for an entry hook, the kind it times).
    pub fn kind(&self) -> u16 {
        self.row.kind
    }

    pub fn full_name(&self) -> String {
        self.tracepoint().to_string()
    }
}

/// The offsets global a program reads, by record kind: what the loader resolves from the
/// tracepoint's format file (raw tracepoints read `TP_PROTO` and need none).
const fn offsets_global(k: u16) -> (&'static str, usize) {
    use crate::layout::*;
    match k {
        kind::EXEC => (G_TP_EXEC, tp_exec::LEN),
        kind::EXIT => (G_TP_EXIT, tp_exit::LEN),
        kind::TCP_STATE => (G_TP_SOCK_STATE, tp_tcp::LEN),
        kind::TCP_RETRANSMIT => (G_TP_TCP_RETRANSMIT, tp_tcp::LEN),
        kind::TCP_RESET_SENT => (G_TP_TCP_SEND_RESET, tp_tcp::LEN),
        kind::TCP_RESET_RECEIVED => (G_TP_TCP_RECEIVE_RESET, tp_tcp::LEN),
        kind::BLOCK_QUEUE => (G_TP_BLOCK_BIO_QUEUE, tp_block::LEN),
        kind::BLOCK_ISSUE => (G_TP_BLOCK_RQ_ISSUE, tp_block::LEN),
        kind::BLOCK_COMPLETE => (G_TP_BLOCK_RQ_COMPLETE, tp_block::LEN),
        _ => ("", 0),
    }
}

/// Every program, in kind order: one per row of `event_abi::kinds::KINDS`, followed by
/// the row's entry hook where it has one.
pub(crate) static TRACEPOINTS: LazyLock<Vec<TpDef>> = LazyLock::new(|| {
    KINDS
        .iter()
        .flat_map(|row| {
            let (global, global_len) = offsets_global(row.kind);
            let main = TpDef {
                row,
                entry: None,
                global,
                global_len,
            };
            let entry = row.entry.as_ref().map(|e| TpDef {
                row,
                entry: Some(e),
                global: "",
                global_len: 0,
            });
            std::iter::once(main).chain(entry)
        })
        .collect()
});

/// Kernel struct members the programs read: slot, struct, member path, expected type.
pub(crate) const BTF_FIELDS: [(usize, &str, &[&str], Expect); btf::LEN] = [
    (btf::TASK_PID, "task_struct", &["pid"], Expect::Int(4)),
    (btf::TASK_TGID, "task_struct", &["tgid"], Expect::Int(4)),
    (
        btf::TASK_REAL_PARENT,
        "task_struct",
        &["real_parent"],
        Expect::Ptr,
    ),
    (
        btf::TASK_EXIT_CODE,
        "task_struct",
        &["exit_code"],
        Expect::Int(4),
    ),
    (btf::TASK_SIGNAL, "task_struct", &["signal"], Expect::Ptr),
    (
        btf::SIGNAL_LIVE,
        "signal_struct",
        &["live", "counter"],
        Expect::Int(4),
    ),
    (
        btf::SOCK_CGROUP,
        "sock",
        &["sk_cgrp_data", "cgroup"],
        Expect::Ptr,
    ),
    (btf::CGROUP_KN, "cgroup", &["kn"], Expect::Ptr),
    (btf::KERNFS_NODE_ID, "kernfs_node", &["id"], Expect::Int(8)),
    (
        btf::SOCK_STATE,
        "sock",
        &["__sk_common", "skc_state"],
        Expect::Int(1),
    ),
    (
        btf::TCP_BYTES_ACKED,
        "tcp_sock",
        &["bytes_acked"],
        Expect::Int(8),
    ),
    (
        btf::TCP_BYTES_RECEIVED,
        "tcp_sock",
        &["bytes_received"],
        Expect::Int(8),
    ),
    (btf::TCP_SEGS_IN, "tcp_sock", &["segs_in"], Expect::Int(4)),
    (btf::TCP_SEGS_OUT, "tcp_sock", &["segs_out"], Expect::Int(4)),
    (
        btf::TCP_TOTAL_RETRANS,
        "tcp_sock",
        &["total_retrans"],
        Expect::Int(4),
    ),
    (btf::TCP_SRTT_US, "tcp_sock", &["srtt_us"], Expect::Int(4)),
    (btf::TASK_FILES, "task_struct", &["files"], Expect::Ptr),
    (btf::FILES_FDT, "files_struct", &["fdt"], Expect::Ptr),
    (btf::FDT_MAX_FDS, "fdtable", &["max_fds"], Expect::Int(4)),
    (btf::FDT_FD, "fdtable", &["fd"], Expect::Ptr),
    (btf::FILE_INODE, "file", &["f_inode"], Expect::Ptr),
    (btf::INODE_MODE, "inode", &["i_mode"], Expect::Int(2)),
    (btf::FILE_PRIVATE, "file", &["private_data"], Expect::Ptr),
    (btf::SOCKET_SK, "socket", &["sk"], Expect::Ptr),
    (
        btf::SOCK_FAMILY,
        "sock",
        &["__sk_common", "skc_family"],
        Expect::Int(2),
    ),
    (
        btf::SOCK_NUM,
        "sock",
        &["__sk_common", "skc_num"],
        Expect::Int(2),
    ),
    (
        btf::SOCK_DPORT,
        "sock",
        &["__sk_common", "skc_dport"],
        Expect::Int(2),
    ),
    (
        btf::SOCK_RCV_SADDR,
        "sock",
        &["__sk_common", "skc_rcv_saddr"],
        Expect::Int(4),
    ),
    (
        btf::SOCK_DADDR,
        "sock",
        &["__sk_common", "skc_daddr"],
        Expect::Int(4),
    ),
    (
        btf::SOCK_V6_RCV_SADDR,
        "sock",
        &["__sk_common", "skc_v6_rcv_saddr"],
        Expect::Sized(16),
    ),
    (
        btf::SOCK_V6_DADDR,
        "sock",
        &["__sk_common", "skc_v6_daddr"],
        Expect::Sized(16),
    ),
    (btf::SOCK_PROTOCOL, "sock", &["sk_protocol"], Expect::Int(2)),
    (btf::REGS_ORIG_AX, "pt_regs", &["orig_ax"], Expect::Int(8)),
    (btf::REGS_DI, "pt_regs", &["di"], Expect::Int(8)),
    (btf::REGS_SI, "pt_regs", &["si"], Expect::Int(8)),
    (btf::REGS_DX, "pt_regs", &["dx"], Expect::Int(8)),
    (btf::REGS_R10, "pt_regs", &["r10"], Expect::Int(8)),
    (btf::REGS_R8, "pt_regs", &["r8"], Expect::Int(8)),
    (btf::REGS_R9, "pt_regs", &["r9"], Expect::Int(8)),
    (btf::SOCK_TYPE, "sock", &["sk_type"], Expect::Int(2)),
    (btf::REGS_CS, "pt_regs", &["cs"], Expect::AnyInt),
];

/// What the socket I/O programs cannot do without: finding the socket behind a file
/// descriptor, its identity and tuple, and the system call's number and arguments.
pub(crate) const SOCK_IO_SLOTS: [usize; 25] = [
    btf::REGS_CS,
    btf::SOCK_TYPE,
    btf::TASK_FILES,
    btf::FILES_FDT,
    btf::FDT_MAX_FDS,
    btf::FDT_FD,
    btf::FILE_INODE,
    btf::INODE_MODE,
    btf::FILE_PRIVATE,
    btf::SOCKET_SK,
    btf::SOCK_FAMILY,
    btf::SOCK_NUM,
    btf::SOCK_DPORT,
    btf::SOCK_RCV_SADDR,
    btf::SOCK_DADDR,
    btf::SOCK_V6_RCV_SADDR,
    btf::SOCK_V6_DADDR,
    btf::SOCK_PROTOCOL,
    btf::REGS_ORIG_AX,
    btf::REGS_DI,
    btf::REGS_SI,
    btf::REGS_DX,
    btf::REGS_R10,
    btf::REGS_R8,
    btf::REGS_R9,
];

/// The TCP close counters, in `tcp_stats` bit order.
pub(crate) const TCP_STATS_SLOTS: [usize; 6] = [
    btf::TCP_BYTES_ACKED,
    btf::TCP_BYTES_RECEIVED,
    btf::TCP_SEGS_IN,
    btf::TCP_SEGS_OUT,
    btf::TCP_TOTAL_RETRANS,
    btf::TCP_SRTT_US,
];

/// `struct.member.path` for a BTF slot.
pub(crate) fn btf_field_name(slot: usize) -> String {
    let (_, strukt, path, _) = BTF_FIELDS[slot];
    format!("{strukt}.{}", path.join("."))
}

/// Kernel struct member offsets, each with why it is missing when it is.
pub(crate) struct BtfOffsets {
    pub offsets: [u32; btf::LEN],
    pub errors: Vec<Option<String>>,
}

impl BtfOffsets {
    pub fn resolve() -> Self {
        let kernel = KernelBtf::open();
        let mut offsets = [MISSING; btf::LEN];
        let mut errors = vec![None; btf::LEN];
        for (slot, strukt, path, expect) in BTF_FIELDS {
            let res = match &kernel {
                Ok(k) => k.member_offset(strukt, path, expect),
                Err(e) => Err(format!("no kernel BTF ({e})")),
            };
            match res {
                Ok(off) => offsets[slot] = off,
                Err(e) => errors[slot] = Some(e),
            }
        }
        Self { offsets, errors }
    }

    pub fn ok(&self, slot: usize) -> bool {
        self.offsets[slot] != MISSING
    }

    /// "x unavailable: task_struct.tgid (reason)" for the first missing slot, if any.
    fn need(&self, slots: &[usize], what: &str, notes: &mut Vec<String>) -> bool {
        for &s in slots {
            if !self.ok(s) {
                let why = self.errors[s].as_deref().unwrap_or("unresolved");
                notes.push(format!("{what} unavailable: {} ({why})", btf_field_name(s)));
                return false;
            }
        }
        true
    }
}

/// What the loader learnt about one tracepoint.
pub(crate) struct TpResolution {
    pub def: &'static TpDef,
    /// The parsed format, or why there is none.
    pub format: Result<Format, FormatError>,
    /// Why the program must not be attached (a field it cannot do without is missing).
    pub blocking: Vec<String>,
    /// Record fields the program will leave 0 on this kernel.
    pub degraded: Vec<String>,
    /// Value of the program's offsets global.
    pub global: Vec<u32>,
}

/// Resolves every tracepoint against the formats under `tracefs` (None: not mounted).
pub(crate) fn resolve_all(tracefs: Option<&Path>, btf: &BtfOffsets) -> Vec<TpResolution> {
    TRACEPOINTS
        .iter()
        .map(|def| {
            let format = match tracefs {
                Some(root) => tracefs::read_format(root, def.category(), def.name()),
                None => Err(FormatError::Unreadable("tracefs is not mounted".into())),
            };
            let mut r = TpResolution {
                def,
                blocking: Vec::new(),
                degraded: Vec::new(),
                global: vec![MISSING; def.global_len],
                format,
            };
            match (&r.format, def.attach()) {
                // A raw tracepoint needs no format file, only the tracepoint itself, which
                // attaching will find or not.
                (_, Attach::Raw) => resolve_raw(&mut r, btf),
                (Ok(f), Attach::Classic) => {
                    let f = f.clone();
                    resolve_one(&mut r, &f, btf);
                }
                (Err(e), Attach::Classic) => r.blocking.push(e.to_string()),
            }
            r
        })
        .collect()
}

/// Looks up a field by name and checks its size; `copied` fields are read from the
/// programs' TP_COPY_LEN-byte copy of the record, so must end inside it.
fn field(
    f: &Format,
    name: &str,
    size_ok: impl Fn(u32) -> bool,
    copied: bool,
) -> Result<u32, String> {
    let fl = f.field(name).ok_or_else(|| format!("no `{name}` field"))?;
    if !size_ok(fl.size) {
        return Err(format!("`{name}` has unexpected size {}", fl.size));
    }
    if copied && (fl.offset + fl.size) as usize > TP_COPY_LEN {
        return Err(format!(
            "`{name}` lies past the first {TP_COPY_LEN} bytes of the record"
        ));
    }
    Ok(fl.offset)
}

fn resolve_raw(r: &mut TpResolution, btf: &BtfOffsets) {
    match r.def.kind() {
        // sched_process_fork: the child's pid and tgid are the record's whole point.
        kind::FORK => {
            btf.need(
                &[btf::TASK_PID, btf::TASK_TGID],
                "fork pids",
                &mut r.blocking,
            );
        }
        // The exit program finds the socket and the call's arguments through these; the
        // entry program needs only the system call number its tracepoint passes.
        kind::SOCK_IO if r.def.entry.is_none() => {
            if !cfg!(target_arch = "x86_64") {
                r.blocking
                    .push("socket I/O reads x86-64 system call registers".into());
            } else if btf.need(&SOCK_IO_SLOTS, "socket I/O", &mut r.blocking) {
                // Read in two copies: the head of the struct, and type with protocol (two
                // adjacent u16s).
                let head = crate::layout::SOCK_HEAD_LEN;
                for (slot, size) in [
                    (btf::SOCK_FAMILY, 2),
                    (btf::SOCK_NUM, 2),
                    (btf::SOCK_DPORT, 2),
                    (btf::SOCK_RCV_SADDR, 4),
                    (btf::SOCK_DADDR, 4),
                    (btf::SOCK_V6_RCV_SADDR, 16),
                    (btf::SOCK_V6_DADDR, 16),
                ] {
                    if btf.offsets[slot] as usize + size > head {
                        r.blocking.push(format!(
                            "{} lies past the first {head} bytes of struct sock",
                            btf_field_name(slot)
                        ));
                    }
                }
                let (t, p) = (btf.offsets[btf::SOCK_TYPE], btf.offsets[btf::SOCK_PROTOCOL]);
                if t.abs_diff(p) != 2 {
                    r.blocking.push(format!(
                        "{} is not next to {}",
                        btf_field_name(btf::SOCK_PROTOCOL),
                        btf_field_name(btf::SOCK_TYPE)
                    ));
                }
                for slot in [
                    btf::REGS_ORIG_AX,
                    btf::REGS_DI,
                    btf::REGS_SI,
                    btf::REGS_DX,
                    btf::REGS_R10,
                    btf::REGS_R8,
                    btf::REGS_R9,
                    btf::REGS_CS,
                ] {
                    if btf.offsets[slot] as usize + 8 > crate::layout::REGS_COPY_LEN {
                        r.blocking.push(format!(
                            "{} lies past the {} bytes of pt_regs copied",
                            btf_field_name(slot),
                            crate::layout::REGS_COPY_LEN
                        ));
                    }
                }
            }
        }
        _ => {}
    }
}

fn resolve_one(r: &mut TpResolution, f: &Format, btf: &BtfOffsets) {
    let g = &mut r.global;
    let degraded = &mut r.degraded;
    let blocking = &mut r.blocking;
    match r.def.kind() {
        kind::EXEC => {
            match f.field("filename") {
                Some(fl) if fl.ty.starts_with("__data_loc") && fl.size == 4 => {
                    g[tp_exec::FILENAME] = fl.offset;
                }
                Some(_) => degraded
                    .push("filename unavailable: `filename` is not a __data_loc string".into()),
                None => degraded.push("filename unavailable: no `filename` field".into()),
            }
            btf.need(&[btf::TASK_REAL_PARENT, btf::TASK_TGID], "ppid", degraded);
        }
        kind::EXIT => {
            btf.need(&[btf::TASK_EXIT_CODE], "exit status", degraded);
            match field(f, "group_dead", |s| s == 1, false) {
                Ok(off) => g[tp_exit::GROUP_DEAD] = off,
                // Older kernels: the program falls back to signal->live.
                Err(_) => {
                    btf.need(
                        &[btf::TASK_SIGNAL, btf::SIGNAL_LIVE],
                        "group_dead",
                        degraded,
                    );
                }
            }
        }
        kind::TCP_STATE
        | kind::TCP_RETRANSMIT
        | kind::TCP_RESET_SENT
        | kind::TCP_RESET_RECEIVED => {
            let is_state = r.def.kind() == kind::TCP_STATE;
            let mut put = |slot: usize, name: &str, size: u32, required: bool| match field(
                f,
                name,
                |s| s == size,
                true,
            ) {
                Ok(off) => {
                    g[slot] = off;
                    true
                }
                Err(e) => {
                    if required {
                        blocking.push(e);
                    }
                    false
                }
            };
            let have_sk = put(tp_tcp::SKADDR, "skaddr", 8, is_state);
            if is_state {
                put(tp_tcp::OLDSTATE, "oldstate", 4, true);
                put(tp_tcp::NEWSTATE, "newstate", 4, true);
                put(tp_tcp::PROTOCOL, "protocol", 2, true);
            } else {
                if !have_sk {
                    degraded.push("socket address unavailable: no `skaddr` field".into());
                }
                let have_state = put(tp_tcp::STATE, "state", 4, false);
                if !have_state {
                    if have_sk {
                        btf.need(&[btf::SOCK_STATE], "state", degraded);
                    } else {
                        degraded.push("state unavailable: no `state` or `skaddr` field".into());
                    }
                }
            }
            if have_sk {
                btf.need(
                    &[btf::SOCK_CGROUP, btf::CGROUP_KN, btf::KERNFS_NODE_ID],
                    "socket cgroup",
                    degraded,
                );
            }
            resolve_tuple(g, f, degraded);
        }
        kind::BLOCK_QUEUE | kind::BLOCK_ISSUE | kind::BLOCK_COMPLETE => {
            for (slot, name, size) in [
                (tp_block::DEV, "dev", 4),
                (tp_block::SECTOR, "sector", 8),
                (tp_block::NR_SECTOR, "nr_sector", 4),
            ] {
                match field(f, name, |s| s == size, true) {
                    Ok(off) => g[slot] = off,
                    Err(e) => blocking.push(e),
                }
            }
            match field(f, "rwbs", |s| s > 0, true) {
                Ok(off) => {
                    g[tp_block::RWBS] = off;
                    let size = f.field("rwbs").map_or(0, |fl| fl.size);
                    g[tp_block::RWBS_LEN] = size.min(RWBS_MAX as u32);
                }
                Err(e) => degraded.push(format!("operation unavailable: {e}")),
            }
            if r.def.kind() == kind::BLOCK_COMPLETE {
                match field(f, "error", |s| s == 4, true) {
                    Ok(off) => g[tp_block::ERROR] = off,
                    Err(e) => degraded.push(format!("completion error unavailable: {e}")),
                }
            }
        }
        _ => unreachable!("every classic tracepoint's kind is handled"),
    }
}

/// Picks the address layout of a TCP tracepoint from its format.
fn resolve_tuple(g: &mut [u32], f: &Format, degraded: &mut Vec<String>) {
    let two = |name: &str| field(f, name, |s| s == 2, true);
    let sized = |name: &str, n: u32| field(f, name, move |s| s == n, true);
    if let (Ok(sport), Ok(dport), Ok(family), Ok(saddr), Ok(daddr)) = (
        two("sport"),
        two("dport"),
        two("family"),
        sized("saddr", 4),
        sized("daddr", 4),
    ) {
        g[tp_tcp::TUPLE_LAYOUT] = tuple_layout::FIELDS;
        g[tp_tcp::SPORT] = sport;
        g[tp_tcp::DPORT] = dport;
        g[tp_tcp::FAMILY] = family;
        g[tp_tcp::SADDR] = saddr;
        g[tp_tcp::DADDR] = daddr;
        match (sized("saddr_v6", 16), sized("daddr_v6", 16)) {
            (Ok(s6), Ok(d6)) => {
                g[tp_tcp::SADDR6] = s6;
                g[tp_tcp::DADDR6] = d6;
            }
            (Err(e), _) | (_, Err(e)) => degraded.push(format!("IPv6 addresses unavailable: {e}")),
        }
        return;
    }
    // Newer tcp_send_reset: struct sockaddr_in6-sized arrays (28 bytes).
    let sockaddr = |name: &str| field(f, name, |s| s >= 28, true);
    if let (Ok(saddr), Ok(daddr)) = (sockaddr("saddr"), sockaddr("daddr")) {
        g[tp_tcp::TUPLE_LAYOUT] = tuple_layout::SOCKADDR;
        g[tp_tcp::SADDR] = saddr;
        g[tp_tcp::DADDR] = daddr;
        return;
    }
    g[tp_tcp::TUPLE_LAYOUT] = tuple_layout::NONE;
    degraded.push("connection tuple unavailable: unknown address layout".into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefs::parse_format;

    fn all_btf() -> BtfOffsets {
        BtfOffsets {
            offsets: std::array::from_fn(|i| 100 + i as u32),
            errors: vec![None; btf::LEN],
        }
    }

    fn resolve_text(def_index: usize, text: &str, btf: &BtfOffsets) -> TpResolution {
        let def = &TRACEPOINTS[def_index];
        let format = parse_format(text).unwrap();
        let mut r = TpResolution {
            def,
            blocking: Vec::new(),
            degraded: Vec::new(),
            global: vec![MISSING; def.global_len],
            format: Ok(format.clone()),
        };
        resolve_one(&mut r, &format, btf);
        r
    }

    fn line(decl: &str, off: u32, size: u32) -> String {
        format!("\tfield:{decl};\toffset:{off};\tsize:{size};\tsigned:0;\n")
    }

    #[test]
    fn send_reset_sockaddr_layout() {
        let text = [
            line("const void * skbaddr", 8, 8),
            line("const void * skaddr", 16, 8),
            line("int state", 24, 4),
            line("__u8 saddr[28]", 32, 28),
            line("__u8 daddr[28]", 60, 28),
        ]
        .concat();
        let r = resolve_text(5, &text, &all_btf());
        assert!(
            r.blocking.is_empty() && r.degraded.is_empty(),
            "{:?} {:?}",
            r.blocking,
            r.degraded
        );
        assert_eq!(r.global[tp_tcp::TUPLE_LAYOUT], tuple_layout::SOCKADDR);
        assert_eq!((r.global[tp_tcp::SADDR], r.global[tp_tcp::DADDR]), (32, 60));
        assert_eq!(r.global[tp_tcp::STATE], 24);
        assert_eq!(r.global[tp_tcp::SPORT], MISSING);
    }

    #[test]
    fn receive_reset_without_state_falls_back_to_btf() {
        let text = [
            line("const void * skaddr", 8, 8),
            line("__u16 sport", 16, 2),
            line("__u16 dport", 18, 2),
            line("__u16 family", 20, 2),
            line("__u8 saddr[4]", 22, 4),
            line("__u8 daddr[4]", 26, 4),
            line("__u8 saddr_v6[16]", 30, 16),
            line("__u8 daddr_v6[16]", 46, 16),
        ]
        .concat();
        let r = resolve_text(6, &text, &all_btf());
        assert!(r.degraded.is_empty(), "{:?}", r.degraded);
        assert_eq!(r.global[tp_tcp::TUPLE_LAYOUT], tuple_layout::FIELDS);
        assert_eq!(r.global[tp_tcp::STATE], MISSING);

        let mut btf = all_btf();
        btf.offsets[btf::SOCK_STATE] = MISSING;
        btf.errors[btf::SOCK_STATE] = Some("gone".into());
        let r = resolve_text(6, &text, &btf);
        assert_eq!(r.degraded.len(), 1);
        assert!(
            r.degraded[0].contains("sock.__sk_common.skc_state"),
            "{}",
            r.degraded[0]
        );
    }

    #[test]
    fn sock_state_requires_protocol_and_states() {
        let text = [
            line("const void * skaddr", 8, 8),
            line("int oldstate", 16, 4),
        ]
        .concat();
        let r = resolve_text(3, &text, &all_btf());
        assert_eq!(r.blocking.len(), 2, "{:?}", r.blocking);
    }

    #[test]
    fn block_rwbs_length_is_clamped_and_fields_past_copy_are_rejected() {
        let text = [
            line("dev_t dev", 8, 4),
            line("sector_t sector", 16, 8),
            line("unsigned int nr_sector", 24, 4),
            line("char rwbs[16]", 28, 16),
            line("int error", 200, 4),
        ]
        .concat();
        let r = resolve_text(9, &text, &all_btf());
        assert!(r.blocking.is_empty());
        assert_eq!(r.global[tp_block::RWBS_LEN], RWBS_MAX as u32);
        assert_eq!(r.global[tp_block::ERROR], MISSING);
        assert_eq!(r.degraded.len(), 1);
    }
}
