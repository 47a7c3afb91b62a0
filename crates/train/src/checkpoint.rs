//! Training state on disk: weights, optimiser moments, step and RNG state, written atomically.
