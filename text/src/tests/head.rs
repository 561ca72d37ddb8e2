//! Head-only fine-tuning on the tiny BERT of the parent module: only the head moves, the loss
//! falls, the prefix cache changes nothing, and a FedProx setting is refused.

use super::*;
use crate::head::{embeddings, fit_head};
use crate::prefix::PrefixCache;

#[test]
fn only_the_head_moves_the_loss_falls_and_the_cache_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let lora = tiny_lora(Some(vec![1]));
    let (model, tok) = classifier(dir.path(), &lora, &device);
    let (texts, labels) = toy_data();
    let targets = crate::Targets::Classes(labels.clone());
    let s = TrainSettings {
        epochs: 40,
        batch_size: 4,
        learning_rate: 0.05,
        weight_decay: 0.0,
        seed: 3,
        prox_mu: 0.0,
    };
    let before = trainable(&model);
    let (_, first) = fit_head(
        model.clone(),
        &tok,
        &texts,
        &targets,
        &TrainSettings {
            epochs: 1,
            ..s.clone()
        },
        None,
    )
    .unwrap();
    let (trained, report) = fit_head(model.clone(), &tok, &texts, &targets, &s, None).unwrap();
    assert_eq!((report.examples, report.steps), (10, 40 * 3));
    assert!(
        report.last_epoch_loss < first.last_epoch_loss * 0.8,
        "first epoch {first:?}, last {report:?}"
    );
    for (a, b) in before.iter().zip(trainable(&trained)) {
        if a.name.starts_with("head.") {
            assert_ne!(a.values, b.values, "{} did not move", a.name);
        } else {
            assert_eq!(a.values, b.values, "{} moved", a.name);
        }
    }
    assert_eq!(
        values(trained.encoder.embeddings.word_embeddings.weight.val()),
        values(model.encoder.embeddings.word_embeddings.weight.val())
    );
    // Through the frozen prefix (layer 0 has no adapter): the same embeddings, the same head.
    let mut cache = PrefixCache::new(1);
    let direct = embeddings(&model, &tok, &texts, None).unwrap();
    let cached = embeddings(&model, &tok, &texts, Some(&mut cache)).unwrap();
    assert_eq!(cache.len(), texts.len());
    assert_eq!(direct.len(), cached.len());
    for (a, b) in direct.iter().zip(&cached) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let (via_cache, _) =
        fit_head(model.clone(), &tok, &texts, &targets, &s, Some(&mut cache)).unwrap();
    for (a, b) in trainable(&trained).iter().zip(trainable(&via_cache)) {
        for (x, y) in a.values.iter().zip(&b.values) {
            assert!((x - y).abs() < 1e-3, "{}: {x} vs {y}", a.name);
        }
    }
    let e = fit_head(
        model,
        &tok,
        &texts,
        &targets,
        &TrainSettings { prox_mu: 0.1, ..s },
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, TextError::Setting { key: "prox_mu", .. }),
        "{e}"
    );
}

/// What fedsilo-text refuses before the first step is refused without data too — the silo
/// asks this before its DP-SGD charges a round.
#[test]
fn settings_that_cannot_train_are_refused_without_data() {
    let ok = TrainSettings::default();
    assert!(ok.check().is_ok());
    for (bad, key) in [
        (
            TrainSettings {
                learning_rate: 100.0,
                ..ok.clone()
            },
            "weight_decay",
        ),
        (
            TrainSettings {
                learning_rate: f64::NAN,
                ..ok.clone()
            },
            "learning_rate",
        ),
        (
            TrainSettings {
                epochs: 0,
                ..ok.clone()
            },
            "batch_size, epochs",
        ),
        (
            TrainSettings {
                prox_mu: -1.0,
                ..ok.clone()
            },
            "prox_mu",
        ),
    ] {
        let e = bad.check().unwrap_err();
        assert!(
            matches!(e, TextError::Setting { key: k, .. } if k == key),
            "{e}"
        );
    }
}
