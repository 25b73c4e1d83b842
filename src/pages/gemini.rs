//! The runbook's Gemini section: Gemini CLI and the google-genai SDKs pointed at this service,
//! with the aliases named as Gemini CLI names its models.

use super::{Block, KEY_VAR};
use crate::api::gemini;
use crate::config::Config;

/// The names Gemini CLI never sends as given: `-m auto` (its default), `pro`, `flash` and
/// `flash-lite` become its current ids (0.61: gemini-3.1-pro-preview, gemini-3.8-flash,
/// gemini-3.5-flash-lite), whatever aliases of those names this service has.
const CLI_SHORT_NAMES: [&str; 4] = ["auto", "pro", "flash", "flash-lite"];

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
    let nameable: Vec<&str> = (aliases.iter().copied())
        .filter(|a| !CLI_SHORT_NAMES.contains(a))
        .collect();
    // The CLI's example: an alias it sends as it is, one named as a Gemini id if there is one.
    let cli_example = (nameable.iter().find(|a| a.starts_with("gemini-")))
        .or(nameable.first())
        .copied()
        .unwrap_or("gemini-3.1-pro-preview");
    let named = match aliases.iter().any(|a| a.starts_with("gemini-")) {
        true => format!("This service's aliases Gemini CLI can name: {}.", nameable.join(", ")),
        false => "None of this service's aliases is named as a Gemini id yet: ask the operator for aliases such as {\"gemini-3.1-pro-preview\": \"google/gemini-3.1-pro-preview\"}.".to_owned(),
    };
    vec![
        Block::Heading("Gemini CLI and the google-genai SDKs".into()),
        Block::Para(format!(
            "Google's own clients speak Gemini's API, which Vertex serves natively: this service passes their requests through as they are, at /v1beta/models/MODEL:generateContent and the other methods, with your key in x-goog-api-key. Gemini CLI replaces its short names (auto, its default, pro, flash, flash-lite) with Gemini's own ids (-m flash becomes its newest flash id; auto first asks its flash-lite id which model to use), so it reaches those only through aliases named as the ids; any other name it sends as it is. {named}"
        )),
        Block::Heading("Gemini CLI".into()),
        Block::Code(format!(
            "export GOOGLE_GEMINI_BASE_URL={origin}\nexport GEMINI_API_KEY=${KEY_VAR}\nmkdir -p ~/.gemini && test -e ~/.gemini/settings.json || echo '{{\"security\":{{\"auth\":{{\"selectedType\":\"gemini-api-key\"}}}}}}' > ~/.gemini/settings.json   # a settings.json you have: add security.auth.selectedType to it\ngemini -m {cli_example} -p \"Hello\" --skip-trust"
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Mode;

    fn text(aliases: &'static str) -> String {
        let env: HashMap<&str, &str> = [
            (
                "API_KEYS_JSON",
                r#"[{"id":"a","key":"sk_test_aaaaaaaaaaaaaaaa"}]"#,
            ),
            ("MODEL_ALIASES_JSON", aliases),
        ]
        .into();
        let config = Config::from_env(&env, Mode::Vertex).unwrap();
        (blocks(&config, "https://llm.example.com").into_iter())
            .filter_map(|block| match block {
                Block::Para(text) | Block::Code(text) => Some(text),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Gemini CLI 0.61 sends `-m flash` as gemini-3.8-flash (the client suite saw it): the
    /// CLI's example names an alias it sends as it is, and its short names are not offered.
    #[test]
    fn the_cli_example_names_an_alias_the_cli_sends_as_it_is() {
        let docs = text(
            r#"{"flash":"google/gemini-2.5-flash","gemini-3.1-pro-preview":"google/gemini-3.1-pro-preview","pro":"google/gemini-2.5-pro"}"#,
        );
        assert!(
            docs.contains("gemini -m gemini-3.1-pro-preview -p \"Hello\" --skip-trust"),
            "{docs}"
        );
        assert!(
            docs.contains("Gemini CLI can name: gemini-3.1-pro-preview."),
            "{docs}"
        );
        // The SDKs send any alias as it is.
        assert!(docs.contains("model=\"flash\""), "{docs}");
        let docs = text(r#"{"flash":"google/gemini-2.5-flash","smart":"google/gemini-2.5-pro"}"#);
        assert!(docs.contains("gemini -m smart -p"), "{docs}");
    }
}
