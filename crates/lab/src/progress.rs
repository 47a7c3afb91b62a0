//! How a running experiment reports progress: a trait the library calls and a front end
//! renders (the CLI with progress bars; tests pass [`NoProgress`] or a [`Recorder`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Progress events of a running experiment. Every method has a do-nothing default.
pub trait Progress {
    /// A new phase begins (`"load"`, `"train"`, `"analyse"`): the previous one ends. Phases
    /// are timed into the manifest.
    fn phase(&mut self, _name: &str) {}
    /// The current phase has `total` steps of `unit` (e.g. `"epochs"`).
    fn total(&mut self, _total: u64, _unit: &str) {}
    /// `done` steps of the current phase are done.
    fn position(&mut self, _done: u64) {}
    /// A short status line (latest loss, accuracy…), replacing the previous one.
    fn message(&mut self, _msg: &str) {}
    /// A line of information worth keeping (e.g. "resuming from epoch 400").
    fn note(&mut self, _msg: &str) {}
}

/// Ignores every event.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Keeps every event, for tests and for front ends that replay them.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The events in order, as `kind: text`.
    pub events: Vec<String>,
}

impl Progress for Recorder {
    fn phase(&mut self, name: &str) {
        self.events.push(format!("phase: {name}"));
    }
    fn total(&mut self, total: u64, unit: &str) {
        self.events.push(format!("total: {total} {unit}"));
    }
    fn position(&mut self, done: u64) {
        self.events.push(format!("position: {done}"));
    }
    fn message(&mut self, msg: &str) {
        self.events.push(format!("message: {msg}"));
    }
    fn note(&mut self, msg: &str) {
        self.events.push(format!("note: {msg}"));
    }
}

/// Wall time of one phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// The phase name the experiment gave.
    pub name: String,
    /// Seconds from its start to the next phase (or the end of the run).
    pub seconds: f64,
}

/// Forwards events to another [`Progress`] and times the phases.
pub struct Timed<'a> {
    inner: &'a mut dyn Progress,
    phases: Vec<PhaseTime>,
    current: Option<(String, Instant)>,
}

impl<'a> Timed<'a> {
    /// Wrap `inner`.
    pub fn new(inner: &'a mut dyn Progress) -> Self {
        Timed {
            inner,
            phases: Vec::new(),
            current: None,
        }
    }

    fn close(&mut self) {
        if let Some((name, t0)) = self.current.take() {
            self.phases.push(PhaseTime {
                name,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
    }

    /// End the current phase and return every phase's time.
    pub fn finish(mut self) -> Vec<PhaseTime> {
        self.close();
        self.phases
    }
}

impl Progress for Timed<'_> {
    fn phase(&mut self, name: &str) {
        self.close();
        self.current = Some((name.to_string(), Instant::now()));
        self.inner.phase(name);
    }
    fn total(&mut self, total: u64, unit: &str) {
        self.inner.total(total, unit);
    }
    fn position(&mut self, done: u64) {
        self.inner.position(done);
    }
    fn message(&mut self, msg: &str) {
        self.inner.message(msg);
    }
    fn note(&mut self, msg: &str) {
        self.inner.note(msg);
    }
}
