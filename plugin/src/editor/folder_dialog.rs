//! "Browse..." for a folder without blocking the window or the host: the native dialog (on
//! Linux the XDG desktop portal, or zenity) runs on a thread of its own; the window polls for
//! the answer each frame.

use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;

/// A folder dialog in flight.
pub struct FolderDialog {
    /// `Some(answer)` once the dialog closed: the folder, or `None` (cancelled, or no dialog).
    answer: Arc<Mutex<Option<Option<PathBuf>>>>,
}

impl FolderDialog {
    /// Opens the dialog on its own thread, starting in `start` when that is a folder.
    pub fn open(title: &str, start: &str) -> Self {
        let answer = Arc::new(Mutex::new(None));
        let (out, title) = (answer.clone(), title.to_string());
        let start = PathBuf::from(start.trim());
        let spawned = std::thread::Builder::new()
            .name("staria-folder-dialog".into())
            .spawn(move || {
                let mut dialog = rfd::FileDialog::new().set_title(title);
                if start.is_dir() {
                    dialog = dialog.set_directory(&start);
                }
                *out.lock() = Some(dialog.pick_folder());
            });
        if spawned.is_err() {
            *answer.lock() = Some(None);
        }
        Self { answer }
    }

    /// The dialog's answer once it has closed (then this dialog is done).
    pub fn poll(&self) -> Option<Option<PathBuf>> {
        self.answer.lock().take()
    }
}

/// What the window says when a dialog closed without a folder.
pub const NO_FOLDER: &str = "no folder chosen (if no dialog appeared, this desktop has no file \
                             dialog: type or paste the folder)";
