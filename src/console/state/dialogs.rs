//! Starting an action from its key (refused with the reason, toggled, or its dialog opened), and
//! carrying a dialog through its keys to a confirmation and an [`Effect`].

use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent};
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler;

use super::{Dialog, Effect, State};
use crate::console::action::{self, ActionId};
use crate::console::source::{Command, Snapshot};
use crate::model::ops::BlastRadius;
use crate::model::policy::Strategy;
use crate::sanitize::clean_line;

/// Starts action `id` (from its key): opens its dialog, toggles, or refuses with the reason.
pub(super) fn start(s: &mut State, id: ActionId) -> Option<Effect> {
    let spec = action::spec(id);
    if let Some(why) = action::unavailable(spec, s.live.env, s.live.read_only) {
        // The reason names the action: "invalidate is disabled in read-only mode", ...
        s.notice = Some(why);
        return None;
    }
    match id {
        ActionId::Quit => s.quit = true,
        ActionId::Help => s.help = !s.help,
        ActionId::Freeze => toggle_freeze(s),
        ActionId::PlainWords => s.plain_words = !s.plain_words,
        ActionId::Instances => s.show_instances = !s.show_instances,
        // Space or → in story mode, never a footer key.
        ActionId::StoryNext => {}
        ActionId::Filter => {
            s.dialog = Some(Dialog::Filter {
                input: Input::new(s.filter.clone().unwrap_or_default()),
            })
        }
        ActionId::Invalidate => {
            let mut options = s.table_names();
            options.push("all tables".into());
            let mut checked = vec![false; options.len()];
            if let Some(c) = checked.get_mut(s.selected_table) {
                *c = true;
            }
            s.dialog = Some(Dialog::Pick {
                action: id,
                options,
                checked,
                cursor: s.selected_table,
            });
        }
        ActionId::SimulatePartial => {
            let options = s.table_names();
            let checked = vec![false; options.len()];
            s.dialog = Some(Dialog::Pick {
                action: id,
                options,
                checked,
                cursor: 0,
            });
        }
        ActionId::Strategy => {
            let cursor = Strategy::ALL
                .iter()
                .position(|x| *x == s.live.strategy)
                .unwrap_or(0);
            s.dialog = Some(Dialog::Strategy { cursor });
        }
        ActionId::Warm => s.dialog = Some(Dialog::Warm { top: 50 }),
    }
    None
}

fn toggle_freeze(s: &mut State) {
    if s.frozen.take().is_some() {
        s.frozen_feed = None;
        s.frozen_samples = None;
        s.notice = Some("unfrozen: showing the latest".into());
    } else {
        s.frozen = Some(Box::new(s.live.clone()));
        s.frozen_feed = Some(s.feed.clone());
        s.frozen_samples = Some(s.samples.clone());
        s.notice = Some("frozen: collection goes on (f to unfreeze)".into());
    }
}

/// What invalidating `targets` affects, from the snapshot.
fn blast_radius(s: &Snapshot, targets: &[String]) -> String {
    let mut blast = BlastRadius::of_invalidation(&s.query_tables, targets);
    blast.cached_answers = Some(
        s.tables
            .iter()
            .filter(|t| targets.contains(&t.name))
            .map(|t| t.live)
            .sum(),
    );
    blast.to_string()
}

/// Moves from a filled-in dialog to its confirmation, or straight to execution.
fn confirm_or_run(
    s: &mut State,
    id: ActionId,
    command: Command,
    targets: Vec<String>,
) -> Option<Effect> {
    let spec = action::spec(id);
    if !spec.dangerous() {
        s.dialog = Some(Dialog::Running { action: id });
        return Some(Effect::Execute(id, command));
    }
    let blast = match &command {
        Command::Invalidate(tables) => {
            let all = s.table_names();
            blast_radius(&s.live, if tables.is_empty() { &all } else { tables })
        }
        Command::SimulatePartial(tables) => format!(
            "an ETL batch runs now; {} will fail and stay behind, the other tables are bumped",
            tables.join(", ")
        ),
        Command::SetStrategy(st) => {
            format!("every instance's users are served by `{st}` from now on")
        }
        Command::Warm(n) => format!("up to {n} warehouse queries"),
        Command::StoryNext => "the story's next step".into(),
    };
    s.dialog = Some(Dialog::Confirm {
        action: id,
        command,
        phrase: action::confirmation_phrase(spec, &targets, s.live.env),
        input: Input::default(),
        blast,
    });
    None
}

pub(super) fn on_dialog_key(s: &mut State, key: KeyEvent, ev: &TermEvent) -> Option<Effect> {
    let dialog = s.dialog.as_mut()?;
    if key.code == KeyCode::Esc {
        if matches!(dialog, Dialog::Filter { .. }) {
            s.filter = None;
        }
        s.dialog = None;
        return None;
    }
    match dialog {
        Dialog::Pick {
            action: id,
            options,
            checked,
            cursor,
        } => {
            let id = *id;
            match key.code {
                KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => {
                    *cursor = (*cursor + 1).min(options.len() - 1)
                }
                KeyCode::Char(' ') => {
                    if let Some(c) = checked.get_mut(*cursor) {
                        *c = !*c;
                    }
                }
                KeyCode::Enter => {
                    let all =
                        id == ActionId::Invalidate && checked.last().copied().unwrap_or(false);
                    let tables: Vec<String> = options
                        .iter()
                        .zip(checked.iter())
                        .take(if id == ActionId::Invalidate {
                            options.len() - 1
                        } else {
                            options.len()
                        })
                        .filter(|(_, c)| **c)
                        .map(|(o, _)| o.clone())
                        .collect();
                    if !all && tables.is_empty() {
                        s.notice = Some("choose at least one table (space to tick)".into());
                        return None;
                    }
                    if id == ActionId::SimulatePartial && tables.len() == options.len() {
                        s.notice = Some(
                            "leave at least one table to load: a partial update needs one".into(),
                        );
                        return None;
                    }
                    return if id == ActionId::Invalidate {
                        let targets = if all {
                            vec!["all".into()]
                        } else {
                            tables.clone()
                        };
                        confirm_or_run(
                            s,
                            id,
                            Command::Invalidate(if all { Vec::new() } else { tables }),
                            targets,
                        )
                    } else {
                        confirm_or_run(s, id, Command::SimulatePartial(tables.clone()), tables)
                    };
                }
                _ => {}
            }
        }
        Dialog::Strategy { cursor } => match key.code {
            KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                *cursor = (*cursor + 1).min(Strategy::ALL.len() - 1)
            }
            KeyCode::Enter => {
                let st = Strategy::ALL[*cursor];
                return confirm_or_run(
                    s,
                    ActionId::Strategy,
                    Command::SetStrategy(st),
                    vec![st.name().into()],
                );
            }
            _ => {}
        },
        Dialog::Warm { top } => match key.code {
            KeyCode::Up | KeyCode::Char('+') | KeyCode::Char('k') => *top = (*top + 10).min(1_000),
            KeyCode::Down | KeyCode::Char('-') | KeyCode::Char('j') => {
                *top = top.saturating_sub(10).max(10)
            }
            KeyCode::Enter => {
                let n = *top;
                return confirm_or_run(
                    s,
                    ActionId::Warm,
                    Command::Warm(n),
                    vec![format!("top {n}")],
                );
            }
            _ => {}
        },
        Dialog::Confirm {
            action: id,
            command,
            phrase,
            input,
            ..
        } => {
            if key.code == KeyCode::Enter {
                if input.value() == phrase.as_str() {
                    let (id, command) = (*id, command.clone());
                    s.dialog = Some(Dialog::Running { action: id });
                    return Some(Effect::Execute(id, command));
                }
                s.notice = Some("the phrase does not match; nothing was done".into());
                return None;
            }
            input.handle_event(ev);
        }
        Dialog::Filter { input } => {
            if key.code == KeyCode::Enter {
                let text = clean_line(input.value()).to_lowercase();
                s.filter = (!text.is_empty()).then_some(text);
                s.scroll = 0;
                s.dialog = None;
                return None;
            }
            input.handle_event(ev);
            let text = clean_line(input.value()).to_lowercase();
            s.filter = (!text.is_empty()).then_some(text);
            s.scroll = 0;
        }
        Dialog::Running { .. } => {}
        Dialog::Outcome { .. } | Dialog::Detail { .. } => {
            if matches!(
                key.code,
                KeyCode::Enter | KeyCode::Char(' ') | KeyCode::Char('q')
            ) {
                s.dialog = None;
            }
        }
    }
    None
}
