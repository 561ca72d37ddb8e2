//! Why a model's shape, or the LoRA adapters asked of it, cannot be used. Each variant names
//! the value and what is allowed; the configuration key is named by whoever read it.

/// A model spec or a LoRA plan that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// No input features.
    #[error("model has no inputs")]
    NoInputs,
    /// A hidden layer of width 0.
    #[error("hidden layer {0} has width 0")]
    EmptyLayer(usize),
    /// A layer wider than [`super::MAX_WIDTH`].
    #[error("a layer of width {0}: widths are at most {max}", max = super::MAX_WIDTH)]
    TooWide(usize),
    /// More parameters than [`super::MAX_PARAMETERS`].
    #[error("model `{0}` has more than {max} parameters, the most fedsilo trains", max = super::MAX_PARAMETERS)]
    TooLarge(String),
    /// `plan.lora.rank` out of range.
    #[error("plan.lora.rank = {0}: must be between 1 and {max}", max = super::lora::MAX_RANK)]
    LoraRank(usize),
    /// `plan.lora.layers` is empty.
    #[error("plan.lora.layers is empty: name at least one dense layer, e.g. [0]")]
    LoraNoLayers,
    /// `plan.lora.alpha` is not a positive number.
    #[error("plan.lora.alpha = {0}: must be a positive number")]
    LoraAlpha(f32),
    /// A layer named twice in `plan.lora.layers`.
    #[error("plan.lora.layers names layer {0} twice")]
    LoraLayerTwice(usize),
    /// A layer the model does not have.
    #[error("plan.lora.layers: layer {layer} does not exist; the model `{model}` has dense layers 0 to {last}")]
    LoraNoSuchLayer {
        /// The layer named.
        layer: usize,
        /// The model.
        model: String,
        /// Its last dense layer.
        last: usize,
    },
}
