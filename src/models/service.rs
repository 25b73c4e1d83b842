//! The alias form for a private OpenAI-compatible service (vLLM or TGI on Cloud Run):
//! `{"upstream": "https://gemma-abc-uc.a.run.app/v1", "model": …, "audience": …,
//! "auth_header": "authorization" | "x-serverless-authorization", "service_key_env": …,
//! "defaults": {…}}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Uri};
use serde_json::{Map, Value};

use super::{Auth, Kind, Route, ServiceUrls, defaults_of};

const FIELDS: [&str; 6] = [
    "upstream",
    "model",
    "audience",
    "auth_header",
    "service_key_env",
    "defaults",
];

/// The variables the proxy reads itself (SPEC §2, which a test holds this list to, and the
/// credentials' own): a service alias whose `service_key_env` named one would send its value,
/// the whole client key list for `API_KEYS_JSON`, to the service as its key.
const OWN_VARIABLES: [&str; 37] = [
    "PORT",
    "API_KEYS_JSON",
    "API_KEYS_FILE",
    "KEYS_RELOAD_SECS",
    "PRICES_JSON",
    "MODEL_ALIASES_JSON",
    "MODEL_FLASH_ID",
    "MODEL_PRO_PREVIEW_ID",
    "GOOGLE_CLOUD_PROJECT",
    "VERTEX_LOCATION",
    "VERTEX_BASE_URL",
    "UPSTREAM_CA_FILE",
    "ALLOW_RAW_MODEL_IDS",
    "ANTHROPIC_BETAS",
    "THOUGHT_SIGNATURES",
    "MAX_ATTEMPTS",
    "RETRY_BUDGET_SECS",
    "MAX_BODY_BYTES",
    "MAX_BUFFERED_BYTES",
    "MAX_BUFFERED_BYTES_PER_KEY",
    "MIN_BODY_BYTES_PER_SEC",
    "SHUTDOWN_GRACE_SECS",
    "UPSTREAM_CONNECT_TIMEOUT_SECS",
    "TOKEN_TIMEOUT_SECS",
    "UPSTREAM_IDLE_TIMEOUT_SECS",
    "HEADER_READ_TIMEOUT_SECS",
    "IDLE_CONNECTION_TIMEOUT_SECS",
    "BODY_READ_TIMEOUT_SECS",
    "UPSTREAM_PRECONNECT",
    "MAX_UPSTREAM_CONNECTIONS",
    "MAX_CONNECTIONS",
    "WORKER_THREADS",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_QUOTA_PROJECT",
    "GCE_METADATA_HOST",
    "THOUGHT_SIGNATURES_CACHE_BYTES",
    "THOUGHT_SIGNATURES_TTL_SECS",
];

/// A private service's own key (vLLM's `--api-key`), from the environment variable an
/// alias's `service_key_env` names (never from `MODEL_ALIASES_JSON` itself, which anyone who
/// can read the service's configuration sees), sent as `Authorization: Bearer` while the ID
/// token goes in `X-Serverless-Authorization`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceKey {
    /// The variable's name, which the startup line shows.
    pub env: Arc<str>,
    /// `Bearer KEY`, marked sensitive; `None` until the environment has been read.
    pub bearer: Option<HeaderValue>,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // SECURITY: the variable's name, never the key.
        write!(f, "ServiceKey({})", self.env)
    }
}

/// Reads each service alias's key from the variable its `service_key_env` names, and
/// returns every problem, naming the alias and the variable, never the value.
pub(super) fn read_keys(
    routes: &mut BTreeMap<String, Route>,
    var: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (alias, route) in routes {
        let Auth::GoogleIdToken {
            service_key: Some(key),
            ..
        } = &mut route.auth
        else {
            continue;
        };
        let named = format!("alias {alias:?}: \"service_key_env\" names {}", key.env);
        match var(&key.env).map(|value| value.trim().to_owned()) {
            None => errors.push(format!("{named}, which is not set")),
            Some(value) if value.is_empty() => errors.push(format!("{named}, which is empty")),
            Some(value) => match HeaderValue::try_from(format!("Bearer {value}")) {
                Ok(mut bearer) => {
                    bearer.set_sensitive(true);
                    key.bearer = Some(bearer);
                }
                Err(_) => errors.push(format!("{named}, whose value cannot go in an HTTP header")),
            },
        }
    }
    errors
}

/// Cloud Run reads the ID token from either; `x-serverless-authorization` leaves
/// `Authorization` to the service itself.
const HEADERS: [&str; 2] = ["authorization", "x-serverless-authorization"];

/// The route for a service alias, or every error in it.
pub fn route(fields: &Map<String, Value>) -> Result<Route, Vec<String>> {
    let mut errors = Vec::new();
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        errors.push(format!(
            "unknown field {unknown:?} (a service alias allows: {})",
            FIELDS.join(", ")
        ));
    }
    let upstream = match fields.get("upstream") {
        Some(Value::String(url)) => service(url).map_err(|e| errors.push(e)).ok(),
        _ => {
            errors.push("\"upstream\" must be the service's base URL, like \"https://gemma-abc-uc.a.run.app/v1\"".into());
            None
        }
    };
    let model = match fields.get("model") {
        Some(Value::String(model)) if is_service_model(model) => Some(model.clone()),
        _ => {
            errors.push("\"model\" must be the name the service expects: 1 to 256 printable ASCII characters, no spaces".into());
            None
        }
    };
    let audience = match fields.get("audience") {
        None => upstream.as_ref().map(|service| service.origin.to_string()),
        Some(Value::String(audience)) if is_audience(audience) => Some(audience.clone()),
        Some(_) => {
            errors.push("\"audience\" must be a URL of 1 to 1024 printable ASCII characters (by default the service's origin, with a trailing slash)".into());
            None
        }
    };
    let header = match fields.get("auth_header") {
        None => Some(http::header::AUTHORIZATION),
        Some(Value::String(name)) if HEADERS.contains(&name.to_ascii_lowercase().as_str()) => {
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()
        }
        Some(_) => {
            errors.push(format!(
                "\"auth_header\" must be \"{}\" or \"{}\"",
                HEADERS[0], HEADERS[1]
            ));
            None
        }
    };
    let service_key = match fields.get("service_key_env") {
        None => None,
        Some(Value::String(env)) if OWN_VARIABLES.contains(&env.as_str()) => {
            errors.push(format!("\"service_key_env\" names {env}, which the proxy reads itself; name a variable that holds only the service's key"));
            None
        }
        Some(Value::String(env)) if is_variable_name(env) => Some(ServiceKey {
            env: env.as_str().into(),
            bearer: None,
        }),
        Some(_) => {
            errors.push("\"service_key_env\" must name an environment variable that holds the service's own key, like \"GEMMA_API_KEY\" ([A-Z_][A-Z0-9_]*)".into());
            None
        }
    };
    // The key goes in Authorization: the ID token must go elsewhere.
    if service_key.is_some() && header.as_ref() == Some(&http::header::AUTHORIZATION) {
        errors.push("\"service_key_env\" needs \"auth_header\": \"x-serverless-authorization\", so that the ID token leaves Authorization to the service's key".into());
    }
    let defaults = defaults_of(fields.get("defaults")).unwrap_or_else(|e| {
        errors.push(e);
        Map::new()
    });
    match (upstream, model, audience, header) {
        (Some(upstream), Some(model), Some(audience), Some(header)) if errors.is_empty() => {
            Ok(Route {
                kind: Kind::Service,
                model_json: crate::rewrite::json_string(&model),
                model,
                locations: Vec::new(),
                upstream: Some(upstream.into()),
                auth: Auth::GoogleIdToken {
                    audience: audience.into(),
                    header,
                    service_key,
                },
                defaults,
            })
        }
        _ => Err(errors),
    }
}

/// The service's URLs, built once here rather than on each request. `https://` only, but for
/// loopback, so that the ID token never crosses a network in clear text.
///
/// SECURITY: no message quotes the URL, which may hold a password (`user:pass@`, refused)
/// or a key in a query; the alias's name says which value is meant.
fn service(url: &str) -> Result<ServiceUrls, String> {
    let base = url.trim_end_matches('/');
    let uri: Uri = base
        .parse()
        .map_err(|_| "\"upstream\" is not a URL".to_owned())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(
            "\"upstream\" must be an absolute URL, like \"https://gemma-abc-uc.a.run.app/v1\""
                .into(),
        );
    };
    if authority.as_str().contains('@') {
        return Err("\"upstream\" may not hold credentials (user info before '@'); give the service's URL alone".into());
    }
    if uri.query().is_some() || base.contains('#') {
        return Err("\"upstream\" may not have a query or fragment".into());
    }
    match scheme {
        "https" => {}
        "http" if is_loopback(authority.host()) => {}
        "http" => {
            return Err("\"upstream\": http:// is accepted only for loopback hosts (127.0.0.1, ::1, localhost); use https://".into());
        }
        _ => return Err("\"upstream\" must start with https://".into()),
    }
    let at = |path: &str| {
        format!("{base}{path}")
            .parse::<Uri>()
            .map_err(|_| format!("\"upstream\" does not make a valid URL with {path}"))
    };
    Ok(ServiceUrls {
        base: base.to_owned(),
        chat_completions: at("/chat/completions")?,
        embeddings: at("/embeddings")?,
        origin: format!("{scheme}://{authority}/")
            .parse()
            .map_err(|_| "\"upstream\" has no valid origin".to_owned())?,
    })
}

/// Any name the service accepts, within bounds: it is spliced into the body as a JSON string.
fn is_service_model(model: &str) -> bool {
    (1..=256).contains(&model.len()) && model.bytes().all(|b| b.is_ascii_graphic())
}

/// An environment variable's name, as shells write them.
fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=128).contains(&name.len())
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_audience(audience: &str) -> bool {
    (1..=1024).contains(&audience.len()) && audience.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `host` is this machine: plain `http://` is allowed to it alone (a local fake, a
/// sidecar), never across a network.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Route, Vec<String>> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(fields) => route(&fields),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_service_alias_and_its_defaults() {
        let gemma = parse(
            r#"{"upstream":"https://gemma-abc-uc.a.run.app/v1/","model":"google/gemma-3-12b-it"}"#,
        )
        .unwrap();
        assert_eq!(gemma.kind, Kind::Service);
        let service = gemma.upstream.as_deref().unwrap();
        assert_eq!(service.base, "https://gemma-abc-uc.a.run.app/v1");
        assert_eq!(
            service.chat_completions,
            "https://gemma-abc-uc.a.run.app/v1/chat/completions"
        );
        assert_eq!(
            service.embeddings,
            "https://gemma-abc-uc.a.run.app/v1/embeddings"
        );
        assert_eq!(gemma.model, "google/gemma-3-12b-it");
        assert_eq!(
            gemma.auth,
            Auth::GoogleIdToken {
                audience: "https://gemma-abc-uc.a.run.app/".into(),
                header: http::header::AUTHORIZATION,
                service_key: None,
            }
        );
        assert!(gemma.locations.is_empty());

        let own = parse(r#"{"upstream":"http://127.0.0.1:8080/v1","model":"gemma3:12b","audience":"https://gemma.example.com","auth_header":"X-Serverless-Authorization","defaults":{"chat_template_kwargs":{"enable_thinking":true}}}"#).unwrap();
        assert_eq!(
            own.auth,
            Auth::GoogleIdToken {
                audience: "https://gemma.example.com".into(),
                header: HeaderName::from_static("x-serverless-authorization"),
                service_key: None,
            }
        );
        assert_eq!(
            own.defaults["chat_template_kwargs"]["enable_thinking"],
            true
        );
    }

    #[test]
    fn a_services_own_key_comes_from_the_variable_it_names() {
        let json = r#"{"gemma":{"upstream":"https://x/v1","model":"m","auth_header":"x-serverless-authorization","service_key_env":"GEMMA_API_KEY"}}"#;
        let var = |name: &str| (name == "GEMMA_API_KEY").then(|| " sk-own-key \n".to_owned());
        let aliases = super::super::Aliases::parse(json, "global", var).unwrap();
        let Auth::GoogleIdToken { service_key, .. } = &aliases.resolve("gemma").unwrap().auth
        else {
            panic!("a service's route");
        };
        let key = service_key.as_ref().unwrap();
        let bearer = key.bearer.as_ref().unwrap();
        assert_eq!(bearer, "Bearer sk-own-key");
        assert!(bearer.is_sensitive());
        // SECURITY: what a log or a panic could print names the variable, never the key.
        assert!(!format!("{aliases:?}").contains("sk-own-key"));
        assert!(format!("{key:?}").contains("GEMMA_API_KEY"));
        let errors = super::super::Aliases::parse(json, "global", |_| Some(" ".into()));
        assert!(errors.unwrap_err()[0].ends_with("names GEMMA_API_KEY, which is empty"));
    }

    #[test]
    fn service_key_env_may_not_name_the_proxys_own_variables() {
        // Each would send its value (the whole client key list, for one) to the service.
        for own in [
            "API_KEYS_JSON",
            "API_KEYS_FILE",
            "PRICES_JSON",
            "MODEL_ALIASES_JSON",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "PORT",
        ] {
            let json = format!(
                r#"{{"gemma":{{"upstream":"https://x/v1","model":"m","auth_header":"x-serverless-authorization","service_key_env":"{own}"}}}}"#
            );
            let errors = super::super::Aliases::parse(&json, "global", |_| Some("secret".into()))
                .unwrap_err();
            assert_eq!(
                errors,
                [format!(
                    "alias \"gemma\": \"service_key_env\" names {own}, which the proxy reads itself; name a variable that holds only the service's key"
                )]
            );
        }
    }

    #[test]
    fn the_proxys_own_variables_are_all_those_spec_names() {
        let spec = include_str!("../../SPEC.md");
        let section =
            &spec[spec.find("## 2. Configuration").unwrap()..spec.find("## 3. Keys").unwrap()];
        let table: Vec<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .collect();
        assert!(table.len() > 30, "{table:?}");
        for name in table.iter().chain(&[
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_CLOUD_QUOTA_PROJECT",
            "GCE_METADATA_HOST",
            "THOUGHT_SIGNATURES_CACHE_BYTES",
            "THOUGHT_SIGNATURES_TTL_SECS",
        ]) {
            assert!(section.contains(&format!("`{name}`")), "{name}");
            assert!(OWN_VARIABLES.contains(name), "{name} is missing");
        }
    }

    #[test]
    fn every_error_in_a_service_alias_is_named() {
        let errors = parse(r#"{"upstream":"http://10.0.0.1/v1","model":"a b","audience":7,"auth_header":"cookie","location":"global","defaults":{"stream":true}}"#).unwrap_err();
        for says in [
            "unknown field \"location\"",
            "loopback",
            "\"model\"",
            "\"audience\"",
            "\"auth_header\"",
            "may not set \"stream\"",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(says)),
                "{says}: {errors:?}"
            );
        }
        for bad in [
            "ftp://x/v1",
            "/v1",
            "https://x/v1?key=1",
            "https://user:pw@x/v1",
            "not a url",
        ] {
            let json = format!(r#"{{"upstream":"{bad}","model":"m"}}"#);
            assert!(parse(&json).is_err(), "{bad}");
        }
        assert!(parse(r#"{"upstream":"https://x/v1"}"#).is_err());
        // Credentials are refused, and no message quotes the URL, whatever is wrong with it.
        for bad in [
            "https://user:hunter2@x/v1",
            "https://user:hunter2@x/v1?key=1",
            "http://user:hunter2@10.0.0.1/v1",
            "https://user:hunter 2@x/v1",
        ] {
            let json = format!(r#"{{"upstream":"{bad}","model":"m"}}"#);
            let errors = parse(&json).unwrap_err().join("\n");
            assert!(!errors.contains("hunter"), "{bad}: {errors}");
            if !bad.contains(' ') {
                assert!(
                    errors.contains("may not hold credentials"),
                    "{bad}: {errors}"
                );
            }
        }
        // An '@' in the path is no credential.
        assert!(parse(r#"{"upstream":"https://x/v1/m@2","model":"m"}"#).is_ok());
    }
}
