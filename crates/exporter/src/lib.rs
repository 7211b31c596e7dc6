//! kiln-exporter
