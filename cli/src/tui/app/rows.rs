//! The rows of each table, derived from the model: built, filtered on their text, sorted
//! on their typed values. Drawing only formats what these give it.

use super::columns::{CgroupCol, Column, ConnCol, DiskCol, ProcCol, SortBy};
use super::model::{Cgroup, Conn, Device, Lifetime, Model, Proc};
use crate::tui::fmt;
use crate::tui::rates::{bytes_per_second_over, elapsed};
use std::cmp::Ordering;
use std::time::Duration;

pub trait TableRow {
    type Col: Column;
    fn cell(&self, column: Self::Col) -> String;
    fn compare(&self, other: &Self, column: Self::Col) -> Ordering;
    /// Order among rows that compare equal, so the table does not shuffle between frames.
    fn tiebreak(&self, other: &Self) -> Ordering;
}

/// Keeps rows whose text (in any column, shown or not) contains `filter`, ignoring case;
/// then sorts them.
pub fn filter_sort<R: TableRow>(mut rows: Vec<R>, filter: &str, sort: SortBy<R::Col>) -> Vec<R> {
    if !filter.is_empty() {
        let needle = filter.to_lowercase();
        rows.retain(|r| {
            R::Col::ALL
                .iter()
                .any(|&c| r.cell(c).to_lowercase().contains(&needle))
        });
    }
    rows.sort_by(|a, b| {
        let primary = a.compare(b, sort.column);
        let primary = if sort.descending {
            primary.reverse()
        } else {
            primary
        };
        primary.then_with(|| a.tiebreak(b))
    });
    rows
}

/// Orders unknown values below every known one.
fn cmp_f64(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

pub struct ProcLine<'a> {
    pub p: &'a Proc,
    pub life: Option<Lifetime>,
}

pub fn processes(model: &Model) -> Vec<ProcLine<'_>> {
    model
        .processes
        .values()
        .map(|p| ProcLine {
            p,
            life: p.lifetime(model.now, model.interval),
        })
        .collect()
}

impl TableRow for ProcLine<'_> {
    type Col = ProcCol;

    fn cell(&self, c: ProcCol) -> String {
        let p = self.p;
        match c {
            ProcCol::Pid => p.pid.to_string(),
            ProcCol::Ppid => p.ppid.map_or("-".into(), |v| v.to_string()),
            ProcCol::Comm => p.comm.clone(),
            ProcCol::ExecRate => fmt::rate(p.exec_rate),
            ProcCol::ForkRate => fmt::rate(p.fork_rate),
            ProcCol::Exit => p.exit_code.map_or(String::new(), |c| c.to_string()),
            ProcCol::Life => match self.life {
                None => "-".into(),
                Some(Lifetime::Under(d)) => format!("<{}", fmt::duration(d)),
                Some(Lifetime::About(d)) => fmt::duration(d),
            },
            ProcCol::TcpTx => fmt::bytes(p.tcp_tx),
            ProcCol::TcpRx => fmt::bytes(p.tcp_rx),
            ProcCol::DiskRead => fmt::bytes(p.disk_read),
            ProcCol::DiskWrite => fmt::bytes(p.disk_write),
            ProcCol::Cgroup => p.cgroup_id.to_string(),
            ProcCol::Command => p.filename.clone().unwrap_or_else(|| "-".into()),
        }
    }

    fn compare(&self, o: &Self, c: ProcCol) -> Ordering {
        let (a, b) = (self.p, o.p);
        match c {
            ProcCol::Pid => a.pid.cmp(&b.pid),
            ProcCol::Ppid => a.ppid.cmp(&b.ppid),
            ProcCol::Comm => a.comm.cmp(&b.comm),
            ProcCol::ExecRate => cmp_f64(a.exec_rate, b.exec_rate),
            ProcCol::ForkRate => cmp_f64(a.fork_rate, b.fork_rate),
            ProcCol::Exit => a.exit_code.cmp(&b.exit_code),
            ProcCol::Life => self.life.cmp(&o.life),
            ProcCol::TcpTx => a.tcp_tx.cmp(&b.tcp_tx),
            ProcCol::TcpRx => a.tcp_rx.cmp(&b.tcp_rx),
            ProcCol::DiskRead => a.disk_read.cmp(&b.disk_read),
            ProcCol::DiskWrite => a.disk_write.cmp(&b.disk_write),
            ProcCol::Cgroup => a.cgroup_id.cmp(&b.cgroup_id),
            ProcCol::Command => a.filename.cmp(&b.filename),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        self.p.pid.cmp(&o.p.pid)
    }
}

pub struct CgroupLine<'a> {
    pub c: &'a Cgroup,
    pub path: Option<&'a str>,
    pub procs: usize,
}

pub fn cgroups(model: &Model) -> Vec<CgroupLine<'_>> {
    model
        .cgroups
        .values()
        .map(|c| CgroupLine {
            c,
            path: model.cgroup_name(c.id),
            procs: model.live_processes_in(c.id),
        })
        .collect()
}

impl TableRow for CgroupLine<'_> {
    type Col = CgroupCol;

    fn cell(&self, col: CgroupCol) -> String {
        let c = self.c;
        match col {
            CgroupCol::Id => c.id.to_string(),
            CgroupCol::Procs => self.procs.to_string(),
            CgroupCol::ExecRate => fmt::rate(c.exec_rate),
            CgroupCol::ForkRate => fmt::rate(c.fork_rate),
            CgroupCol::ExitRate => fmt::rate(c.exit_rate),
            CgroupCol::Conns => c.tcp_connections.to_string(),
            CgroupCol::TcpTx => fmt::bytes(c.tcp_tx),
            CgroupCol::TcpRx => fmt::bytes(c.tcp_rx),
            CgroupCol::DiskRead => fmt::bytes(c.disk_read),
            CgroupCol::DiskWrite => fmt::bytes(c.disk_write),
            CgroupCol::Path => self.path.unwrap_or("?").to_string(),
        }
    }

    fn compare(&self, o: &Self, col: CgroupCol) -> Ordering {
        let (a, b) = (self.c, o.c);
        match col {
            CgroupCol::Id => a.id.cmp(&b.id),
            CgroupCol::Procs => self.procs.cmp(&o.procs),
            CgroupCol::ExecRate => cmp_f64(a.exec_rate, b.exec_rate),
            CgroupCol::ForkRate => cmp_f64(a.fork_rate, b.fork_rate),
            CgroupCol::ExitRate => cmp_f64(a.exit_rate, b.exit_rate),
            CgroupCol::Conns => a.tcp_connections.cmp(&b.tcp_connections),
            CgroupCol::TcpTx => a.tcp_tx.cmp(&b.tcp_tx),
            CgroupCol::TcpRx => a.tcp_rx.cmp(&b.tcp_rx),
            CgroupCol::DiskRead => a.disk_read.cmp(&b.disk_read),
            CgroupCol::DiskWrite => a.disk_write.cmp(&b.disk_write),
            CgroupCol::Path => self.path.cmp(&o.path),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        self.c.id.cmp(&o.c.id)
    }
}

pub struct ConnLine<'a> {
    pub c: &'a Conn,
    /// Position in the model: later is newer.
    pub seq: usize,
    /// Time since it closed; zero while open.
    pub age: Duration,
}

/// Open connections, then closed ones, newest first before sorting.
pub fn connections(model: &Model) -> Vec<ConnLine<'_>> {
    let closed = model.closed.iter().map(|c| ConnLine {
        c,
        seq: 0,
        age: elapsed(c.closed_at.unwrap_or(model.now), model.now),
    });
    let open = model.open.iter().map(|c| ConnLine {
        c,
        seq: 0,
        age: Duration::ZERO,
    });
    closed
        .chain(open)
        .enumerate()
        .map(|(seq, line)| ConnLine { seq, ..line })
        .collect()
}

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// Socket states as `ss` spells them.
fn short_state(state: &str) -> &str {
    match state {
        "ESTABLISHED" => "ESTAB",
        "SYN_SENT" => "SYN-SENT",
        "SYN_RECV" => "SYN-RECV",
        "FIN_WAIT1" => "FIN-WAIT-1",
        "FIN_WAIT2" => "FIN-WAIT-2",
        "TIME_WAIT" => "TIME-WAIT",
        "CLOSE_WAIT" => "CLOSE-WAIT",
        "LAST_ACK" => "LAST-ACK",
        "NEW_SYN_RECV" => "SYN-RECV",
        other => other,
    }
}

impl ConnLine<'_> {
    fn open(&self) -> bool {
        self.c.closed_at.is_none()
    }
    fn tx_rate(&self) -> Option<f64> {
        bytes_per_second_over(self.c.row.bytes_sent, self.c.row.duration_us)
    }
    fn rx_rate(&self) -> Option<f64> {
        bytes_per_second_over(self.c.row.bytes_received, self.c.row.duration_us)
    }
    fn resets(&self) -> u64 {
        self.c
            .row
            .resets_sent
            .saturating_add(self.c.row.resets_received)
    }
}

impl TableRow for ConnLine<'_> {
    type Col = ConnCol;

    fn cell(&self, col: ConnCol) -> String {
        let r = &self.c.row;
        let known = |v: Option<u64>| v.map_or("-".into(), fmt::bytes);
        match col {
            ConnCol::Local => endpoint(&r.saddr, r.sport),
            ConnCol::Remote => endpoint(&r.daddr, r.dport),
            ConnCol::State => short_state(&r.state).to_string(),
            ConnCol::Pid => match r.pid {
                0 => "-".into(),
                pid => pid.to_string(),
            },
            ConnCol::Comm => {
                if r.comm.is_empty() {
                    "-".into()
                } else {
                    r.comm.clone()
                }
            }
            ConnCol::Cgroup => r.cgroup_id.to_string(),
            ConnCol::Tx => known(r.bytes_sent),
            ConnCol::Rx => known(r.bytes_received),
            ConnCol::TxRate => fmt::byte_rate(self.tx_rate()),
            ConnCol::RxRate => fmt::byte_rate(self.rx_rate()),
            ConnCol::Retransmits => r.retransmits.to_string(),
            ConnCol::Resets => self.resets().to_string(),
            ConnCol::Duration => fmt::duration(Duration::from_micros(r.duration_us)),
            ConnCol::Age => {
                if self.open() {
                    "open".into()
                } else {
                    fmt::duration(self.age)
                }
            }
        }
    }

    fn compare(&self, o: &Self, col: ConnCol) -> Ordering {
        let (a, b) = (&self.c.row, &o.c.row);
        match col {
            ConnCol::Local => (&a.saddr, a.sport).cmp(&(&b.saddr, b.sport)),
            ConnCol::Remote => (&a.daddr, a.dport).cmp(&(&b.daddr, b.dport)),
            ConnCol::State => a.state.cmp(&b.state),
            ConnCol::Pid => a.pid.cmp(&b.pid),
            ConnCol::Comm => a.comm.cmp(&b.comm),
            ConnCol::Cgroup => a.cgroup_id.cmp(&b.cgroup_id),
            ConnCol::Tx => a.bytes_sent.cmp(&b.bytes_sent),
            ConnCol::Rx => a.bytes_received.cmp(&b.bytes_received),
            ConnCol::TxRate => cmp_f64(self.tx_rate(), o.tx_rate()),
            ConnCol::RxRate => cmp_f64(self.rx_rate(), o.rx_rate()),
            ConnCol::Retransmits => a.retransmits.cmp(&b.retransmits),
            ConnCol::Resets => self.resets().cmp(&o.resets()),
            ConnCol::Duration => a.duration_us.cmp(&b.duration_us),
            ConnCol::Age => self.age.cmp(&o.age),
        }
    }

    /// Newest first.
    fn tiebreak(&self, o: &Self) -> Ordering {
        o.seq.cmp(&self.seq)
    }
}

pub struct DeviceLine<'a> {
    pub d: &'a Device,
}

pub fn devices(model: &Model) -> Vec<DeviceLine<'_>> {
    model.devices.values().map(|d| DeviceLine { d }).collect()
}

impl TableRow for DeviceLine<'_> {
    type Col = DiskCol;

    fn cell(&self, col: DiskCol) -> String {
        let d = self.d;
        let lat = |f: fn(&ksight_engine::snapshot::Latency) -> f64| {
            d.latency
                .as_ref()
                .map_or("-".into(), |l| fmt::latency_us(f(l)))
        };
        match col {
            DiskCol::Device => d.dev.clone(),
            DiskCol::Name => {
                if d.name.is_empty() {
                    "?".into()
                } else {
                    d.name.clone()
                }
            }
            DiskCol::Iops => fmt::rate(d.iops),
            DiskCol::ReadRate => fmt::byte_rate(d.read_rate),
            DiskCol::WriteRate => fmt::byte_rate(d.write_rate),
            DiskCol::P50 => lat(|l| l.p50),
            DiskCol::P99 => lat(|l| l.p99),
            DiskCol::Max => lat(|l| l.max),
            DiskCol::Errors => d.errors.to_string(),
            DiskCol::Read => fmt::bytes(d.read_bytes),
            DiskCol::Written => fmt::bytes(d.write_bytes),
        }
    }

    fn compare(&self, o: &Self, col: DiskCol) -> Ordering {
        let (a, b) = (self.d, o.d);
        let lat =
            |d: &Device, f: fn(&ksight_engine::snapshot::Latency) -> f64| d.latency.as_ref().map(f);
        match col {
            DiskCol::Device => a.dev.cmp(&b.dev),
            DiskCol::Name => a.name.cmp(&b.name),
            DiskCol::Iops => cmp_f64(a.iops, b.iops),
            DiskCol::ReadRate => cmp_f64(a.read_rate, b.read_rate),
            DiskCol::WriteRate => cmp_f64(a.write_rate, b.write_rate),
            DiskCol::P50 => cmp_f64(lat(a, |l| l.p50), lat(b, |l| l.p50)),
            DiskCol::P99 => cmp_f64(lat(a, |l| l.p99), lat(b, |l| l.p99)),
            DiskCol::Max => cmp_f64(lat(a, |l| l.max), lat(b, |l| l.max)),
            DiskCol::Errors => a.errors.cmp(&b.errors),
            DiskCol::Read => a.read_bytes.cmp(&b.read_bytes),
            DiskCol::Written => a.write_bytes.cmp(&b.write_bytes),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        self.d.dev.cmp(&o.d.dev)
    }
}

/// Processes that did block I/O since `ksight top` started, busiest this interval first,
/// then by total.
pub fn io_processes<'a>(model: &'a Model, filter: &str) -> Vec<&'a Proc> {
    let needle = filter.to_lowercase();
    let mut rows: Vec<&Proc> = model
        .processes
        .values()
        .filter(|p| p.disk_read > 0 || p.disk_write > 0)
        .filter(|p| {
            needle.is_empty()
                || p.comm.to_lowercase().contains(&needle)
                || p.pid.to_string().contains(&needle)
                || p.cgroup_id.to_string().contains(&needle)
        })
        .collect();
    let rate = |p: &Proc| p.disk_read_rate.unwrap_or(0.0) + p.disk_write_rate.unwrap_or(0.0);
    rows.sort_by(|a, b| {
        rate(b)
            .total_cmp(&rate(a))
            .then((b.disk_read + b.disk_write).cmp(&(a.disk_read + a.disk_write)))
            .then(a.pid.cmp(&b.pid))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with_pids(pids: &[(u32, &str, u64)]) -> Model {
        let mut m = Model::default();
        for &(pid, comm, tx) in pids {
            m.processes.insert(
                pid,
                Proc {
                    pid,
                    comm: comm.into(),
                    tcp_tx: tx,
                    ..Proc::default()
                },
            );
        }
        m
    }

    fn pids(rows: &[ProcLine]) -> Vec<u32> {
        rows.iter().map(|r| r.p.pid).collect()
    }

    #[test]
    fn sorts_by_typed_columns_in_both_directions() {
        let m = model_with_pids(&[(10, "b", 5), (9, "a", 500), (200, "c", 50)]);
        let by_pid = filter_sort(processes(&m), "", SortBy::new(ProcCol::Pid));
        assert_eq!(pids(&by_pid), [200, 10, 9], "numbers: largest first");
        let up = filter_sort(processes(&m), "", SortBy::new(ProcCol::Pid).reversed());
        assert_eq!(pids(&up), [9, 10, 200]);
        // Numerically, not as text ("500" < "50" would be wrong either way).
        let by_tx = filter_sort(processes(&m), "", SortBy::new(ProcCol::TcpTx));
        assert_eq!(pids(&by_tx), [9, 200, 10]);
        let by_comm = filter_sort(processes(&m), "", SortBy::new(ProcCol::Comm));
        assert_eq!(pids(&by_comm), [9, 10, 200]);
    }

    #[test]
    fn filter_matches_any_column_ignoring_case() {
        let m = model_with_pids(&[(10, "Sleep", 0), (11, "bash", 0), (12, "x", 0)]);
        let rows = filter_sort(processes(&m), "sLEEP", SortBy::new(ProcCol::Pid));
        assert_eq!(pids(&rows), [10]);
        let rows = filter_sort(processes(&m), "12", SortBy::new(ProcCol::Pid));
        assert_eq!(pids(&rows), [12]);
    }

    #[test]
    fn unknown_rates_sort_below_zero() {
        assert_eq!(cmp_f64(None, Some(0.0)), Ordering::Less);
        assert_eq!(cmp_f64(Some(1.0), Some(0.5)), Ordering::Greater);
        assert_eq!(cmp_f64(None, None), Ordering::Equal);
    }
}
