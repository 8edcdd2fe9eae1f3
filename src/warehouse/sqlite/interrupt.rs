//! Interrupting a query whose caller gave up (the engine's deadline): the connection's
//! interrupt handle, armed while a query runs.

use super::*;

/// Connects a read's future to the connection its blocking thread runs the query on: the future
/// holds the original (armed), the thread a clone. Dropping the future (a deadline) interrupts that
/// connection while its query runs. The state changes under one lock, so an interrupt never
/// reaches a connection after its query ended (it may be running someone else's query by then).
///
/// One window remains: SQLite forgets an interrupt that arrives while no statement of the
/// connection is active, so a drop in the microseconds between `start` and the first step lets
/// that query run to its end (its result is thrown away).
pub(super) struct Interrupt {
    state: Arc<Mutex<InterruptState>>,
    /// Set in the one the future holds: its drop is the cancellation.
    armed: bool,
}

#[derive(Default)]
pub(super) enum InterruptState {
    #[default]
    NotStarted,
    Running(rusqlite::InterruptHandle),
    Cancelled,
    Finished,
}

impl Interrupt {
    pub(super) fn lock(&self) -> parking_lot::MutexGuard<'_, InterruptState> {
        // Nothing panics while holding it, so a poisoned lock is consistent.
        self.state.lock()
    }

    /// On the blocking thread, before the query: `false` when the read was already cancelled.
    pub(super) fn start(&self, conn: &Connection) -> bool {
        let mut state = self.lock();
        match *state {
            InterruptState::NotStarted => {
                *state = InterruptState::Running(conn.get_interrupt_handle());
                true
            }
            _ => false,
        }
    }

    /// The query ended (on the thread), or the future saw the result: nothing to interrupt.
    pub(super) fn finish(&self) {
        *self.lock() = InterruptState::Finished;
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            armed: true,
        }
    }
}

impl Clone for Interrupt {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            armed: false,
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.lock();
        match std::mem::replace(&mut *state, InterruptState::Cancelled) {
            InterruptState::Running(handle) => {
                handle.interrupt();
                tracing::info!("interrupted an SQLite query whose caller gave up (deadline)");
            }
            // Finished stays finished; not yet started means never starting.
            InterruptState::Finished => *state = InterruptState::Finished,
            InterruptState::NotStarted | InterruptState::Cancelled => {}
        }
    }
}
