//! Drop-based rollback guard: each step of a multi-step operation registers
//! how to undo itself; unless the operation calls [`Revert::success`], the
//! undo steps run in reverse order when the guard is dropped (on `?`, on
//! panic), so a failed operation leaves nothing half-made.

/// A list of undo steps run on drop unless disarmed.
#[derive(Default)]
pub struct Revert {
    steps: Vec<(&'static str, UndoStep)>,
}

type UndoStep = Box<dyn FnOnce() + Send>;

impl Revert {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an undo step; `what` is logged if it runs.
    pub fn add(&mut self, what: &'static str, f: impl FnOnce() + Send + 'static) {
        self.steps.push((what, Box::new(f)));
    }

    /// The operation succeeded: forget the undo steps.
    pub fn success(mut self) {
        self.steps.clear();
    }
}

impl Drop for Revert {
    fn drop(&mut self) {
        while let Some((what, f)) = self.steps.pop() {
            tracing::debug!(step = what, "reverting");
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn runs_in_reverse_unless_success() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut r = Revert::new();
            for i in 0..3 {
                let l = log.clone();
                r.add("step", move || l.lock().unwrap().push(i));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        let mut r = Revert::new();
        let l = log.clone();
        r.add("step", move || l.lock().unwrap().push(9));
        r.success();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
