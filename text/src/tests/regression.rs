//! A regression head on the tiny BERT of the parent module: one output trained on the squared
//! error — LoRA and head, head alone, and under DP-SGD — and predicted as a value, not a
//! probability; class labels on a one-output head (and numbers on a classifier's) are refused.

use super::*;
use crate::head::fit_head;
use crate::private::{fit_private, DpSgd};
use crate::Targets;

/// The toy texts with a number each: +1.5 for the pleased ones, −0.5 for the others.
fn values(labels: &[usize]) -> Targets {
    Targets::Values(
        labels
            .iter()
            .map(|l| if *l == 1 { 1.5 } else { -0.5 })
            .collect(),
    )
}

fn settings(epochs: u32) -> TrainSettings {
    TrainSettings {
        epochs,
        batch_size: 4,
        learning_rate: 0.01,
        weight_decay: 0.0,
        seed: 7,
        prox_mu: 0.0,
    }
}

#[test]
fn a_regression_head_learns_its_numbers_and_predicts_values() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let (model, tok) = with_outputs(dir.path(), &tiny_lora(None), &device, 1);
    let (texts, labels) = toy_data();
    let y = values(&labels);
    let (_, first) = fit(model.clone(), &tok, &texts, &y, &settings(1)).unwrap();
    let (trained, report) = fit(model.clone(), &tok, &texts, &y, &settings(30)).unwrap();
    assert!(
        report.last_epoch_loss < first.last_epoch_loss / 3.0,
        "first epoch {first:?}, last {report:?}"
    );
    let p = predict(&trained, &tok, &texts, 4).unwrap();
    let Targets::Values(want) = &y else {
        unreachable!()
    };
    for (out, want) in p.iter().zip(want) {
        assert_eq!(out.len(), 1, "one value per text");
        // Not a probability: the pleased texts come out above 1.
        assert!((out[0] - want).abs() < 0.5, "{out:?} for {want}");
    }
    // The head alone learns too.
    let (_, head) = fit_head(model.clone(), &tok, &texts, &y, &settings(40), None).unwrap();
    let (_, head_first) = fit_head(model.clone(), &tok, &texts, &y, &settings(1), None).unwrap();
    assert!(
        head.last_epoch_loss < head_first.last_epoch_loss,
        "{head_first:?} → {head:?}"
    );
    // And under DP-SGD, without noise and with a generous clip, it still learns.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let dp = DpSgd {
        clip: 10.0,
        noise_multiplier: 0.0,
        lot: 4,
        steps: 60,
    };
    let (private, _) = fit_private(
        model,
        &tok,
        &texts,
        &y,
        &settings(1),
        dp,
        None,
        &mut rng,
        &mut |_, _| {},
    )
    .unwrap();
    let p = predict(&private, &tok, &texts, 4).unwrap();
    let mse = p
        .iter()
        .zip(want)
        .map(|(o, w)| ((o[0] - w) as f64).powi(2))
        .sum::<f64>()
        / want.len() as f64;
    assert!(mse < first.last_epoch_loss, "{mse} vs {first:?}");
}

#[test]
fn targets_of_the_wrong_kind_for_the_head_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let (texts, labels) = toy_data();
    let (one, tok) = with_outputs(dir.path(), &tiny_lora(None), &device, 1);
    let e = fit(
        one,
        &tok,
        &texts,
        &Targets::Classes(labels.clone()),
        &settings(1),
    )
    .unwrap_err();
    assert!(e.to_string().contains("one per class"), "{e}");
    let (two, tok) = classifier(dir.path(), &tiny_lora(None), &device);
    let e = fit(two, &tok, &texts, &values(&labels), &settings(1)).unwrap_err();
    assert!(e.to_string().contains("a regression has one"), "{e}");
}
