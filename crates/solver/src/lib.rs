//! kiln-solver
