//! Where a model name goes: the alias table, each alias's [`Route`], and the model objects of
//! `/v1/models`. The configuration parser, `/v1/models`, `/docs` and the log line all read the
//! same `Route`. The object forms of an alias are parsed in [`vertex`] and [`service`].

mod ids;
mod service;
mod vertex;

use ids::is_alias_name;
pub(crate) use ids::normalise_model_id;
pub use ids::{is_location, is_raw_model_id};
pub use service::{ServiceKey, is_loopback};

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, Uri};

use serde_json::{Map, Value, json};

use crate::error::ProxyError;
use crate::repeats;

pub const DEFAULT_ALIASES: &str =
    r#"{"flash":"google/gemini-2.5-flash","pro-preview":"google/gemini-3.1-pro-preview"}"#;

/// The kind of upstream a route reaches: it decides the URL, the changes to the body and the
/// relay of the answer (see `upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Vertex's OpenAI-compatible endpoint, `…/endpoints/openapi/…`.
    VertexOpenAi,
    /// Claude on Vertex: the Anthropic Messages API through `…/publishers/anthropic/models/
    /// {model}:rawPredict`. Vertex's OpenAI endpoint refuses Claude.
    VertexAnthropic,
    /// Google's embedding models, through `…/publishers/google/models/{model}:predict`.
    VertexEmbeddings,
    /// A private OpenAI-compatible service (vLLM or TGI on Cloud Run, say) at the alias's
    /// `upstream`, called with an ID token.
    Service,
}

impl Kind {
    /// The kind of a Vertex model id, by its publisher and name.
    pub fn of(model: &str) -> Kind {
        if model.starts_with("anthropic/") {
            Kind::VertexAnthropic
        } else if is_embedding_model(model) {
            Kind::VertexEmbeddings
        } else {
            Kind::VertexOpenAi
        }
    }
}

/// Whether a Vertex model id is one of Google's embedding models, which Vertex serves by
/// `:predict` rather than its OpenAI endpoint.
pub fn is_embedding_model(model: &str) -> bool {
    model.strip_prefix("google/").is_some_and(|name| {
        [
            "gemini-embedding-",
            "text-embedding-",
            "text-multilingual-embedding-",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    })
}

/// How the upstream request is authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The service account's OAuth access token, from google-cloud-auth.
    GoogleAccessToken,
    /// A Google-signed ID token for `audience`, sent in `header` as `Bearer …`, and the
    /// service's own key, when it checks one, in `Authorization`.
    GoogleIdToken {
        audience: Arc<str>,
        header: HeaderName,
        service_key: Option<ServiceKey>,
    },
}

/// A private service's URLs, built when the alias is read.
#[derive(Debug, PartialEq)]
pub struct ServiceUrls {
    /// The alias's `upstream`, without a trailing slash: `https://gemma-abc-uc.a.run.app/v1`.
    pub base: String,
    /// `{base}/chat/completions`.
    pub chat_completions: Uri,
    /// `{base}/embeddings`.
    pub embeddings: Uri,
    /// `https://gemma-abc-uc.a.run.app/`: the default audience, and where to connect early.
    pub origin: Uri,
}

/// Where an alias goes: everything the pipeline needs once the key has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub kind: Kind,
    /// The upstream's model id, spliced into the body: `google/gemini-2.5-flash`.
    pub model: String,
    /// `model` as a JSON string, made once with the route rather than for each request's
    /// splice (two allocations and the escaping, a request).
    pub model_json: Bytes,
    /// Vertex's locations, never empty for a Vertex kind; a request goes to the first. A
    /// service has none.
    pub locations: Vec<String>,
    /// A private service's URLs.
    pub upstream: Option<Arc<ServiceUrls>>,
    pub auth: Auth,
    /// Top-level body fields added where the client's body lacks them (the alias's
    /// `defaults`): the client wins.
    pub defaults: Map<String, Value>,
}

impl Route {
    /// A model on Vertex in one location, with the service account's token; its publisher
    /// decides the kind.
    pub fn vertex(model: String, location: String) -> Route {
        Route {
            kind: Kind::of(&model),
            model_json: crate::rewrite::json_string(&model),
            model,
            locations: vec![location],
            upstream: None,
            auth: Auth::GoogleAccessToken,
            defaults: Map::new(),
        }
    }

    /// Where a request goes first: a Vertex location, or `service`.
    pub fn location(&self) -> &str {
        self.locations.first().map_or("service", String::as_str)
    }

    /// The model object `/v1/models` shows for `id`. A service's URL is not shown: it is
    /// the deployment's business, not the client's.
    pub fn model_object(&self, id: &str, created: u64) -> Value {
        if self.kind == Kind::Service {
            return json!({
                "id": id,
                "object": "model",
                "created": created,
                "owned_by": "service",
                "upstream_model": self.model,
                "defaults": self.defaults,
            });
        }
        let owned_by = self.model.split('/').next().unwrap_or("google");
        json!({
            "id": id,
            "object": "model",
            "created": created,
            "owned_by": owned_by,
            "vertex_id": self.model,
            "location": self.location(),
            "locations": self.locations,
            "defaults": self.defaults,
        })
    }
}

/// The alias table, sorted by alias so listings are stable, and what a raw id resolves to.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    routes: BTreeMap<String, Route>,
    /// With `ALLOW_RAW_MODEL_IDS`, the location a raw `publisher/model` id is served from.
    raw_ids: Option<String>,
}

impl Aliases {
    /// Parses `MODEL_ALIASES_JSON`: alias → id, or alias → `{"model": id, "location": loc}`,
    /// or `{"model": id, "locations": [loc, ...]}` for failover.
    /// Aliases without a location are served from `default_location` (`VERTEX_LOCATION`).
    /// `var` reads the variables that hold services' own keys (`service_key_env`).
    pub fn parse(
        json: &str,
        default_location: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Aliases, Vec<String>> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            vec![format!(
                "is not valid JSON ({e}); expected an object of alias -> model id"
            )]
        })?;
        let Value::Object(map) = value else {
            return Err(vec![
                "must be a JSON object of alias -> model id, like {\"flash\": \"google/gemini-2.5-flash\"}".into(),
            ]);
        };
        // The last of a repeated name would win without a word.
        let mut errors = repeats::by_entry(json, "alias ");
        let mut aliases = BTreeMap::new();
        for (alias, spec) in map {
            if !is_alias_name(&alias) {
                errors.push(format!(
                    "alias {alias:?} must be made of letters, digits, '.', '_' and '-'"
                ));
                continue;
            }
            let route = match &spec {
                Value::String(model) => normalise_model_id(model)
                    .map(|model| Route::vertex(model, default_location.to_owned()))
                    .map_err(|e| vec![e]),
                Value::Object(fields) if fields.contains_key("upstream") => service::route(fields),
                Value::Object(fields) => vertex::route(fields, default_location),
                _ => Err(vec![
                    "must map to a model id string or {\"model\": id, \"location\": loc}".into(),
                ]),
            };
            match route {
                Ok(route) => {
                    aliases.insert(alias, route);
                }
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|e| format!("alias {alias:?}: {e}")));
                }
            }
        }
        errors.extend(service::read_keys(&mut aliases, var));
        if errors.is_empty() && aliases.is_empty() {
            errors.push("defines no alias".into());
        }
        if errors.is_empty() {
            Ok(Aliases {
                routes: aliases,
                raw_ids: None,
            })
        } else {
            Err(errors)
        }
    }

    pub fn default_table(default_location: &str) -> Aliases {
        Aliases::parse(DEFAULT_ALIASES, default_location, |_| None)
            .expect("the built-in alias table is valid")
    }

    /// Lets clients name any `publisher/model` id, served from `location`.
    pub fn allow_raw_ids(&mut self, location: &str) {
        self.raw_ids = Some(location.to_owned());
    }

    /// Points `alias` at `model`, keeping the location the table gave it.
    pub fn set_model(
        &mut self,
        alias: &str,
        model: &str,
        default_location: &str,
    ) -> Result<(), String> {
        let model = normalise_model_id(model)?;
        self.routes
            .entry(alias.to_owned())
            .and_modify(|route| match route.kind {
                // Pointed at Vertex now: the service's URL and token no longer apply.
                Kind::Service => *route = Route::vertex(model.clone(), default_location.to_owned()),
                _ => {
                    route.kind = Kind::of(&model);
                    route.model_json = crate::rewrite::json_string(&model);
                    route.model.clone_from(&model);
                }
            })
            .or_insert_with(|| Route::vertex(model, default_location.to_owned()));
        Ok(())
    }

    /// An alias, or a raw `publisher/model` id when those are allowed.
    pub fn resolve(&self, name: &str) -> Option<Cow<'_, Route>> {
        if let Some(route) = self.routes.get(name) {
            return Some(Cow::Borrowed(route));
        }
        let location = self.raw_ids.as_ref()?;
        is_raw_model_id(name).then(|| Cow::Owned(Route::vertex(name.to_owned(), location.clone())))
    }

    /// The route for a request's `model`, if the key (`may_use`) may use it; an unknown one's
    /// error lists the aliases the key may use that the client's API `reaches`.
    pub fn route_for(
        &self,
        name: &str,
        may_use: impl Fn(&str) -> bool,
        reaches: impl Fn(&Route) -> bool,
    ) -> Result<Cow<'_, Route>, ProxyError> {
        let Some(route) = self.resolve(name) else {
            let usable = self
                .iter()
                .filter(|&(alias, route)| may_use(alias) && reaches(route));
            let usable: Vec<&str> = usable.map(|(alias, _)| alias).collect();
            return Err(ProxyError::bad_request(
                "model_not_found",
                format!(
                    "unknown model {:?}; this key may use: {}",
                    shorten(name),
                    usable.join(", ")
                ),
            ));
        };
        if !may_use(name) {
            return Err(ProxyError::Forbidden(format!(
                "this API key may not use model {:?}",
                shorten(name)
            )));
        }
        Ok(route)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.routes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The distinct audiences of the ID tokens the services' aliases need.
    pub fn audiences(&self) -> BTreeSet<Arc<str>> {
        (self.routes.values())
            .filter_map(|route| match &route.auth {
                Auth::GoogleIdToken { audience, .. } => Some(audience.clone()),
                Auth::GoogleAccessToken => None,
            })
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }
}

/// Fields a default may not set: they say what the request is, not how it is served.
const NOT_DEFAULTS: [&str; 3] = ["model", "stream", "messages"];

/// An alias's `defaults`: top-level fields added to a request body that lacks them.
pub(crate) fn defaults_of(defaults: Option<&Value>) -> Result<Map<String, Value>, String> {
    let Some(defaults) = defaults else {
        return Ok(Map::new());
    };
    let Value::Object(fields) = defaults else {
        return Err("\"defaults\" must be a JSON object of top-level request fields".into());
    };
    if let Some(field) = fields.keys().find(|k| NOT_DEFAULTS.contains(&k.as_str())) {
        return Err(format!(
            "\"defaults\" may not set {field:?} (nor model, stream or messages)"
        ));
    }
    // Depth needs no check of its own: inside this variable the object sits deeper than it
    // will in a body, and serde_json's limit is the body's. Size is checked against
    // MAX_BODY_BYTES with the rest of the configuration.
    Ok(fields.clone())
}

/// A client's model name as quoted back in an error: bounded, since it can be any size.
fn shorten(name: &str) -> String {
    match name.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_forms_and_errors() {
        let aliases = Aliases::parse(
            r#"{"flash":"google/gemini-2.5-flash","llama":{"model":"meta/llama-3.3-70b-instruct-maas","location":"us-central1"},"bare":"gemini-2.0-flash"}"#,
            "europe-west4", |_| None)
        .unwrap();
        let flash = aliases.resolve("flash").unwrap();
        assert_eq!(
            *flash,
            Route::vertex("google/gemini-2.5-flash".into(), "europe-west4".into())
        );
        assert_eq!(flash.kind, Kind::VertexOpenAi);
        assert_eq!(flash.auth, Auth::GoogleAccessToken);
        assert_eq!(aliases.resolve("llama").unwrap().locations, ["us-central1"]);
        assert_eq!(
            aliases.resolve("bare").unwrap().model,
            "google/gemini-2.0-flash"
        );
        assert_eq!(
            aliases.names().collect::<Vec<_>>(),
            ["bare", "flash", "llama"]
        );

        let errors = Aliases::parse(
            r#"{"a":"x/y/z","b":{"model":"p/m","location":"US central"},"c":3,"d e":"p/m","f":{"model":"p/m","zone":"x"}}"#,
            "global", |_| None)
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(Aliases::parse("{}", "global", |_| None).unwrap_err()[0].contains("no alias"));

        let pro = Aliases::parse(
            r#"{"pro":{"model":"google/gemini-2.5-pro","locations":["global","us-central1","europe-west4"]}}"#,
            "global", |_| None)
        .unwrap();
        let route = pro.resolve("pro").unwrap();
        assert_eq!(route.locations, ["global", "us-central1", "europe-west4"]);
        assert_eq!(route.location(), "global");
        let errors = Aliases::parse(
            r#"{"a":{"model":"p/m","locations":[]},"b":{"model":"p/m","locations":["ok","not ok"]},"c":{"model":"p/m","location":"x","locations":["y"]},"d":{"model":"p/m","locations":"global"}}"#,
            "global", |_| None)
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("not both")), "{errors:?}");
        for (id, kind) in [
            ("google/gemini-embedding-001", Kind::VertexEmbeddings),
            (
                "google/text-multilingual-embedding-002",
                Kind::VertexEmbeddings,
            ),
            ("google/gemini-2.5-flash", Kind::VertexOpenAi),
            ("intfloat/multilingual-e5-small-maas", Kind::VertexOpenAi),
            (
                "anthropic/claude-sonnet-4-5@20250929",
                Kind::VertexAnthropic,
            ),
        ] {
            assert_eq!(Kind::of(id), kind, "{id}");
        }

        let fast = Aliases::parse(
            r#"{"flash-fast":{"model":"google/gemini-2.5-flash","defaults":{"reasoning_effort":"none"}}}"#,
            "global", |_| None)
        .unwrap();
        let route = fast.resolve("flash-fast").unwrap();
        assert_eq!(route.defaults["reasoning_effort"], "none");
        assert_eq!(
            route.model_object("flash-fast", 0)["defaults"]["reasoning_effort"],
            "none"
        );
        let deep = format!(
            r#"{{"a":{{"model":"p/m","defaults":{{"x":{}1{}}}}}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        );
        for (json, says) in [
            (
                r#"{"a":{"model":"p/m","defaults":[1]}}"#,
                "must be a JSON object",
            ),
            (
                r#"{"a":{"model":"p/m","defaults":{"stream":true}}}"#,
                "may not set \"stream\"",
            ),
            (
                r#"{"a":{"model":"p/m","defaults":{"messages":[]}}}"#,
                "may not set \"messages\"",
            ),
            (deep.as_str(), "recursion limit"),
        ] {
            let errors = Aliases::parse(json, "global", |_| None).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(says)),
                "{json}: {errors:?}"
            );
        }
        assert!(Aliases::parse("[]", "global", |_| None).unwrap_err()[0].contains("JSON object"));
    }

    #[test]
    fn a_name_given_twice_is_refused_not_overridden() {
        let errors = Aliases::parse(
            r#"{"flash":"p/a","pro":{"model":"p/b","location":"us-central1","defaults":{"x":1,"x":2},"location":"global"},"flash":"p/c"}"#,
            "global", |_| None)
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "alias \"pro\": \"x\" is given twice in \"defaults\"",
                "alias \"pro\": \"location\" is given twice",
                "alias \"flash\" is given twice",
            ]
        );
    }

    #[test]
    fn set_model_overrides_and_keeps_location() {
        let mut aliases = Aliases::parse(
            r#"{"flash":{"model":"google/a","location":"europe-west4"}}"#,
            "global",
            |_| None,
        )
        .unwrap();
        aliases.set_model("flash", "google/b", "global").unwrap();
        aliases
            .set_model("pro-preview", "google/c", "global")
            .unwrap();
        assert_eq!(
            aliases.resolve("flash").as_deref(),
            Some(&Route::vertex("google/b".into(), "europe-west4".into()))
        );
        assert_eq!(
            aliases.resolve("pro-preview").as_deref(),
            Some(&Route::vertex("google/c".into(), "global".into()))
        );
        assert!(aliases.set_model("flash", "bad id", "global").is_err());
    }

    #[test]
    fn raw_ids_resolve_only_when_allowed_and_keys_are_checked() {
        let mut aliases = Aliases::default_table("global");
        assert!(aliases.resolve("meta/llama").is_none());
        aliases.allow_raw_ids("us-east5");
        let raw = aliases.resolve("meta/llama").unwrap();
        assert_eq!(*raw, Route::vertex("meta/llama".into(), "us-east5".into()));
        assert!(aliases.resolve("not an id").is_none());

        let only_flash = |name: &str| name == "flash";
        assert_eq!(
            aliases
                .route_for("flash", only_flash, |_| true)
                .unwrap()
                .model,
            "google/gemini-2.5-flash"
        );
        let unknown = aliases
            .route_for("gpt-4", only_flash, |_| true)
            .unwrap_err();
        assert_eq!(unknown.status(), 400);
        assert!(
            unknown.message().ends_with("this key may use: flash"),
            "{}",
            unknown.message()
        );
        assert_eq!(
            aliases
                .route_for("pro-preview", only_flash, |_| true)
                .unwrap_err()
                .status(),
            403
        );
    }

    #[test]
    fn quoted_model_names_are_bounded() {
        assert_eq!(shorten("flash"), "flash");
        let long = "é".repeat(500);
        assert_eq!(shorten(&long).chars().count(), 101);
    }

    #[test]
    fn raw_model_ids_are_exactly_publisher_slash_model() {
        for ok in [
            "meta/llama-3.3-70b-instruct-maas",
            "google/gemini-2.5-flash",
            "a/b@001",
        ] {
            assert!(is_raw_model_id(ok), "{ok}");
        }
        for bad in [
            "flash", "a/b/c", "../x", "a/..", "./b", "a/", "/b", "a b/c", "a/b?x", "a/b#", "a%2f/b",
        ] {
            assert!(!is_raw_model_id(bad), "{bad}");
        }
        // Vertex's ids are short; a client's may not be long enough to break a URL or a log line.
        assert!(is_raw_model_id(&format!("meta/{}", "a".repeat(128))));
        assert!(!is_raw_model_id(&format!("meta/{}", "a".repeat(129))));
        assert!(!is_raw_model_id(&format!("{}/b", "a".repeat(65))));
    }

    #[test]
    fn locations_cannot_change_the_host() {
        assert!(is_location("us-central1") && is_location("global"));
        for bad in ["", "US", "a.b", "evil.com/", "-x", "a b"] {
            assert!(!is_location(bad), "{bad}");
        }
    }
}
