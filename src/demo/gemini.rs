//! The stand-in's native Gemini methods, as Vertex serves them at
//! `…/publishers/google/models/{model}:{method}`: `generateContent` (a call to the first tool
//! offered, or an echo), `streamGenerateContent` (SSE with `alt=sse`, else one JSON array),
//! `countTokens`, `embedContent` and `batchEmbedContents`. Strict as Vertex is: a Gemini 3
//! model signs its function call (`thoughtSignature` on the part) and refuses the next
//! request if the current turn's call comes back without it.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::{google_error, paced_events, words};
use crate::body::{self, ProxyBody};
use crate::demo::gemini3;

/// The stand-in's answer for `path` (with its query), if it names a native method.
pub fn answer(path: &str, body: &Value) -> Option<Response<ProxyBody>> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let named = path.split("/publishers/google/models/").nth(1)?;
    let (model, method) = named.rsplit_once(':')?;
    let model = format!("google/{model}");
    // Google's front end reads system parameters from the query (`$key`, `access_token`,
    // `userProject`, `fields`, `alt=proto`, …: they would act on the proxy's credential and
    // billing, or hide `usageMetadata`) and cannot bind any other name: only `alt` for SSE
    // or JSON may come from a client.
    let stray = (query.split('&')).find(|p| !p.is_empty() && *p != "alt=sse" && *p != "alt=json");
    if let Some(pair) = stray {
        let name = pair.split('=').next().unwrap_or_default();
        let message = format!(
            "Invalid JSON payload received. Unknown name {name:?}: Cannot bind query parameter, or a system parameter this stand-in will not take from a client."
        );
        return Some(google_error(StatusCode::BAD_REQUEST, &message));
    }
    if let Some(refused) = refusal(&model, body) {
        return Some(refused);
    }
    let sse = query.split('&').any(|p| p == "alt=sse");
    Some(match method {
        "generateContent" => json_ok(&candidate(&model, body, true)),
        "streamGenerateContent" => stream(&model, body, sse),
        "countTokens" => json_ok(&json!({"totalTokens": prompt_tokens(body)})),
        "embedContent" => json_ok(&json!({"embedding": {"values": values(&body["content"])}})),
        "batchEmbedContents" => {
            let requests = body["requests"].as_array().cloned().unwrap_or_default();
            let embeddings: Vec<Value> = (requests.iter())
                .map(|r| json!({"values": values(&r["content"])}))
                .collect();
            json_ok(&json!({"embeddings": embeddings}))
        }
        _ => return None,
    })
}

/// The signature the stand-in issues with a function call: derived from the call, so that
/// any instance can check it, as Vertex checks its own.
pub fn signature(call: &Value) -> String {
    gemini3::signature_for(&format!("{}:{}", call["name"], call["args"]))
}

/// Vertex's 400 for a Gemini 3 request whose current turn (after the last user text) has a
/// model turn whose first function call lost its signature, or carries another one.
fn refusal(model: &str, body: &Value) -> Option<Response<ProxyBody>> {
    if !gemini3::is_gemini3(model) {
        return None;
    }
    let contents = body["contents"].as_array()?;
    let is_user_text = |c: &Value| {
        c["role"] != "model"
            && (c["parts"].as_array()).is_some_and(|p| p.iter().any(|p| p["text"].is_string()))
    };
    let turn = contents
        .iter()
        .rposition(is_user_text)
        .map_or(0, |at| at + 1);
    for content in contents[turn..].iter().filter(|c| c["role"] == "model") {
        let parts = content["parts"].as_array()?;
        let Some(first) = parts.iter().find(|p| p["functionCall"].is_object()) else {
            continue;
        };
        let name = first["functionCall"]["name"].as_str().unwrap_or("unknown");
        let message = match first["thoughtSignature"].as_str() {
            None | Some("") => format!(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position 1. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            ),
            // Vertex reads either base64 alphabet, as protobuf's JSON does.
            Some(given) if same_signature(given, &signature(&first["functionCall"])) => continue,
            Some(crate::signatures::SENTINEL) => continue,
            Some(_) => "Thought signature is not valid.".to_owned(),
        };
        return Some(google_error(StatusCode::BAD_REQUEST, &message));
    }
    None
}

/// Whether two base64 texts, in either alphabet, with or without padding, are one value.
fn same_signature(given: &str, issued: &str) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
    let decode = |text: &str| {
        (STANDARD_PAD_INDIFFERENT.decode(text))
            .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(text))
            .ok()
    };
    decode(given).is_some_and(|bytes| Some(bytes) == decode(issued))
}

/// One candidate: a call to the first function declared, unless the last turn answers one;
/// else an echo of the last user text. `done` adds the finish reason and the usage.
fn candidate(model: &str, body: &Value, done: bool) -> Value {
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let last = contents.last().cloned().unwrap_or(Value::Null);
    let answered = (last["parts"].as_array()).and_then(|parts| {
        parts
            .iter()
            .find_map(|p| p["functionResponse"]["response"].as_object())
    });
    let function = body["tools"][0]["functionDeclarations"][0].clone();
    let part = match (answered, function.is_object()) {
        (Some(response), _) => {
            json!({"text": format!("The tool said: {}", Value::Object(response.clone()))})
        }
        (None, true) => {
            let call = json!({"name": function["name"], "args": {"city": last_text(&contents)}});
            let mut part = json!({"functionCall": call});
            if gemini3::is_gemini3(model) {
                part["thoughtSignature"] = json!(signature(&call));
            }
            part
        }
        (None, false) => json!({"text": format!("You said: {}", last_text(&contents))}),
    };
    let mut answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
        "modelVersion": model.trim_start_matches("google/"),
    });
    if done {
        answer["candidates"][0]["finishReason"] = json!("STOP");
        let (prompt, output) = (prompt_tokens(body), 3);
        answer["usageMetadata"] = json!({"promptTokenCount": prompt, "candidatesTokenCount": output,
            "thoughtsTokenCount": 2, "totalTokenCount": prompt + output + 2});
    }
    answer
}

/// The answer in pieces: a first chunk that says nothing yet, then the candidate with its
/// usage; as SSE events, or as Google's JSON-array stream.
fn stream(model: &str, body: &Value, sse: bool) -> Response<ProxyBody> {
    let opening = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "index": 0}]});
    let chunks = [opening, candidate(model, body, true)];
    if !sse {
        let mut response = Response::new(body::full(Value::from(chunks.to_vec()).to_string()));
        let json = header::HeaderValue::from_static("application/json");
        response.headers_mut().insert(header::CONTENT_TYPE, json);
        return response;
    }
    // Google ends each event with a blank line of CRLFs.
    let frames = (chunks.iter())
        .map(|c| Bytes::from(format!("data: {c}\r\n\r\n")))
        .collect();
    paced_events(frames)
}

fn last_text(contents: &[Value]) -> String {
    (contents.iter().rev())
        .filter_map(|c| c["parts"].as_array())
        .flatten()
        .find_map(|p| p["text"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn prompt_tokens(body: &Value) -> u64 {
    (body["contents"].as_array().into_iter().flatten())
        .filter_map(|c| c["parts"].as_array())
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .map(words)
        .sum()
}

/// Eight numbers from a hash of the content's text.
fn values(content: &Value) -> Vec<f64> {
    let text: String = (content["parts"].as_array().into_iter().flatten())
        .filter_map(|p| p["text"].as_str())
        .collect();
    let digest = crate::keys::sha256(text.as_bytes());
    digest[..8].iter().map(|b| f64::from(*b) / 255.0).collect()
}

fn json_ok(payload: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(payload.to_string()));
    let json = header::HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_same_in_either_base64_alphabet() {
        assert!(same_signature("tf-hfUv1_w==", "tf+hfUv1/w=="));
        assert!(same_signature("tf-hfUv1_w", "tf+hfUv1/w=="));
        assert!(!same_signature("tf-hfUv1_x", "tf+hfUv1/w=="));
    }
}
