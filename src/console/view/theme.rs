//! The console's colours, or their absence (`NO_COLOR`).

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Block;

use crate::model::environment::Environment;

/// Colours, or their absence (`NO_COLOR`): in monochrome, emphasis is bold and selection is
/// reversed, so nothing depends on colour to be seen.
pub(super) struct Theme {
    pub(super) mono: bool,
}

impl Theme {
    pub(super) fn fg(&self, c: Color) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(c)
        }
    }
    pub(super) fn dim(&self) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(Color::DarkGray)
        }
    }
    pub(super) fn bad(&self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
                .fg(Color::LightRed)
                .add_modifier(Modifier::BOLD)
        }
    }
    pub(super) fn good(&self) -> Style {
        self.fg(Color::LightGreen)
    }
    pub(super) fn warn(&self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        }
    }
    pub(super) fn selected(&self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().bg(Color::Blue).fg(Color::White)
        }
    }
    pub(super) fn badge(&self, env: Environment) -> Style {
        let base = Style::new().add_modifier(Modifier::BOLD);
        if self.mono {
            return base.add_modifier(Modifier::REVERSED);
        }
        match env {
            Environment::Production => base.bg(Color::Red).fg(Color::White),
            Environment::Staging => base.bg(Color::Yellow).fg(Color::Black),
            Environment::Development => base.bg(Color::Green).fg(Color::Black),
        }
    }
    pub(super) fn block<'a>(&self, title: impl Into<Line<'a>>) -> Block<'a> {
        Block::bordered().title(title).border_style(self.dim())
    }
}
