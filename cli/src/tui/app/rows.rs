//! The rows of each table, derived from the model: built, filtered on their text, sorted
//! on their typed values. Drawing only formats what these give it.

use super::columns::{
    CgroupCol, Column, ConnCol, DiskCol, DnsCol, ProcCol, ReqCol, SortBy, UdpCol,
};
use super::model::{Cgroup, Conn, Device, Dns, Flow, Lifetime, Model, Owner, Proc, Req, ReqKey};
use crate::tui::fmt;
use crate::tui::rates::{bytes_per_second_over, elapsed};
use std::cmp::Ordering;
use std::collections::HashMap;
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
    /// Who its cgroup belongs to, when known.
    pub owner: Option<&'a str>,
}

pub fn processes(model: &Model) -> Vec<ProcLine<'_>> {
    model
        .processes
        .values()
        .map(|p| ProcLine {
            p,
            life: p.lifetime(model.now, model.interval),
            owner: model.cgroup_name(p.cgroup_id),
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
            ProcCol::Owner => self.owner.unwrap_or("-").to_string(),
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
            ProcCol::Owner => self.owner.cmp(&o.owner),
            ProcCol::Command => a.filename.cmp(&b.filename),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        self.p.pid.cmp(&o.p.pid)
    }
}

/// How the Containers view groups cgroups into rows (`o` steps through them, in this
/// order: each a coarser grouping than the one before).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    /// One row per cgroup.
    #[default]
    Cgroup,
    /// One row per owner name: a container's sub-cgroups (`…/docker-<id>.scope` and its
    /// `init.scope`) are one row.
    Owner,
    /// One row per Kubernetes pod; other cgroups by owner.
    Pod,
    /// One row per Kubernetes workload (namespace, kind and name: a Deployment's pods are
    /// one row); pods of no workload by pod, other cgroups by owner.
    Workload,
    /// One row per Kubernetes namespace; pods not yet known by name by pod, other cgroups
    /// by owner.
    Namespace,
}

/// A row of the Containers view when grouped: what its cgroups have in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group<'a> {
    /// The owner's name (also what cgroups without the labels a grouping needs fall back
    /// to: Docker containers, systemd units, paths).
    Owner(&'a str),
    /// A pod known by name.
    Pod {
        namespace: &'a str,
        pod: &'a str,
    },
    /// A pod whose metadata has not arrived (yet), by its uid.
    PodUid(&'a str),
    Workload {
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    },
    Namespace(&'a str),
}

impl Group<'_> {
    /// The group's name, for the OWNER column: the owner name, `namespace/pod`,
    /// `pod <uid>`, `namespace/Kind/name`, or the namespace.
    pub fn name(&self) -> String {
        match *self {
            Group::Owner(name) | Group::Namespace(name) => name.to_string(),
            Group::Pod { namespace, pod } => format!("{namespace}/{pod}"),
            Group::PodUid(uid) => format!("pod {uid}"),
            Group::Workload {
                namespace,
                kind: "",
                name,
            } => format!("{namespace}/{name}"),
            Group::Workload {
                namespace,
                kind,
                name,
            } => format!("{namespace}/{kind}/{name}"),
        }
    }
}

impl Grouping {
    pub fn next(self) -> Self {
        match self {
            Grouping::Cgroup => Grouping::Owner,
            Grouping::Owner => Grouping::Pod,
            Grouping::Pod => Grouping::Workload,
            Grouping::Workload => Grouping::Namespace,
            Grouping::Namespace => Grouping::Cgroup,
        }
    }

    /// What rows are grouped by, for the footer; `None` when not grouped.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Grouping::Cgroup => None,
            Grouping::Owner => Some("owner"),
            Grouping::Pod => Some("pod"),
            Grouping::Workload => Some("workload"),
            Grouping::Namespace => Some("namespace"),
        }
    }

    /// The group of a cgroup owned by `owner`, read from its labels. A cgroup without the
    /// labels this grouping needs falls back to the finer grouping: a pod of no workload
    /// groups by pod, a pod not known by name yet by its uid, anything not in Kubernetes
    /// by owner name.
    pub fn group_of(self, owner: &Owner) -> Group<'_> {
        let l = &*owner.labels;
        let by_owner = Group::Owner(&owner.name);
        let by_pod = if !l.pod.is_empty() {
            Group::Pod {
                namespace: &l.namespace,
                pod: &l.pod,
            }
        } else if !l.pod_uid.is_empty() {
            Group::PodUid(&l.pod_uid)
        } else {
            by_owner
        };
        match self {
            Grouping::Cgroup | Grouping::Owner => by_owner,
            Grouping::Pod => by_pod,
            Grouping::Workload if !l.workload.is_empty() => Group::Workload {
                namespace: &l.namespace,
                kind: &l.workload_kind,
                name: &l.workload,
            },
            Grouping::Workload => by_pod,
            Grouping::Namespace if !l.namespace.is_empty() => Group::Namespace(&l.namespace),
            Grouping::Namespace => by_pod,
        }
    }
}

pub struct CgroupLine {
    /// The cgroup, or the sum of the group's cgroups with the lowest id of them.
    pub c: Cgroup,
    /// The owner (or group) name; `None` while the cgroup has no name.
    pub owner: Option<String>,
    /// The Kubernetes workload (`Kind/name`) of the cgroup, or of all the group's cgroups;
    /// empty when none (or they differ).
    pub workload: String,
    pub procs: usize,
    /// cgroups summed into this row: 1 unless grouped.
    pub members: usize,
}

fn add_rate(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Adds `o`'s rates and totals to `c` (the id is kept).
fn add_cgroup(c: &mut Cgroup, o: &Cgroup) {
    c.exec_rate = add_rate(c.exec_rate, o.exec_rate);
    c.fork_rate = add_rate(c.fork_rate, o.fork_rate);
    c.exit_rate = add_rate(c.exit_rate, o.exit_rate);
    c.disk_read_rate = add_rate(c.disk_read_rate, o.disk_read_rate);
    c.disk_write_rate = add_rate(c.disk_write_rate, o.disk_write_rate);
    for (total, more) in [
        (&mut c.execs, o.execs),
        (&mut c.forks, o.forks),
        (&mut c.exits, o.exits),
        (&mut c.tcp_connections, o.tcp_connections),
        (&mut c.tcp_tx, o.tcp_tx),
        (&mut c.tcp_rx, o.tcp_rx),
        (&mut c.disk_read, o.disk_read),
        (&mut c.disk_write, o.disk_write),
    ] {
        *total = total.saturating_add(more);
    }
}

/// The Containers view's rows: one per cgroup, or grouped (summed). A group's row has the
/// lowest id among its cgroups. cgroups without a name yet are never grouped together.
pub fn cgroups(model: &Model, grouping: Grouping) -> Vec<CgroupLine> {
    let mut procs: HashMap<u64, usize> = HashMap::new();
    for p in model.processes.values().filter(|p| p.exited_at.is_none()) {
        *procs.entry(p.cgroup_id).or_default() += 1;
    }
    let line = |c: &Cgroup, owner: Option<String>, workload: &str| CgroupLine {
        c: c.clone(),
        owner,
        workload: workload.to_string(),
        procs: procs.get(&c.id).copied().unwrap_or(0),
        members: 1,
    };
    if grouping == Grouping::Cgroup {
        return model
            .cgroups
            .values()
            .map(|c| match model.cgroup_owner(c.id) {
                Some(o) => line(c, Some(o.name.clone()), &o.workload),
                None => line(c, None, ""),
            })
            .collect();
    }
    let mut rows: Vec<CgroupLine> = Vec::new();
    let mut by_group: HashMap<Group, usize> = HashMap::new();
    // By id, lowest first: each group's first member gives the row its id.
    for c in model.cgroups.values() {
        let Some(owner) = model.cgroup_owner(c.id) else {
            rows.push(line(c, None, ""));
            continue;
        };
        let group = grouping.group_of(owner);
        match by_group.get(&group) {
            Some(&i) => {
                let row = &mut rows[i];
                add_cgroup(&mut row.c, c);
                row.procs += procs.get(&c.id).copied().unwrap_or(0);
                row.members += 1;
                if row.workload != owner.workload {
                    row.workload.clear();
                }
            }
            None => {
                by_group.insert(group, rows.len());
                rows.push(line(c, Some(group.name()), &owner.workload));
            }
        }
    }
    rows
}

impl TableRow for CgroupLine {
    type Col = CgroupCol;

    fn cell(&self, col: CgroupCol) -> String {
        let c = &self.c;
        match col {
            // A group: its lowest id, and how many more cgroups it sums.
            CgroupCol::Id if self.members > 1 => format!("{}+{}", c.id, self.members - 1),
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
            CgroupCol::Workload => self.workload.clone(),
            CgroupCol::Owner => self.owner.as_deref().unwrap_or("?").to_string(),
        }
    }

    fn compare(&self, o: &Self, col: CgroupCol) -> Ordering {
        let (a, b) = (&self.c, &o.c);
        match col {
            CgroupCol::Id => (a.id, self.members).cmp(&(b.id, o.members)),
            CgroupCol::Procs => self.procs.cmp(&o.procs),
            CgroupCol::ExecRate => cmp_f64(a.exec_rate, b.exec_rate),
            CgroupCol::ForkRate => cmp_f64(a.fork_rate, b.fork_rate),
            CgroupCol::ExitRate => cmp_f64(a.exit_rate, b.exit_rate),
            CgroupCol::Conns => a.tcp_connections.cmp(&b.tcp_connections),
            CgroupCol::TcpTx => a.tcp_tx.cmp(&b.tcp_tx),
            CgroupCol::TcpRx => a.tcp_rx.cmp(&b.tcp_rx),
            CgroupCol::DiskRead => a.disk_read.cmp(&b.disk_read),
            CgroupCol::DiskWrite => a.disk_write.cmp(&b.disk_write),
            CgroupCol::Workload => self.workload.cmp(&o.workload),
            CgroupCol::Owner => self.owner.cmp(&o.owner),
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
    /// This interval's rate when known (from the change of the bytes between samples),
    /// else, for a closed connection, the average over its life.
    fn tx_rate(&self) -> Option<f64> {
        self.c.tx_rate.or_else(|| {
            (!self.open())
                .then(|| bytes_per_second_over(self.c.row.bytes_sent, self.c.row.duration_us))?
        })
    }
    fn rx_rate(&self) -> Option<f64> {
        self.c.rx_rate.or_else(|| {
            (!self.open())
                .then(|| bytes_per_second_over(self.c.row.bytes_received, self.c.row.duration_us))?
        })
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
            // `~`: open before capture started, bytes since then.
            ConnCol::Tx if r.since_start => format!("~{}", known(r.bytes_sent)),
            ConnCol::Rx if r.since_start => format!("~{}", known(r.bytes_received)),
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

pub struct FlowLine<'a> {
    pub f: &'a Flow,
}

pub fn udp_flows(model: &Model) -> Vec<FlowLine<'_>> {
    model.udp.values().map(|f| FlowLine { f }).collect()
}

impl TableRow for FlowLine<'_> {
    type Col = UdpCol;

    fn cell(&self, col: UdpCol) -> String {
        let (f, r) = (self.f, &self.f.row);
        match col {
            UdpCol::Local => endpoint(&r.saddr, r.sport),
            UdpCol::Remote => endpoint(&r.daddr, r.dport),
            UdpCol::Pid => match r.pid {
                0 => "-".into(),
                pid => pid.to_string(),
            },
            UdpCol::Comm => {
                if r.comm.is_empty() {
                    "-".into()
                } else {
                    r.comm.clone()
                }
            }
            UdpCol::Cgroup => r.cgroup_id.to_string(),
            UdpCol::TxRate => fmt::byte_rate(f.tx_rate),
            UdpCol::RxRate => fmt::byte_rate(f.rx_rate),
            UdpCol::OutRate => fmt::rate(f.out_rate),
            UdpCol::InRate => fmt::rate(f.in_rate),
            UdpCol::Tx => fmt::bytes(r.bytes_sent),
            UdpCol::Rx => fmt::bytes(r.bytes_received),
        }
    }

    fn compare(&self, o: &Self, col: UdpCol) -> Ordering {
        let (a, b) = (self.f, o.f);
        let (ar, br) = (&a.row, &b.row);
        match col {
            UdpCol::Local => (&ar.saddr, ar.sport).cmp(&(&br.saddr, br.sport)),
            UdpCol::Remote => (&ar.daddr, ar.dport).cmp(&(&br.daddr, br.dport)),
            UdpCol::Pid => ar.pid.cmp(&br.pid),
            UdpCol::Comm => ar.comm.cmp(&br.comm),
            UdpCol::Cgroup => ar.cgroup_id.cmp(&br.cgroup_id),
            UdpCol::TxRate => cmp_f64(a.tx_rate, b.tx_rate),
            UdpCol::RxRate => cmp_f64(a.rx_rate, b.rx_rate),
            UdpCol::OutRate => cmp_f64(a.out_rate, b.out_rate),
            UdpCol::InRate => cmp_f64(a.in_rate, b.in_rate),
            UdpCol::Tx => ar.bytes_sent.cmp(&br.bytes_sent),
            UdpCol::Rx => ar.bytes_received.cmp(&br.bytes_received),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        let key = |r: &ksight_engine::snapshot::UdpFlowRow| {
            (r.saddr.clone(), r.sport, r.daddr.clone(), r.dport, r.pid)
        };
        key(&self.f.row).cmp(&key(&o.f.row))
    }
}

pub struct DnsLine<'a> {
    pub d: &'a Dns,
}

pub fn dns_rows(model: &Model) -> Vec<DnsLine<'_>> {
    model.dns.values().map(|d| DnsLine { d }).collect()
}

impl TableRow for DnsLine<'_> {
    type Col = DnsCol;

    fn cell(&self, col: DnsCol) -> String {
        let (d, r) = (self.d, &self.d.row);
        let lat = |f: fn(&ksight_engine::snapshot::Latency) -> f64| {
            d.latency
                .as_ref()
                .map_or("-".into(), |l| fmt::latency_us(f(l)))
        };
        match col {
            DnsCol::Role => r.role.clone(),
            DnsCol::Server => r.server.clone(),
            DnsCol::Qname => r.qname.clone(),
            DnsCol::Qtype => r.qtype.clone(),
            DnsCol::Rcode => r.rcode.clone(),
            DnsCol::Rate => fmt::rate(d.rate),
            DnsCol::Count => r.count.to_string(),
            DnsCol::P50 => lat(|l| l.p50),
            DnsCol::P99 => lat(|l| l.p99),
            DnsCol::Timeouts => r.timeouts.to_string(),
            DnsCol::Cgroup => r.cgroup_id.to_string(),
        }
    }

    fn compare(&self, o: &Self, col: DnsCol) -> Ordering {
        let (a, b) = (self.d, o.d);
        let (ar, br) = (&a.row, &b.row);
        let lat =
            |d: &Dns, f: fn(&ksight_engine::snapshot::Latency) -> f64| d.latency.as_ref().map(f);
        match col {
            DnsCol::Role => ar.role.cmp(&br.role),
            DnsCol::Server => ar.server.cmp(&br.server),
            DnsCol::Qname => ar.qname.cmp(&br.qname),
            DnsCol::Qtype => ar.qtype.cmp(&br.qtype),
            DnsCol::Rcode => ar.rcode.cmp(&br.rcode),
            DnsCol::Rate => cmp_f64(a.rate, b.rate),
            DnsCol::Count => ar.count.cmp(&br.count),
            DnsCol::P50 => cmp_f64(lat(a, |l| l.p50), lat(b, |l| l.p50)),
            DnsCol::P99 => cmp_f64(lat(a, |l| l.p99), lat(b, |l| l.p99)),
            DnsCol::Timeouts => ar.timeouts.cmp(&br.timeouts),
            DnsCol::Cgroup => ar.cgroup_id.cmp(&br.cgroup_id),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        let key = |r: &ksight_engine::snapshot::DnsRow| {
            (
                r.qname.clone(),
                r.qtype.clone(),
                r.rcode.clone(),
                r.role.clone(),
                r.server.clone(),
                r.cgroup_id,
            )
        };
        key(&self.d.row).cmp(&key(&o.d.row))
    }
}

pub struct ReqLine<'a> {
    pub key: &'a ReqKey,
    pub r: &'a Req,
    /// Who its cgroup belongs to, when known.
    pub owner: Option<&'a str>,
}

pub fn requests(model: &Model) -> Vec<ReqLine<'_>> {
    model
        .requests
        .iter()
        .map(|(key, r)| ReqLine {
            key,
            r,
            owner: model.cgroup_name(key.0),
        })
        .collect()
}

impl ReqLine<'_> {
    fn latency(&self, f: fn(&ksight_engine::snapshot::Latency) -> f64) -> Option<f64> {
        self.r.latency.as_ref().map(|m| f(&m.latency))
    }
}

impl TableRow for ReqLine<'_> {
    type Col = ReqCol;

    fn cell(&self, col: ReqCol) -> String {
        let (r, (cgroup, protocol, role, name)) = (self.r, self.key);
        let lat = |f: fn(&ksight_engine::snapshot::Latency) -> f64| {
            r.latency
                .as_ref()
                .map_or("-".into(), |m| fmt::latency_bound(f(&m.latency), m.exact))
        };
        let dash = |text: String| if text.is_empty() { "-".into() } else { text };
        match col {
            ReqCol::Owner => self.owner.unwrap_or("-").to_string(),
            ReqCol::Proto => protocol.clone(),
            ReqCol::Role => role.clone(),
            ReqCol::Route => dash(name.clone()),
            ReqCol::Rate => fmt::rate(r.rate),
            ReqCol::ErrPct => fmt::percent(r.error_pct),
            ReqCol::P50 => lat(|l| l.p50),
            ReqCol::P99 => lat(|l| l.p99),
            ReqCol::Count => r.count.to_string(),
            ReqCol::Errors => r.errors.to_string(),
            // Most frequent first; the column cuts the rarest.
            ReqCol::Method => dash(mix_keys(&r.methods)),
            ReqCol::Status => dash(crate::tui::requests::mix(&r.statuses)),
            ReqCol::Cgroup => cgroup.to_string(),
        }
    }

    fn compare(&self, o: &Self, col: ReqCol) -> Ordering {
        let (a, b) = (self.r, o.r);
        match col {
            ReqCol::Owner => self.owner.cmp(&o.owner),
            ReqCol::Proto => self.key.1.cmp(&o.key.1),
            ReqCol::Role => self.key.2.cmp(&o.key.2),
            ReqCol::Route => self.key.3.cmp(&o.key.3),
            ReqCol::Rate => cmp_f64(a.rate, b.rate),
            ReqCol::ErrPct => cmp_f64(a.error_pct, b.error_pct),
            ReqCol::P50 => cmp_f64(self.latency(|l| l.p50), o.latency(|l| l.p50)),
            ReqCol::P99 => cmp_f64(self.latency(|l| l.p99), o.latency(|l| l.p99)),
            ReqCol::Count => a.count.cmp(&b.count),
            ReqCol::Errors => a.errors.cmp(&b.errors),
            ReqCol::Method => self.cell(col).cmp(&o.cell(col)),
            ReqCol::Status => self.cell(col).cmp(&o.cell(col)),
            ReqCol::Cgroup => self.key.0.cmp(&o.key.0),
        }
    }

    fn tiebreak(&self, o: &Self) -> Ordering {
        self.key.cmp(o.key)
    }
}

/// The keys of a count map, most frequent first: `GET/POST`.
fn mix_keys(counts: &std::collections::BTreeMap<String, u64>) -> String {
    let mut keys: Vec<(&String, &u64)> = counts.iter().collect();
    keys.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    keys.iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join("/")
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
    use ksight_attribution::CgroupLabels;
    use std::sync::Arc;

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

    fn owner(build: impl FnOnce(&mut CgroupLabels)) -> Owner {
        let mut labels = CgroupLabels {
            path: "/some/path".into(),
            ..CgroupLabels::default()
        };
        build(&mut labels);
        Owner::new(Arc::new(labels))
    }

    /// Labels of container `container` of pod `namespace/pod`, of workload `kind/name`.
    fn k8s(namespace: &str, pod: &str, container: &str, workload: Option<(&str, &str)>) -> Owner {
        owner(|l| {
            l.namespace = namespace.into();
            l.pod = pod.into();
            l.pod_uid = format!("uid-{pod}");
            l.container = container.into();
            if let Some((kind, name)) = workload {
                l.workload_kind = kind.into();
                l.workload = name.into();
            }
        })
    }

    #[test]
    fn groups_are_read_from_labels() {
        let deployment = Some(("Deployment", "web"));
        let container = k8s("shop", "web-1", "nginx", deployment);
        let pod = k8s("shop", "web-1", "", deployment);
        let bare = k8s("shop", "debug", "sh", None);
        let pending = owner(|l| {
            l.pod_uid = "0f1c6a3e".into();
            l.container_id = "0123456789abcdef".into();
            l.runtime = "cri-o".into();
            l.pending = true;
        });
        let docker = owner(|l| {
            l.container_id = "0123456789abcdef".into();
            l.runtime = "docker".into();
        });
        let unit = owner(|l| l.unit = "nginx.service".into());
        let path = owner(|_| {});
        let g = |grouping: Grouping, owner: &Owner| grouping.group_of(owner).name();
        assert_eq!(container.name, "shop/web-1/nginx");
        assert_eq!(container.workload, "Deployment/web");
        assert_eq!(bare.workload, "");
        assert_eq!(g(Grouping::Owner, &container), container.name);
        assert_eq!(g(Grouping::Pod, &container), "shop/web-1");
        assert_eq!(g(Grouping::Pod, &pod), "shop/web-1");
        assert_eq!(g(Grouping::Workload, &container), "shop/Deployment/web");
        assert_eq!(
            Grouping::Workload.group_of(&container),
            Grouping::Workload.group_of(&pod)
        );
        assert_eq!(
            g(Grouping::Workload, &bare),
            "shop/debug",
            "no workload: by pod"
        );
        assert_eq!(g(Grouping::Namespace, &container), "shop");
        assert_eq!(g(Grouping::Namespace, &bare), "shop");
        for grouping in [Grouping::Pod, Grouping::Workload, Grouping::Namespace] {
            assert_eq!(g(grouping, &pending), "pod 0f1c6a3e");
            for other in [&docker, &unit, &path] {
                assert_eq!(g(grouping, other), other.name);
                assert_eq!(grouping.group_of(other), Group::Owner(&other.name));
            }
        }
        // The same workload name in another namespace is another workload.
        let elsewhere = k8s("staging", "web-1", "nginx", deployment);
        assert_ne!(
            Grouping::Workload.group_of(&container),
            Grouping::Workload.group_of(&elsewhere)
        );
        // A path is never read as a namespace.
        let slashed = owner(|l| l.path = "/kubepods/burstable".into());
        assert_eq!(g(Grouping::Namespace, &slashed), "/kubepods/burstable");
    }

    #[test]
    fn grouping_sums_cgroups_with_the_same_owner() {
        let mut m = Model::default();
        let cgroup = |id, exec_rate, tcp_tx| Cgroup {
            id,
            exec_rate: Some(exec_rate),
            fork_rate: None,
            tcp_tx,
            ..Cgroup::default()
        };
        m.cgroups.insert(30, cgroup(30, 2.0, 100));
        m.cgroups.insert(31, cgroup(31, 3.0, 50));
        m.cgroups.insert(40, cgroup(40, 1.0, 7));
        m.cgroups.insert(50, cgroup(50, 9.0, 0));
        let docker = owner(|l| {
            l.container_id = "0123456789abcdef".into();
            l.runtime = "docker".into();
        });
        m.cgroup_owners.insert(30, docker.clone());
        m.cgroup_owners.insert(31, docker);
        m.cgroup_owners
            .insert(40, owner(|l| l.unit = "nginx.service".into()));
        // 50 has no name yet: it stays alone.
        for (pid, cgroup_id) in [(1, 30), (2, 31), (3, 31), (4, 40)] {
            m.processes.insert(
                pid,
                Proc {
                    pid,
                    cgroup_id,
                    ..Proc::default()
                },
            );
        }
        let sort = SortBy::new(CgroupCol::TcpTx);
        let rows = filter_sort(cgroups(&m, Grouping::Cgroup), "", sort);
        assert_eq!(rows.len(), 4);
        let rows = filter_sort(cgroups(&m, Grouping::Owner), "", sort);
        let cells = |r: &CgroupLine| {
            [
                CgroupCol::Id,
                CgroupCol::Procs,
                CgroupCol::ExecRate,
                CgroupCol::TcpTx,
                CgroupCol::Owner,
            ]
            .map(|c| r.cell(c))
        };
        assert_eq!(
            cells(&rows[0]),
            ["30+1", "3", "5.0", "150B", "docker:0123456789ab"]
        );
        assert_eq!(
            rows[0].c.fork_rate, None,
            "unknown in every member: unknown"
        );
        assert_eq!(cells(&rows[1]), ["40", "1", "1.0", "7B", "nginx.service"]);
        assert_eq!(cells(&rows[2]), ["50", "0", "9.0", "0", "?"]);
        // Filtering and sorting apply to the groups.
        let rows = filter_sort(cgroups(&m, Grouping::Owner), "DOCKER", sort);
        assert_eq!(rows.len(), 1);
        let rows = filter_sort(
            cgroups(&m, Grouping::Owner),
            "",
            SortBy::new(CgroupCol::ExecRate),
        );
        assert_eq!(
            rows.iter().map(|r| r.c.id).collect::<Vec<_>>(),
            [50, 30, 40]
        );
    }

    /// A model with cgroups `ids` (each 1 exec/s and 100 bytes sent) owned as `owners` say.
    fn model_with_owners(owners: &[(u64, Owner)]) -> Model {
        let mut m = Model::default();
        for (id, owner) in owners {
            m.cgroups.insert(
                *id,
                Cgroup {
                    id: *id,
                    exec_rate: Some(1.0),
                    tcp_tx: 100,
                    ..Cgroup::default()
                },
            );
            m.cgroup_owners.insert(*id, owner.clone());
        }
        m
    }

    #[test]
    fn grouping_by_workload_sums_a_deployments_pods() {
        let web = Some(("Deployment", "web"));
        let m = model_with_owners(&[
            (10, k8s("shop", "web-1", "nginx", web)),
            (11, k8s("shop", "web-1", "envoy", web)),
            (20, k8s("shop", "web-2", "nginx", web)),
            (
                30,
                k8s("shop", "db-0", "postgres", Some(("StatefulSet", "db"))),
            ),
            // Same names, another namespace: another workload.
            (40, k8s("staging", "web-1", "nginx", web)),
            (50, owner(|l| l.unit = "nginx.service".into())),
        ]);
        let cols = [
            CgroupCol::Id,
            CgroupCol::ExecRate,
            CgroupCol::TcpTx,
            CgroupCol::Workload,
            CgroupCol::Owner,
        ];
        let cells = |grouping| -> Vec<[String; 5]> {
            filter_sort(
                cgroups(&m, grouping),
                "",
                SortBy::new(CgroupCol::Id).reversed(),
            )
            .iter()
            .map(|r| cols.map(|c| r.cell(c)))
            .collect()
        };
        assert_eq!(
            cells(Grouping::Workload),
            [
                [
                    "10+2",
                    "3.0",
                    "300B",
                    "Deployment/web",
                    "shop/Deployment/web"
                ],
                ["30", "1.0", "100B", "StatefulSet/db", "shop/StatefulSet/db"],
                [
                    "40",
                    "1.0",
                    "100B",
                    "Deployment/web",
                    "staging/Deployment/web"
                ],
                ["50", "1.0", "100B", "", "nginx.service"],
            ]
        );
        // By pod the Deployment is two rows; by namespace its workload is shown while
        // every member shares it, and empty when they differ.
        let by_pod = cells(Grouping::Pod);
        assert_eq!(by_pod[0][..4], ["10+1", "2.0", "200B", "Deployment/web"]);
        assert_eq!(by_pod[0][4], "shop/web-1");
        assert_eq!(by_pod[1][4], "shop/web-2");
        let by_namespace = cells(Grouping::Namespace);
        assert_eq!(by_namespace[0], ["10+3", "4.0", "400B", "", "shop"]);
        assert_eq!(by_namespace[1][3..], ["Deployment/web", "staging"]);
        // The column sorts, and the filter matches it.
        let rows = filter_sort(
            cgroups(&m, Grouping::Cgroup),
            "statefulset",
            SortBy::new(CgroupCol::Id),
        );
        assert_eq!(rows.iter().map(|r| r.c.id).collect::<Vec<_>>(), [30]);
        let rows = filter_sort(
            cgroups(&m, Grouping::Workload),
            "",
            SortBy::new(CgroupCol::Workload),
        );
        let workloads: Vec<String> = rows.iter().map(|r| r.cell(CgroupCol::Workload)).collect();
        assert_eq!(
            workloads,
            ["", "Deployment/web", "Deployment/web", "StatefulSet/db"]
        );
    }

    #[test]
    fn a_pod_named_late_is_regrouped() {
        use crate::tui::event::Sample;
        use ksight_engine::snapshot::CgroupRow;
        let labels = |pod: &str, container: &str, named: bool| {
            let mut l = CgroupLabels {
                path: format!("/kubepods/pod-{pod}/{container}"),
                pod_uid: format!("uid-{pod}"),
                pending: !named,
                ..CgroupLabels::default()
            };
            if named {
                l.namespace = "shop".into();
                l.pod = pod.into();
                l.container = container.into();
                l.workload_kind = "Deployment".into();
                l.workload = "web".into();
            }
            Arc::new(l)
        };
        let sample = |at: u64, cgroup_labels| {
            let snapshot = ksight_engine::Snapshot {
                cgroups: [10, 11, 20]
                    .map(|cgroup_id| CgroupRow {
                        cgroup_id,
                        execs: 1,
                        ..CgroupRow::default()
                    })
                    .into(),
                ..Default::default()
            };
            Sample {
                snapshot,
                interval: std::time::Duration::from_secs(1),
                at: std::time::Duration::from_secs(at),
                cgroup_labels,
            }
        };
        let mut m = Model::default();
        // web-2 is known; web-1's metadata has not arrived.
        m.ingest(&sample(
            1,
            vec![
                (10, labels("web-1", "nginx", false)),
                (11, labels("web-1", "envoy", false)),
                (20, labels("web-2", "nginx", true)),
            ],
        ));
        let groups = |m: &Model| -> Vec<(String, String, usize)> {
            filter_sort(
                cgroups(m, Grouping::Workload),
                "",
                SortBy::new(CgroupCol::Id).reversed(),
            )
            .iter()
            .map(|r| (r.cell(CgroupCol::Owner), r.workload.clone(), r.members))
            .collect()
        };
        assert_eq!(
            groups(&m),
            [
                ("pod uid-web-1".into(), "".into(), 2),
                ("shop/Deployment/web".into(), "Deployment/web".into(), 1),
            ]
        );
        // Its labels arrive (only the changed ones are sent): one workload of three.
        m.ingest(&sample(
            2,
            vec![
                (10, labels("web-1", "nginx", true)),
                (11, labels("web-1", "envoy", true)),
            ],
        ));
        assert_eq!(
            groups(&m),
            [("shop/Deployment/web".into(), "Deployment/web".into(), 3)]
        );
        let row = &cgroups(&m, Grouping::Workload)[0];
        assert_eq!(row.c.exec_rate, Some(3.0));
        assert_eq!(m.cgroup_name(11), Some("shop/web-1/envoy"));
    }

    #[test]
    fn unknown_rates_sort_below_zero() {
        assert_eq!(cmp_f64(None, Some(0.0)), Ordering::Less);
        assert_eq!(cmp_f64(Some(1.0), Some(0.5)), Ordering::Greater);
        assert_eq!(cmp_f64(None, None), Ordering::Equal);
    }
}
