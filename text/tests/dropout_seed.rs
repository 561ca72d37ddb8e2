//! Dropout masks repeat under `device.seed`: a run of the text trainer is reproducible. burn's
//! generator is process-wide, so this test has a binary of its own — beside other tests
//! drawing from the same generator in parallel threads, the draws would interleave.

use burn::nn::DropoutConfig;
use burn::prelude::*;
use fedsilo_text::dropout::dropout;

#[test]
fn a_seeded_device_draws_the_same_masks_and_another_seed_others() {
    let layer = DropoutConfig::new(0.3).init();
    let draw = |seed: u64| {
        let d = Device::flex().autodiff();
        d.seed(seed);
        dropout(&layer, Tensor::<1>::ones([512], &d)).into_data()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}
