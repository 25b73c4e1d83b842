//! vertex-proxy: an OpenAI-compatible front door to Vertex AI, for Cloud Run.
//!
//! # Layout
//! A request flows through the modules in this order:
//! - [`server`]: accepts HTTP/1.1 and h2c connections, closes the silent and idle ones, and
//!   shuts down gracefully;
//! - [`routes`]: maps `(method, path)` to a handler, and is the pipeline of a forwarded
//!   request, step by step; its docs list every endpoint and step;
//! - [`keys`]: step 1, authenticates the issued key from `x-api-key` or `Authorization: Bearer`;
//! - [`body`]: step 2, reads the request body with a bound, within the process's memory
//!   budget; also every body wrapper;
//! - [`rewrite`]: step 3, finds the body's `model`, and splices into bodies;
//! - [`models`]: step 3, resolves the model to its [`models::Route`]: kind, upstream model,
//!   locations, authorization, defaults;
//! - [`upstream`]: steps 4 to 6, prepares the request by the route's kind, sends it over the
//!   connections its pool keeps (past each HTTP/2 peer's stream limit), again while it fails
//!   before the client has a byte ([`upstream::retry`]: 429, 5xx, broken connections, an
//!   error as a stream's first event; across the route's locations), and relays the answer,
//!   Vertex's errors in the client's API's shape; one file per kind (Vertex's OpenAI
//!   endpoint, Claude's Messages API);
//! - [`signatures`]: steps 4 and 6 for Gemini 3, the thought signatures clients drop, put back
//!   from what the answers carried, or the sentinel;
//! - [`auth`]: the service account's Google token (google-cloud-auth), for step 4, rebuilt
//!   when it breaks for good;
//! - [`log`]: step 7, one Cloud Logging JSON line per request, written when its response
//!   ends, with the token [`usage`] read from the response's tail and its cost;
//! - [`error`]: the proxy's own errors and their one mapping to responses, in OpenAI's shape
//!   or, on Claude's paths, Anthropic's;
//! - [`pages`]: the public splash and `/docs` runbook.
//!
//! [`cli`] parses the command line; [`config`] reads the environment; [`app`] wires it all up
//! at startup into the [`state`] every request shares; [`demo`] is the stand-in for Vertex
//! behind `vertex-proxy demo`.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod keys;
pub mod log;
pub mod models;
pub mod pages;
pub mod rewrite;
pub mod routes;
pub mod server;
pub mod signatures;
pub mod state;
pub mod upstream;
pub mod usage;

/// google-cloud-auth and hyper-rustls both use the process-wide rustls provider; the crate is
/// built with `ring` only, and google-cloud-auth panics if none is installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Locks a mutex whose data stays valid even if a holder panicked: none of ours is left
/// half-updated by a panic, and a request must not fail because another one did.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
