//! The runbook's Claude sections: Claude Code, pi's `anthropic-messages` provider and the
//! Anthropic Python SDK, each pointed at this service, and how to add a Claude alias.

use serde_json::{Value, json};

use super::{Block, KEY_VAR};
use crate::config::Config;
use crate::models::Kind;

/// An alias, as the examples name it: the first Claude alias, if any.
fn claude_alias(config: &Config) -> Option<&str> {
    config
        .aliases
        .iter()
        .find(|(_, route)| route.kind == Kind::VertexAnthropic)
        .map(|(alias, _)| alias)
}

/// The sections, for a service at `origin` (`https://host`, no `/v1`: the Anthropic clients
/// add it).
pub(super) fn blocks(config: &Config, origin: &str) -> Vec<Block> {
    let how_to_add = "Claude on Vertex is served through the Anthropic Messages API at /v1/messages (and /v1/messages/count_tokens), with the same keys. Add an alias whose model has the anthropic publisher, in a location where your project has Claude enabled: MODEL_ALIASES_JSON='{\"claude-sonnet\": {\"model\": \"anthropic/claude-sonnet-4-5@20250929\", \"location\": \"us-east5\"}}'. Errors on this route come in Anthropic's shape. anthropic-beta values pass only if ANTHROPIC_BETAS lists them (Vertex refuses the others), and Vertex's own vertex_event stream events are dropped.";
    let Some(alias) = claude_alias(config) else {
        return vec![
            Block::Heading("Claude".into()),
            Block::Para(format!(
                "{how_to_add} This service has no Claude alias yet."
            )),
        ];
    };
    vec![
        Block::Heading("Claude".into()),
        Block::Para(how_to_add.into()),
        Block::Heading("Claude Code".into()),
        Block::Para("Claude Code reads sonnet, opus and haiku as names of its own: point those at this service's alias too. It sends betas Vertex refuses unless told not to.".into()),
        Block::Code(format!(
            "export ANTHROPIC_BASE_URL={origin}\nexport ANTHROPIC_AUTH_TOKEN=${KEY_VAR}   # or ANTHROPIC_API_KEY\nexport ANTHROPIC_MODEL={alias}\nexport ANTHROPIC_DEFAULT_SONNET_MODEL={alias} ANTHROPIC_DEFAULT_HAIKU_MODEL={alias}\nexport CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS=1\nclaude"
        )),
        Block::Heading("pi coding agent (Claude)".into()),
        Block::Para(format!("The pi block above has a second provider, vertex-proxy-claude, for the Anthropic Messages API (its base URL has no /v1). Run: pi --provider vertex-proxy-claude --model {alias}")),
        Block::Heading("Anthropic Python SDK".into()),
        Block::Code(format!(
            r#"import os
from anthropic import Anthropic

client = Anthropic(base_url="{origin}", api_key=os.environ["{KEY_VAR}"])
reply = client.messages.create(
    model="{alias}", max_tokens=256,
    messages=[{{"role": "user", "content": "Hello"}}],
)
print(reply.content[0].text)
with client.messages.stream(model="{alias}", max_tokens=256,
                            messages=[{{"role": "user", "content": "Hello"}}]) as stream:
    for text in stream.text_stream:
        print(text, end="", flush=True)"#
        )),
    ]
}

/// pi's provider for the Claude aliases, if there are any. `supportsEagerToolInputStreaming`
/// off: pi then asks for fine-grained tool streaming by a beta header (which this service
/// filters) instead of a field on every tool, which Vertex may refuse.
pub(super) fn pi_provider(config: &Config, origin: &str) -> Option<Value> {
    let models: Vec<Value> = config
        .aliases
        .iter()
        .filter(|(_, route)| route.kind == Kind::VertexAnthropic)
        .map(|(alias, route)| {
            let mut model = json!({"id": alias, "name": format!("{alias} ({})", route.model), "input": ["text", "image"]});
            if let Some(price) = config.price_of(alias, &route.model) {
                model["cost"] = json!({
                    "input": price.input,
                    "output": price.output,
                    "cacheRead": price.cache_read.unwrap_or(price.input),
                    "cacheWrite": price.cache_write.unwrap_or(price.input),
                });
            }
            model
        })
        .collect();
    (!models.is_empty()).then(|| {
        json!({
            "baseUrl": origin,
            "api": "anthropic-messages",
            "apiKey": KEY_VAR,
            "compat": {"supportsEagerToolInputStreaming": false},
            "models": models,
        })
    })
}
