//! Append-only files of lines (the audit journal, the privacy book), read back after a crash.
//!
//! Their writers append each line with its newline and sync before the action it records takes
//! effect, so a last line without a newline was torn by a crash and recorded nothing that
//! happened. [`read_complete`] cuts it off — on disk too, so the next line starts on a line of
//! its own — and returns the complete lines.

use std::fs::OpenOptions;
use std::path::Path;

/// The complete lines of `path` (empty if there is no file), after cutting off a torn last
/// line.
pub fn read_complete(path: &Path) -> std::io::Result<String> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        tracing::warn!(
            path = %path.display(),
            "cutting off a torn last line (a crash while it was written)"
        );
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(whole as u64)?;
        text.truncate(whole);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_off_on_disk_and_complete_lines_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        assert_eq!(read_complete(&p).unwrap(), "");
        std::fs::write(&p, "a\nb\n{\"to").unwrap();
        assert_eq!(read_complete(&p).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
        assert_eq!(read_complete(&p).unwrap(), "a\nb\n");
    }
}
