//! Drawing: a pure function of the application state. Nothing here changes state.

mod views;

#[cfg(test)]
mod tests;

use crate::tui::app::columns::{Column, Cut, SortBy, fit};
use crate::tui::app::rows::TableRow;
use crate::tui::app::{App, Mode, View};
use crate::tui::event::SourceStatus;
use crate::tui::fmt;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Tabs, Wrap,
};

/// Below this the layout cannot hold a header, tabs and a useful table.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const WARN: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
const BAD: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(f, area);
        return;
    }
    let banner = status_banner(app);
    let banner_height = banner.as_ref().map_or(0, |b| {
        (b.width() as u16).div_ceil(area.width.max(1)).clamp(1, 2)
    });
    let [header, tabs, banner_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(banner_height),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, app);
    draw_tabs(f, tabs, app);
    if let Some(banner) = banner {
        f.render_widget(
            Paragraph::new(banner).wrap(Wrap { trim: true }),
            banner_area,
        );
    }
    match app.view {
        View::Processes => views::processes(f, body, app),
        View::Cgroups => views::cgroups(f, body, app),
        View::Tcp => views::tcp(f, body, app),
        View::Disks => views::disks(f, body, app),
        View::Health => views::health(f, body, app),
        View::Udp => views::udp(f, body, app),
        View::Dns => views::dns(f, body, app),
        View::Requests => views::requests(f, body, app),
    }
    draw_footer(f, footer, app);
    if app.help {
        draw_help(f, area);
    }
}

fn too_small(f: &mut Frame, area: Rect) {
    let text = vec![
        Line::styled("Terminal too small", WARN),
        Line::raw(format!(
            "{}×{} here; ksight top needs at least {MIN_WIDTH}×{MIN_HEIGHT}.",
            area.width, area.height
        )),
        Line::raw("Enlarge the window, or press q to quit."),
    ];
    let height = 5.min(area.height);
    let y = area.y + area.height.saturating_sub(height) / 2;
    f.render_widget(
        Paragraph::new(text)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        Rect::new(area.x, y, area.width, height),
    );
}

fn source_label(app: &App) -> String {
    let backend = match app.shown().backend.as_str() {
        "" => "…".to_string(),
        b => b.to_string(),
    };
    match &app.mode {
        Mode::Live => format!("live · {backend}"),
        Mode::Attached(path) => format!("agent {} · {backend}", path.display()),
    }
}

fn draw_header(f: &mut Frame, area: Rect, app: &App) {
    let m = app.shown();
    let mut spans = vec![
        Span::styled(" ksight top ", HEADER.add_modifier(Modifier::REVERSED)),
        Span::raw(format!(
            " {} │ every {} │ {} ev/s │ lost ",
            source_label(app),
            fmt::interval(app.interval),
            fmt::rate(m.host.events)
        )),
    ];
    let lost = fmt::rate(m.host.lost);
    spans.push(if m.host.lost.unwrap_or(0.0) > 0.0 {
        Span::styled(lost, BAD)
    } else {
        Span::raw(lost)
    });
    spans.push(Span::raw("/s"));
    if app.paused() {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            " PAUSED ",
            WARN.add_modifier(Modifier::REVERSED),
        ));
    }
    f.render_widget(Line::from(spans), area);
}

fn draw_tabs(f: &mut Frame, area: Rect, app: &App) {
    let titles: Vec<String> = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()))
        .collect();
    let selected = View::ALL.iter().position(|&v| v == app.view);
    // Each title is padded by a cell either side; dividers go between them.
    let text: usize = titles.iter().map(|t| t.chars().count() + 2).sum();
    let tabs = Tabs::new(titles)
        .select(selected)
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD));
    // Where every view's name does not fit with dividers (80 columns), the numbers alone
    // separate them: all eight names stay readable.
    let tabs = if text + View::ALL.len() - 1 <= area.width as usize {
        tabs.divider("│")
    } else {
        tabs.divider("")
    };
    f.render_widget(tabs, area);
}

/// A line under the tabs while the source is not delivering.
fn status_banner(app: &App) -> Option<Line<'static>> {
    match &app.status {
        SourceStatus::Connected => None,
        SourceStatus::Reconnecting {
            error,
            attempt,
            retry_in,
        } => Some(Line::styled(
            format!(
                " agent unreachable, reconnect attempt {attempt} in {}: {error}",
                fmt::duration(*retry_in)
            ),
            WARN,
        )),
        SourceStatus::Failed(error) => Some(Line::styled(
            format!(" collection stopped, showing the last data: {error}"),
            BAD,
        )),
    }
}

/// Key hints in display order, each with its importance (lower: kept longer when the
/// footer is narrow).
const HINTS: &[(&str, u8)] = &[
    ("Tab view", 7),
    ("←→ sort", 3),
    ("r reverse", 4),
    ("/ filter", 2),
    // Containers view only.
    ("o group", 3),
    ("space pause", 5),
    ("+- interval", 6),
    ("? help", 1),
    ("q quit", 0),
];

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let line = if app.editing_filter {
        Line::from(vec![
            Span::styled(" filter: ", HEADER),
            Span::raw(app.filter.clone()),
            Span::styled("█", DIM),
            Span::styled("  Enter keep · Esc clear", DIM),
        ])
    } else {
        let mut spans = Vec::new();
        if let Some((title, sort)) = views::sort_label(app) {
            spans.push(Span::styled(format!(" sort {title}{sort} "), HEADER));
        }
        if let Some(by) = views::grouped_by(app) {
            spans.push(Span::styled(format!(" grouped by {by} "), WARN));
        }
        if !app.filter.is_empty() {
            spans.push(Span::styled(format!(" filter \"{}\" ", app.filter), WARN));
        }
        let mut room = (area.width as usize).saturating_sub(spans.iter().map(Span::width).sum());
        let applies = |hint: &str| hint != "o group" || app.view == View::Cgroups;
        let mut by_importance: Vec<&(&str, u8)> =
            HINTS.iter().filter(|(hint, _)| applies(hint)).collect();
        by_importance.sort_by_key(|(_, importance)| *importance);
        let mut shown = Vec::new();
        for (hint, _) in by_importance {
            let need = hint.chars().count() + 2;
            if need <= room {
                room -= need;
                shown.push(*hint);
            }
        }
        let hints: Vec<&str> = HINTS
            .iter()
            .map(|(hint, _)| *hint)
            .filter(|h| shown.contains(h))
            .collect();
        spans.push(Span::styled(format!(" {}", hints.join("  ")), DIM));
        Line::from(spans)
    };
    f.render_widget(line, area);
}

const HELP: &[(&str, &str)] = &[
    ("1-8, Tab, S-Tab", "switch view"),
    ("← → or < >", "sort by the previous / next column"),
    ("r", "reverse the sort direction"),
    ("/", "filter rows by text (Enter keeps, Esc clears)"),
    ("Esc", "clear the filter"),
    ("o", "Containers: group by owner → pod → workload →"),
    ("", "namespace → off (other cgroups: by owner)"),
    ("↑ ↓ PgUp PgDn Home End", "move the highlight"),
    ("space", "pause / resume the display"),
    ("+ -", "longer / shorter refresh interval"),
    ("?", "this help (any key closes it)"),
    ("q, Ctrl-C", "quit"),
];

fn draw_help(f: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:>22}  "), HEADER),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "Rates are per second over the last interval; byte and",
        DIM,
    ));
    lines.push(Line::styled(
        "count totals are since ksight top started. A group's CGROUP is",
        DIM,
    ));
    lines.push(Line::styled(
        "its lowest cgroup id, +N the number of other cgroups it sums.",
        DIM,
    ));
    lines.push(Line::styled(
        "Requests: ERR% P50 P99 of the last interval with requests;",
        DIM,
    ));
    lines.push(Line::styled(
        "≤ marks an upper bound, where rows of several peers are summed.",
        DIM,
    ));
    let width = 76.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" ksight top — keys "),
        ),
        popup,
    );
}

/// Widths of the columns that fit: the growing column takes what is left.
fn widths<C: Column>(columns: &[C], width: u16) -> Vec<u16> {
    let used: u16 =
        columns.iter().map(|c| c.width()).sum::<u16>() + columns.len().saturating_sub(1) as u16;
    let spare = width.saturating_sub(used);
    columns
        .iter()
        .map(|c| c.width() + if c.grows() { spare } else { 0 })
        .collect()
}

fn aligned<C: Column>(column: C, text: String, width: u16) -> Cell<'static> {
    let text = match column.cut() {
        Cut::Right => fmt::truncate(&text, width as usize),
        Cut::Left => fmt::truncate_left(&text, width as usize),
        Cut::Name => fmt::truncate_name(&text, width as usize),
    };
    let line = Line::raw(text);
    Cell::from(if column.numeric() {
        line.alignment(Alignment::Right)
    } else {
        line
    })
}

/// A sortable table of `rows` (already filtered and sorted) with the columns that fit.
fn table<R: TableRow>(
    f: &mut Frame,
    area: Rect,
    rows: &[R],
    sort: SortBy<R::Col>,
    selected: Option<usize>,
    empty: &str,
) {
    let columns = fit::<R::Col>(area.width);
    let widths = widths(&columns, area.width);
    let header = Row::new(columns.iter().zip(&widths).map(|(&c, &w)| {
        let title = if c == sort.column {
            format!("{}{}", c.title(), sort.arrow())
        } else {
            c.title().to_string()
        };
        aligned(c, title, w)
    }))
    .style(HEADER.add_modifier(Modifier::UNDERLINED));
    // Only the rows that can be on screen are formatted.
    let visible = area.height.saturating_sub(1) as usize;
    let offset = selected.map_or(0, |s| s.saturating_sub(visible.saturating_sub(1)));
    let body: Vec<Row> = rows
        .iter()
        .skip(offset)
        .take(visible)
        .map(|r| {
            Row::new(
                columns
                    .iter()
                    .zip(&widths)
                    .map(|(&c, &w)| aligned(c, r.cell(c), w)),
            )
        })
        .collect();
    let table = Table::new(body, widths.iter().map(|&w| Constraint::Length(w)))
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(selected.map(|s| s - offset));
    f.render_stateful_widget(table, area, &mut state);
    if rows.is_empty() && area.height > 2 {
        f.render_widget(
            Paragraph::new(Line::styled(empty.to_string(), DIM)).alignment(Alignment::Center),
            Rect::new(area.x, area.y + 2, area.width, 1),
        );
    }
}
