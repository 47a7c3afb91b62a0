//! Python bindings (placeholder until the bindings land).
