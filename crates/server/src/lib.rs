//! The web workbench (placeholder).
