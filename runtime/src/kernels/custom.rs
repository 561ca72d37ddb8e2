//! Custom kernels: a platform team registers its own combining rule under a name, and
//! `kernel = "<name>"` in `[aggregation]` selects it like a built-in one. Registration is
//! per process (a regional aggregator that should run it registers it too).
//!
//! ```
//! use fedsilo::kernels::custom::{register, CombineRule};
//!
//! struct Midrange;
//! impl CombineRule for Midrange {
//!     fn combine(&self, updates: &[&[f32]], _weights: &[f64]) -> Vec<f32> {
//!         (0..updates[0].len())
//!             .map(|i| {
//!                 let (lo, hi) = updates.iter().fold((f32::MAX, f32::MIN), |(l, h), u| {
//!                     (l.min(u[i]), h.max(u[i]))
//!                 });
//!                 (lo + hi) / 2.0
//!             })
//!             .collect()
//!     }
//! }
//! register("midrange", Midrange).unwrap();
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A combining rule. Inputs are checked before it runs: at least
/// [`CombineRule::min_updates`] updates, equal lengths, finite values, positive weights.
pub trait CombineRule: Send + Sync + 'static {
    /// Combines `updates` (weights: their example counts) into one update of the same length.
    fn combine(&self, updates: &[&[f32]], weights: &[f64]) -> Vec<f32>;

    /// The fewest updates it can combine.
    fn min_updates(&self) -> usize {
        1
    }
}

type Registry = BTreeMap<&'static str, Arc<dyn CombineRule>>;

static REGISTRY: RwLock<Registry> = RwLock::new(BTreeMap::new());

/// Names the built-in kernels take.
const BUILT_IN: [&str; 6] = [
    "mean",
    "trimmed-mean",
    "median",
    "krum",
    "multi-krum",
    "bulyan",
];

/// Registers `rule` as kernel `name` (a lowercase name not taken by a built-in or another
/// registered kernel).
pub fn register(name: &str, rule: impl CombineRule) -> Result<(), super::SettingsError> {
    use super::SettingsError;
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(SettingsError::BadName(name.to_string()));
    }
    if BUILT_IN.contains(&name) {
        return Err(SettingsError::BuiltIn(name.to_string()));
    }
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    if r.contains_key(name) {
        return Err(SettingsError::Taken(name.to_string()));
    }
    // Registered once per process and kept for its life.
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    r.insert(name, Arc::new(rule));
    Ok(())
}

/// The registered kernel `name`: its static name and rule.
pub fn lookup(name: &str) -> Option<(&'static str, Arc<dyn CombineRule>)> {
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    r.get_key_value(name).map(|(k, v)| (*k, v.clone()))
}

/// The names registered.
pub fn names() -> Vec<&'static str> {
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    r.keys().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Kernel;
    use crate::kernels::SettingsError;

    struct First;
    impl CombineRule for First {
        fn combine(&self, updates: &[&[f32]], _: &[f64]) -> Vec<f32> {
            updates[0].to_vec()
        }
    }

    struct Panics;
    impl CombineRule for Panics {
        fn combine(&self, _: &[&[f32]], _: &[f64]) -> Vec<f32> {
            panic!("a bug in someone's kernel")
        }
    }

    struct Short;
    impl CombineRule for Short {
        fn combine(&self, _: &[&[f32]], _: &[f64]) -> Vec<f32> {
            vec![1.0]
        }
        fn min_updates(&self) -> usize {
            2
        }
    }

    #[test]
    fn a_registered_kernel_is_parsed_by_name_and_checked_like_a_built_in() {
        register("test-first", First).unwrap();
        register("test-short", Short).unwrap();
        register("test-panics", Panics).unwrap();
        let p = Kernel::parse("test-panics", None, None, None).unwrap();
        let e = p.combine(&[&[1.0]], &[1.0]).unwrap_err().to_string();
        assert!(e.contains("panicked"), "{e}");
        assert!(register("test-first", First).is_err(), "names are unique");
        assert!(register("mean", First).is_err(), "built-in names are taken");
        assert!(register("Bad Name", First).is_err());
        let k = Kernel::parse("test-first", None, None, None).unwrap();
        assert_eq!(k.describe(), "test-first");
        let got = k.combine(&[&[1.0, 2.0], &[3.0, 4.0]], &[1.0, 1.0]).unwrap();
        assert_eq!(got.values, vec![1.0, 2.0]);
        let short = Kernel::parse("test-short", None, None, None).unwrap();
        assert!(
            short.combine(&[&[1.0, 2.0]], &[1.0]).is_err(),
            "min_updates"
        );
        let e = short
            .combine(&[&[1.0, 2.0], &[3.0, 4.0]], &[1.0, 1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("returned 1 values (expected 2"), "{e}");
        let e = Kernel::parse("test-nope", None, None, None).unwrap_err();
        assert!(
            matches!(&e, SettingsError::Unknown { registered, .. } if registered.contains("test-first") && registered.contains("test-short")),
            "{e}"
        );
        assert_eq!(
            Kernel::parse("test-first", Some(0.1), None, None),
            Err(SettingsError::NotApplicable {
                key: "trim",
                kernel: "test-first".into()
            })
        );
    }
}
