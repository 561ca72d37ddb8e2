//! The built-in text classifier's settings, as its manifest's `[settings]` table holds them:
//! written by `fedsilo-model text`, read back by every silo's trainer, so that all of them
//! build the same model. Unknown keys and values out of range are errors naming the key.
//!
//! ```toml
//! [settings]
//! base = "all-MiniLM-L6-v2"   # the pretrained encoder, for people (its files are assets)
//! max_length = 128            # tokens per text, longer ones truncated
//! lora_rank = 8               # 0: no adapters, only the head trains
//! lora_alpha = 16.0
//! lora_layers = [4, 5]        # absent: every layer
//! lora_targets = ["attention", "feed-forward"]
//! weight_decay = 0.01         # AdamW's
//! ```

use fedsilo_text::lora::{LoraSettings, Target};

/// The architecture id of the built-in text classifier.
pub const TEXT_CLASSIFIER: &str = "fedsilo.text-classifier";

/// A `[settings]` value that is missing, of the wrong type or out of range.
#[derive(Debug, thiserror::Error)]
#[error("manifest [settings] {key}: {problem}")]
pub struct RecipeError {
    /// The key.
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

/// The text classifier's settings. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRecipe {
    /// The pretrained encoder's name (informational).
    pub base: String,
    /// Tokens per text.
    pub max_length: usize,
    /// LoRA; `None`: only the head trains, on the frozen encoder.
    pub lora: Option<LoraSettings>,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Dropout in the encoder while training (attention and hidden states), in [0, 1);
    /// `None`: the model's own (`hidden_dropout_prob` of its config.json, 0.1 for MiniLM).
    /// Drawing the masks takes about a quarter of a step on the CPU (docs/performance.md).
    pub dropout: Option<f64>,
}

fn err(key: &str, problem: impl Into<String>) -> RecipeError {
    RecipeError {
        key: key.into(),
        problem: problem.into(),
    }
}

impl TextRecipe {
    /// The settings as a `[settings]` table.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("base".into(), self.base.clone().into());
        t.insert("max_length".into(), (self.max_length as i64).into());
        t.insert("weight_decay".into(), self.weight_decay.into());
        // Written only when set: manifests without it keep their digest.
        if let Some(p) = self.dropout {
            t.insert("dropout".into(), p.into());
        }
        match &self.lora {
            None => {
                t.insert("lora_rank".into(), 0i64.into());
            }
            Some(l) => {
                t.insert("lora_rank".into(), (l.rank as i64).into());
                t.insert("lora_alpha".into(), l.alpha.into());
                if let Some(layers) = &l.layers {
                    let v: Vec<toml::Value> = layers.iter().map(|x| (*x as i64).into()).collect();
                    t.insert("lora_layers".into(), v.into());
                }
                let targets: Vec<toml::Value> = l
                    .targets
                    .iter()
                    .map(|x| target_name(*x).to_string().into())
                    .collect();
                t.insert("lora_targets".into(), targets.into());
            }
        }
        t
    }

    /// Reads the settings from a manifest's `[settings]`.
    pub fn from_table(t: &toml::Table) -> Result<Self, RecipeError> {
        const KEYS: [&str; 8] = [
            "base",
            "dropout",
            "max_length",
            "lora_rank",
            "lora_alpha",
            "lora_layers",
            "lora_targets",
            "weight_decay",
        ];
        if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(k, format!("unknown key; allowed: {}", KEYS.join(", "))));
        }
        let int = |key: &str, min: i64, max: i64| -> Result<Option<usize>, RecipeError> {
            match t.get(key) {
                None => Ok(None),
                Some(v) => match v.as_integer() {
                    Some(i) if (min..=max).contains(&i) => Ok(Some(i as usize)),
                    _ => Err(err(key, format!("{v}: an integer from {min} to {max}"))),
                },
            }
        };
        let float = |key: &str| -> Result<Option<f64>, RecipeError> {
            match t.get(key) {
                None => Ok(None),
                Some(v) => match v.as_float().or(v.as_integer().map(|i| i as f64)) {
                    Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
                    _ => Err(err(key, format!("{v}: a number, 0 or more"))),
                },
            }
        };
        let base = match t.get("base") {
            None => String::new(),
            Some(v) => v
                .as_str()
                .ok_or_else(|| err("base", "a string"))?
                .to_string(),
        };
        let max_length = int("max_length", 2, 4096)?.unwrap_or(128);
        let weight_decay = float("weight_decay")?.unwrap_or(0.01);
        let dropout = float("dropout")?;
        if let Some(p) = dropout.filter(|p| *p >= 1.0) {
            return Err(err("dropout", format!("{p}: a probability in [0, 1)")));
        }
        let rank = int("lora_rank", 0, 256)?.unwrap_or(8);
        let lora = if rank == 0 {
            if let Some(k) = ["lora_alpha", "lora_layers", "lora_targets"]
                .into_iter()
                .find(|k| t.contains_key(*k))
            {
                return Err(err(k, "set, but lora_rank = 0 (no adapters)"));
            }
            None
        } else {
            let alpha = float("lora_alpha")?.unwrap_or(2.0 * rank as f64);
            if alpha <= 0.0 {
                return Err(err("lora_alpha", "a positive number"));
            }
            let layers = match t.get("lora_layers") {
                None => None,
                Some(v) => Some(
                    v.as_array()
                        .ok_or_else(|| err("lora_layers", "a list of layer numbers, e.g. [4, 5]"))?
                        .iter()
                        .map(|x| {
                            x.as_integer()
                                .filter(|i| (0..=1024).contains(i))
                                .map(|i| i as usize)
                                .ok_or_else(|| {
                                    err("lora_layers", format!("{x} is not a layer number"))
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let targets = match t.get("lora_targets") {
                None => vec![Target::Attention, Target::FeedForward],
                Some(v) => v
                    .as_array()
                    .ok_or_else(|| err("lora_targets", "a list: \"attention\", \"feed-forward\""))?
                    .iter()
                    .map(|x| match x.as_str() {
                        Some("attention") => Ok(Target::Attention),
                        Some("feed-forward") => Ok(Target::FeedForward),
                        _ => Err(err(
                            "lora_targets",
                            format!("{x}: allowed are \"attention\" and \"feed-forward\""),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if targets.is_empty() {
                return Err(err("lora_targets", "empty: name at least one"));
            }
            Some(LoraSettings {
                rank,
                alpha,
                targets,
                layers,
            })
        };
        Ok(TextRecipe {
            base,
            max_length,
            lora,
            weight_decay,
            dropout,
        })
    }
}

/// A target's name in the manifest.
pub fn target_name(t: Target) -> &'static str {
    match t {
        Target::Attention => "attention",
        Target::FeedForward => "feed-forward",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_table() {
        for (lora, dropout) in [
            (None, None),
            (
                Some(LoraSettings {
                    rank: 4,
                    alpha: 8.0,
                    targets: vec![Target::Attention],
                    layers: Some(vec![5]),
                }),
                Some(0.0),
            ),
        ] {
            let r = TextRecipe {
                base: "all-MiniLM-L6-v2".into(),
                max_length: 64,
                lora,
                weight_decay: 0.0,
                dropout,
            };
            assert_eq!(TextRecipe::from_table(&r.to_table()).unwrap(), r);
            assert_eq!(r.to_table().contains_key("dropout"), dropout.is_some());
        }
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, key) in [
            ("lora_rank = 300", "lora_rank"),
            ("lora_rank = 0\nlora_alpha = 2.0", "lora_alpha"),
            ("lora_targets = [\"mlp\"]", "lora_targets"),
            ("lora_layers = [-1]", "lora_layers"),
            ("max_length = 1", "max_length"),
            ("weight_decay = -1.0", "weight_decay"),
            ("dropout = 1.0", "dropout"),
            ("dropout = -0.1", "dropout"),
            ("rank = 8", "rank"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            let e = TextRecipe::from_table(&t).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let d = TextRecipe::from_table(&toml::Table::new()).unwrap();
        assert_eq!(d.max_length, 128);
        assert_eq!(d.lora.unwrap().alpha, 16.0);
    }
}
