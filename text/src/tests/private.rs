//! DP-SGD and FedProx on the text model: what they promise, tested on the tiny BERT of the
//! parent module.

use super::*;

/// DP-SGD: each text's gradient is clipped before it is summed (the lot's sum is within
/// lot × C, while unclipped sums are far above), the noise asked for is z·C on every
/// trainable value of every step, frozen weights do not move, and without noise it learns.
#[test]
fn dp_sgd_clips_each_text_and_adds_the_noise_it_is_told() {
    use crate::private::{fit_private, DpSgd};
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let lora = tiny_lora(None);
    let (model, tok) = classifier(dir.path(), &lora, &device);
    let tensors = trainable(&model).len();
    let (texts, labels) = toy_data();
    let targets = crate::Targets::Classes(labels.clone());
    let s = TrainSettings {
        epochs: 3,
        batch_size: 4,
        learning_rate: 0.01,
        weight_decay: 0.0,
        seed: 7,
        prox_mu: 0.0,
    };
    // The norm of each step's sum, from the values the noise is asked to cover.
    let sums = |clip: f64, z: f64| {
        let (mut calls, mut acc, mut norms, mut stds) = (0usize, 0.0f64, Vec::new(), Vec::new());
        let mut noise = |v: &mut [f32], std: f64| {
            acc += v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
            stds.push(std);
            calls += 1;
            if calls % tensors == 0 {
                norms.push(acc.sqrt());
                acc = 0.0;
            }
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // 10 texts, lots of 4 expected, 3 passes: ⌈10 / 4⌉ · 3 steps.
        let dp = DpSgd {
            clip,
            noise_multiplier: z,
            lot: 4,
            steps: 9,
        };
        let (_, report) = fit_private(
            model.clone(),
            &tok,
            &texts,
            &targets,
            &s,
            dp,
            None,
            &mut rng,
            &mut noise,
        )
        .unwrap();
        (norms, stds, report)
    };
    let (clip, z) = (1e-3, 2.0);
    let (norms, stds, report) = sums(clip, z);
    let steps = 9;
    assert_eq!(report.steps, steps);
    // Every step is noised and taken, an empty lot too.
    assert_eq!(norms.len() as u64, steps);
    assert!(
        stds.iter().all(|s| (*s - z * clip).abs() < 1e-12),
        "{stds:?}"
    );
    // At most all ten texts in a lot, each clipped to C.
    assert!(
        norms.iter().all(|n| *n <= 10.0 * clip * (1.0 + 1e-4)),
        "{norms:?}"
    );
    let (free, _, _) = sums(1e6, 0.0);
    assert!(free.iter().any(|n| *n > 10.0 * clip * 10.0), "{free:?}");
    // Without noise and with a loose clip it learns; the frozen weights stay as they were.
    let frozen_before = values(model.encoder.embeddings.word_embeddings.weight.val());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let learn = TrainSettings {
        epochs: 30,
        ..s.clone()
    };
    let (trained, _) = fit_private(
        model,
        &tok,
        &texts,
        &targets,
        &learn,
        DpSgd {
            clip: 10.0,
            noise_multiplier: 0.0,
            lot: 4,
            steps: 90,
        },
        None,
        &mut rng,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        values(trained.encoder.embeddings.word_embeddings.weight.val()),
        frozen_before
    );
    let p = predict(&trained, &tok, &texts, 4).unwrap();
    let right = p.iter().zip(&labels).filter(|(q, y)| q[**y] > 0.5).count();
    assert!(right >= 8, "{right} of 10 right: {p:?}");
}

/// FedProx keeps the trained tensors nearer the round's start than plain training from the
/// same start and seed, and a negative μ is refused.
#[test]
fn fedprox_keeps_the_adapters_near_the_global_model() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let lora = tiny_lora(None);
    let (model, tok) = classifier(dir.path(), &lora, &device);
    let start: Vec<f32> = trainable(&model)
        .into_iter()
        .flat_map(|n| n.values)
        .collect();
    let (texts, labels) = toy_data();
    let targets = crate::Targets::Classes(labels.clone());
    let moved = |mu: f64| -> f64 {
        let s = TrainSettings {
            epochs: 20,
            batch_size: 4,
            learning_rate: 0.01,
            weight_decay: 0.0,
            seed: 3,
            prox_mu: mu,
        };
        let (trained, _) = fit(model.clone(), &tok, &texts, &targets, &s).unwrap();
        trainable(&trained)
            .into_iter()
            .flat_map(|n| n.values)
            .zip(&start)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (plain, prox) = (moved(0.0), moved(20.0));
    assert!(
        prox < 0.7 * plain,
        "moved {plain} plain, {prox} with FedProx"
    );
    let bad = TrainSettings {
        prox_mu: -1.0,
        ..TrainSettings::default()
    };
    let e = fit(model, &tok, &texts, &targets, &bad).unwrap_err();
    assert!(
        matches!(e, TextError::Setting { key: "prox_mu", .. }),
        "{e}"
    );
}
