//! The integration tests, as one binary: each file here is a module, and the support they
//! share (`tests/support`: the fakes, the proxy under test, the client) is built and linked
//! once. `cargo test --test it NAME::` runs one file's tests (`chaos::`, `deploy::`, …).
//!
//! A file directly under `tests/`, or a `tests/*/main.rs`, would be a test binary of its own:
//! `layout::one_test_binary` keeps it to this one, and every file here declared below.

#[path = "../support/mod.rs"]
mod support;

mod aliases;
mod bad_input;
mod chaos;
mod claude;
mod deploy;
mod embeddings;
mod gemini;
mod layout;
mod limits;
mod logging;
mod operator;
mod proxy;
mod responses;
mod services;
mod shutdown;
mod signatures;
mod startup;
mod upstream;
mod vertex;
