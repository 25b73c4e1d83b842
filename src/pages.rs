//! The public pages: `/`, a splash, and `/docs`, this deployment's runbook built from the live
//! configuration. Both are HTML for browsers and plain text for everything else (`curl /docs`).
//!
//! SECURITY: the pages are built only from aliases, locations, counts and the request's host;
//! they never see a key, a key hash or a token. Every value is escaped, no script is served,
//! and the Content-Security-Policy allows nothing but the one inline stylesheet.

use std::sync::LazyLock;

use base64::Engine;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::{self, ProxyBody};
use crate::config::Config;
use crate::keys::sha256;
use crate::models::Kind;
use crate::signatures::SignatureMode;

/// The name clients use for this service's key, in every snippet.
mod claude;

const KEY_VAR: &str = "VERTEX_PROXY_KEY";

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.8rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}\
pre{background:#f4f4f4;padding:.8rem;overflow-x:auto;border-radius:4px}code{font-size:.9rem}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}\
@media (prefers-color-scheme:dark){body{color:#e8e8e8;background:#161616}pre{background:#262626}td,th,h2{border-color:#444}a{color:#8ab4f8}}";

/// The CSP names the stylesheet by hash, so not even an injected `<style>` would apply.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(sha256(STYLE.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ))
    .expect("base64 is a valid header value")
});

/// A page, as blocks that render to HTML or to plain text.
enum Block {
    Heading(String),
    Para(String),
    /// A paragraph with links: (text, href) pairs, href `None` for plain text.
    Links(Vec<(String, Option<String>)>),
    Code(String),
    Table(Vec<Vec<String>>),
}

struct Page {
    title: String,
    blocks: Vec<Block>,
}

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
            "defaults": {"chat_template_kwargs": {"enable_thinking": true}}}
}
"pro" tries its locations in turn; "embed" answers /v1/embeddings through Vertex's :predict;
"claude-sonnet" answers /v1/messages; "gemma" is a private Cloud Run service, called with an
ID token for its audience (default: its origin with a trailing slash), for which the proxy's
service account needs roles/run.invoker (deploy.sh --invoker-of gemma)."#;

pub fn docs(config: &Config, headers: &HeaderMap, host: Option<&str>) -> Response<ProxyBody> {
    let base = base_url(headers, host);
    let example = config
        .aliases
        .names()
        .find(|a| *a == "flash")
        .or_else(|| config.aliases.names().next())
        .unwrap_or("flash")
        .to_owned();
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
    let blocks = vec![
        Block::Para("This service gives OpenAI-compatible clients access to models on Vertex AI. Use it like the OpenAI API with this base URL and your key.".into()),
        Block::Code(format!("base URL:  {base}\nAPI key:   the key you were given (export {KEY_VAR}=...)")),
        Block::Heading("Models".into()),
        Block::Para("Send the alias as \"model\". GET /v1/models lists the aliases your key may use. Aliases marked \"a private service\" are the deployment's own OpenAI-compatible models (vLLM or TGI on Cloud Run): chat and embeddings, called the same way. An alias's defaults are added to requests that lack those fields.".into()),
        Block::Table(aliases),
        Block::Para("For the operator: the forms an alias takes in MODEL_ALIASES_JSON.".into()),
        Block::Code(ALIAS_FORMS.into()),
        Block::Heading("Endpoints".into()),
        Block::Table(vec![
            vec!["method".into(), "path".into(), "what".into()],
            vec!["POST".into(), "/v1/chat/completions".into(), "chat, with \"stream\": true for SSE".into()],
            vec!["POST".into(), "/v1/embeddings".into(), "embeddings".into()],
            vec!["POST".into(), "/v1/messages".into(), "Claude: the Anthropic Messages API, with \"stream\": true for SSE".into()],
            vec!["POST".into(), "/v1/messages/count_tokens".into(), "Claude: counts a request's input tokens".into()],
            vec!["GET".into(), "/v1/models".into(), "the aliases your key may use".into()],
            vec!["GET".into(), "/v1/models/{alias}".into(), "one of them".into()],
            vec!["GET".into(), "/health".into(), "health, no key needed (also /healthz, except on Cloud Run)".into()],
        ]),
        Block::Heading("Authentication".into()),
        Block::Para("Send your key in either header. If both are present, x-api-key is the one checked.".into()),
        Block::Code(format!("Authorization: Bearer ${KEY_VAR}\nx-api-key: ${KEY_VAR}")),
        Block::Heading("curl".into()),
        Block::Code(format!(
            "curl {base}/chat/completions \\\n  -H \"Authorization: Bearer ${KEY_VAR}\" -H 'content-type: application/json' \\\n  -d '{{\"model\": \"{example}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n\n\
             # streaming\ncurl -N {base}/chat/completions \\\n  -H \"Authorization: Bearer ${KEY_VAR}\" -H 'content-type: application/json' \\\n  -d '{{\"model\": \"{example}\", \"stream\": true, \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
        )),
        Block::Heading("Python (OpenAI SDK)".into()),
        Block::Code(python_snippet(&base, &example)),
        Block::Heading("Node (OpenAI SDK)".into()),
        Block::Code(node_snippet(&base, &example)),
        Block::Heading("OpenAI Agents SDK (Python)".into()),
        Block::Code(agents_snippet(&base, &example)),
        Block::Heading("pi coding agent".into()),
        Block::Para(format!("Put this in ~/.pi/agent/models.json (merge it into \"providers\" if the file exists), export {KEY_VAR}, then run: pi --provider vertex-proxy --model {example}")),
        Block::Code(pi_models_json(config, &base)),
    ];
    let origin = base.strip_suffix("/v1").unwrap_or(&base);
    let mut blocks = blocks;
    blocks.extend(claude::blocks(config, origin));
    blocks.extend([
        Block::Heading("Errors and retries".into()),
        Block::Para(errors_text(config)),
        Block::Heading("Gemini 3 and tools".into()),
        Block::Para(signatures_text(config)),
        Block::Heading("Rotating keys".into()),
        Block::Para(rotation_text(config)),
    ]);
    render(
        &Page {
            title: "vertex-proxy: how to use this service".into(),
            blocks,
        },
        headers,
    )
}

fn python_snippet(base: &str, model: &str) -> String {
    format!(
        r#"import os
from openai import OpenAI

client = OpenAI(
    base_url="{base}", api_key=os.environ["{KEY_VAR}"]
)
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello"}}]
)
print(reply.choices[0].message.content)

for chunk in client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello"}}], stream=True
):
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)"#
    )
}

fn node_snippet(base: &str, model: &str) -> String {
    format!(
        r#"import OpenAI from "openai";

const client = new OpenAI({{
  baseURL: "{base}",
  apiKey: process.env.{KEY_VAR},
}});
const reply = await client.chat.completions.create({{
  model: "{model}",
  messages: [{{ role: "user", content: "Hello" }}],
}});
console.log(reply.choices[0].message.content);"#
    )
}

fn agents_snippet(base: &str, model: &str) -> String {
    format!(
        r#"import os
from openai import AsyncOpenAI
from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

set_tracing_disabled(True)  # traces would go to OpenAI, which has no key here
client = AsyncOpenAI(
    base_url="{base}", api_key=os.environ["{KEY_VAR}"]
)
agent = Agent(
    name="Assistant",
    instructions="You are a helpful assistant.",
    model=OpenAIChatCompletionsModel(model="{model}", openai_client=client),
)
print(Runner.run_sync(agent, "Hello").final_output)"#
    )
}

/// The complete provider block for pi's `~/.pi/agent/models.json`. pi reads `apiKey` and
/// header values naming an environment variable from that variable, so no key is written here.
pub fn pi_models_json(config: &Config, base: &str) -> String {
    let models: Vec<serde_json::Value> = config
        .aliases
        .iter()
        .filter(|(_, route)| matches!(route.kind, Kind::VertexOpenAi | Kind::Service))
        .map(|(alias, route)| {
            let mut model = serde_json::json!({"id": alias, "name": format!("{alias} ({})", route.model)});
            if route.model.starts_with("google/gemini") {
                model["input"] = serde_json::json!(["text", "image"]);
            }
            if let Some(price) = config.price_of(alias, &route.model) {
                model["cost"] = serde_json::json!({"input": price.input, "output": price.output, "cacheRead": 0, "cacheWrite": 0});
            }
            model
        })
        .collect();
    let mut block = serde_json::json!({
        "providers": {
            "vertex-proxy": {
                "baseUrl": base,
                "api": "openai-completions",
                "apiKey": KEY_VAR,
                "headers": {"x-api-key": KEY_VAR},
                "models": models,
            }
        }
    });
    let origin = base.strip_suffix("/v1").unwrap_or(base);
    if let Some(claude) = claude::pi_provider(config, origin) {
        block["providers"]["vertex-proxy-claude"] = claude;
    }
    serde_json::to_string_pretty(&block).expect("a JSON value serialises")
}

fn errors_text(config: &Config) -> String {
    let format = "Errors, this service's own and Vertex's, come in OpenAI's shape {\"error\": {\"message\", \"type\", \"param\", \"code\"}} with Vertex's status; for Vertex's, \"code\" is Google's status (RESOURCE_EXHAUSTED, INVALID_ARGUMENT, ...) and Retry-After is passed on.";
    let retries = config.retries;
    if retries.max_attempts <= 1 {
        return format!(
            "{format} This service does not retry (MAX_ATTEMPTS=1): leave your SDK's retries on."
        );
    }
    format!(
        "{format} Before the first byte of an answer reaches you, this service retries 429, 5xx, broken connections and a stream whose first event is an error: up to {} attempts (MAX_ATTEMPTS), waiting at most {} s in all (RETRY_BUDGET_SECS), with full-jitter backoff or Vertex's Retry-After, moving to an alias's next location first. A stream starts once its first event has come and is never retried after that. The OpenAI SDKs retry too (2 retries by default), and the two multiply: set max_retries=0 to let this service alone do it.",
        retries.max_attempts,
        retries.budget.as_secs()
    )
}

fn signatures_text(config: &Config) -> String {
    let problem = "Gemini 3 refuses the second step of a tool loop when the previous step's tool call comes back without the extra_content.google.thought_signature it was given; several clients (pi, the Agents SDK with an alias) drop it.";
    let what = match config.thought_signatures {
        SignatureMode::Restore => {
            "This service puts back the signature it saw in its answer to your key (by tool-call id, for an hour at most), or else the sentinel skip_thought_signature_validator, which Gemini accepts (THOUGHT_SIGNATURES=restore). A signature you kept is never replaced."
        }
        SignatureMode::Fill => {
            "This service puts the sentinel skip_thought_signature_validator, which Gemini accepts, on such calls (THOUGHT_SIGNATURES=fill). A signature you kept is never replaced."
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

/// Browsers get HTML; curl and other clients that do not ask for HTML get plain text.
fn render(page: &Page, headers: &HeaderMap) -> Response<ProxyBody> {
    let wants_html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let (text, content_type) = if wants_html {
        (html(page), "text/html; charset=utf-8")
    } else {
        (plain(page), "text/plain; charset=utf-8")
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    // The page depends on Host and X-Forwarded-Proto as well as Accept: no cache may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(page: &Page) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"color-scheme\" content=\"light dark\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&page.title),
        escape(&page.title)
    );
    for block in &page.blocks {
        match block {
            Block::Heading(text) => out.push_str(&format!("<h2>{}</h2>\n", escape(text))),
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", escape(text))),
            Block::Links(parts) => {
                out.push_str("<p>");
                for (text, href) in parts {
                    match href {
                        Some(href) => out.push_str(&format!(
                            "<a href=\"{}\">{}</a>",
                            escape(href),
                            escape(text)
                        )),
                        None => out.push_str(&escape(text)),
                    }
                }
                out.push_str("</p>\n");
            }
            Block::Code(text) => {
                out.push_str(&format!("<pre><code>{}</code></pre>\n", escape(text)))
            }
            Block::Table(rows) => {
                out.push_str("<table>\n");
                for (i, row) in rows.iter().enumerate() {
                    let cell = if i == 0 { "th" } else { "td" };
                    out.push_str("<tr>");
                    for value in row {
                        out.push_str(&format!("<{cell}>{}</{cell}>", escape(value)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn plain(page: &Page) -> String {
    let mut out = format!(
        "{}\n{}\n\n",
        page.title,
        "=".repeat(page.title.chars().count())
    );
    for block in &page.blocks {
        match block {
            Block::Heading(text) => {
                out.push_str(&format!("{text}\n{}\n\n", "-".repeat(text.chars().count())));
            }
            Block::Para(text) => out.push_str(&format!("{text}\n\n")),
            Block::Links(parts) => {
                // In a terminal the link text, a path, is the link.
                for (text, _) in parts {
                    out.push_str(text);
                }
                out.push_str("\n\n");
            }
            Block::Code(text) => {
                for line in text.lines() {
                    if line.is_empty() {
                        out.push('\n');
                    } else {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
                out.push('\n');
            }
            Block::Table(rows) => {
                let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
                    .map(|c| {
                        rows.iter()
                            .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                for row in rows {
                    let cells: Vec<String> = row
                        .iter()
                        .zip(&widths)
                        .map(|(v, w)| format!("{v:<w$}"))
                        .collect();
                    out.push_str(&format!("    {}\n", cells.join("  ").trim_end()));
                }
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let aliases = Aliases::parse(&json, "global").expect("every form parses");
        let kind = |alias| aliases.get(alias).unwrap().kind;
        assert_eq!(aliases.names().count(), 7);
        assert_eq!(kind("embed"), Kind::VertexEmbeddings);
        assert_eq!(kind("claude-sonnet"), Kind::VertexAnthropic);
        assert_eq!(kind("gemma"), Kind::Service);
        assert_eq!(aliases.get("pro").unwrap().locations.len(), 2);
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

    #[test]
    fn html_is_escaped_and_the_style_matches_the_csp() {
        let page = Page {
            title: "<t>".into(),
            blocks: vec![Block::Code("a < b && \"c\"".into())],
        };
        let text = html(&page);
        assert!(text.contains("&lt;t&gt;") && text.contains("a &lt; b &amp;&amp; &quot;c&quot;"));
        assert!(!text.contains("<script"));
        let hash = base64::engine::general_purpose::STANDARD.encode(sha256(STYLE.as_bytes()));
        assert!(CSP.to_str().unwrap().contains(&hash));
        assert!(text.contains(&format!("<style>{STYLE}</style>")));
    }
}
