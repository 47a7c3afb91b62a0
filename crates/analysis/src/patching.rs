//! Activation patching sweeps over residual, attention, MLP and per-head sites.
