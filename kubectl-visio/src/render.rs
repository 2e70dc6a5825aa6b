//! The text screen of `kubectl visio status`: sections of aligned columns like kubectl's tables (two
//! spaces between columns, no truncation: a terminal wraps, a pipe keeps every character). Styles are
//! written always; `main` prints through `anstream`, which strips them unless stdout is a terminal and
//! `NO_COLOR` is unset, as kubectl does.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use crate::view::{PodState, TenantView};

const BOLD: Style = Style::new().bold();
const GREEN: Style = AnsiColor::Green.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const RED: Style = AnsiColor::Red.on_default();
const DIM: Style = Style::new().dimmed();

/// What a tenant wrote (display names, Event messages, condition messages) shown without its control
/// characters: an escape sequence in it must not move the cursor or recolour the on-call engineer's
/// terminal. Each one is shown escaped (`\u{1b}`), so nothing is hidden either.
pub fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// Rows of cells, each cell with an optional style, laid out in columns.
struct Table {
    rows: Vec<Vec<(String, Style)>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| (h.to_string(), DIM)).collect()] }
    }

    fn row(&mut self, cells: Vec<(String, Style)>) {
        self.rows.push(cells.into_iter().map(|(text, style)| (clean(&text), style)).collect());
    }

    fn render(&self, out: &mut String) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width =
            |i: usize| self.rows.iter().filter_map(|r| r.get(i)).map(|c| c.0.chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns).map(width).collect();
        for row in &self.rows {
            let mut line = String::from("  ");
            for (i, (text, style)) in row.iter().enumerate() {
                let pad = if i + 1 == row.len() { 0 } else { widths[i] - text.chars().count() + 2 };
                let _ = write!(line, "{}{}", paint(*style, text), " ".repeat(pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

fn plain(s: impl Into<String>) -> (String, Style) {
    (s.into(), Style::new())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The screen of one tenant.
pub fn tenant(t: &TenantView) -> String {
    let mut out = String::new();
    let ready = t.conditions.get("Ready");
    let (state, style) = match ready.map(|c| c.status.as_str()) {
        Some("True") => ("Ready", GREEN),
        _ if t.conditions.get("Stalled").is_some_and(|c| c.status == "True") => ("Stalled", RED),
        _ if t.conditions.get("Reconciling").is_some_and(|c| c.status == "True") => ("Reconciling", YELLOW),
        _ => ("Not ready", YELLOW),
    };
    let _ = writeln!(
        out,
        "{} {}/{} ({})  {}",
        paint(BOLD, "VisioCluster"),
        clean(&t.namespace),
        clean(&t.name),
        clean(&t.display_name),
        paint(style, state)
    );
    if let Some(c) = ready.filter(|c| c.status != "True") {
        let _ = writeln!(out, "  {}: {}", clean(&c.reason), clean(&c.message));
    }
    let version = match (&t.version, &t.upgrade) {
        (Some(v), _) => v.clone(),
        (None, Some(_)) => "mixed (upgrading)".into(),
        (None, None) => "-".into(),
    };
    let _ = writeln!(out, "  version      {}", clean(&version));
    if let Some(u) = &t.upgrade {
        let line = clean(&format!("{} -> {}, {}/{} pods updated", u.from, u.to, u.updated, u.total));
        let _ = writeln!(out, "  upgrade      {}", paint(YELLOW, &line));
    }
    let _ = writeln!(
        out,
        "  load         {} rooms, {} participants, capacity {}   (drainTimeout {})",
        t.rooms, t.participants, t.capacity, t.drain_timeout
    );

    let _ = writeln!(out, "\n{}", paint(BOLD, "SFU pods"));
    if t.pods.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut table =
            Table::new(&["NAME", "STATE", "VERSION", "ROOMS", "PARTICIPANTS", "DRAIN SINCE", "DEADLINE", "NOTE"]);
        for p in &t.pods {
            let style = match p.state {
                PodState::Serving => GREEN,
                PodState::Draining => YELLOW,
                PodState::Pending | PodState::Terminating => DIM,
            };
            let mut note = Vec::new();
            if p.drain_requested {
                note.push("drain requested".to_string());
            }
            if let Some(w) = &p.warned_deadline {
                note.push(format!("participants warned (end {w})"));
            }
            if p.sessions_ended {
                note.push("meetings ended at the deadline".into());
            }
            table.row(vec![
                plain(&p.name),
                (p.state.as_str().into(), style),
                plain(opt(p.version.as_deref())),
                plain(opt(p.rooms)),
                plain(opt(p.participants)),
                plain(opt(p.drain_since.as_deref())),
                plain(opt(p.drain_deadline.as_deref())),
                plain(note.join("; ")),
            ]);
        }
        table.render(&mut out);
    }

    if !t.caption_pools.is_empty() {
        let _ = writeln!(out, "\n{}", paint(BOLD, "Captions"));
        let mut table = Table::new(&[
            "POOL",
            "SLOTS USED/TOTAL",
            "REJECTED",
            "BACKENDS READY/DESIRED",
            "DRAINING",
            "UNSCHEDULABLE",
            "READY",
        ]);
        for c in &t.caption_pools {
            table.row(vec![
                plain(&c.name),
                plain(format!("{}/{}", c.slots_used, c.slots_total)),
                plain(c.slots_rejected.to_string()),
                plain(format!("{}/{}", c.backends_ready, c.backends_desired)),
                plain(c.backends_draining.to_string()),
                plain(c.backends_unschedulable.to_string()),
                plain(opt(c.ready.as_deref())),
            ]);
        }
        table.render(&mut out);
    }

    if !t.retention_policies.is_empty() {
        let _ = writeln!(out, "\n{}", paint(BOLD, "Retention"));
        let mut table = Table::new(&["POLICY", "MODE", "LAST RUN", "DELETED", "ERRORS", "LAST SUCCESS", "NEXT RUN"]);
        for r in &t.retention_policies {
            let errors = r.last_run_errors.unwrap_or(0);
            table.row(vec![
                plain(&r.name),
                plain(&r.mode),
                plain(if r.in_progress { "running".into() } else { opt(r.last_run_finished.as_deref()) }),
                plain(opt(r.last_run_deleted)),
                (opt(r.last_run_errors), if errors > 0 { RED } else { Style::new() }),
                plain(opt(r.last_success.as_deref())),
                plain(opt(r.next_run.as_deref())),
            ]);
        }
        table.render(&mut out);
    }

    if !t.firewall.is_empty() {
        let _ = writeln!(out, "\n{}", paint(BOLD, "Firewall openings"));
        let mut table = Table::new(&["PURPOSE", "PROTOCOL", "PORT", "FROM"]);
        for f in &t.firewall {
            table.row(vec![plain(&f.purpose), plain(&f.protocol), plain(f.port.to_string()), plain(&f.from)]);
        }
        table.render(&mut out);
    }

    let _ = writeln!(out, "\n{}", paint(BOLD, "Recent warnings"));
    if t.warnings.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut table = Table::new(&["LAST SEEN", "OBJECT", "REASON", "MESSAGE"]);
        for w in &t.warnings {
            let count = if w.count > 1 { format!(" (x{})", w.count) } else { String::new() };
            table.row(vec![
                plain(opt(w.last_seen.as_deref())),
                plain(&w.object),
                (w.reason.clone(), RED),
                plain(format!("{}{count}", w.message)),
            ]);
        }
        table.render(&mut out);
    }
    out
}
