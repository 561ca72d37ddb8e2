//! Splitting a coordinate range into tiles processed in parallel (rayon, one worker per core).

use rayon::prelude::*;

/// Calls `f(start, out_tile, scratch)` for every tile of `lanes` coordinates of `out`, in
/// parallel; `scratch` is a per-worker buffer of `scratch_len` values, reused across tiles.
pub fn for_each_tile<F>(out: &mut [f32], lanes: usize, scratch_len: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    out.par_chunks_mut(lanes).enumerate().for_each_init(
        || vec![0.0f32; scratch_len],
        |scratch, (i, tile)| f(i * lanes, tile, scratch),
    );
}

/// A zeroed vector of `len` values whose pages are already faulted in, by all cores.
///
/// Measured on this project's machines: first-touching fresh output pages from inside a
/// streaming kernel costs several times the kernel itself (150 ms instead of 29 ms for a mean of
/// 10 × 10⁷ values). So the buffer is advised to use transparent huge pages (where the kernel
/// allows it: a 2 MiB fault instead of 512 small ones) and touched first in a separate parallel
/// pass.
/// Below 16 MiB the allocator usually hands back memory it already has (glibc serves such sizes
/// from its heap once one was freed), so the extra pass would only cost time.
pub fn zeroed(len: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    if len * 4 >= 16 << 20 {
        advise_huge_pages(&mut v);
        v.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
    }
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    let start = v.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    let (a, b) = (start.div_ceil(HUGE) * HUGE, end / HUGE * HUGE);
    if b > a {
        // SAFETY: [a, b) lies inside the live allocation `v`; MADV_HUGEPAGE is only a hint
        // about how to back those pages and never changes their contents. A failure is ignored.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &mut [f32]) {}
