//! The columns of each table, as types. Sorting names a column of its view's enum, never
//! a position on screen: hiding a column on a narrow terminal cannot change what a sort
//! means.

use std::fmt::Debug;

pub trait Column: Copy + Eq + Debug + 'static {
    /// Every column, in display order.
    const ALL: &'static [Self];
    fn title(self) -> &'static str;
    /// Columns needed; the growing column takes this much at least.
    fn width(self) -> u16;
    /// Lower is more important: narrow terminals drop the least important first.
    fn priority(self) -> u8;
    /// The one column that takes the width left over (a name or command line).
    fn grows(self) -> bool {
        false
    }
    /// Numbers are right-aligned and sort largest first by default.
    fn numeric(self) -> bool;
    /// Where a cell too long for the column is cut.
    fn cut(self) -> Cut {
        if self.grows() { Cut::Left } else { Cut::Right }
    }
}

/// Which part of a too-long cell is replaced by `…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Keep the start (names).
    Right,
    /// Keep the end (paths and command lines say the most there).
    Left,
    /// Owner names: keep both ends (see `fmt::truncate_name`).
    Name,
}

/// The columns that fit in `width` cells (one cell between columns), in display order.
pub fn fit<C: Column>(width: u16) -> Vec<C> {
    let mut by_priority: Vec<C> = C::ALL.to_vec();
    by_priority.sort_by_key(|c| c.priority());
    let mut used: u16 = 0;
    let mut chosen = Vec::new();
    for c in by_priority {
        let need = c.width() + u16::from(!chosen.is_empty());
        if used.saturating_add(need) <= width {
            used += need;
            chosen.push(c);
        }
    }
    C::ALL
        .iter()
        .copied()
        .filter(|c| chosen.contains(c))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortBy<C> {
    pub column: C,
    pub descending: bool,
}

impl<C: Column> SortBy<C> {
    pub fn new(column: C) -> Self {
        Self {
            column,
            descending: column.numeric(),
        }
    }

    /// The next (or previous) column, with that column's natural direction.
    pub fn step(self, forward: bool) -> Self {
        let all = C::ALL;
        let i = all.iter().position(|&c| c == self.column).unwrap_or(0);
        let next = if forward {
            (i + 1) % all.len()
        } else {
            (i + all.len() - 1) % all.len()
        };
        Self::new(all[next])
    }

    pub fn reversed(self) -> Self {
        Self {
            descending: !self.descending,
            ..self
        }
    }

    pub fn arrow(self) -> &'static str {
        if self.descending { "▼" } else { "▲" }
    }
}

macro_rules! columns {
    ($name:ident { $($(#[$doc:meta])* $variant:ident => ($title:literal, $width:literal, $prio:literal, $kind:ident)),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$doc])* $variant),* }

        impl Column for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),*];
            fn title(self) -> &'static str {
                match self { $(Self::$variant => $title),* }
            }
            fn width(self) -> u16 {
                match self { $(Self::$variant => $width),* }
            }
            fn priority(self) -> u8 {
                match self { $(Self::$variant => $prio),* }
            }
            fn grows(self) -> bool {
                match self { $(Self::$variant => columns!(@grows $kind)),* }
            }
            fn numeric(self) -> bool {
                match self { $(Self::$variant => columns!(@numeric $kind)),* }
            }
            fn cut(self) -> Cut {
                match self { $(Self::$variant => columns!(@cut $kind)),* }
            }
        }
    };
    (@grows grow) => { true };
    (@grows grow_owner) => { true };
    (@grows $other:ident) => { false };
    (@cut grow) => { Cut::Left };
    (@cut grow_owner) => { Cut::Name };
    (@cut owner) => { Cut::Name };
    (@cut $other:ident) => { Cut::Right };
    (@numeric num) => { true };
    (@numeric $other:ident) => { false };
}

columns!(ProcCol {
    Pid => ("PID", 7, 0, num),
    Ppid => ("PPID", 7, 11, num),
    Comm => ("COMM", 15, 1, text),
    ExecRate => ("EXEC/s", 7, 3, num),
    ForkRate => ("FORK/s", 7, 4, num),
    Exit => ("EXIT", 5, 5, num),
    Life => ("LIFE", 7, 6, num),
    TcpTx => ("TCP TX", 7, 7, num),
    TcpRx => ("TCP RX", 7, 8, num),
    DiskRead => ("DISK R", 7, 9, num),
    DiskWrite => ("DISK W", 7, 10, num),
    Cgroup => ("CGROUP", 8, 13, num),
    /// The cgroup's owner (container, pod, unit), as in the Containers view.
    Owner => ("OWNER", 20, 12, owner),
    Command => ("COMMAND", 10, 2, grow),
});

columns!(CgroupCol {
    Id => ("CGROUP", 8, 1, num),
    Procs => ("PROCS", 6, 10, num),
    ExecRate => ("EXEC/s", 7, 2, num),
    ForkRate => ("FORK/s", 7, 3, num),
    ExitRate => ("EXIT/s", 7, 4, num),
    Conns => ("CONNS", 6, 9, num),
    TcpTx => ("TCP TX", 7, 5, num),
    TcpRx => ("TCP RX", 7, 6, num),
    DiskRead => ("DISK R", 7, 7, num),
    DiskWrite => ("DISK W", 7, 8, num),
    /// The Kubernetes workload (`Deployment/web`); the first column narrow terminals drop.
    Workload => ("WORKLOAD", 16, 11, owner),
    /// Who the cgroup belongs to (`namespace/pod/container`, `runtime:id`, the systemd
    /// unit, or the path), or the group's name when grouped.
    Owner => ("OWNER", 12, 0, grow_owner),
});

columns!(ConnCol {
    Local => ("LOCAL", 21, 8, text),
    Remote => ("REMOTE", 21, 1, text),
    State => ("STATE", 10, 4, text),
    Pid => ("PID", 7, 9, num),
    Comm => ("COMM", 15, 0, text),
    Cgroup => ("CGROUP", 8, 13, num),
    Tx => ("TX", 6, 2, num),
    Rx => ("RX", 6, 3, num),
    TxRate => ("TX/s", 6, 10, num),
    RxRate => ("RX/s", 6, 11, num),
    Retransmits => ("RETX", 5, 6, num),
    Resets => ("RST", 4, 7, num),
    Duration => ("DUR", 7, 5, num),
    Age => ("CLOSED", 7, 12, num),
});

columns!(UdpCol {
    Local => ("LOCAL", 21, 6, text),
    Remote => ("REMOTE", 21, 1, text),
    Pid => ("PID", 7, 7, num),
    Comm => ("COMM", 15, 0, text),
    Cgroup => ("CGROUP", 8, 10, num),
    TxRate => ("TX/s", 7, 2, num),
    RxRate => ("RX/s", 7, 3, num),
    OutRate => ("DGR↑/s", 7, 4, num),
    InRate => ("DGR↓/s", 7, 5, num),
    Tx => ("TX", 6, 8, num),
    Rx => ("RX", 6, 9, num),
});

columns!(DnsCol {
    Role => ("ROLE", 6, 6, text),
    Server => ("SERVER", 21, 4, text),
    Qname => ("QNAME", 16, 0, grow),
    Qtype => ("TYPE", 5, 1, text),
    Rcode => ("RCODE", 8, 2, text),
    Rate => ("Q/s", 6, 3, num),
    Count => ("COUNT", 7, 5, num),
    P50 => ("P50", 7, 7, num),
    P99 => ("P99", 7, 8, num),
    Timeouts => ("TMOUT", 5, 9, num),
    Cgroup => ("CGROUP", 8, 10, num),
});

columns!(ReqCol {
    /// Who the cgroup belongs to, as in the Containers view.
    Owner => ("OWNER", 18, 1, owner),
    Proto => ("PROTO", 8, 5, text),
    Role => ("ROLE", 6, 6, text),
    /// The HTTP route, or the Redis command or SQL verb.
    Route => ("ROUTE/CMD", 16, 0, grow),
    Rate => ("REQ/s", 6, 2, num),
    ErrPct => ("ERR%", 5, 3, num),
    P50 => ("P50", 7, 7, num),
    P99 => ("P99", 7, 4, num),
    Count => ("COUNT", 7, 8, num),
    Errors => ("ERR", 5, 9, num),
    /// Methods by count (HTTP).
    Method => ("METHOD", 9, 11, text),
    /// Statuses (HTTP, gRPC) or error codes (commands) by count.
    Status => ("STATUS", 14, 10, text),
    Cgroup => ("CGROUP", 8, 12, num),
});

columns!(DiskCol {
    Device => ("DEV", 7, 7, text),
    Name => ("NAME", 10, 0, text),
    Iops => ("IOPS", 6, 1, num),
    ReadRate => ("READ/s", 7, 2, num),
    WriteRate => ("WRITE/s", 8, 3, num),
    P50 => ("P50", 7, 4, num),
    P99 => ("P99", 7, 5, num),
    Max => ("MAX", 7, 6, num),
    Errors => ("ERR", 4, 8, num),
    Read => ("READ", 6, 9, num),
    Written => ("WRITTEN", 8, 10, num),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_terminals_keep_the_important_columns_in_order() {
        let cols = fit::<ProcCol>(80);
        assert_eq!(cols.first(), Some(&ProcCol::Pid));
        assert_eq!(cols.last(), Some(&ProcCol::Command));
        assert!(cols.contains(&ProcCol::ExecRate));
        let width: u16 = cols.iter().map(|c| c.width() + 1).sum::<u16>() - 1;
        assert!(width <= 80, "{width}");
        assert_eq!(fit::<ProcCol>(400), ProcCol::ALL);
        assert_eq!(fit::<ConnCol>(3), Vec::<ConnCol>::new());
        assert_eq!(fit::<ConnCol>(10), [ConnCol::Tx]);
    }

    #[test]
    fn sorting_steps_through_typed_columns() {
        let s = SortBy::new(ProcCol::Pid);
        assert!(s.descending);
        let s = s.step(true);
        assert_eq!(s.column, ProcCol::Ppid);
        let s = SortBy::new(ProcCol::Pid).step(false);
        assert_eq!(s.column, ProcCol::Command);
        assert!(!s.descending, "text sorts A→Z by default");
        assert!(!SortBy::new(ProcCol::Pid).reversed().descending);
    }
}
