//! The public pages: `/`, a splash, and `/docs`, this deployment's runbook built from the live
//! configuration. Both are HTML for browsers and plain text for everything else (`curl /docs`).
//!
//! SECURITY: the pages are built only from aliases, locations, counts and the request's host;
//! they never see a key, a key hash or a token. Every value is escaped, no script is served,
//! and the Content-Security-Policy allows nothing but the one inline stylesheet.

use http::{HeaderMap, Response, header};

use crate::body::ProxyBody;
use crate::config::Config;
use crate::models::Kind;
use crate::signatures::SignatureMode;

mod claude;
mod gemini;
mod openai;
mod render;
mod responses;

pub use openai::pi_models_json;
use render::{Block, Page, render};

/// The name clients use for this service's key, in every snippet.
const KEY_VAR: &str = "VERTEX_PROXY_KEY";

pub fn splash(config: &Config, headers: &HeaderMap) -> Response<ProxyBody> {
    let page = Page {
        title: "vertex-proxy".into(),
        blocks: vec![
            Block::Para(format!(
                "An OpenAI-compatible API for Gemini and the other models on Vertex AI, for the holders of this service's keys. Models: {}.",
                config.aliases.names().collect::<Vec<_>>().join(", ")
            )),
            Block::Links(vec![
                ("How to use it: ".into(), None),
                ("/docs".into(), Some("/docs".into())),
                (" · Health: ".into(), None),
                ("/health".into(), Some("/health".into())),
            ]),
        ],
    };
    render(&page, headers)
}

/// Every form of `MODEL_ALIASES_JSON` entry, with an example each.
const ALIAS_FORMS: &str = r#"{
  "flash": "google/gemini-2.5-flash",
  "llama": {"model": "meta/llama-3.3-70b-instruct-maas", "location": "us-central1"},
  "pro": {"model": "google/gemini-2.5-pro", "locations": ["global", "us-central1"]},
  "embed": "google/gemini-embedding-001",
  "claude-sonnet": {"model": "anthropic/claude-sonnet-4-5@20250929", "location": "us-east5"},
  "flash-fast": {"model": "google/gemini-2.5-flash", "defaults": {"reasoning_effort": "none"}},
  "gemma": {"upstream": "https://gemma-123456789012.us-central1.run.app/v1", "model": "google/gemma-3-12b-it",
            "audience": "https://gemma-123456789012.us-central1.run.app/", "auth_header": "x-serverless-authorization",
            "service_key_env": "GEMMA_API_KEY", "defaults": {"chat_template_kwargs": {"enable_thinking": true}}}
}
"pro" tries its locations in turn; "embed" answers /v1/embeddings through Vertex's :predict;
"claude-sonnet" answers /v1/messages; "gemma" is a private Cloud Run service, called with an
ID token for its audience (default: its origin with a trailing slash), for which the proxy's
service account needs roles/run.invoker (deploy.sh --invoker-of gemma); with
"x-serverless-authorization", the service's own key (vLLM's --api-key), read from the
variable "service_key_env" names, goes in Authorization."#;

pub fn docs(config: &Config, headers: &HeaderMap, host: Option<&str>) -> Response<ProxyBody> {
    let base = base_url(headers, host);
    // The Anthropic clients add the `/v1` themselves.
    let origin = base.strip_suffix("/v1").unwrap_or(&base);
    let mut blocks = vec![
        Block::Para("This service gives OpenAI-compatible clients access to models on Vertex AI. Use it like the OpenAI API with this base URL and your key.".into()),
        Block::Code(format!("base URL:  {base}\nAPI key:   the key you were given (export {KEY_VAR}=...)")),
    ];
    blocks.extend(models(config));
    blocks.extend(endpoints());
    blocks.extend(openai::blocks(config, &base));
    blocks.extend(responses::blocks(config, &base));
    blocks.extend(claude::blocks(config, origin));
    blocks.extend(gemini::blocks(config, origin));
    blocks.extend([
        Block::Heading("Errors and retries".into()),
        Block::Para(errors_text(config)),
        Block::Heading("Gemini 3 and tools".into()),
        Block::Para(signatures_text(config)),
        Block::Heading("Rotating keys".into()),
        Block::Para(rotation_text(config)),
    ]);
    let title = "vertex-proxy: how to use this service".into();
    render(&Page { title, blocks }, headers)
}

/// The alias table, and the forms an operator may give an alias.
fn models(config: &Config) -> Vec<Block> {
    let mut aliases = vec![vec![
        "alias".into(),
        "upstream model".into(),
        "location".into(),
        "defaults (when your request lacks them)".into(),
    ]];
    aliases.extend(config.aliases.iter().map(|(alias, route)| {
        let defaults = match route.defaults.is_empty() {
            true => "—".to_owned(),
            false => serde_json::Value::Object(route.defaults.clone()).to_string(),
        };
        vec![
            alias.to_owned(),
            route.model.clone(),
            match route.kind {
                // The service's URL is the deployment's business: this page is public.
                Kind::Service => "a private service".to_owned(),
                _ => route.locations.join(", then "),
            },
            defaults,
        ]
    }));
    vec![
        Block::Heading("Models".into()),
        Block::Para("Send the alias as \"model\". GET /v1/models lists the aliases your key may use. Aliases marked \"a private service\" are the deployment's own OpenAI-compatible models (vLLM or TGI on Cloud Run): chat and embeddings, called the same way. An alias's defaults are added to requests that lack those fields.".into()),
        Block::Table(aliases),
        Block::Para("For the operator: the forms an alias takes in MODEL_ALIASES_JSON.".into()),
        Block::Code(ALIAS_FORMS.into()),
    ]
}

/// The paths a client calls, under a header row.
const ENDPOINTS: [[&str; 3]; 10] = [
    ["method", "path", "what"],
    [
        "POST",
        "/v1/chat/completions",
        "chat, with \"stream\": true for SSE",
    ],
    [
        "POST",
        "/v1/responses",
        "OpenAI's Responses API (Codex), translated; stateless: send the whole input",
    ],
    ["POST", "/v1/embeddings", "embeddings"],
    [
        "POST",
        "/v1/messages",
        "Claude: the Anthropic Messages API, with \"stream\": true for SSE",
    ],
    [
        "POST",
        "/v1/messages/count_tokens",
        "Claude: counts a request's input tokens",
    ],
    [
        "POST",
        "/v1beta/models/{alias}:{method}",
        "Gemini's own API (Gemini CLI, google-genai): generateContent, streamGenerateContent, countTokens, embedContent",
    ],
    ["GET", "/v1/models", "the aliases your key may use"],
    ["GET", "/v1/models/{alias}", "one of them"],
    [
        "GET",
        "/health",
        "health, no key needed (also /healthz, except on Cloud Run)",
    ],
];

fn endpoints() -> Vec<Block> {
    let rows = ENDPOINTS.iter().map(|row| row.map(str::to_owned).to_vec());
    vec![
        Block::Heading("Endpoints".into()),
        Block::Table(rows.collect()),
        Block::Heading("Authentication".into()),
        Block::Para(
            "Send your key in either header. If both are present, x-api-key is the one checked."
                .into(),
        ),
        Block::Code(format!(
            "Authorization: Bearer ${KEY_VAR}\nx-api-key: ${KEY_VAR}"
        )),
    ]
}

fn errors_text(config: &Config) -> String {
    let format = "Errors, this service's own and Vertex's, come in OpenAI's shape {\"error\": {\"message\", \"type\", \"param\", \"code\"}} with Vertex's status (Anthropic's on /v1/messages, Google's {\"error\": {\"code\", \"message\", \"status\"}} on Gemini's paths); for Vertex's, \"code\" is Google's status (RESOURCE_EXHAUSTED, INVALID_ARGUMENT, ...) and Retry-After is passed on.";
    let retries = config.retries;
    if retries.max_attempts <= 1 {
        return format!(
            "{format} This service does not retry (MAX_ATTEMPTS=1): leave your SDK's retries on."
        );
    }
    format!(
        "{format} Before the first byte of an answer reaches you, this service retries 429, 5xx, connections that failed before the request was sent and a stream whose first event is an error (never work Vertex may have begun: a connection cut during the request is a 502 at once): up to {} attempts (MAX_ATTEMPTS), waiting at most {} s in all (RETRY_BUDGET_SECS), with full-jitter backoff or Vertex's Retry-After, moving to an alias's next location first. A stream starts once its first event has come and is never retried after that. The OpenAI SDKs retry too (2 retries by default), and the two multiply: set max_retries=0 to let this service alone do it.",
        retries.max_attempts,
        retries.budget.as_secs()
    )
}

fn signatures_text(config: &Config) -> String {
    let problem = "Gemini 3 refuses the second step of a tool loop when the previous step's tool call comes back without the extra_content.google.thought_signature it was given; several clients (pi, the Agents SDK with an alias) drop it.";
    let what = match config.thought_signatures {
        SignatureMode::Restore => {
            "This service carries each signature in the tool-call id you receive ({id}__thought__{signature as base64url}): send the id back as you got it, and the signature goes back on the call, whichever instance serves the next step. Where an id carries none, the sentinel skip_thought_signature_validator, which Gemini accepts, goes instead (THOUGHT_SIGNATURES=restore). A signature you kept is never replaced."
        }
        SignatureMode::Fill => {
            "This service puts the sentinel skip_thought_signature_validator, which Gemini accepts, on such calls, and leaves tool-call ids as Vertex sent them (THOUGHT_SIGNATURES=fill). A signature you kept is never replaced."
        }
        SignatureMode::Off => {
            "This service leaves requests alone (THOUGHT_SIGNATURES=off): keep extra_content on tool calls in your history."
        }
    };
    format!("{problem} {what} Gemini 3 preview models are served only from the global location.")
}

fn rotation_text(config: &Config) -> String {
    let common = "Make a new key with `vertex-proxy keygen --id NAME`, add its entry to your keys file (api-keys.json), hand the key out, and remove the old entry once its holder has switched.";
    match &config.keys_file {
        Some(_) => format!(
            "{common} This service reads its keys from a mounted file (API_KEYS_FILE) and re-reads it every {} s: run `./deploy.sh keys --keys-secret NAME` to add a secret version, and the change applies without a redeploy.",
            config.keys_reload.as_secs()
        ),
        None => format!(
            "{common} Then run `./deploy.sh keys`: it puts the keys into the service as SHA-256 hashes (a new revision, nothing else changes)."
        ),
    }
}

/// This service's own base URL for the SDKs, from the request: Cloud Run sets
/// `X-Forwarded-Proto`, and the host is whatever name the client used, custom domain included.
fn base_url(headers: &HeaderMap, authority: Option<&str>) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost:8080");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn the_alias_forms_shown_are_ones_the_proxy_takes() {
        use crate::models::{Aliases, Kind};
        let json = ALIAS_FORMS.split("\n}\n").next().unwrap().to_owned() + "}";
        let key = |name: &str| (name == "GEMMA_API_KEY").then(|| "sk-example".to_owned());
        let aliases = Aliases::parse(&json, "global", key).expect("every form parses");
        let kind = |alias| aliases.resolve(alias).unwrap().kind;
        assert_eq!(aliases.names().count(), 7);
        assert_eq!(kind("embed"), Kind::VertexEmbeddings);
        assert_eq!(kind("claude-sonnet"), Kind::VertexAnthropic);
        assert_eq!(kind("gemma"), Kind::Service);
        assert_eq!(aliases.resolve("pro").unwrap().locations.len(), 2);
    }

    #[test]
    fn base_url_follows_the_request() {
        assert_eq!(
            base_url(
                &headers(&[("host", "llm.example.com"), ("x-forwarded-proto", "https")]),
                None
            ),
            "https://llm.example.com/v1"
        );
        assert_eq!(
            base_url(&headers(&[("host", "127.0.0.1:8080")]), None),
            "http://127.0.0.1:8080/v1"
        );
        assert_eq!(
            base_url(&HeaderMap::new(), Some("h2.example.com")),
            "http://h2.example.com/v1"
        );
        assert_eq!(
            base_url(&headers(&[("host", "evil.com/<script>")]), None),
            "http://localhost:8080/v1"
        );
    }
}
