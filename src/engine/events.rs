//! The serving ring's side of the background protocol (see `background::protocol`): opening the
//! tables of a newly installed version before any read can pick them, closing the files of tables
//! it no longer names, handing flushed memtables back to be freed off this ring, and turning a
//! background failure into refused writes. Table files are deleted by their last holder (see
//! `TableMeta::retire`), never from here.

use std::rc::Weak;

use tokio::sync::mpsc::UnboundedReceiver;

use super::Engine;
use crate::background::{Event, Job};
use crate::io::FileSystem;

impl<F: FileSystem> Engine<F> {
    /// Applies what the background ring reports.
    pub(super) async fn on_event(&self, event: Event) {
        if self.closing.get() {
            return;
        }
        match event {
            Event::Installed {
                version,
                flushed_memtable,
                work,
            } => {
                self.work.note(&work);
                // Open new tables before any read can pick them from the version.
                for table in version.tables() {
                    let opened = self.readers.open(table).await;
                    // Closed while the file was opening: the directory may be gone already.
                    if self.closing.get() {
                        return;
                    }
                    if let Err(error) = opened {
                        self.fail(format!("cannot open new table: {error}"));
                        return;
                    }
                }
                self.background_no_space.borrow_mut().take();
                let previous = std::mem::replace(&mut *self.version.borrow_mut(), version.clone());
                self.version_changes.set(self.version_changes.get() + 1);
                // A read still holding `previous` opens such a table for itself; its file stays
                // until that read drops the version.
                for table in previous.tables_not_in(&version) {
                    self.readers.close(table.number);
                }
                if let Some(id) = flushed_memtable {
                    let flushed = self.memtables.borrow_mut().remove_flushed(id);
                    if let Some(memtable) = flushed {
                        self.send_background(Job::Free(memtable));
                    }
                }
                drop(previous);
                // Expired scan snapshots may hold the tables and memtables this install retired.
                self.release_expired_snapshots();
                self.progress.notify_waiters();
            }
            Event::Failed(cause) => self.fail(cause),
            Event::NoSpace { op, path } => {
                *self.background_no_space.borrow_mut() = Some((op, path));
                self.progress.notify_waiters();
            }
        }
    }

    pub(super) fn fail(&self, cause: String) {
        tracing::error!("refusing writes until restart: {cause}");
        self.background_failure.borrow_mut().get_or_insert(cause);
        self.progress.notify_waiters();
    }
}

/// Forwards background events to the engine for as long as it lives.
pub(super) async fn run_events<F: FileSystem>(engine: Weak<Engine<F>>, mut events: UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(engine) = engine.upgrade() else { return };
        engine.on_event(event).await;
    }
}
