//! kiln-snapshotter
