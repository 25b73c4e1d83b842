//! The issued keys: parsing `API_KEYS_JSON`, and authenticating a request's headers against them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::error::ProxyError;
use crate::repeats::{Step, repeats};

/// Keys shorter than this are refused at startup: they could be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// Whether a key holds a control character other than tab, which no header could carry.
pub fn holds_control(key: &str) -> bool {
    key.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

/// One entry of the key list. Only the SHA-256 of the key is kept in memory.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// Shown in logs and errors in place of the key.
    pub id: String,
    digest: [u8; 32],
    pub enabled: bool,
    /// Model names (aliases, or raw ids) this key may use; `None` means all of them.
    pub models: Option<Vec<String>>,
}

impl KeyEntry {
    pub fn may_use(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }
}

#[derive(Debug, Clone)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl KeySet {
    /// Parses the key list. `is_model` says whether a name in an entry's `models` exists,
    /// so that a typo there fails at startup rather than as a 403 later.
    ///
    /// SECURITY: messages name entries by position and id, never by key or hash; serde's own
    /// type errors are not used because they quote the offending value.
    pub fn parse(json: &str, is_model: impl Fn(&str) -> bool) -> Result<KeySet, Vec<String>> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            vec![format!(
                "is not valid JSON ({}); expected an array of key entries",
                position_only(&e)
            )]
        })?;
        let Value::Array(items) = value else {
            return Err(vec![
                "must be a JSON array of key entries, like [{\"id\": \"me\", \"key\": \"...\"}]"
                    .into(),
            ]);
        };
        let repeats = repeats(json);
        let mut errors = Vec::new();
        let mut entries: Vec<KeyEntry> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let repeated = repeats
                .iter()
                .filter(|r| r.path.first() == Some(&Step::Index(index)))
                .map(|r| r.describe(1));
            match parse_entry(item, &is_model, repeated.collect()) {
                Ok(entry) => {
                    if entries.iter().any(|e| e.id == entry.id) {
                        errors.push(format!("entry {index}: duplicate id {:?}", entry.id));
                    } else if let Some(other) = entries.iter().find(|e| e.digest == entry.digest) {
                        errors.push(format!(
                            "entry {index} ({:?}): same key as entry {:?}",
                            entry.id, other.id
                        ));
                    } else {
                        entries.push(entry);
                    }
                }
                Err(mut entry_errors) => {
                    let id = item.get("id").and_then(Value::as_str).unwrap_or("");
                    for e in entry_errors.drain(..) {
                        errors.push(format!("entry {index} ({id:?}): {e}"));
                    }
                }
            }
        }
        if errors.is_empty() && !entries.iter().any(|e| e.enabled) {
            errors.push("has no enabled key; the proxy never runs open".into());
        }
        if errors.is_empty() {
            Ok(KeySet { entries })
        } else {
            Err(errors)
        }
    }

    pub fn enabled_count(&self) -> usize {
        self.entries.iter().filter(|e| e.enabled).count()
    }

    /// Finds the key a request presents and checks that it is enabled.
    ///
    /// `x-api-key` wins over `Authorization`: some SDKs always send a placeholder Bearer,
    /// so a client that sets `x-api-key` must be judged by it alone.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_key: Option<&str>,
    ) -> Result<&KeyEntry, ProxyError> {
        let presented = presented_key(headers, query_key)?;
        let digest = sha256(presented);
        // SECURITY: the key is hashed first and digests are compared with `ct_eq` over every
        // entry, with no early exit. Timing can then reveal at most something about the
        // SHA-256 of the presented key, which does not help anyone build a valid key:
        // that would take a preimage of a stored digest.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        match found {
            Some(entry) if entry.enabled => Ok(entry),
            // SECURITY: a disabled key is answered exactly as an unknown one, so that a leaked
            // retired key cannot be confirmed.
            _ => Err(ProxyError::Unauthorized("invalid API key")),
        }
    }
}

/// The key set in force. A reload swaps it whole; a request holds the `Arc` it started with,
/// so it is judged by one consistent set.
pub struct LiveKeys(RwLock<Arc<KeySet>>);

impl LiveKeys {
    pub fn new(keys: KeySet) -> LiveKeys {
        LiveKeys(RwLock::new(Arc::new(keys)))
    }

    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole key set: it is only ever replaced, never edited.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, keys: KeySet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }
}

/// Re-reads `path` every `interval` and swaps in the keys it holds. A file that cannot be read
/// or parsed leaves the keys in force and logs the problem once (never key material).
pub async fn watch_file(
    path: PathBuf,
    interval: Duration,
    live: Arc<LiveKeys>,
    parse: impl Fn(&str) -> Result<KeySet, Vec<String>>,
) {
    // What was last seen, so an unchanged file (good or bad) is not logged every interval.
    let mut last_seen: Option<Result<[u8; 32], String>> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate, and startup has just read the file
    loop {
        ticks.tick().await;
        // Cloud Run fetches a mounted `latest` secret on every read, so this read sees a rotation.
        let read = tokio::fs::read_to_string(&path).await;
        let seen = match &read {
            Ok(text) => Ok(sha256(text.as_bytes())),
            Err(e) => Err(e.to_string()),
        };
        if last_seen.as_ref() == Some(&seen) {
            continue;
        }
        last_seen = Some(seen);
        let problem = match read
            .map_err(|e| vec![format!("cannot read it: {e}")])
            .and_then(|t| parse(&t))
        {
            Ok(keys) => {
                let enabled = keys.enabled_count();
                live.replace(keys);
                crate::log::info(&format!(
                    "API_KEYS_FILE {}: keys reloaded, {enabled} enabled",
                    path.display()
                ));
                continue;
            }
            Err(problems) => problems.join("; "),
        };
        crate::log::error(&format!(
            "API_KEYS_FILE {}: {problem}; the previous keys stay in force",
            path.display()
        ));
    }
}

fn presented_key<'a>(
    headers: &'a HeaderMap,
    query_key: Option<&'a str>,
) -> Result<&'a [u8], ProxyError> {
    // Gemini's clients send theirs as `x-goog-api-key`, or as `key=` in the query.
    const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
    for (name, several, empty) in [
        (
            X_API_KEY,
            "more than one x-api-key header; send exactly one",
            "the x-api-key header is empty",
        ),
        (
            X_GOOG_API_KEY,
            "more than one x-goog-api-key header; send exactly one",
            "the x-goog-api-key header is empty",
        ),
    ] {
        let mut values = headers.get_all(name).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(ProxyError::Unauthorized(several));
            }
            let key = value.as_bytes().trim_ascii();
            if key.is_empty() {
                return Err(ProxyError::Unauthorized(empty));
            }
            return Ok(key);
        }
    }
    let mut authorizations = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = authorizations.next() else {
        return match query_key.filter(|k| !k.is_empty()) {
            Some(key) => Ok(key.as_bytes()),
            None => Err(ProxyError::Unauthorized(
                "missing API key: send it as 'x-api-key: KEY' or 'Authorization: Bearer KEY' (Gemini's API: 'x-goog-api-key: KEY' or ?key=KEY)",
            )),
        };
    };
    if authorizations.next().is_some() {
        return Err(ProxyError::Unauthorized(
            "more than one Authorization header; send exactly one",
        ));
    }
    let value = value.as_bytes().trim_ascii();
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    let token = match value.split_at_checked(6) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer") => rest,
        _ => {
            return Err(ProxyError::Unauthorized(
                "the Authorization header must be 'Bearer KEY'",
            ));
        }
    };
    let key = token.trim_ascii();
    if key.is_empty() || key.len() == token.len() {
        // Empty, or "BearerKEY" with no space after the scheme.
        return Err(ProxyError::Unauthorized(
            "the Authorization header must be 'Bearer KEY'",
        ));
    }
    Ok(key)
}

/// One entry, or every problem with it, starting with `errors` (its repeated fields).
fn parse_entry(
    item: &Value,
    is_model: &impl Fn(&str) -> bool,
    mut errors: Vec<String>,
) -> Result<KeyEntry, Vec<String>> {
    let Value::Object(fields) = item else {
        return Err(vec!["must be an object".into()]);
    };
    for name in fields.keys() {
        if !matches!(
            name.as_str(),
            "id" | "key" | "key_sha256" | "enabled" | "models"
        ) {
            errors.push(format!(
                "unknown field {name:?} (allowed: id, key, key_sha256, enabled, models)"
            ));
        }
    }
    let id = match fields.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(_) => {
            errors.push("\"id\" must be a non-empty string".into());
            String::new()
        }
        None => {
            errors.push("missing \"id\"".into());
            String::new()
        }
    };
    let digest = digest_of(fields, &mut errors);
    let enabled = match fields.get("enabled") {
        None => true,
        Some(Value::Bool(enabled)) => *enabled,
        Some(_) => {
            errors.push("\"enabled\" must be true or false".into());
            true
        }
    };
    let models = match fields.get("models") {
        None => None,
        Some(Value::Array(items)) => {
            let mut models = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(name) if is_model(name) => models.push(name.to_owned()),
                    Some(name) => errors.push(format!("\"models\" names unknown model {name:?}")),
                    None => errors.push("\"models\" must be an array of model names".into()),
                }
            }
            Some(models)
        }
        Some(_) => {
            errors.push("\"models\" must be an array of model names".into());
            None
        }
    };
    match digest {
        Some(digest) if errors.is_empty() => Ok(KeyEntry {
            id,
            digest,
            enabled,
            models,
        }),
        _ => Err(errors),
    }
}

/// The SHA-256 of an entry's key, from `key` or `key_sha256`; `None` once a problem is noted.
fn digest_of(fields: &Map<String, Value>, errors: &mut Vec<String>) -> Option<[u8; 32]> {
    match (fields.get("key"), fields.get("key_sha256")) {
        // A presented key is trimmed, so one with white space around it could never match.
        (Some(Value::String(key)), None) if key.trim() != key => {
            errors.push("\"key\" has white space around it, so it could never match".into());
            None
        }
        (Some(Value::String(key)), None) if holds_control(key) => {
            errors.push(
                "\"key\" holds a control character, so it could never be sent in a header".into(),
            );
            None
        }
        (Some(Value::String(key)), None) if key.chars().count() >= MIN_KEY_LEN => {
            Some(sha256(key.as_bytes()))
        }
        (Some(Value::String(_)), None) => {
            errors.push(format!("\"key\" is shorter than {MIN_KEY_LEN} characters"));
            None
        }
        (Some(_), None) => {
            errors.push("\"key\" must be a string".into());
            None
        }
        (None, Some(Value::String(hash))) => {
            let mut digest = [0u8; 32];
            match hex::decode_to_slice(hash, &mut digest) {
                Ok(()) => Some(digest),
                Err(_) => {
                    errors.push("\"key_sha256\" must be 64 hexadecimal characters".into());
                    None
                }
            }
        }
        (None, Some(_)) => {
            errors.push("\"key_sha256\" must be a string of 64 hexadecimal characters".into());
            None
        }
        (Some(_), Some(_)) => {
            errors.push("give either \"key\" or \"key_sha256\", not both".into());
            None
        }
        (None, None) => {
            errors.push("missing \"key\" or \"key_sha256\"".into());
            None
        }
    }
}

/// serde_json's syntax errors carry only a position; its data errors may quote a value, and
/// we never produce those here because the input is parsed into a `Value` only.
fn position_only(error: &serde_json::Error) -> String {
    format!("line {} column {}", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const KEY_A: &str = "sk_test_aaaaaaaaaaaaaaaa";
    const KEY_B: &str = "sk_test_bbbbbbbbbbbbbbbb";

    fn set(json: &str) -> KeySet {
        KeySet::parse(json, |m| m == "flash" || m == "pro").expect("valid key set")
    }

    fn errors(json: &str) -> Vec<String> {
        KeySet::parse(json, |m| m == "flash").expect_err("invalid key set")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn two_keys() -> KeySet {
        set(&format!(
            r#"[{{"id":"a","key":"{KEY_A}"}},
                {{"id":"b","key_sha256":"{}","models":["flash"]}},
                {{"id":"off","key":"sk_test_disabled_key_1","enabled":false}}]"#,
            hex::encode(sha256(KEY_B.as_bytes()))
        ))
    }

    #[test]
    fn finds_plain_and_hashed_keys_in_either_header() {
        let keys = two_keys();
        let bearer = format!("Bearer {KEY_A}");
        assert_eq!(
            keys.authenticate(&headers(&[("authorization", &bearer)]), None)
                .unwrap()
                .id,
            "a"
        );
        assert_eq!(
            keys.authenticate(&headers(&[("x-api-key", KEY_B)]), None)
                .unwrap()
                .id,
            "b"
        );
        let lower = format!("bearer   {KEY_B}  ");
        assert_eq!(
            keys.authenticate(&headers(&[("authorization", &lower)]), None)
                .unwrap()
                .id,
            "b"
        );
    }

    #[test]
    fn x_api_key_decides_when_both_headers_are_present() {
        let keys = two_keys();
        let valid_bearer = format!("Bearer {KEY_A}");
        let placeholder = headers(&[
            ("authorization", "Bearer placeholder"),
            ("x-api-key", KEY_B),
        ]);
        assert_eq!(keys.authenticate(&placeholder, None).unwrap().id, "b");
        let wrong = headers(&[("authorization", &valid_bearer), ("x-api-key", "nope")]);
        assert!(matches!(
            keys.authenticate(&wrong, None),
            Err(ProxyError::Unauthorized("invalid API key"))
        ));
    }

    #[test]
    fn refuses_missing_malformed_unknown_and_disabled_keys() {
        let keys = two_keys();
        let near_miss = format!("{}X", &KEY_A[..KEY_A.len() - 1]);
        let prefix = &KEY_A[..KEY_A.len() - 1];
        let cases: Vec<HeaderMap> = vec![
            headers(&[]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer   ")]),
            headers(&[("authorization", &format!("Basic {KEY_A}"))]),
            headers(&[("authorization", &format!("Bearer{KEY_A}"))]),
            headers(&[("x-api-key", "")]),
            headers(&[("x-api-key", &near_miss)]),
            headers(&[("x-api-key", prefix)]),
            headers(&[("x-api-key", "sk_test_disabled_key_1")]),
            headers(&[("x-api-key", KEY_A), ("x-api-key", KEY_B)]),
        ];
        for case in cases {
            let error = keys.authenticate(&case, None).expect_err("must be refused");
            assert_eq!(error.status(), 401, "{case:?}");
            assert!(!error.message().contains(KEY_A), "message leaks the key");
        }
    }

    #[test]
    fn with_x_api_key_authorization_headers_are_not_looked_at() {
        let keys = two_keys();
        let presented = headers(&[
            ("x-api-key", KEY_A),
            ("authorization", "Bearer placeholder"),
            ("authorization", "Basic x"),
        ]);
        assert_eq!(keys.authenticate(&presented, None).unwrap().id, "a");
    }

    #[test]
    fn a_disabled_key_is_answered_as_an_unknown_one() {
        let keys = two_keys();
        let disabled =
            keys.authenticate(&headers(&[("x-api-key", "sk_test_disabled_key_1")]), None);
        let unknown = keys.authenticate(&headers(&[("x-api-key", "sk_test_unknown_key_00")]), None);
        assert_eq!(disabled.unwrap_err(), unknown.unwrap_err());
    }

    #[test]
    fn per_key_model_lists() {
        let keys = two_keys();
        let a = keys
            .authenticate(&headers(&[("x-api-key", KEY_A)]), None)
            .unwrap();
        let b = keys
            .authenticate(&headers(&[("x-api-key", KEY_B)]), None)
            .unwrap();
        assert!(a.may_use("pro") && a.may_use("flash"));
        assert!(b.may_use("flash") && !b.may_use("pro"));
    }

    #[test]
    fn startup_errors_name_each_problem_without_key_material() {
        let json = format!(
            r#"[{{"id":"a","key":"short"}},
                {{"id":"a","key":"{KEY_A}"}},
                {{"id":"b","key":"{KEY_A}"}},
                {{"id":"c","key":"{KEY_B}","colour":"red"}},
                {{"id":"d","key_sha256":"xyz"}},
                {{"id":"e","key":"{KEY_B}","key_sha256":"{}"}},
                {{"id":"f","key":"sk_test_ffffffffffffff","models":["nope"]}},
                {{"id":"g","key":"sk_test_gggggggggggggg","enabled":"{KEY_B}"}},
                {{"id":"h","key":" sk_test_hhhhhhhhhhhhhh"}}]"#,
            "0".repeat(64)
        );
        let errors = errors(&json);
        let all = errors.join("\n");
        for expected in [
            "shorter than 16",
            "same key as entry \"a\"",
            "unknown field \"colour\"",
            "64 hexadecimal",
            "not both",
            "unknown model \"nope\"",
            "\"enabled\" must be true or false",
            "entry 8 (\"h\"): \"key\" has white space around it",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }
        assert!(!all.contains(KEY_A) && !all.contains(KEY_B), "{all}");
        let duplicate_id = self::errors(&format!(
            r#"[{{"id":"a","key":"{KEY_A}"}},{{"id":"a","key":"{KEY_B}"}}]"#
        ));
        assert_eq!(duplicate_id, vec!["entry 1: duplicate id \"a\""]);
    }

    #[test]
    fn a_field_given_twice_in_an_entry_is_refused_not_overridden() {
        // The last of a repeated member would win: an operator's `"enabled": false` undone.
        let live = errors(&format!(
            r#"[{{"id":"x","key":"{KEY_A}","enabled":false,"models":["flash"],"enabled":true}},
                {{"id":"y","key":"{KEY_B}","key":"sk_test_cccccccccccccccc"}}]"#
        ));
        assert_eq!(
            live,
            [
                "entry 0 (\"x\"): \"enabled\" is given twice",
                "entry 1 (\"y\"): \"key\" is given twice",
            ]
        );
        let all = live.join("\n");
        assert!(!all.contains(KEY_A) && !all.contains(KEY_B) && !all.contains("sk_test_c"));
    }

    #[test]
    fn a_key_with_control_characters_is_refused_without_quoting_it() {
        // JSON escapes: a newline, a NUL and a DEL inside the key.
        for key in [
            r"sk_test_aaaa\naaaaaaaaaaaa",
            r"sk_test_aaaa\u0000aaaaaaaaaaaa",
            r"sk_test_aaaa\u007faaaaaaaaaaaa",
        ] {
            let errors = errors(&format!(r#"[{{"id":"a","key":"{key}"}}]"#));
            assert_eq!(
                errors,
                [
                    "entry 0 (\"a\"): \"key\" holds a control character, so it could never be sent in a header"
                ],
                "{key}"
            );
        }
        // A tab can be sent in a header, so a key may hold one.
        assert_eq!(
            set(r#"[{"id":"a","key":"sk_test_aaaa\taaaaaaaaaaaa"}]"#).enabled_count(),
            1
        );
    }

    #[test]
    fn refuses_lists_that_would_run_open_or_are_not_arrays() {
        assert!(errors("[]")[0].contains("no enabled key"));
        assert!(
            errors(&format!(
                r#"[{{"id":"a","key":"{KEY_A}","enabled":false}}]"#
            ))[0]
                .contains("no enabled key")
        );
        assert!(errors("{}")[0].contains("JSON array"));
        let syntax = errors(&format!(r#"[{{"id":"a","key":"{KEY_A}"#));
        assert!(syntax[0].contains("not valid JSON"), "{syntax:?}");
        assert!(!syntax[0].contains(KEY_A));
    }
}
