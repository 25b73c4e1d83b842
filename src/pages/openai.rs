//! The runbook's sections for OpenAI-compatible clients: curl, the OpenAI SDKs, the Agents
//! SDK and pi, each pointed at this service.

use super::{Block, KEY_VAR, claude};
use crate::config::Config;
use crate::models::Kind;

/// The sections, for a service whose OpenAI base URL is `base`.
pub(super) fn blocks(config: &Config, base: &str) -> Vec<Block> {
    // The examples' model: the alias most deployments have, else any.
    let example = config
        .aliases
        .names()
        .find(|a| *a == "flash")
        .or_else(|| config.aliases.names().next())
        .unwrap_or("flash");
    vec![
        Block::Heading("curl".into()),
        Block::Code(format!(
            "curl {base}/chat/completions \\\n  -H \"Authorization: Bearer ${KEY_VAR}\" -H 'content-type: application/json' \\\n  -d '{{\"model\": \"{example}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n\n\
             # streaming\ncurl -N {base}/chat/completions \\\n  -H \"Authorization: Bearer ${KEY_VAR}\" -H 'content-type: application/json' \\\n  -d '{{\"model\": \"{example}\", \"stream\": true, \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
        )),
        Block::Heading("Python (OpenAI SDK)".into()),
        Block::Code(python_snippet(base, example)),
        Block::Heading("Node (OpenAI SDK)".into()),
        Block::Code(node_snippet(base, example)),
        Block::Heading("OpenAI Agents SDK (Python)".into()),
        Block::Code(agents_snippet(base, example)),
        Block::Heading("pi coding agent".into()),
        Block::Para(format!(
            "Put this in ~/.pi/agent/models.json (merge it into \"providers\" if the file exists), export {KEY_VAR}, then run: pi --provider vertex-proxy --model {example}"
        )),
        Block::Code(pi_models_json(config, base)),
    ]
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
