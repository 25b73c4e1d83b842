//! The runbook's Gemini section: Gemini CLI and the google-genai SDKs pointed at this service,
//! with the aliases named as Gemini CLI names its models.

use super::{Block, KEY_VAR};
use crate::api::gemini;
use crate::config::Config;

/// The aliases Gemini's API reaches, and the first of them for the examples.
fn reached(config: &Config) -> Vec<&str> {
    (config.aliases.iter())
        .filter(|(_, route)| gemini::methods(route).is_some_and(|m| m[0] == "generateContent"))
        .map(|(alias, _)| alias)
        .collect()
}

/// The section, for a service at `origin` (`https://host`, no `/v1`: Google's clients add
/// their own version).
pub(super) fn blocks(config: &Config, origin: &str) -> Vec<Block> {
    let aliases = reached(config);
    let example = aliases.first().copied().unwrap_or("gemini-3.8-flash");
    let named = match aliases.iter().any(|a| a.starts_with("gemini-")) {
        true => format!("This service's aliases Gemini CLI can name: {}.", aliases.join(", ")),
        false => "None of this service's aliases is named as a Gemini id yet: ask the operator for aliases such as {\"gemini-3.1-pro-preview\": \"google/gemini-3.1-pro-preview\"}.".to_owned(),
    };
    vec![
        Block::Heading("Gemini CLI and the google-genai SDKs".into()),
        Block::Para(format!(
            "Google's own clients speak Gemini's API, which Vertex serves natively: this service passes their requests through as they are, at /v1beta/models/MODEL:generateContent and the other methods, with your key in x-goog-api-key. Gemini CLI replaces short model names with Gemini's own ids (-m flash becomes its newest flash id), so it needs aliases named as those ids. {named}"
        )),
        Block::Heading("Gemini CLI".into()),
        Block::Code(format!(
            "export GOOGLE_GEMINI_BASE_URL={origin}\nexport GEMINI_API_KEY=${KEY_VAR}\nmkdir -p ~/.gemini && echo '{{\"security\":{{\"auth\":{{\"selectedType\":\"gemini-api-key\"}}}}}}' > ~/.gemini/settings.json\ngemini -m {example} -p \"Hello\""
        )),
        Block::Heading("google-genai (Python)".into()),
        Block::Code(format!(
            "import os\nfrom google import genai\nclient = genai.Client(api_key=os.environ[\"{KEY_VAR}\"], http_options={{\"base_url\": \"{origin}\"}})\nprint(client.models.generate_content(model=\"{example}\", contents=\"Hello\").text)"
        )),
        Block::Heading("@google/genai (JavaScript)".into()),
        Block::Code(format!(
            "import {{ GoogleGenAI }} from \"@google/genai\";\nconst ai = new GoogleGenAI({{ apiKey: process.env.{KEY_VAR}, httpOptions: {{ baseUrl: \"{origin}\" }} }});\nconsole.log((await ai.models.generateContent({{ model: \"{example}\", contents: \"Hello\" }})).text);"
        )),
    ]
}
