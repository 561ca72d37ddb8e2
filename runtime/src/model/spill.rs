//! An update kept on disk instead of in memory, for rounds whose updates together would not
//! fit the coordinator's memory bound (large models, many silos).
//!
//! The values are written as they arrive, and the facts admission needs — length, L2 norm,
//! first non-finite value — are computed from them on the way, exactly as from an update in
//! memory (the norm is the same sequential `f64` sum as [`crate::kernels::clip::l2_norm`], so
//! the two paths give the same bits). The aggregator later reads it back a slice at a time.
//!
//! The file is unlinked as soon as it is created: it has no name, so nothing is left behind
//! when the update is dropped or the process is killed, and no one else can open it. Its bytes
//! live where the directory lives — on disk, or in memory if the directory is on a `tmpfs`
//! (then they count against the machine's memory, though not the process's).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// An update being written to disk.
pub struct SpillWriter {
    out: BufWriter<File>,
    len: usize,
    sum_squares: f64,
    first_non_finite: Option<usize>,
}

/// An update on disk, with the facts computed while it was written.
#[derive(Debug)]
pub struct Spilled {
    file: File,
    len: usize,
    norm: f64,
    first_non_finite: Option<usize>,
}

impl SpillWriter {
    /// A new, nameless file in `dir` (created if missing).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let name = format!(
            "update-{}-{}.spill",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        use std::os::unix::fs::OpenOptionsExt;
        // Readable by this user only for the moment it has a name.
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            sum_squares: 0.0,
            first_non_finite: None,
        })
    }

    /// Appends `values`.
    pub fn push(&mut self, values: &[f32]) -> std::io::Result<()> {
        if self.first_non_finite.is_none() {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                self.first_non_finite = Some(self.len + i);
            }
        }
        self.sum_squares = values
            .iter()
            .fold(self.sum_squares, |a, x| a + (*x as f64) * (*x as f64));
        self.out.write_all(bytemuck::cast_slice(values))?;
        self.len += values.len();
        Ok(())
    }

    /// The update, once every value is written.
    pub fn finish(self) -> std::io::Result<Spilled> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        let norm = if self.first_non_finite.is_some() {
            f64::NAN
        } else {
            self.sum_squares.sqrt()
        };
        Ok(Spilled {
            file,
            len: self.len,
            norm,
            first_non_finite: self.first_non_finite,
        })
    }
}

/// Removes what a killed process left in `dir` between creating a spill file and unlinking it;
/// returns how many. Called when the coordinator starts, before any round spills.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("update-") && name.ends_with(".spill")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

impl Spilled {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// L2 norm (NaN if a value is not finite).
    pub fn norm(&self) -> f64 {
        self.norm
    }

    /// Index of the first value that is not finite.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.first_non_finite
    }

    /// Reads values `offset .. offset + out.len()` into `out`.
    pub fn read(&self, offset: usize, out: &mut [f32]) -> std::io::Result<()> {
        if offset + out.len() > self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "values {offset}..{} of a spilled update of {}",
                    offset + out.len(),
                    self.len
                ),
            ));
        }
        self.file
            .read_exact_at(bytemuck::cast_slice_mut(out), offset as u64 * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::clip::l2_norm;

    #[test]
    fn values_and_facts_come_back_as_from_memory_and_no_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..100_003)
            .map(|i| ((i * 7919) % 1000) as f32 / 7.0 - 60.0)
            .collect();
        let mut w = SpillWriter::create(dir.path()).unwrap();
        for c in values.chunks(4096) {
            w.push(c).unwrap();
        }
        let s = w.finish().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the file has no name"
        );
        assert_eq!(s.len(), values.len());
        assert_eq!(s.norm().to_bits(), l2_norm(&values).to_bits());
        assert_eq!(s.first_non_finite(), None);
        let mut back = vec![0.0f32; 5000];
        s.read(50_000, &mut back).unwrap();
        assert_eq!(back, values[50_000..55_000]);
        assert!(s.read(99_000, &mut back).is_err(), "past the end");
    }

    #[test]
    fn the_sweep_removes_what_a_killed_coordinator_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("update-1-0.spill"), b"x").unwrap();
        std::fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        assert_eq!(sweep(dir.path()), 1);
        assert!(dir.path().join("keep.txt").exists());
        assert_eq!(sweep(&dir.path().join("missing")), 0);
    }

    #[test]
    fn a_non_finite_value_is_found_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpillWriter::create(dir.path()).unwrap();
        w.push(&[1.0, 2.0]).unwrap();
        w.push(&[3.0, f32::NAN, f32::INFINITY]).unwrap();
        let s = w.finish().unwrap();
        assert_eq!(s.first_non_finite(), Some(3));
        assert!(s.norm().is_nan());
    }
}
