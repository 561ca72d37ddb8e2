//! Kernels never copy their inputs: the extra memory a kernel allocates at its peak is its
//! output plus per-core tiles, measured by a counting allocator around each call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use fedsilo::kernels::{Kernel, WeightedMean};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests share the counters: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bytes allocated at the peak of `f`, beyond what was live before it.
fn peak_extra<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

fn inputs(n: usize, d: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            (0..d)
                .map(|j| ((i * 31 + j * 7) % 101) as f32 / 50.0 - 1.0)
                .collect()
        })
        .collect()
}

const MIB: usize = 1 << 20;

#[test]
fn order_statistic_and_selection_kernels_hold_only_output_and_tiles() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (n, d) = (23, 2_000_000);
    let data = inputs(n, d);
    let ups: Vec<&[f32]> = data.iter().map(|u| u.as_slice()).collect();
    let w = vec![1.0; n];
    let inputs_bytes = n * d * 4;
    let output = d * 4;
    for (kernel, tiles) in [
        (Kernel::TrimmedMean { trim: 0.2 }, 2 * MIB),
        (Kernel::Median, 2 * MIB),
        (Kernel::Krum { byzantine: 2 }, n * (1 << 15) * 4 + 2 * MIB),
        (
            Kernel::MultiKrum {
                byzantine: 2,
                keep: 10,
            },
            n * (1 << 15) * 4 + 2 * MIB,
        ),
        (Kernel::Bulyan { byzantine: 5 }, n * (1 << 15) * 4 + 2 * MIB),
    ] {
        let (r, extra) = peak_extra(|| kernel.combine(&ups, &w).unwrap());
        assert_eq!(r.values.len(), d);
        assert!(
            extra <= output + tiles,
            "{}: {extra} B extra (output {output} B, inputs {inputs_bytes} B)",
            kernel.describe()
        );
        assert!(
            extra < inputs_bytes / 4,
            "{}: {extra} B is a copy of the inputs",
            kernel.describe()
        );
    }
}

#[test]
fn the_streaming_mean_holds_one_model_whatever_the_number_of_updates() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let d = 1_000_000;
    let update = inputs(1, d).remove(0);
    let (_, extra) = peak_extra(|| {
        let mut acc = WeightedMean::new(d);
        for i in 0..50 {
            acc.fold(&update, 1.0 + i as f64).unwrap();
        }
        acc.finish()
    });
    // The accumulator, and the result it becomes: O(model), not O(n·model).
    assert!(
        extra <= 2 * d * 4 + MIB,
        "{extra} B for 50 updates of {} B",
        d * 4
    );
}
