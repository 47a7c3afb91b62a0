//! Hand-built models whose circuits are known by construction.
