//! Metric handles cached by a label value (a license id, a route template): a labelled
//! `metrics::counter!`/`histogram!` builds its key on every call (the label value copied into a
//! `String`, a `Vec` of labels, the key hashed and looked up in the recorder's registry). The
//! seat path records a few per request, so the handles are looked up once per label value and
//! kept here; the recorder holds one series per value anyway, so this grows with it and no more.
//!
//! A handle is only made after `super::install` (the server installs the recorder before it
//! serves), so a cached handle always records into the process's recorder.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

/// Values of type `V` (handles, or small tables of handles) by label value.
pub struct ByLabel<V> {
    map: OnceLock<RwLock<HashMap<Box<str>, V>>>,
}

impl<V: Default> ByLabel<V> {
    pub const fn new() -> Self {
        ByLabel {
            map: OnceLock::new(),
        }
    }

    /// Runs `f` on the value of `label`, made (`V::default()`) the first time it is seen. The
    /// common case takes a shared lock and allocates nothing.
    pub fn with<R>(&self, label: &str, f: impl FnOnce(&V) -> R) -> R {
        let map = self.map.get_or_init(Default::default);
        {
            let read = map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = read.get(label) {
                return f(v);
            }
        }
        let mut write = map.write().unwrap_or_else(PoisonError::into_inner);
        f(write.entry(label.into()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_label() {
        static CACHE: ByLabel<OnceLock<usize>> = ByLabel::new();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = || made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let a = CACHE.with("a", |v| *v.get_or_init(make));
        let b = CACHE.with("b", |v| *v.get_or_init(make));
        assert_eq!(CACHE.with("a", |v| *v.get_or_init(make)), a);
        assert_ne!(a, b);
        assert_eq!(made.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
