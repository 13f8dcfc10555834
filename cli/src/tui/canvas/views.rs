//! One function per view.

use super::{DIM, HEADER, WARN, table};
use crate::tui::app::columns::Column;
use crate::tui::app::rows::{self, filter_sort};
use crate::tui::app::{App, Mode, View};
use crate::tui::event::SourceStatus;
use crate::tui::fmt;
use ksight_engine::signals::Fidelity;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

/// The current view's sort column and arrow, for the footer.
pub fn sort_label(app: &App) -> Option<(&'static str, &'static str)> {
    let s = &app.sorts;
    match app.view {
        View::Processes => Some((s.processes.column.title(), s.processes.arrow())),
        View::Cgroups => Some((s.cgroups.column.title(), s.cgroups.arrow())),
        View::Tcp => Some((s.tcp.column.title(), s.tcp.arrow())),
        View::Disks => Some((s.disks.column.title(), s.disks.arrow())),
        View::Udp => Some((s.udp.column.title(), s.udp.arrow())),
        View::Dns => Some((s.dns.column.title(), s.dns.arrow())),
        View::Requests => Some((s.requests.column.title(), s.requests.arrow())),
        View::Health => None,
    }
}

/// What the Containers view is grouped by, while it is the view shown and grouped.
pub fn grouped_by(app: &App) -> Option<&'static str> {
    (app.view == View::Cgroups).then(|| app.grouping.label())?
}

fn split_summary(area: Rect) -> (Rect, Rect) {
    let [summary, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    (summary, rest)
}

fn waiting(app: &App) -> String {
    if app.shown().samples == 0 {
        format!(
            "waiting for the first snapshot (every {})…",
            fmt::interval(app.interval)
        )
    } else if app.filter.is_empty() {
        "nothing seen yet".into()
    } else {
        format!("no row matches \"{}\"", app.filter)
    }
}

fn summary(f: &mut Frame, area: Rect, parts: Vec<Span<'static>>) {
    f.render_widget(Line::from(parts), area);
}

fn kv(key: &str, value: String) -> Vec<Span<'static>> {
    vec![Span::styled(format!(" {key} "), DIM), Span::raw(value)]
}

pub fn processes(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let (top, body) = split_summary(area);
    let h = &m.host;
    let codes: Vec<String> = m
        .exit_codes
        .iter()
        .map(|(code, n)| format!("{code}×{n}"))
        .collect();
    let rows = filter_sort(rows::processes(m), &app.filter, app.sorts.processes);
    let mut parts = Vec::new();
    parts.extend(kv("execs/s", fmt::rate(h.execs)));
    parts.extend(kv("forks/s", fmt::rate(h.forks)));
    parts.extend(kv("exits/s", fmt::rate(h.exits)));
    parts.extend(kv("threads/s", fmt::rate(h.threads)));
    parts.extend(kv(
        "exit codes",
        if codes.is_empty() {
            "-".into()
        } else {
            codes.join(" ")
        },
    ));
    parts.extend(kv("listed", rows.len().to_string()));
    summary(f, top, parts);
    let selected = app.selected_row(View::Processes, rows.len());
    table(f, body, &rows, app.sorts.processes, selected, &waiting(app));
}

pub fn cgroups(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let (top, body) = split_summary(area);
    let rows = filter_sort(
        rows::cgroups(m, app.grouping),
        &app.filter,
        app.sorts.cgroups,
    );
    let mut parts = match app.grouping.label() {
        None => kv("cgroups", rows.len().to_string()),
        Some(by) => {
            let cgroups: usize = rows.iter().map(|r| r.members).sum();
            let plural = if cgroups == 1 { "" } else { "s" };
            kv(
                &format!("{by}s"),
                format!("{} ({cgroups} cgroup{plural})", rows.len()),
            )
        }
    };
    parts.extend(kv("TCP tx", fmt::bytes(m.host.tcp_tx_total)));
    parts.extend(kv("rx", fmt::bytes(m.host.tcp_rx_total)));
    parts.push(Span::styled(
        if app.grouping.label().is_some() {
            "  (CGROUP: lowest id +others; TCP and disk are totals)"
        } else {
            "  (v2 ids; TCP and disk are totals)"
        },
        DIM,
    ));
    summary(f, top, parts);
    let selected = app.selected_row(View::Cgroups, rows.len());
    table(f, body, &rows, app.sorts.cgroups, selected, &waiting(app));
}

pub fn tcp(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let [top, note, body] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    let h = &m.host;
    let rows = filter_sort(rows::connections(m), &app.filter, app.sorts.tcp);
    let mut parts = kv("connects/s", fmt::rate(h.connects));
    parts.extend(kv("accepts/s", fmt::rate(h.accepts)));
    parts.extend(kv("closes/s", fmt::rate(h.closes)));
    parts.extend(kv("retx/s", fmt::rate(h.retransmits)));
    parts.extend(kv("resets", h.resets_total.to_string()));
    parts.extend(kv("failed", h.connect_failures_total.to_string()));
    parts.extend(kv("open", m.open.len().to_string()));
    parts.extend(kv("closed", m.closed.len().to_string()));
    summary(f, top, parts);
    f.render_widget(
        Line::styled(
            " TX RX: bytes so far (open: from the calls, ~ since capture start; closed: kernel's); TX/s RX/s: last interval",
            DIM,
        ),
        note,
    );
    let selected = app.selected_row(View::Tcp, rows.len());
    table(f, body, &rows, app.sorts.tcp, selected, &waiting(app));
}

pub fn udp(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let (top, body) = split_summary(area);
    let h = &m.host;
    let rows = filter_sort(rows::udp_flows(m), &app.filter, app.sorts.udp);
    let mut parts = kv("tx/s", fmt::byte_rate(h.udp_tx));
    parts.extend(kv("rx/s", fmt::byte_rate(h.udp_rx)));
    parts.extend(kv("tx", fmt::bytes(h.udp_tx_total)));
    parts.extend(kv("rx", fmt::bytes(h.udp_rx_total)));
    parts.extend(kv("flows", rows.len().to_string()));
    parts.push(Span::styled("  (TX RX: totals)", DIM));
    summary(f, top, parts);
    let selected = app.selected_row(View::Udp, rows.len());
    table(f, body, &rows, app.sorts.udp, selected, &waiting(app));
}

pub fn dns(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let (top, body) = split_summary(area);
    let h = &m.host;
    let rows = filter_sort(rows::dns_rows(m), &app.filter, app.sorts.dns);
    let mut parts = kv("queries/s", fmt::rate(h.dns_queries));
    parts.extend(kv("malformed", h.dns_malformed_total.to_string()));
    parts.extend(kv("rows", rows.len().to_string()));
    parts.push(Span::styled(
        "  (COUNT TMOUT: totals; latency: last answered interval)",
        DIM,
    ));
    summary(f, top, parts);
    let selected = app.selected_row(View::Dns, rows.len());
    table(f, body, &rows, app.sorts.dns, selected, &waiting(app));
}

pub fn requests(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let (top, body) = split_summary(area);
    let h = &m.host;
    let rows = filter_sort(rows::requests(m), &app.filter, app.sorts.requests);
    let mut parts = kv("req/s", fmt::rate(h.requests));
    parts.extend(kv("err%", fmt::percent(h.request_errors)));
    parts.extend(kv("total", h.requests_total.to_string()));
    parts.extend(kv("rows", rows.len().to_string()));
    parts.push(Span::styled(
        "  (COUNT ERR: totals; ERR% latency: last interval with requests)",
        DIM,
    ));
    summary(f, top, parts);
    let selected = app.selected_row(View::Requests, rows.len());
    table(f, body, &rows, app.sorts.requests, selected, &waiting(app));
}

pub fn disks(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let devices = filter_sort(rows::devices(m), &app.filter, app.sorts.disks);
    let procs = rows::io_processes(m, &app.filter);
    let want = devices.len().max(1) as u16 + 1;
    let half = area.height.saturating_sub(2) / 2;
    let [top, dev_area, title, proc_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(want.clamp(2, half.max(2))),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    summary(
        f,
        top,
        vec![
            Span::raw(format!(" {} devices", devices.len())),
            Span::styled(
                "  latency queue→completion, last busy interval; READ, WRITTEN: totals",
                DIM,
            ),
        ],
    );
    let selected = app.selected_row(View::Disks, devices.len());
    table(
        f,
        dev_area,
        &devices,
        app.sorts.disks,
        selected,
        &waiting(app),
    );
    f.render_widget(
        Line::from(vec![
            Span::styled(" I/O by process", HEADER),
            Span::styled(
                " (busiest this interval first; cgroup totals are in Containers)",
                DIM,
            ),
        ]),
        title,
    );
    let header = Row::new(
        [
            "PID", "COMM", "CGROUP", "READ/s", "WRITE/s", "READ", "WRITTEN",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, t)| right_if(i != 1, t.to_string())),
    )
    .style(HEADER);
    let body: Vec<Row> = procs
        .iter()
        .take(proc_area.height.saturating_sub(1) as usize)
        .map(|p| {
            Row::new([
                right_if(true, p.pid.to_string()),
                right_if(false, p.comm.clone()),
                right_if(true, p.cgroup_id.to_string()),
                right_if(true, fmt::byte_rate(p.disk_read_rate)),
                right_if(true, fmt::byte_rate(p.disk_write_rate)),
                right_if(true, fmt::bytes(p.disk_read)),
                right_if(true, fmt::bytes(p.disk_write)),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(body, [7, 15, 8, 7, 8, 7, 8].map(Constraint::Length))
            .header(header)
            .column_spacing(1),
        proc_area,
    );
}

fn right_if(right: bool, text: String) -> Cell<'static> {
    let line = Line::raw(text);
    Cell::from(if right {
        line.alignment(Alignment::Right)
    } else {
        line
    })
}

pub fn health(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let h = &m.host;
    let label = |k: &str| Span::styled(format!(" {k:<12}"), HEADER);
    let mut lines = Vec::new();
    let source = match &app.mode {
        Mode::Live => format!(
            "live capture by this process, {} backend",
            if m.backend.is_empty() {
                "…"
            } else {
                &m.backend
            }
        ),
        Mode::Attached(path) => format!(
            "ksight agent at {} ({} backend)",
            path.display(),
            if m.backend.is_empty() {
                "…"
            } else {
                &m.backend
            }
        ),
    };
    lines.push(Line::from(vec![label("source"), Span::raw(source)]));
    if !app.backend_reason.is_empty() {
        lines.push(Line::from(vec![
            label("why"),
            Span::raw(app.backend_reason.clone()),
        ]));
    }
    let status = match &app.status {
        SourceStatus::Connected => Span::raw("delivering"),
        SourceStatus::Reconnecting { error, attempt, .. } => Span::styled(
            format!("unreachable ({error}); reconnect attempt {attempt}"),
            WARN,
        ),
        SourceStatus::Failed(e) => Span::styled(format!("stopped: {e}"), WARN),
    };
    lines.push(Line::from(vec![label("status"), status]));
    lines.push(Line::from(vec![
        label("interval"),
        Span::raw(format!(
            "{} (last sample covered {}), {} samples, {} since start",
            fmt::interval(app.interval),
            fmt::duration(m.interval),
            m.samples,
            fmt::duration(m.now)
        )),
    ]));
    lines.push(Line::from(vec![
        label("events"),
        Span::raw(format!(
            "{}/s, {} in all",
            fmt::rate(h.events),
            h.events_total
        )),
    ]));
    let per_cpu: Vec<String> = h.lost_per_cpu.iter().map(u64::to_string).collect();
    let lost_style = if h.lost_total > 0 { WARN } else { Style::new() };
    lines.push(Line::from(vec![
        label("lost events"),
        Span::styled(
            format!(
                "{}/s, {} in all (per CPU: {})",
                fmt::rate(h.lost),
                h.lost_total,
                if per_cpu.is_empty() {
                    "-".into()
                } else {
                    per_cpu.join(" ")
                }
            ),
            lost_style,
        ),
    ]));
    lines.push(Line::from(vec![
        label("malformed"),
        Span::raw(format!(
            "{}/s, {} records in all",
            fmt::rate(h.malformed),
            h.malformed_total
        )),
    ]));
    let io_style = if h.unreported_msgs_total + h.payload_faults_total + h.byte_mismatches_total > 0
    {
        WARN
    } else {
        Style::new()
    };
    lines.push(Line::from(vec![
        label("socket I/O"),
        Span::styled(
            format!(
                "{} calls/s, payload faults {}, DNS malformed {}, unreported mmsg msgs {}, TCP byte mismatches {}",
                fmt::rate(h.socket_calls),
                h.payload_faults_total,
                h.dns_malformed_total,
                h.unreported_msgs_total,
                h.byte_mismatches_total
            ),
            io_style,
        ),
    ]));
    // Messages of connections met mid-stream are expected after start: not a warning.
    let troubled = [
        h.parser_malformed_total,
        h.parser_unmatched_total,
        h.parser_unanswered_total,
        h.parser_unlisted_total,
        h.parser_untracked_total,
    ]
    .iter()
    .any(|&n| n > 0);
    lines.push(Line::from(vec![
        label("protocols"),
        Span::styled(
            format!(
                "{} requests/s; parsers: malformed {}, mid-stream {}, unmatched {}, unanswered {}, unlisted requests {}, untracked conns {}",
                fmt::rate(h.requests),
                h.parser_malformed_total,
                h.parser_mid_stream_total,
                h.parser_unmatched_total,
                h.parser_unanswered_total,
                h.parser_unlisted_total,
                h.parser_untracked_total
            ),
            if troubled { WARN } else { Style::new() },
        ),
    ]));
    lines.push(Line::raw(""));
    lines.push(Line::styled(" signals", HEADER));
    if app.signals.is_empty() {
        lines.push(Line::styled(
            match (&app.mode, app.notes.is_empty()) {
                (Mode::Live, _) => "   (no signal report)",
                (Mode::Attached(_), true) => "   every signal fully observed, as the agent reports",
                (Mode::Attached(_), false) => {
                    "   the agent lists the signals not fully observed; the others are full:"
                }
            },
            DIM,
        ));
    }
    for s in &app.signals {
        let (text, style) = match &s.status {
            Fidelity::Full => ("full".to_string(), Style::new()),
            Fidelity::Degraded(why) => (format!("degraded: {why}"), WARN),
            Fidelity::Unavailable(why) => (format!("unavailable: {why}"), WARN),
        };
        lines.push(Line::from(vec![
            Span::raw(format!("   {:<16}", s.signal)),
            Span::styled(format!("{text:<5}"), style),
            Span::styled(format!(" {}", s.tracepoints.join(" ")), DIM),
        ]));
    }
    for note in &app.notes {
        lines.push(Line::styled(format!("   backend: {note}"), WARN));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        " Open TCP connections' bytes: from socket calls; closed: the kernel's count.",
        DIM,
    ));
    lines.push(Line::styled(
        format!(
            " Lifetimes are to the interval; exited processes stay listed {}.",
            fmt::duration(crate::tui::app::model::EXITED_KEEP)
        ),
        DIM,
    ));
    // Long lines are cut at the edge rather than wrapped into the next item.
    f.render_widget(Paragraph::new(lines), area);
}
