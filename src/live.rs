//! Settings the server replaces while it runs (SIGHUP re-reads tokens and
//! policy): readers take a cheap snapshot, a reload swaps the whole value.

use std::sync::{Arc, RwLock};

/// A value replaced whole by reloads; readers hold a snapshot.
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    /// A live value starting at `value`.
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Arc::new(value)))
    }

    /// The value in force now (later reloads do not change it).
    pub fn get(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `value` in force for every later [`Live::get`].
    pub fn set(&self, value: T) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(value);
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Live::new(T::default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Live;

    #[test]
    fn a_snapshot_outlives_a_reload() {
        let live = Live::new(vec![1]);
        let before = live.get();
        live.set(vec![2, 3]);
        assert_eq!(*before, vec![1]);
        assert_eq!(*live.get(), vec![2, 3]);
    }
}
