//! What a model id, an alias or a location may hold: they become parts of upstream URLs and
//! host names, so only characters that cannot change a URL's shape, and bounded lengths.

/// Vertex's OpenAI endpoint wants `publisher/model`; a bare Gemini id is given the `google/`
/// publisher, since that is the only thing it can mean there.
pub(crate) fn normalise_model_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    match id.contains('/') {
        true if is_raw_model_id(id) => Ok(id.to_owned()),
        false if is_id_part(id) => Ok(format!("google/{id}")),
        _ => Err(format!(
            "model id {id:?} must look like \"publisher/model\", e.g. \"google/gemini-2.5-flash\""
        )),
    }
}

pub(super) fn is_alias_name(name: &str) -> bool {
    is_id_part(name)
}

fn is_id_part(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// A Vertex model id a client may name directly when `ALLOW_RAW_MODEL_IDS` is on: exactly
/// `publisher/model`. The character set keeps it from changing the upstream URL or path; the
/// lengths (Vertex's ids are a few dozen characters) keep the URL within what `http` takes
/// and the log line within Cloud Logging's entry size.
pub fn is_raw_model_id(id: &str) -> bool {
    match id.split_once('/') {
        Some((publisher, model)) => {
            publisher.len() <= 64
                && model.len() <= 128
                && is_id_part(publisher)
                && is_id_part(model)
        }
        None => false,
    }
}

/// A Vertex location: it becomes part of a host name, so only `[a-z0-9-]`.
pub fn is_location(location: &str) -> bool {
    !location.is_empty()
        && location.len() <= 63
        && !location.starts_with('-')
        && location
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
