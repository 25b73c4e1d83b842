//! What the stand-in insists on for Gemini 3, as Vertex does: preview models only on `global`,
//! and the thought signature it issued with a step's tool calls back on the next request.
//! The test suites' fakes apply the same rules, through these functions.

use base64::Engine;
use serde_json::Value;

use crate::signatures::SENTINEL;

/// Whether `model` is one that checks thought signatures.
pub fn is_gemini3(model: &str) -> bool {
    model.starts_with("google/gemini-3")
}

/// The opaque signature the stand-in issues with the tool call `id`. Derived, so that any
/// instance of the stand-in can check it, as Vertex checks its own.
pub fn signature_for(id: &str) -> String {
    let digest = crate::keys::sha256(format!("stand-in thought for {id}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..24])
}

/// A tool-call id that differs from step to step of a conversation, as Vertex's do.
pub fn call_id(body: &Value) -> String {
    let digest = crate::keys::sha256(body["messages"].to_string().as_bytes());
    format!("call_{}", hex::encode(&digest[..6]))
}

/// Why Vertex would refuse this request, as `(status, Google status, message)`; `None` if it
/// would not. `path` is the upstream path, which names the location.
pub fn refusal(path: &str, body: &Value) -> Option<(u16, &'static str, String)> {
    let model = body["model"].as_str()?;
    if !is_gemini3(model) {
        return None;
    }
    let location = path
        .split("/locations/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("global");
    if model.contains("preview") && location != "global" {
        let name = model.trim_start_matches("google/");
        let message = format!(
            "Publisher Model `projects/{}/locations/{location}/publishers/google/models/{name}` was not found or your project does not have access to it. Please ensure you are using a valid model version.",
            path.split("/projects/")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or("?")
        );
        return Some((404, "NOT_FOUND", message));
    }
    signature_refusal(body).map(|message| (400, "INVALID_ARGUMENT", message))
}

/// The current turn is what follows the last user message: each assistant message in it with
/// tool calls must carry, on its first call, the signature issued for that call or the
/// documented sentinel. Earlier turns are not checked. Every tool result must answer a call
/// that was made: an id the model never issued is refused.
fn signature_refusal(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let calls: Vec<&Value> = (messages.iter())
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| m["tool_calls"].as_array())
        .flatten()
        .map(|c| &c["id"])
        .collect();
    for result in messages.iter().filter(|m| m["role"] == "tool") {
        let id = &result["tool_call_id"];
        if !calls.contains(&id) {
            return Some(format!(
                "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn: no call has the id {id}."
            ));
        }
    }
    let turn = messages
        .iter()
        .rposition(|m| m["role"] == "user")
        .map_or(0, |at| at + 1);
    for message in &messages[turn..] {
        let Some(first) = message["tool_calls"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        if message["role"] != "assistant" {
            continue;
        }
        let name = first["function"]["name"].as_str().unwrap_or("unknown");
        let signature = first["extra_content"]["google"]["thought_signature"].as_str();
        let id = first["id"].as_str().unwrap_or_default();
        match signature {
            None | Some("") => {
                return Some(format!(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position 2. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                ));
            }
            Some(SENTINEL) => {}
            Some(given) if given == signature_for(id) => {}
            Some(_) => return Some("Thought signature is not valid.".to_owned()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATH: &str = "/v1/projects/p/locations/global/endpoints/openapi/chat/completions";

    fn turn(signature: Option<&str>) -> Value {
        let mut call = json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}});
        if let Some(signature) = signature {
            call["extra_content"] = json!({"google": {"thought_signature": signature}});
        }
        json!({"model": "google/gemini-3.1-pro-preview", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]})
    }

    #[test]
    fn the_current_turn_needs_its_own_signature_or_the_sentinel() {
        let refused = refusal(PATH, &turn(None)).expect("refused");
        assert_eq!((refused.0, refused.1), (400, "INVALID_ARGUMENT"));
        assert!(refused.2.contains("missing a thought_signature"));
        assert!(refusal(PATH, &turn(Some(SENTINEL))).is_none());
        assert!(refusal(PATH, &turn(Some(&signature_for("call_1")))).is_none());
        let forged = refusal(PATH, &turn(Some(&signature_for("call_2")))).expect("refused");
        assert!(forged.2.contains("not valid"));
        // Gemini 2.5 does not check; an earlier turn is not checked.
        let mut older = turn(None);
        older["model"] = json!("google/gemini-2.5-flash");
        assert!(refusal(PATH, &older).is_none());
        let mut earlier = turn(None);
        earlier["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "content": "thanks"}));
        assert!(refusal(PATH, &earlier).is_none());
    }

    #[test]
    fn preview_models_live_only_on_global() {
        let body = json!({"model": "google/gemini-3.1-pro-preview", "messages": []});
        let regional = PATH.replace("global", "us-central1");
        let (status, google, message) = refusal(&regional, &body).expect("refused");
        assert_eq!((status, google), (404, "NOT_FOUND"));
        assert!(
            message
                .contains("locations/us-central1/publishers/google/models/gemini-3.1-pro-preview")
        );
        assert!(refusal(PATH, &body).is_none());
    }
}
