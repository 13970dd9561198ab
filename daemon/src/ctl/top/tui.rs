//! The live view: the frame redrawn every second on the terminal's alternate screen, until
//! `q` (or Esc, or Ctrl-C). The terminal is given back as it was, also when a look fails.

use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use vfslock::Client;

use super::super::Failure;
use super::sample::Sample;
use super::{Frame, REFRESH};

/// Runs the live view until the user quits.
pub(super) async fn run(client: &Client, limit: usize) -> Result<u8, Failure> {
    // Keys are read on a thread of their own: reading blocks, and the runtime has one thread.
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(250)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                    let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (key.code == KeyCode::Char('c')
                            && key.modifiers.contains(KeyModifiers::CONTROL));
                    if quit && keys_tx.send(()).is_err() {
                        return;
                    }
                    if quit {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) => {
                if keys_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let mut terminal = ratatui::init();
    let outcome = watch(client, limit, &mut terminal, &mut keys).await;
    ratatui::restore();
    outcome
}

async fn watch(
    client: &Client,
    limit: usize,
    terminal: &mut ratatui::DefaultTerminal,
    keys: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<u8, Failure> {
    let mut before = Sample::take(client).await?;
    let mut every = tokio::time::interval(REFRESH);
    every.tick().await;
    loop {
        tokio::select! {
            _ = keys.recv() => return Ok(0),
            _ = every.tick() => {
                let after = Sample::take(client).await?;
                let frame = Frame::new(&before, &after, limit);
                terminal
                    .draw(|screen| draw(screen, &frame))
                    .map_err(|e| Failure::software(format!("cannot draw on the terminal: {e}")))?;
                before = after;
            }
        }
    }
}

fn draw(screen: &mut ratatui::Frame<'_>, frame: &Frame<'_>) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(screen.area());
    let lines: Vec<Line<'_>> = frame.header().into_iter().map(Line::from).collect();
    screen.render_widget(Paragraph::new(lines), header);
    let widths = [
        Constraint::Fill(3),
        Constraint::Length(7),
        Constraint::Length(11),
        Constraint::Fill(2),
        Constraint::Length(9),
        Constraint::Length(14),
    ];
    let rows = frame.cells().into_iter().map(Row::new);
    let table = Table::new(rows, widths)
        .header(Row::new(Frame::COLUMNS).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(" most contended targets "));
    screen.render_widget(table, body);
    let more = if frame.more > 0 {
        format!("(and {} more)  ", frame.more)
    } else {
        String::new()
    };
    screen.render_widget(
        Paragraph::new(format!("{more}refreshed every second; q quits")),
        footer,
    );
}
