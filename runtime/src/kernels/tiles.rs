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
