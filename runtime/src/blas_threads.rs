//! # How many threads the BLAS library may use
//!
//! OpenBLAS starts a pool of threads (one per core) at load and lets them spin for a while
//! after every call, waiting for the next. A silo's training steps are small matrix products
//! separated by other work, and a silo usually shares its machine — with other silos on a
//! test machine, with the bank's own services in production — so the spinning costs CPU the
//! step does not win back: measured with 4 silos at 1 M parameters (`scripts/bench-rounds.sh`),
//! one thread per silo cut the silos' CPU per round by about 40 % and the round by about 10 %.
//!
//! `OPENBLAS_NUM_THREADS` is read once, when the library loads, before `main` runs; so the
//! count is set through the library's own call, `openblas_set_num_threads`.

use std::ffi::c_int;

extern "C" {
    fn openblas_set_num_threads(num_threads: c_int);
    fn openblas_get_num_threads() -> c_int;
}

/// Lets the BLAS library use `n` threads (at least 1).
pub fn set(n: usize) {
    let n = c_int::try_from(n.max(1)).unwrap_or(c_int::MAX);
    // SAFETY: a plain setter of the library's thread count, callable at any time.
    unsafe { openblas_set_num_threads(n) }
}

/// The threads the BLAS library may use now.
pub fn get() -> usize {
    // SAFETY: a plain getter.
    let n = unsafe { openblas_get_num_threads() };
    usize::try_from(n).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_thread_count_is_what_was_set() {
        let before = super::get();
        super::set(1);
        assert_eq!(super::get(), 1);
        super::set(0);
        assert_eq!(super::get(), 1, "at least one");
        super::set(before);
    }
}
