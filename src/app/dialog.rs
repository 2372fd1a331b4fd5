//! The native file dialogs (rfd), and what the window does where the desktop
//! offers none.
//!
//! On Linux and the BSDs rfd asks the XDG desktop portal over D-Bus and falls
//! back to zenity. With neither (a bare X server, a minimal window manager,
//! a container) its dialogs return at once with nothing, exactly as Cancel
//! does, and a button would seem dead. So [`missing`] looks first: without a
//! dialog, saves go to a folder of their own under the user's pictures
//! (never over an existing file; `PETAL_EXPORT_DIR` picks another) and the
//! window says where; choosing a
//! folder to read says what to install, or which command line does it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::PetalApp;

/// What to install, when this desktop has no file dialog rfd can show; None
/// when it has one (always on Windows and macOS). Checked once per process.
/// `PETAL_NO_FILE_DIALOG=1` makes it report none (tests, screenshots).
pub fn missing() -> Option<&'static str> {
    static MISSING: OnceLock<Option<&'static str>> = OnceLock::new();
    *MISSING.get_or_init(|| {
        if std::env::var_os("PETAL_NO_FILE_DIALOG").is_some_and(|v| !v.is_empty() && v != "0") {
            return Some(NONE_HERE);
        }
        if cfg!(any(target_os = "windows", target_os = "macos")) {
            return None;
        }
        let session_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
            || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
        let portal = ["/usr/share", "/usr/local/share"]
            .iter()
            .any(|d| Path::new(d).join("dbus-1/services/org.freedesktop.portal.Desktop.service").exists());
        let zenity = on_path("zenity", std::env::var_os("PATH").as_deref());
        (!(zenity || (session_bus && portal))).then_some(NONE_HERE)
    })
}

const NONE_HERE: &str = "this desktop has no file dialog (install xdg-desktop-portal with a backend such as \
    xdg-desktop-portal-gtk, or zenity)";

/// Whether an executable `name` is in one of the `path` directories.
fn on_path(name: &str, path: Option<&OsStr>) -> bool {
    path.is_some_and(|p| std::env::split_paths(p).any(|d| d.join(name).is_file()))
}

/// Where saves go without a dialog: `PETAL_EXPORT_DIR` when set, else
/// `Pictures/Petal` in the home folder (`Petal` in the home folder when it has
/// no Pictures; in the working directory without a home).
pub fn fallback_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PETAL_EXPORT_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let pictures = home.join("Pictures");
    if pictures.is_dir() { pictures.join("Petal") } else { home.join("Petal") }
}

/// `dir/name`, or `dir/STEM-2.EXT`, `-3`, … : the first whose name no entry
/// of `dir` starts with (so that `STEM-0.png`, `STEM-1.png`, … written from
/// it by a multi-image export do not land on earlier files either).
pub fn unused_name(dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    let stem = p.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let ext = p.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let taken = |stem: &str| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n == format!("{stem}{ext}") || n.starts_with(&format!("{stem}-")) || n.starts_with(&format!("{stem}."))
            })
        })
    };
    if !taken(&stem) {
        return dir.join(name);
    }
    (2..).map(|k| format!("{stem}-{k}")).find(|s| !taken(s)).map(|s| dir.join(format!("{s}{ext}"))).unwrap()
}

/// A file to save `name` to: the user's choice in a save dialog (None:
/// cancelled), or, without a dialog, an unused name in [`fallback_dir`]
/// (created), with a notice of where in the window and on stderr. Errors (the
/// folder cannot be made) are reported in both, naming it.
pub fn save_file(title: &str, name: &str, filter: (&str, &[&str]), app: &mut PetalApp) -> Option<PathBuf> {
    match missing() {
        None => rfd::FileDialog::new().set_title(title).set_file_name(name).add_filter(filter.0, filter.1).save_file(),
        Some(why) => fallback(why, name, false, app),
    }
}

/// A new folder to write into (the steps of a trajectory): chosen in a
/// dialog, or, without one, an unused `name` in [`fallback_dir`] with a
/// notice, as [`save_file`].
pub fn save_folder(title: &str, name: &str, app: &mut PetalApp) -> Option<PathBuf> {
    match missing() {
        None => rfd::FileDialog::new().set_title(title).pick_folder(),
        Some(why) => fallback(why, name, true, app),
    }
}

/// The save target without a dialog: an unused `name` in [`fallback_dir`],
/// after creating that folder (or, for a `new_folder`, the target itself),
/// with the notice; None after reporting a folder that cannot be made.
fn fallback(why: &str, name: &str, new_folder: bool, app: &mut PetalApp) -> Option<PathBuf> {
    let dir = fallback_dir();
    let path = unused_name(&dir, name);
    let made = if new_folder { &path } else { &dir };
    if let Err(e) = std::fs::create_dir_all(made) {
        app.report_error(format!("{why}; saving to {} instead failed: {e}", made.display()));
        return None;
    }
    app.notice(format!("{why}: saved to {}", path.display()));
    Some(path)
}

/// After a save to `path` (from [`save_file`] or [`save_folder`])
/// succeeded: says so in the window and on stderr, "Saved the grid to …".
/// Without a dialog the fallback's notice already named the file, so this
/// says nothing more.
pub fn saved(app: &mut PetalApp, what: &str, path: &Path) {
    if let Some(n) = saved_notice(missing().is_none(), what, path) {
        app.notice(n);
    }
}

/// The notice [`saved`] gives: only after a save through a dialog.
fn saved_notice(dialog: bool, what: &str, path: &Path) -> Option<String> {
    dialog.then(|| format!("Saved {what} to {}", path.display()))
}

/// An existing folder to read (a model, training images): chosen in a
/// dialog, or, without one, None with an error naming what to install and
/// the command line that does the same (`instead`).
pub fn pick_folder(title: &str, instead: &str, app: &mut PetalApp) -> Option<PathBuf> {
    match missing() {
        None => rfd::FileDialog::new().set_title(title).pick_folder(),
        Some(why) => {
            app.report_error(format!("{title}: {why}; {instead}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_through_a_dialog_are_confirmed_once() {
        let p = Path::new("/tmp/petal-seed7-grid.png");
        assert_eq!(saved_notice(true, "the grid", p).as_deref(), Some("Saved the grid to /tmp/petal-seed7-grid.png"));
        // Without a dialog the fallback already said where.
        assert_eq!(saved_notice(false, "the grid", p), None);
    }

    #[test]
    fn unused_names_skip_every_earlier_export() {
        let dir = std::env::temp_dir().join(format!("petal-dialog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(unused_name(&dir, "petal-seed7.png"), dir.join("petal-seed7.png"));
        // A multi-image export of the same name wrote STEM-0.png, STEM-1.png.
        std::fs::write(dir.join("petal-seed7-0.png"), b"").unwrap();
        assert_eq!(unused_name(&dir, "petal-seed7.png"), dir.join("petal-seed7-2.png"));
        std::fs::write(dir.join("petal-seed7-2.png"), b"").unwrap();
        assert_eq!(unused_name(&dir, "petal-seed7.png"), dir.join("petal-seed7-3.png"));
        // Other names are not affected; names without an extension work.
        assert_eq!(unused_name(&dir, "petal-seed70.png"), dir.join("petal-seed70.png"));
        std::fs::create_dir_all(dir.join("steps")).unwrap();
        assert_eq!(unused_name(&dir, "steps"), dir.join("steps-2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zenity_is_looked_for_on_the_path() {
        let dir = std::env::temp_dir().join(format!("petal-dialog-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), &dir]).unwrap();
        assert!(!on_path("zenity", Some(&path)));
        std::fs::write(dir.join("zenity"), b"").unwrap();
        assert!(on_path("zenity", Some(&path)));
        assert!(!on_path("zenity", None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
