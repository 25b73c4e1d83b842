//! The runbook's Responses API section: Codex, the OpenAI SDK's `responses` calls, the Agents
//! SDK's Responses model and the Vercel AI SDK pointed at this service.

use super::{Block, KEY_VAR};
use crate::config::Config;

/// The section, for a service whose OpenAI base URL is `base`.
pub(super) fn blocks(config: &Config, base: &str) -> Vec<Block> {
    let names: Vec<&str> = config.aliases.names().collect();
    let example = (names.iter().copied())
        .find(|a| *a == "flash")
        .or(names.first().copied())
        .unwrap_or("flash");
    vec![
        Block::Heading("Codex and the Responses API".into()),
        Block::Para(
            "Codex, client.responses in the OpenAI SDKs and the Vercel AI SDK's openai(model) call /v1/responses, which this service translates to chat completions and back. It keeps nothing: send the whole input each time, with store set to false.".into(),
        ),
        Block::Para(format!(
            "Codex CLI: put this in ~/.codex/config.toml, export {KEY_VAR}, then run codex (codex exec wants standard input closed)."
        )),
        Block::Code(codex_config(base, example)),
        Block::Heading("Python (OpenAI SDK, Responses)".into()),
        Block::Code(format!(
            r#"import os
from openai import OpenAI

client = OpenAI(base_url="{base}", api_key=os.environ["{KEY_VAR}"])
response = client.responses.create(model="{example}", input="Hello", store=False)
print(response.output_text)"#
        )),
        Block::Heading("OpenAI Agents SDK (Python, Responses)".into()),
        Block::Code(format!(
            r#"import os
from openai import AsyncOpenAI
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

set_tracing_disabled(True)  # traces would go to OpenAI, which has no key here
client = AsyncOpenAI(base_url="{base}", api_key=os.environ["{KEY_VAR}"])
agent = Agent(
    name="Assistant",
    instructions="You are a helpful assistant.",
    model=OpenAIResponsesModel(model="{example}", openai_client=client),
)
print(Runner.run_sync(agent, "Hello").final_output)"#
        )),
        Block::Heading("Vercel AI SDK (@ai-sdk/openai)".into()),
        Block::Para(
            "Set providerOptions.openai.store to false: otherwise the SDK replays earlier turns as item_reference, which a service that keeps nothing cannot resolve.".into(),
        ),
        Block::Code(format!(
            r#"import {{ createOpenAI }} from "@ai-sdk/openai";
import {{ generateText }} from "ai";

const openai = createOpenAI({{ baseURL: "{base}", apiKey: process.env.{KEY_VAR} }});
const {{ text }} = await generateText({{
  model: openai("{example}"),
  prompt: "Hello",
  providerOptions: {{ openai: {{ store: false }} }},
}});
console.log(text);"#
        )),
    ]
}

/// A Codex provider block for this service.
fn codex_config(base: &str, model: &str) -> String {
    format!(
        r#"model = "{model}"
model_provider = "vertex-proxy"

[model_providers.vertex-proxy]
name = "vertex-proxy"
base_url = "{base}"
env_key = "{KEY_VAR}"
wire_api = "responses""#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codex_block_names_the_service_the_env_key_and_the_responses_wire() {
        let block = codex_config("https://proxy.example/v1", "flash");
        assert!(block.contains("base_url = \"https://proxy.example/v1\""));
        assert!(block.contains("env_key = \"VERTEX_PROXY_KEY\""));
        assert!(block.contains("wire_api = \"responses\""));
        assert!(block.contains("model_provider = \"vertex-proxy\""));
    }
}
