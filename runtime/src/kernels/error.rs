//! Why a kernel refused its inputs.

/// A kernel's refusal. Every variant says which input or parameter and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// No updates to combine.
    #[error("no updates to combine")]
    Empty,
    /// Updates of different lengths.
    #[error("update {index} has {len} values, update 0 has {want}")]
    Length {
        /// Which update.
        index: usize,
        /// Its length.
        len: usize,
        /// The first update's length.
        want: usize,
    },
    /// A NaN or infinite value.
    #[error("update {update} value {index} is {value} (not finite)")]
    NonFinite {
        /// Which update.
        update: usize,
        /// Which coordinate.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A weight that is not a positive finite number, or a weight count that differs.
    #[error("weights: {0}")]
    Weights(String),
    /// A parameter outside its range, or not satisfiable with this many updates.
    #[error("{kernel}: {message}")]
    Parameter {
        /// The kernel.
        kernel: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Checks that there is at least one update, all of one length, all values finite, and (if
/// given) one positive finite weight per update. Returns the length.
pub fn validate(updates: &[&[f32]], weights: Option<&[f64]>) -> Result<usize, KernelError> {
    let first = updates.first().ok_or(KernelError::Empty)?;
    let d = first.len();
    for (i, u) in updates.iter().enumerate() {
        if u.len() != d {
            return Err(KernelError::Length {
                index: i,
                len: u.len(),
                want: d,
            });
        }
        if let Some(index) = u.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                update: i,
                index,
                value: u[index],
            });
        }
    }
    if let Some(w) = weights {
        if w.len() != updates.len() {
            return Err(KernelError::Weights(format!(
                "{} weights for {} updates",
                w.len(),
                updates.len()
            )));
        }
        if let Some(i) = w.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
            return Err(KernelError::Weights(format!(
                "weight {i} is {}, must be a positive number",
                w[i]
            )));
        }
    }
    Ok(d)
}

/// An `[aggregation]` setting, or a custom kernel's registration, that cannot be used. Each
/// variant names the key and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A kernel without a parameter it needs.
    #[error("kernel `{kernel}` needs `{key}` ({meaning})")]
    Missing {
        /// The kernel.
        kernel: String,
        /// The key.
        key: &'static str,
        /// What it is.
        meaning: &'static str,
    },
    /// A parameter the kernel does not take.
    #[error("`{key}` does not apply to kernel `{kernel}`")]
    NotApplicable {
        /// The key.
        key: &'static str,
        /// The kernel.
        kernel: String,
    },
    /// A value outside its range.
    #[error("{key} = {value}: {allowed}")]
    OutOfRange {
        /// The key, as written in messages.
        key: &'static str,
        /// The value.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A kernel name that is neither built in nor registered.
    #[error("unknown kernel `{name}` (allowed: mean, trimmed-mean, median, krum, multi-krum, bulyan{registered})")]
    Unknown {
        /// The name.
        name: String,
        /// The registered kernels, each after ", ".
        registered: String,
    },
    /// A custom kernel name that is not lowercase letters, digits and dashes.
    #[error("kernel name {0:?}: use lowercase letters, digits and dashes")]
    BadName(String),
    /// A custom kernel named like a built-in one.
    #[error("kernel `{0}` is built in")]
    BuiltIn(String),
    /// A custom kernel name registered twice.
    #[error("kernel `{0}` is registered already")]
    Taken(String),
}
