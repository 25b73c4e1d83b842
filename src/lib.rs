//! vertex-proxy: an OpenAI-compatible front door to Vertex AI, for Cloud Run.
//!
//! # Layout
//! A forwarded request takes these steps, each in the module that owns it:
//! 1. [`server`] accepts it (HTTP/1.1 or h2c), and [`routes`] finds its endpoint;
//! 2. [`keys`] authenticates the issued key, from `x-api-key`, `x-goog-api-key`,
//!    `Authorization: Bearer` or `key=`;
//! 3. [`body`] reads the body, bounded, within the process's memory budget;
//! 4. the client API it arrived in ([`api`], one file each: OpenAI's, Anthropic's, Gemini's;
//!    OpenAI's Responses API, translated to chat completions here and its answer back after
//!    step 6) names the model, which [`models`] resolves to its [`models::Route`]: kind,
//!    upstream model, locations, credential, defaults;
//! 5. the route's upstream kind ([`kinds`], one file each: Vertex's OpenAI endpoint, Claude,
//!    `:predict`, Gemini's native methods, a private service) prepares the body by splices
//!    ([`rewrite`]; [`signatures`] for Gemini 3), and says where it goes;
//! 6. the transport ([`upstream`]) adds the credential ([`auth`]), sends it, again while it
//!    fails before the client has a byte and cannot have started work ([`upstream::retry`]:
//!    429, 5xx, a connection that failed before the request was sent, an error as a
//!    stream's first event; across the route's locations), and relays the
//!    answer as it comes, through the kind's edit; its errors reach the client in the API's
//!    own shape ([`error`]);
//! 7. [`log`] writes one Cloud Logging line when the response ends, with the token [`usage`]
//!    read from the answer as it passed, and its cost.
//!
//! Beside the pipeline: [`pages`] (the splash and `/docs` runbook), [`cli`] (the command
//! line), [`config`] (the environment), [`app`] (startup, which assembles the [`state`] every
//! request shares), [`demo`] (the stand-in for Vertex behind `vertex-proxy demo`), and
//! [`json_out`] (JSON written by hand, for the log line and the Responses translation), and
//! [`repeats`] (names given twice in the configuration's JSON objects, refused).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod json_out;
pub mod keys;
pub mod kinds;
pub mod log;
pub mod models;
pub mod pages;
pub mod repeats;
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
