//! kiln's integration tests: the real binary, verified with real tools (skopeo, umoci,
//! docker). Tools are probed; `KILN_TEST_STRICT=1` makes a missing tool a failure.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

mod add;
mod attest;
mod attest_outputs;
mod attest_sources;
mod bk_parity;
mod cache;
mod cachemount;
mod checks;
mod ci_flags;
mod common;
mod contexts;
mod copyflags;
mod crafted;
mod csv_values;
mod debian;
mod deep;
mod docker;
mod errors;
mod exports;
mod ignore;
mod incremental;
mod isolation;
mod isolation_docker;
mod kiln_image;
mod load;
mod multiplatform;
mod progress;
mod push;
mod registry;
mod registry_retry;
mod repro;
mod rootless;
mod rootless_cancel;
mod run;
mod scratch;
mod sec_context;
mod sec_dos;
mod sec_network;
mod sec_registry;
mod sec_sandbox;
mod sec_seccomp;
mod sec_store;
mod secrets;
mod stack;
mod store;
