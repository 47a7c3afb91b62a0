//! ML Chinese whispers: reconstruct input tokens from a layer's activations.
