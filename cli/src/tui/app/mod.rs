//! Application state, and the only code that changes it: `App::handle`, called by the
//! main loop for each event from the one channel.

pub mod columns;
pub mod model;
pub mod rows;

use crate::tui::event::{Event, SourceStatus};
use columns::{CgroupCol, ConnCol, DiskCol, DnsCol, ProcCol, ReqCol, SortBy, UdpCol};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ksight_engine::signals::SignalStatus;
use model::Model;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Processes,
    Cgroups,
    Tcp,
    Disks,
    Health,
    Udp,
    Dns,
    Requests,
}

impl View {
    /// In key order: `1` is the first. UDP, DNS and Requests came later and keep the
    /// others' keys.
    pub const ALL: [View; 8] = [
        View::Processes,
        View::Cgroups,
        View::Tcp,
        View::Disks,
        View::Health,
        View::Udp,
        View::Dns,
        View::Requests,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Processes => "Processes",
            View::Cgroups => "Containers",
            View::Tcp => "TCP",
            View::Disks => "Disks",
            View::Health => "Health",
            View::Udp => "UDP",
            View::Dns => "DNS",
            View::Requests => "Requests",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|&v| v == self).unwrap_or(0)
    }
}

/// Where snapshots come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// This process captures (its own backend, readers and engine).
    Live,
    /// A running `ksight agent`, through its socket.
    Attached(PathBuf),
}

/// What the main loop must do after an event, beyond drawing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Tell collection the new interval.
    SetInterval(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sorts {
    pub processes: SortBy<ProcCol>,
    pub cgroups: SortBy<CgroupCol>,
    pub tcp: SortBy<ConnCol>,
    pub disks: SortBy<DiskCol>,
    pub udp: SortBy<UdpCol>,
    pub dns: SortBy<DnsCol>,
    pub requests: SortBy<ReqCol>,
}

impl Default for Sorts {
    fn default() -> Self {
        Self {
            // Newest processes first, like an exec monitor.
            processes: SortBy::new(ProcCol::Pid),
            cgroups: SortBy::new(CgroupCol::ExecRate),
            // Open connections, then the most recently closed.
            tcp: SortBy::new(ConnCol::Age).reversed(),
            disks: SortBy::new(DiskCol::Iops),
            udp: SortBy::new(UdpCol::TxRate),
            dns: SortBy::new(DnsCol::Count),
            // Busiest now first.
            requests: SortBy::new(ReqCol::Rate),
        }
    }
}

/// Refresh intervals `+` and `-` step through.
pub const INTERVALS_MS: [u64; 8] = [250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000];

pub fn step_interval(current: Duration, longer: bool) -> Duration {
    let ms = current.as_millis() as u64;
    let next = if longer {
        INTERVALS_MS.iter().copied().find(|&s| s > ms)
    } else {
        INTERVALS_MS.iter().rev().copied().find(|&s| s < ms)
    };
    Duration::from_millis(next.unwrap_or(ms))
}

pub struct App {
    pub mode: Mode,
    /// Each signal's status (live mode: as the backend that runs observes it).
    pub signals: Vec<SignalStatus>,
    /// Fidelity notes the opened backend (or the agent) reported.
    pub notes: Vec<String>,
    /// Why this backend runs.
    pub backend_reason: String,
    pub status: SourceStatus,
    pub model: Model,
    /// The model as it was when paused: drawn instead of `model` until resumed, while
    /// samples keep accumulating so nothing is lost.
    pub frozen: Option<Model>,
    pub view: View,
    pub sorts: Sorts,
    pub filter: String,
    pub editing_filter: bool,
    pub help: bool,
    pub interval: Duration,
    /// Highlighted row per view.
    pub selected: [usize; View::ALL.len()],
    /// How the Containers view groups its cgroups (`o`).
    pub grouping: rows::Grouping,
}

impl App {
    pub fn new(mode: Mode, interval: Duration) -> Self {
        Self {
            mode,
            signals: Vec::new(),
            notes: Vec::new(),
            backend_reason: String::new(),
            status: SourceStatus::Connected,
            model: Model::default(),
            frozen: None,
            view: View::Processes,
            sorts: Sorts::default(),
            filter: String::new(),
            editing_filter: false,
            help: false,
            interval,
            selected: [0; View::ALL.len()],
            grouping: rows::Grouping::default(),
        }
    }

    /// The model to draw.
    pub fn shown(&self) -> &Model {
        self.frozen.as_ref().unwrap_or(&self.model)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    pub fn handle(&mut self, event: Event) -> Action {
        match event {
            Event::Key(key) => self.key(key),
            Event::Resize => Action::None,
            Event::Sample(sample) => {
                self.model.ingest(&sample);
                self.status = SourceStatus::Connected;
                Action::None
            }
            Event::Source(status) => {
                self.status = status;
                Action::None
            }
            Event::AgentInfo {
                backend_reason,
                fidelity_notes,
            } => {
                self.backend_reason = backend_reason;
                self.notes = fidelity_notes;
                Action::None
            }
        }
    }

    fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            return Action::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char('u') if ctrl => self.filter.clear(),
                KeyCode::Char(c) if !ctrl => self.filter.push(c),
                _ => {}
            }
            self.selected[self.view.index()] = 0;
            return Action::None;
        }
        if self.help {
            // Any key closes help; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::None
            };
        }
        let row = &mut self.selected[self.view.index()];
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('/') => {
                self.editing_filter = true;
                *row = 0;
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char(' ') => {
                self.frozen = match self.frozen.take() {
                    Some(_) => None,
                    None => Some(self.model.clone()),
                };
            }
            KeyCode::Char('+') | KeyCode::Char('=') => return self.set_interval(true),
            KeyCode::Char('-') | KeyCode::Char('_') => return self.set_interval(false),
            KeyCode::Tab => self.view = View::ALL[(self.view.index() + 1) % View::ALL.len()],
            KeyCode::BackTab => {
                self.view = View::ALL[(self.view.index() + View::ALL.len() - 1) % View::ALL.len()]
            }
            KeyCode::Char(c @ '1'..='8') => self.view = View::ALL[c as usize - '1' as usize],
            KeyCode::Char('>') | KeyCode::Char('.') | KeyCode::Right => self.step_sort(true),
            KeyCode::Char('<') | KeyCode::Char(',') | KeyCode::Left => self.step_sort(false),
            KeyCode::Char('r') | KeyCode::Char('I') => self.reverse_sort(),
            // (`g` is Home, vim-style, with `G` for End.)
            KeyCode::Char('o') if self.view == View::Cgroups => {
                self.grouping = self.grouping.next();
                *row = 0;
            }
            KeyCode::Up | KeyCode::Char('k') => *row = row.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => *row = row.saturating_add(1),
            KeyCode::PageUp => *row = row.saturating_sub(10),
            KeyCode::PageDown => *row = row.saturating_add(10),
            KeyCode::Home | KeyCode::Char('g') => *row = 0,
            // Drawing clamps to the last row.
            KeyCode::End | KeyCode::Char('G') => *row = usize::MAX,
            _ => {}
        }
        // Keep the highlight on a row, so moving back up starts from the last one.
        let rows = self.row_count();
        let row = &mut self.selected[self.view.index()];
        *row = (*row).min(rows.saturating_sub(1));
        Action::None
    }

    /// Rows the current view's table has, filter applied.
    fn row_count(&self) -> usize {
        let m = self.shown();
        let f = &self.filter;
        let s = &self.sorts;
        match self.view {
            View::Processes => rows::filter_sort(rows::processes(m), f, s.processes).len(),
            View::Cgroups => rows::filter_sort(rows::cgroups(m, self.grouping), f, s.cgroups).len(),
            View::Tcp => rows::filter_sort(rows::connections(m), f, s.tcp).len(),
            View::Disks => rows::filter_sort(rows::devices(m), f, s.disks).len(),
            View::Udp => rows::filter_sort(rows::udp_flows(m), f, s.udp).len(),
            View::Dns => rows::filter_sort(rows::dns_rows(m), f, s.dns).len(),
            View::Requests => rows::filter_sort(rows::requests(m), f, s.requests).len(),
            View::Health => 0,
        }
    }

    fn set_interval(&mut self, longer: bool) -> Action {
        let next = step_interval(self.interval, longer);
        if next == self.interval {
            return Action::None;
        }
        self.interval = next;
        Action::SetInterval(next)
    }

    fn step_sort(&mut self, forward: bool) {
        let s = &mut self.sorts;
        match self.view {
            View::Processes => s.processes = s.processes.step(forward),
            View::Cgroups => s.cgroups = s.cgroups.step(forward),
            View::Tcp => s.tcp = s.tcp.step(forward),
            View::Disks => s.disks = s.disks.step(forward),
            View::Udp => s.udp = s.udp.step(forward),
            View::Dns => s.dns = s.dns.step(forward),
            View::Requests => s.requests = s.requests.step(forward),
            View::Health => {}
        }
    }

    fn reverse_sort(&mut self) {
        let s = &mut self.sorts;
        match self.view {
            View::Processes => s.processes = s.processes.reversed(),
            View::Cgroups => s.cgroups = s.cgroups.reversed(),
            View::Tcp => s.tcp = s.tcp.reversed(),
            View::Disks => s.disks = s.disks.reversed(),
            View::Udp => s.udp = s.udp.reversed(),
            View::Dns => s.dns = s.dns.reversed(),
            View::Requests => s.requests = s.requests.reversed(),
            View::Health => {}
        }
    }

    /// The highlighted row of the current view, clamped to `rows` rows.
    pub fn selected_row(&self, view: View, rows: usize) -> Option<usize> {
        (rows > 0).then(|| self.selected[view.index()].min(rows - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::event::Sample;

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.handle(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    #[test]
    fn quit_keys() {
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.handle(Event::Key(ctrl_c)), Action::Quit);
        // While typing a filter, q is a letter, Ctrl-C still quits.
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::None);
        assert_eq!(app.filter, "q");
        assert_eq!(app.handle(Event::Key(ctrl_c)), Action::Quit);
    }

    #[test]
    fn filter_editing() {
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "sleepy");
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.filter, "sleep");
        assert!(!app.editing_filter);
        // Keys act as commands again.
        press(&mut app, KeyCode::Char('3'));
        assert_eq!(app.view, View::Tcp);
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.filter, "");
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "x");
        press(&mut app, KeyCode::Esc);
        assert_eq!((app.filter.as_str(), app.editing_filter), ("", false));
    }

    #[test]
    fn sorting_is_per_view() {
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        press(&mut app, KeyCode::Char('r'));
        assert!(!app.sorts.processes.descending);
        press(&mut app, KeyCode::Char('>'));
        assert_eq!(app.sorts.processes.column, ProcCol::Ppid);
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.view, View::Cgroups);
        press(&mut app, KeyCode::Char('<'));
        assert_eq!(app.sorts.cgroups.column, CgroupCol::Procs);
        assert_eq!(app.sorts.processes.column, ProcCol::Ppid);
        press(&mut app, KeyCode::BackTab);
        press(&mut app, KeyCode::BackTab);
        assert_eq!(app.view, View::Requests, "wraps to the last view");
        press(&mut app, KeyCode::Char('5'));
        assert_eq!(app.view, View::Health);
        press(&mut app, KeyCode::Char('6'));
        assert_eq!(app.view, View::Udp);
        press(&mut app, KeyCode::Char('>'));
        assert_eq!(app.sorts.udp.column, UdpCol::RxRate);
        press(&mut app, KeyCode::Char('8'));
        assert_eq!(app.view, View::Requests);
        assert_eq!(app.sorts.requests.column, ReqCol::Rate);
        press(&mut app, KeyCode::Char('>'));
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(
            (app.sorts.requests.column, app.sorts.requests.descending),
            (ReqCol::ErrPct, false)
        );
        press(&mut app, KeyCode::Char('9'));
        assert_eq!(app.view, View::Requests, "no ninth view");
    }

    #[test]
    fn interval_steps_and_pause() {
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        assert_eq!(
            press(&mut app, KeyCode::Char('+')),
            Action::SetInterval(Duration::from_secs(2))
        );
        press(&mut app, KeyCode::Char('-'));
        press(&mut app, KeyCode::Char('-'));
        press(&mut app, KeyCode::Char('-'));
        assert_eq!(app.interval, Duration::from_millis(250));
        assert_eq!(press(&mut app, KeyCode::Char('-')), Action::None, "floor");
        assert_eq!(
            step_interval(Duration::from_millis(1500), true),
            Duration::from_secs(2)
        );
        assert_eq!(
            step_interval(Duration::from_secs(60), false),
            Duration::from_secs(30)
        );

        press(&mut app, KeyCode::Char(' '));
        assert!(app.paused());
        let mut sample = Sample {
            interval: Duration::from_secs(1),
            ..Sample::default()
        };
        sample.snapshot.events = 5;
        app.handle(Event::Sample(Box::new(sample)));
        assert_eq!(app.shown().samples, 0, "paused: the display holds still");
        assert_eq!(app.model.samples, 1, "but nothing is lost");
        press(&mut app, KeyCode::Char(' '));
        assert_eq!(app.shown().samples, 1);
    }

    #[test]
    fn the_highlight_stays_on_a_row() {
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        for _ in 0..5 {
            press(&mut app, KeyCode::Down);
        }
        press(&mut app, KeyCode::End);
        assert_eq!(app.selected[0], 0, "no rows: nowhere to go");
        let mut sample = Sample {
            interval: Duration::from_secs(1),
            ..Sample::default()
        };
        sample.snapshot.process.processes = (1..=3)
            .map(|pid| ksight_engine::snapshot::ProcessRow {
                pid,
                ..Default::default()
            })
            .collect();
        app.handle(Event::Sample(Box::new(sample)));
        press(&mut app, KeyCode::End);
        assert_eq!(app.selected[0], 2);
        press(&mut app, KeyCode::Up);
        assert_eq!(app.selected[0], 1);
        assert_eq!(app.selected_row(View::Processes, 3), Some(1));
    }

    #[test]
    fn o_cycles_the_grouping_of_the_containers_view_only() {
        use rows::Grouping;
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        press(&mut app, KeyCode::Char('o'));
        assert_eq!(app.grouping, Grouping::Cgroup, "not in the processes view");
        press(&mut app, KeyCode::Char('2'));
        let mut seen = Vec::new();
        for _ in 0..5 {
            press(&mut app, KeyCode::Char('o'));
            seen.push(app.grouping);
        }
        assert_eq!(
            seen,
            [
                Grouping::Owner,
                Grouping::Pod,
                Grouping::Workload,
                Grouping::Namespace,
                Grouping::Cgroup
            ]
        );
        // While typing a filter, o is a letter.
        press(&mut app, KeyCode::Char('/'));
        press(&mut app, KeyCode::Char('o'));
        assert_eq!((app.filter.as_str(), app.grouping), ("o", Grouping::Cgroup));
    }

    #[test]
    fn help_closes_on_any_key() {
        let mut app = App::new(Mode::Live, Duration::from_secs(1));
        press(&mut app, KeyCode::Char('?'));
        assert!(app.help);
        assert_eq!(press(&mut app, KeyCode::Char('3')), Action::None);
        assert!(!app.help);
        assert_eq!(
            app.view,
            View::Processes,
            "the closing key does nothing else"
        );
    }
}
