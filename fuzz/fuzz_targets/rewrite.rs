//! The body rewrite: any input is either refused cleanly, or comes out with only the `model`
//! value changed. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vertex_proxy::rewrite::{find_model, splice_model};

const MODEL: &str = "google/gemini-2.5-flash";

fuzz_target!(|body: &[u8]| {
    let Ok(field) = find_model(body) else {
        return;
    };
    let out = splice_model(&bytes::Bytes::copy_from_slice(body), &field.span, MODEL).concat();
    // Every byte outside the value is unchanged.
    assert_eq!(&out[..field.span.start], &body[..field.span.start]);
    let tail = &body[field.span.end..];
    assert_eq!(&out[out.len() - tail.len()..], tail);
    assert_eq!(&out[field.span.start..out.len() - tail.len()], format!("\"{MODEL}\"").as_bytes());
    // The result is still a valid request, naming the new model.
    let again = find_model(&out).expect("a rewritten body is still valid");
    assert_eq!(again.name, MODEL);
    // Accepted bodies are JSON that serde_json agrees with (within its own depth limit).
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&out) {
        assert_eq!(value["model"], MODEL);
    }
});
