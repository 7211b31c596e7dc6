//! kiln's integration tests: the real binary, verified with real tools (skopeo, umoci,
//! docker). Tools are probed; `KILN_TEST_STRICT=1` makes a missing tool a failure.

mod add;
mod cache;
mod common;
mod contexts;
mod copyflags;
mod crafted;
mod debian;
mod deep;
mod docker;
mod errors;
mod exports;
mod ignore;
mod progress;
mod push;
mod registry;
mod repro;
mod rootless;
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
mod store;
